"""FDO results: full width against FDO plans, uniform width 8 and the formula rule.

For each dataset (Frappe_x1, the synthetic default), model (GDCN-P, DCNv2) and seed, train the
full-width source model, then `slimctr fdo` it at variance ratios 0.7 / 0.8 / 0.9 / 0.95 / 0.98
plus the uniform-8 and formula plans, retraining each from scratch. Writes docs/results/fdo.md:
test AUC and logloss (mean +- std over seeds), embedding and total parameters, training samples/s
(from each run's epochs) and inference samples/s (scoring the test split once, timed here).

Settings: Frappe as in benchmarks/frappe.py, whose full-width runs are reused (width 10,
embedding L2 0.05, N(0, 1e-4) embeddings, BARS's tuned settings for DCNv2, BARS's schedule), so
that every run ends by early stopping. Runs of earlier versions stay in the log under their own
names: `frappe-cap30` (a 30-epoch cap, where the full and the FDO models were all still improving
and the cap decided the ranking) and `frappe-plateau-rel` (the trainer's old plateau rule, which
cut the learning rate unless validation AUC rose by more than 1e-4 of its best).

Synthetic: width 16, at most 3 epochs with early stopping patience 1 (as in benchmarks/depth.py),
plus N(0, 1e-4) embeddings, embedding L2 0.01 and weight decay 1e-4, so that the rows the data
does not move stay near zero and PCA sees what was learned (GDCN's xavier initialisation leaves
rare rows at their random start, which PCA reads as needing every width).

Run directories are kept under --work (default runs/bench-fdo, not committed) so that an
interrupted study resumes where it stopped; finished rows are logged to
benchmarks/results/fdo_runs.jsonl.

    python benchmarks/fdo.py [--seeds 3] [--datasets synthetic frappe] [--models gdcn_p dcnv2]
                             [--threads N] [--write] [--logged-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from depth import SYNTHETIC, prepare_data
from frappe import SHARED
from frappe import overrides_for as frappe_overrides
from runlog import RunLog, pinned, run_folder

from slimctr.data.synthetic import SyntheticConfig, generate
from slimctr.runconfig import resolve_config
from slimctr.rundir import RunDir, RunState
from slimctr.search.fdo import fdo
from slimctr.training import run
from slimctr.training.trainer import score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "fdo.md"
LOG = ROOT / "benchmarks" / "results" / "fdo_runs.jsonl"
RATIOS = (0.7, 0.8, 0.9, 0.95, 0.98)
UNIFORM = 8
SYNTHETIC_SOURCE = [
    *SYNTHETIC,
    "model.embedding_init_std=0.0001",
    "train.embedding_l2=0.01",
    "train.weight_decay=1e-4",
]


def logged() -> dict[str, dict[str, Any]]:
    return RunLog(LOG).records()


def infer_samples_per_s(run_dir: Path) -> float:
    config, model, store = run.load_run(run_dir)
    started = time.perf_counter()
    score(model, store, "test", batch_size=config.train.eval_batch_size)
    return len(store.split("test")) / (time.perf_counter() - started)


def record(key: str, dataset: str, model: str, seed: int, plan: str, run_dir: Path) -> None:
    metrics = RunDir(run_dir).metrics()
    entry = {
        "key": key,
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "plan": plan,
        "test": metrics["test"],
        "best_epoch": metrics["best_epoch"],
        "num_params": metrics["num_params"],
        "embedding_params": metrics["embedding_params"],
        "embedding_bytes": metrics["embedding_bytes"],
        "train_samples_per_s": metrics["train_samples_per_s"],
        "infer_samples_per_s": infer_samples_per_s(run_dir),
        "revision": RunDir(run_dir).versions()["git_revision"],
        "widths": plan_widths(run_dir),
    }
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def plan_widths(run_dir: Path) -> dict[str, int] | None:
    """The per-field widths an FDO, uniform or formula run was trained with (None: full)."""
    plan = RunDir(run_dir).plan()
    return plan["widths"] if plan else None


def planted_widths(records: list[dict[str, Any]]) -> str:
    """Synthetic default: mean width of the planted important fields against the others."""
    truth, _ = generate(SyntheticConfig(seed=0))  # the study's data; the rows are not drawn
    important = set(truth.important_fields)
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in records:
        if r["dataset"] == "synthetic" and r.get("widths") and r["plan"] != f"uniform-{UNIFORM}":
            inside = [w for f, w in r["widths"].items() if f in important]
            outside = [w for f, w in r["widths"].items() if f not in important]
            means = (statistics.mean(inside), statistics.mean(outside))
            groups.setdefault((r["model"], r["plan"]), []).append(means)
    lines = [
        f"Mean FDO width of the {len(important)} planted important fields "
        f"({', '.join(truth.important_fields)}) and of the other "
        f"{len(truth.unimportant_fields)} fields (source width 16):\n",
        "| model | plan | seeds | planted important | others |",
        "|---|---|---|---|---|",
    ]
    for model, plan in sorted(groups, key=lambda g: (g[0], PLANS.index(g[1]))):
        pairs = groups[model, plan]
        inside = statistics.mean(p[0] for p in pairs)
        outside = statistics.mean(p[1] for p in pairs)
        lines.append(f"| {model} | {plan} | {len(pairs)} | {inside:.1f} | {outside:.1f} |")
    return "\n".join(lines)


PLANS = ["full", *map(str, RATIOS), "formula", f"uniform-{UNIFORM}"]  # in table order
# The target's plan (0.8) and the cheap comparisons first, the formula's wide tables last.
TRAINING_ORDER = ["full", "0.8", f"uniform-{UNIFORM}", "0.95", "0.7", "0.9", "0.98", "formula"]


def source_overrides(dataset: str, model: str) -> list[str]:
    """The full-width source model's settings; every plan is retrained with them."""
    if dataset == "synthetic":
        return list(SYNTHETIC_SOURCE)
    return frappe_overrides(model)


def plan_kwargs(plan: str) -> dict[str, Any]:
    """The ``fdo`` arguments that make (only) this plan."""
    if plan == "formula":
        return {"ratios": [], "formula": True}
    if plan.startswith("uniform-"):
        return {"ratios": [], "uniform": [int(plan.split("-")[1])]}
    return {"ratios": [float(plan)]}


def harvest(args: argparse.Namespace) -> None:
    """Log every finished run under --work that the log lacks (each as soon as it is done)."""
    for dataset in args.datasets:
        for seed in range(args.seeds):
            for model in args.models:
                folder = args.work / "runs" / dataset / f"{model}-{seed}"
                for plan in PLANS:
                    key = f"{dataset} {model} seed={seed} {plan}"
                    run_dir = folder / ("full" if plan == "full" else f"fdo/run-{plan}")
                    finished = RunDir(run_dir).state is RunState.FINISHED
                    if key not in logged() and finished:
                        record(key, dataset, model, seed, plan, run_dir)
                        print(key, flush=True)


def study(args: argparse.Namespace) -> None:
    for dataset in args.datasets:
        data = None
        for seed in range(args.seeds):
            for model in args.models:
                keys = {plan: f"{dataset} {model} seed={seed} {plan}" for plan in PLANS}
                if all(key in logged() for key in keys.values()):
                    continue
                data = data or prepare_data(dataset, args.work, args.data)
                folder = args.work / "runs" / dataset / f"{model}-{seed}"
                overrides = source_overrides(dataset, model)
                config = resolve_config(
                    model, overrides=[*pinned(model), *overrides], seed=seed, threads=args.threads
                )
                if dataset == "frappe" and not (folder / "full").exists():
                    table_run = run_folder(args.table_work, model, seed, overrides)
                    if RunDir(table_run).state is RunState.FINISHED:  # the Frappe table trained it
                        shutil.copytree(table_run, folder / "full")
                run.train(data, folder / "full", config, resume=True)
                for plan in TRAINING_ORDER[1:]:
                    if keys[plan] not in logged():
                        fdo(folder / "full", out=folder / "fdo", retrain=True, **plan_kwargs(plan))
                    harvest(args)
                harvest(args)


def table(records: list[dict[str, Any]], dataset: str) -> str:
    lines = [
        "| model | plan | seeds | test AUC | test logloss | embedding params | total params | "
        "train samples/s | infer samples/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["dataset"] == dataset:
            groups.setdefault((r["model"], r["plan"]), []).append(r)
    order = sorted(groups, key=lambda group: (group[0], PLANS.index(group[1])))
    for model, plan in order:
        runs = groups[model, plan]
        aucs = [r["test"]["auc"] for r in runs]
        losses = [r["test"]["logloss"] for r in runs]
        spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        lines.append(
            f"| {model} | {plan} | {len(runs)} | {statistics.mean(aucs):.4f} +- {spread:.4f} | "
            f"{statistics.mean(losses):.4f} | "
            f"{statistics.mean(r['embedding_params'] for r in runs):,.0f} | "
            f"{statistics.mean(r['num_params'] for r in runs):,.0f} | "
            f"{statistics.mean(r['train_samples_per_s'] for r in runs):,.0f} | "
            f"{statistics.mean(r['infer_samples_per_s'] for r in runs):,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "frappe"])
    parser.add_argument("--models", nargs="+", default=["gdcn_p", "dcnv2"])
    parser.add_argument("--data", type=Path, default=SHARED / "frappe", help="Frappe folder")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-fdo")
    parser.add_argument(
        "--table-work",
        type=Path,
        default=ROOT / "runs" / "bench" / "frappe",
        help="the Frappe table's run folders: a finished full-width run there is reused",
    )
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    parser.add_argument(
        "--logged-only", action="store_true", help="train nothing: log finished runs, tabulate"
    )
    args = parser.parse_args()
    harvest(args)  # runs an earlier, interrupted study finished
    if not args.logged_only:
        study(args)
    records = list(logged().values())
    earlier = sorted({r["dataset"] for r in records} - set(args.datasets))  # e.g. frappe-cap30
    tables = "\n\n".join(f"## {d}\n\n" + table(records, d) for d in args.datasets + earlier)
    if "synthetic" in args.datasets:
        tables += "\n\n## Widths of the planted fields (synthetic)\n\n" + planted_widths(records)
    print(tables)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/fdo.py " + " ".join(sys.argv[1:])
        RESULTS.write_text(
            f"# FDO: full width against FDO plans, uniform width and the formula rule\n\n{stamp}; "
            f"command `{command}`; runs in `benchmarks/results/fdo_runs.jsonl`. Samples/s are "
            "means over runs on a shared 2-vCPU machine, indicative only; same-process speed "
            "ratios against the full model are in `benchmarks/results/fdo_speed_*.md` "
            "(`benchmarks/fdo_speed.py`).\n\n"
            "Source models: on Frappe, the Frappe table's settings and runs "
            "(`benchmarks/frappe.py`; `frappe-cap30`: an earlier 30-epoch cap, under which "
            "every model was still improving; `frappe-plateau-rel`: the trainer's old plateau "
            "rule, which cut the learning rate unless validation AUC rose by more than 1e-4 of "
            "its best); on the synthetic default, "
            f"{', '.join(SYNTHETIC_SOURCE)}. Every FDO, uniform and formula model is trained "
            "from scratch with the source's settings at its widths.\n\n"
            "Reading the widths: a field's FDO width depends on the shape of its table's "
            "spectrum, not on its size. PCA's explained-variance ratio does not change when a "
            "table is scaled, so a field the model ignores, whose rows stay small but random "
            "in every direction, needs as many dimensions as the most used one; fields whose "
            "rows the model has pulled onto a few directions get small widths.\n\n" + tables + "\n"
        )


if __name__ == "__main__":
    main()
