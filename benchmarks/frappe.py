"""Every registered model on Frappe_x1, several seeds each, against the BARS leaderboard.

Writes docs/results/frappe.md: test AUC and logloss (mean +- std over seeds), parameters,
embedding bytes and seconds per training epoch, beside the BARS numbers. Our Frappe_x1 train split
is reconstructed (valid and test are the exact BARS files), so compare to about +-0.003.

All models get the same budget and the settings that carried DCNv2 and DeepFM past 0.98 here
(width 10, embedding L2 0.05 as FuxiCTR's `embedding_regularizer`, at most 30 epochs, the paper's
early stopping and plateau); everything else is each model's own default.

    python benchmarks/frappe.py [--seeds 5] [--models gdcn_p dcnv2 ...] [--data PATH]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from slimctr.data.datasets import locate
from slimctr.data.prepare import prepare
from slimctr.models import MODELS
from slimctr.training import run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "docs" / "results" / "frappe.md"
COMMON = ["model.embedding_dim=10", "train.embedding_l2=0.05", "train.epochs=30"]
BARS_NAMES = {
    "lr": "LR",
    "fm": "FM",
    "fwfm": "FwFM",
    "wide_deep": "Wide&Deep",
    "deepfm": "DeepFM",
    "dcn": "DCN",
    "dcnv2": "DCN-V2",
    "xdeepfm": "xDeepFM",
    "autoint": "AutoInt+",
    "fibinet": "FiBiNET",
    "masknet": "MaskNet",
    "finalmlp": "FinalMLP",
    "dnn": "DNN",
}


def bars_numbers(path: Path) -> dict[str, tuple[float, float]]:
    with open(path) as handle:
        return {
            row["Model"]: (float(row["AUC"]), float(row["Logloss"]))
            for row in csv.DictReader(handle)
        }


def overrides_for(model: str) -> list[str]:
    """The common settings this model has (LR, for one, has no embedding width)."""
    keys = {f.name for f in dataclasses.fields(MODELS[model].config)}
    return [o for o in COMMON if not o.startswith("model.") or o[6:].split("=")[0] in keys]


def train_one(data: Path, model: str, seed: int, work: Path) -> dict[str, Any]:
    config = run.resolve_config(model, overrides=overrides_for(model), seed=seed)
    out = work / f"{model}-{seed}"
    metrics = run.train(data, out, config)
    history = json.loads((out / "history.json").read_text())
    return {**metrics, "epoch_seconds": statistics.mean(h["seconds"] for h in history)}


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary_row(
    model: str, runs: list[dict[str, Any]], bars: dict[str, tuple[float, float]]
) -> str:
    aucs = [r["test"]["auc"] for r in runs]
    losses = [r["test"]["logloss"] for r in runs]
    epoch_seconds = statistics.mean(r["epoch_seconds"] for r in runs)
    published = bars.get(BARS_NAMES.get(model, ""))
    bars_text = f"{published[0]:.4f}" if published else "-"
    return (
        f"| {model} | {statistics.mean(aucs):.4f} +- {spread(aucs):.4f} | "
        f"{statistics.mean(losses):.4f} +- {spread(losses):.4f} | {runs[0]['num_params']:,} | "
        f"{runs[0]['embedding_bytes']:,} | {epoch_seconds:.1f} | {bars_text} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--data", type=Path, default=SHARED / "frappe")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args()
    bars = bars_numbers(SHARED / "bars_leaderboard" / "frappe_x1.csv")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        located = locate("frappe", [args.data])
        store, _ = prepare(located.sources, work / "frappe", located.options)
        rows = []
        for model in args.models:
            runs = [train_one(store.path, model, seed, work) for seed in range(args.seeds)]
            rows.append(summary_row(model, runs, bars))
            print(rows[-1], flush=True)
    header = (
        "| model | test AUC | test logloss | parameters | embedding bytes | "
        "s per epoch | BARS test AUC |\n|---|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows)
    print(table)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/frappe.py " + " ".join(sys.argv[1:])
        RESULTS.write_text(
            f"# Frappe_x1: every registered model\n\n{stamp}; command `{command}`; "
            f"{args.seeds} seeds each; settings: {', '.join(COMMON)}, other settings the "
            "models' defaults.\n\nOur train split is reconstructed (see the data's SOURCE.md): "
            "compare with BARS (original split) to about +-0.003.\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
