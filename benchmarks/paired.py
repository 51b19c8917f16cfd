"""Does one setting change accuracy? Runs paired by seed, with and without it, on one dataset.

Each model trains under a study's settings (``frappe``: the Frappe table's, from
``benchmarks/frappe.py``; ``synthetic``: the depth study's short schedule on the synthetic
default) for every seed, once as the baseline (``--base``, added to those settings) and once
with ``--set`` on top. A seed fixes the initial weights and the batch order, so the two runs of a
seed differ by the setting alone; the table gives each arm's mean test AUC and the mean paired
difference (set minus base) with its 95% t-interval over seeds. Runs are logged in the
dataset's study log (frappe_runs.jsonl, depth_synthetic_runs.jsonl), so runs those studies
already made are reused and an interrupted comparison resumes.

    python benchmarks/paired.py --dataset frappe --models dcnv2 gdcn_p --seeds 3 \\
        --set train.embedding_optimizer=lazy_adam --threads 1 [--write embedding_optimizer]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from depth import SYNTHETIC, SYNTHETIC_LOG, prepare_data
from frappe import LOG as FRAPPE_LOG
from frappe import overrides_for, with_settings
from runlog import PINNED, RunLog
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def settings(dataset: str, model: str) -> list[str]:
    return overrides_for(model) if dataset == "frappe" else list(SYNTHETIC)


def interval(differences: list[float]) -> tuple[float, float]:
    """The mean of ``differences`` and the half-width of its 95% t-interval (NaN for one)."""
    mean = statistics.mean(differences)
    if len(differences) < 2:
        return mean, float("nan")
    sem = statistics.stdev(differences) / len(differences) ** 0.5
    return mean, float(stats.t.ppf(0.975, len(differences) - 1)) * sem


def row(model: str, base: list[dict[str, Any]], changed: list[dict[str, Any]]) -> str:
    """One table row from runs paired by position (the same seeds, in order)."""
    auc = [[r["test"]["auc"] for r in runs] for runs in (base, changed)]
    loss = [[r["test"]["logloss"] for r in runs] for runs in (base, changed)]
    d_auc, h_auc = interval([b - a for a, b in zip(*auc, strict=True)])
    d_loss, h_loss = interval([b - a for a, b in zip(*loss, strict=True)])
    epochs = [statistics.mean(r["best_epoch"] for r in runs) for runs in (base, changed)]
    return (
        f"| {model} | {len(base)} | {statistics.mean(auc[0]):.5f} | {statistics.mean(auc[1]):.5f} "
        f"| {d_auc:+.5f} +- {h_auc:.5f} | {d_loss:+.5f} +- {h_loss:.5f} "
        f"| {epochs[0]:.1f} / {epochs[1]:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["frappe", "synthetic"], required=True)
    parser.add_argument("--models", nargs="+", default=["dcnv2", "gdcn_p"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--set", dest="changes", nargs="+", required=True, metavar="KEY=VALUE")
    parser.add_argument("--data", type=Path, default=SHARED / "frappe", help="Frappe folder")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--work", type=Path, default=None, help="default: runs/bench/DATASET")
    parser.add_argument("--logged-only", action="store_true", help="train nothing")
    parser.add_argument("--write", metavar="NAME", help="append the table to results/NAME.md")
    args = parser.parse_args()
    work = args.work or ROOT / "runs" / "bench" / args.dataset
    log = RunLog(FRAPPE_LOG if args.dataset == "frappe" else SYNTHETIC_LOG)
    data = None
    lines = []
    for model in args.models:
        arms = []
        for extra in (args.base, [*args.base, *args.changes]):
            keys = with_settings(settings(args.dataset, model), extra)
            runs = []
            for seed in range(args.seeds):
                record = log.get(model, seed, keys)
                if record is None and not args.logged_only:
                    data = data or prepare_data(args.dataset, work, args.data)
                    record = log.train(data, model, seed, keys, work, threads=args.threads)
                if record is not None:
                    runs.append(record)
                    print(model, seed, " ".join(extra) or "base", f"{record['test']['auc']:.5f}")
            arms.append(runs)
        paired = min(len(arm) for arm in arms)
        if paired:
            lines.append(row(model, arms[0][:paired], arms[1][:paired]))
    header = (
        "| model | seeds | base test AUC | with it | difference (95% CI) | logloss difference "
        "| best epoch base / with |\n|---|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/paired.py " + " ".join(sys.argv[1:])
        study = "the Frappe table (benchmarks/frappe.py)" if args.dataset == "frappe" else None
        section = (
            f"\n## {args.dataset}: {' '.join(args.changes)} against "
            f"{' '.join(args.base) or 'the study settings'}\n\n"
            f"{stamp}; {platform.machine()}, {args.threads or 'all'} thread(s) a run; command "
            f"`{command}`. Study settings: "
            f"{study or ', '.join(SYNTHETIC)}; "
            f"held fixed unless set: {', '.join(PINNED)}. Difference: with minus base, paired "
            "by seed; 95% t-interval over seeds.\n\n" + table + "\n"
        )
        path = RESULTS / f"{args.write}.md"
        with open(path, "a") as handle:
            handle.write(section)


if __name__ == "__main__":
    main()
