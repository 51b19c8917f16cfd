"""Every registered model on Frappe_x1, several seeds each, against the BARS leaderboard.

Writes docs/results/frappe.md: test AUC and logloss (mean +- std over seeds), parameters,
embedding bytes and seconds per training epoch, beside the BARS numbers. Our Frappe_x1 train split
is reconstructed (valid and test are the exact BARS files), so compare to about +-0.003.

All models get the same budget and the settings that carried DCNv2 and DeepFM past 0.98 here:
width 10, embedding L2 0.05 (FuxiCTR's `embedding_regularizer`), embeddings N(0, 1e-4) for every
model (GDCN's own default is xavier), at most 30 epochs, the trainer's early stopping and plateau
schedule; everything else is each model's own default.

Finished runs go to benchmarks/results/frappe_runs.jsonl; a rerun skips them, and resumes a run
left unfinished under --work (default runs/bench/frappe), so the study can be stopped and
resumed, and more seeds added later.

    python benchmarks/frappe.py [--seeds 5] [--models gdcn_p dcnv2 ...] [--data PATH] [--write]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import statistics
import sys
from pathlib import Path
from typing import Any

from runlog import RunLog

from slimctr.data.datasets import locate
from slimctr.data.prepare import prepare
from slimctr.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "docs" / "results" / "frappe.md"
LOG = ROOT / "benchmarks" / "results" / "frappe_runs.jsonl"
COMMON = [
    "model.embedding_dim=10",
    "model.embedding_init_std=0.0001",
    "train.embedding_l2=0.05",
    "train.epochs=30",
]
FIRST = ["gdcn_p", "dcnv2"]  # the comparison the table exists for runs first
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
    "dnn": "YoutubeDNN",  # BARS lists its plain DNN under this name
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


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary_row(
    model: str, runs: list[dict[str, Any]], bars: dict[str, tuple[float, float]]
) -> str:
    aucs = [r["test"]["auc"] for r in runs]
    losses = [r["test"]["logloss"] for r in runs]
    epoch_seconds = statistics.mean(r["epoch_seconds"] for r in runs)
    epochs = statistics.mean(r["best_epoch"] for r in runs)
    published = bars.get(BARS_NAMES.get(model, ""))
    bars_text = f"{published[0]:.4f}" if published else "-"
    return (
        f"| {model} | {len(runs)} | {statistics.mean(aucs):.4f} +- {spread(aucs):.4f} | "
        f"{statistics.mean(losses):.4f} +- {spread(losses):.4f} | {runs[0]['num_params']:,} | "
        f"{runs[0]['embedding_bytes']:,} | {epochs:.1f} | {epoch_seconds:.1f} | {bars_text} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=None, help="default: all registered")
    parser.add_argument("--data", type=Path, default=SHARED / "frappe")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "bench" / "frappe", help="run folders"
    )
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    parser.add_argument(
        "--logged-only", action="store_true", help="train nothing: tabulate the logged runs"
    )
    args = parser.parse_args()
    models = args.models or FIRST + [m for m in MODELS if m not in FIRST]
    bars = bars_numbers(SHARED / "bars_leaderboard" / "frappe_x1.csv")
    log = RunLog(LOG)
    rows = []
    if not args.logged_only:
        located = locate("frappe", [args.data])
        store, _ = prepare(located.sources, args.work / "data" / "frappe", located.options)
        # Seed by seed, so that a study cut short still has a row for every model.
        for seed in range(args.seeds):
            for model in models:
                keys = overrides_for(model)
                log.train(store.path, model, seed, keys, args.work, threads=args.threads)
    for model in models:
        found = (log.get(model, seed, overrides_for(model)) for seed in range(args.seeds))
        runs = [r for r in found if r is not None]
        if runs:
            rows.append(summary_row(model, runs, bars))
            print(rows[-1], flush=True)
    header = (
        "| model | seeds | test AUC | test logloss | parameters | embedding bytes | "
        "best epoch | s per epoch | BARS test AUC |\n|---|---|---|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows)
    print(table)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/frappe.py " + " ".join(sys.argv[1:])
        RESULTS.write_text(
            f"# Frappe_x1: every registered model\n\n{stamp}; command `{command}`; "
            f"up to {args.seeds} seeds each; settings: {', '.join(COMMON)}, other settings the "
            "models' defaults. Runs: `benchmarks/results/frappe_runs.jsonl`.\n\n"
            "Our train split is reconstructed (see the data's SOURCE.md): "
            "compare with BARS (original split) to about +-0.003. Best epoch is the mean "
            "over seeds (the cap is 30). Seconds per epoch come from runs that shared the "
            "2 vCPUs with other jobs: indicative only.\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
