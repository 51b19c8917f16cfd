"""Depth study: does test AUC keep rising with more cross layers when the layers are gated?

GDCN's second claim (spec 5): gated cross networks keep improving as layers are added, while
ungated ones stall or degrade. This trains GCN, GDCN-P and DCNv2 with 1, 2, 3, 4, 6 and 8 cross
layers on Frappe_x1 (the settings of benchmarks/frappe.py, whose log it shares, so depth 3 is the
table's own runs) and on the synthetic default (planted pair and triple interactions), then writes
docs/results/depth.md and docs/results/depth.png (test AUC against depth, mean +- std over seeds).

The synthetic data's ids are rare and DCNv2 overfits them after one epoch (see the demo), so its
runs stop after 3 epochs at most, with early-stopping patience 1; everything else is each model's
default (width 16).

    python benchmarks/depth.py [--seeds 3] [--synthetic-seeds 1] [--depths 1 2 3 4 6 8]
                               [--datasets frappe synthetic] [--threads N] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from frappe import ANY_RISE, GCN_BEFORE, SHARED
from frappe import LOG as FRAPPE_LOG
from frappe import overrides_for as frappe_overrides
from runlog import RunLog

from slimctr.data.datasets import locate
from slimctr.data.prepare import prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SYNTHETIC_LOG = ROOT / "benchmarks" / "results" / "depth_synthetic_runs.jsonl"
MODELS = ("gcn", "gdcn_p", "dcnv2")
COLOURS = {"gcn": "tab:blue", "gdcn_p": "tab:orange", "dcnv2": "tab:green"}  # same in every panel
DEFAULT_DEPTH = 3  # every model's default depth
SYNTHETIC = ["train.epochs=3", "train.early_stopping_patience=1"]


# Frappe runs trained before the trainer's plateau counted any rise as improvement (2026-11-27):
# reported beside the new ones, never trained again (the old rule is gone).
OLD_PLATEAU = "frappe-plateau-rel"


def overrides(dataset: str, model: str, depth: int) -> list[str]:
    """The table's settings (Frappe) or the short synthetic schedule, at ``depth`` cross layers;
    the table's own depth adds no key, so those runs are shared with the table's log."""
    if dataset == OLD_PLATEAU:
        return [o for o in overrides("frappe", model, depth) if o != ANY_RISE]
    base = frappe_overrides(model) if dataset == "frappe" else list(SYNTHETIC)
    if dataset == "frappe" and model == "gcn":
        base = list(GCN_BEFORE)  # the table's GCN settings when this study ran
    layers = [o for o in base if o.startswith("model.num_cross_layers=")]
    table_depth = int(layers[0].split("=")[1]) if layers else DEFAULT_DEPTH
    if depth == table_depth:
        return base
    return [o for o in base if o not in layers] + [f"model.num_cross_layers={depth}"]


def prepare_data(dataset: str, work: Path, frappe_path: Path) -> Path:
    """The dataset's store under ``work/data`` (prepared once, then found up to date)."""
    if dataset == "frappe":
        located = locate("frappe", [frappe_path])
    else:
        file = work / "data" / "synthetic.parquet"
        if not file.is_file():
            file.parent.mkdir(parents=True, exist_ok=True)
            write_synthetic(SyntheticConfig(seed=0), file)
        located = locate("synthetic", [file])
    store, _ = prepare(
        located.sources, work / "data" / dataset, located.options, attach=located.attach
    )
    return store.path


def study(args: argparse.Namespace, work: Path) -> dict[tuple[str, str, int], list[float]]:
    """Test AUCs by (dataset, model, depth), training what the logs lack."""
    aucs: dict[tuple[str, str, int], list[float]] = {}
    for dataset in args.datasets:
        log = RunLog(SYNTHETIC_LOG if dataset == "synthetic" else FRAPPE_LOG)
        seeds = range(args.synthetic_seeds if dataset == "synthetic" else args.seeds)
        data = None
        # Seed by seed, so that a study stopped early still has whole curves.
        for seed in seeds:
            for depth in args.depths:
                for model in MODELS:
                    keys = overrides(dataset, model, depth)
                    record: dict[str, Any] | None = log.get(model, seed, keys)
                    if record is None and not args.logged_only and dataset != OLD_PLATEAU:
                        data = data or prepare_data(dataset, work, args.data)
                        record = log.train(data, model, seed, keys, work, threads=args.threads)
                    if record is not None:
                        aucs.setdefault((dataset, model, depth), []).append(record["test"]["auc"])
                        print(dataset, model, depth, seed, f"{record['test']['auc']:.4f}")
    return aucs


def plot(aucs: dict[tuple[str, str, int], list[float]], datasets: list[str], path: Path) -> None:
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for model in MODELS:
            points = sorted((d, v) for (s, m, d), v in aucs.items() if s == dataset and m == model)
            if not points:
                continue
            depths = [d for d, _ in points]
            means = [statistics.mean(v) for _, v in points]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points]
            axis.errorbar(
                depths, means, yerr=stds, marker="o", capsize=3, label=model, color=COLOURS[model]
            )
        axis.set_title(dataset)
        axis.set_xlabel("cross layers")
        axis.set_ylabel("test AUC")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(aucs: dict[tuple[str, str, int], list[float]], dataset: str, depths: list[int]) -> str:
    lines = [
        "| model | " + " | ".join(f"{d} layers" for d in depths) + " |",
        "|---|" + "---|" * len(depths),
    ]
    for model in MODELS:
        cells = []
        for depth in depths:
            values = aucs.get((dataset, model, depth), [])
            spread = f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells.append(
                f"{statistics.mean(values):.4f}{spread} ({len(values)})" if values else "-"
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="Frappe seeds")
    parser.add_argument("--synthetic-seeds", type=int, default=1)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["frappe", "synthetic"],
        choices=["frappe", "synthetic", OLD_PLATEAU],
        help=f"frappe, synthetic, and {OLD_PLATEAU} (the old plateau rule's runs, logged only)",
    )
    parser.add_argument("--data", type=Path, default=SHARED / "frappe", help="Frappe folder")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "bench" / "depth", help="run folders"
    )
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}/depth.md and .png")
    parser.add_argument(
        "--logged-only", action="store_true", help="train nothing: report the logged runs"
    )
    args = parser.parse_args()
    aucs = study(args, args.work)
    tables = "\n\n".join(
        f"## {dataset}\n\nTest AUC, mean +- std (number of seeds):\n\n"
        + table(aucs, dataset, args.depths)
        for dataset in args.datasets
    )
    print(tables)
    if args.write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(aucs, args.datasets, RESULTS / "depth.png")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/depth.py " + " ".join(sys.argv[1:])
        (RESULTS / "depth.md").write_text(
            f"# Depth study: test AUC against the number of cross layers\n\n{stamp}; command "
            f"`{command}`. Frappe settings as in `frappe.md` (runs in "
            "`benchmarks/results/frappe_runs.jsonl`); synthetic: the default data (seed 0), "
            f"{', '.join(SYNTHETIC)}, model defaults otherwise (runs in "
            "`benchmarks/results/depth_synthetic_runs.jsonl`). "
            f"`{OLD_PLATEAU}`: Frappe runs under the trainer's old plateau rule, which cut the "
            "learning rate unless validation AUC rose by more than 1e-4 of its best, shown "
            "for comparison. The synthetic runs stop before any cut can happen.\n\n"
            "![depth](depth.png)\n\n" + tables + "\n"
        )


if __name__ == "__main__":
    main()
