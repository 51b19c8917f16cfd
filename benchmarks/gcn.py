"""GCN's gap on Frappe_x1 (issue 16): which settings the gated cross network alone needs.

GCN (GDCN without its MLP) reaches 0.9381 with the Frappe table's settings (the shipped config
`frappe_x1`: width 10, embeddings N(0, 1e-4), embedding L2 0.05, BARS's schedule), barely above
LR, while BARS's CrossNet-V2 reaches 0.9729 and the GDCN paper reports GCN above every stacked
baseline. This study trains GCN under variants of those settings, one change at a time, and
CN-V2 (DCNv2 with no MLP) beside it under the same ones; then the best variant's depth curve.

Stage 1 (``--stage variants``): every variant, seeds 0..S-1 (default 3). Stage 2 (``--stage
depth``): the variant named by --best at 1, 2, 3, 4, 6 and 8 layers, 3 seeds. Runs share the
Frappe table's log (benchmarks/results/frappe_runs.jsonl), so the table's own GCN runs count.

    python benchmarks/gcn.py --stage variants [--seeds 3] [--variants NAME ...] [--write]
    python benchmarks/gcn.py --stage depth --best xavier-no-l2 [--write]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

from frappe import GCN_BEFORE, LOG, SHARED, overrides_for, with_settings
from runlog import RunLog

from slimctr.data.datasets import locate
from slimctr.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "gcn.md"
XAVIER = "model.embedding_init_std=null"  # GDCN's own default: xavier-uniform per field
# name -> settings changed from the table's (each model's frappe_x1 config)
VARIANTS = {
    "table": [],
    "no-l2": ["train.embedding_l2=0"],
    "l2-0.005": ["train.embedding_l2=0.005"],
    "xavier": [XAVIER],
    "xavier-no-l2": [XAVIER, "train.embedding_l2=0"],
    "xavier-no-l2-16": [XAVIER, "train.embedding_l2=0", "model.embedding_dim=16"],
    # BARS's CrossNet-V2 run (reczoo/BARS ranking/ctr/DCNv2/CrossNetv2_frappe_x1): L2 0.001,
    # 4 layers
    "l2-0.001": ["train.embedding_l2=0.001"],
    "l2-0.001-4": ["train.embedding_l2=0.001", "model.num_cross_layers=4"],
    "xavier-l2-0.001": [XAVIER, "train.embedding_l2=0.001"],
    "xavier-l2-0.001-patient": [
        XAVIER,
        "train.embedding_l2=0.001",
        "train.plateau_patience=2",
        "train.early_stopping_patience=4",
    ],
}
DEPTHS = (1, 2, 3, 4, 6, 8)
GCN_DEPTH = 3  # GCN's default depth, the depth of the variants
CN_V2 = "model.hidden_dims=[]"  # DCNv2's cross network alone, at GCN's depth (3 unless varied)


def overrides(model: str, variant: str, depth: int | None = None) -> list[str]:
    """GCN, or CN-V2 (``cnv2``), with the variant's settings on the table's."""
    if model == "cnv2":
        base = with_settings(overrides_for("dcnv2"), [CN_V2, "model.num_cross_layers=3"])
        base = [o for o in base if not o.startswith(("model.dropout", "model.batch_norm"))]
    else:
        base = list(GCN_BEFORE)  # the base every variant changes
    settings = with_settings(base, VARIANTS[variant])
    if depth is None or (model == "gcn" and depth == GCN_DEPTH):  # the variants' own runs
        return settings
    return with_settings(settings, [f"model.num_cross_layers={depth}"])


def summary(runs: list[dict]) -> str:
    aucs = [r["test"]["auc"] for r in runs]
    spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    epochs = statistics.mean(r["best_epoch"] for r in runs)
    return f"{statistics.mean(aucs):.4f} +- {spread:.4f} ({len(aucs)}; best epoch {epochs:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("variants", "depth"), default="variants")
    parser.add_argument("--best", choices=sorted(VARIANTS), help="the variant of the depth curve")
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), help="stage variants: only these"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SHARED / "frappe")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "frappe")
    parser.add_argument("--logged-only", action="store_true")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args()
    if args.stage == "depth" and not args.best:
        parser.error("--stage depth needs --best VARIANT")
    log = RunLog(LOG)
    if args.stage == "variants":
        jobs = [(m, v, None) for v in args.variants or VARIANTS for m in ("gcn", "cnv2")]
    else:
        jobs = [(m, args.best, d) for d in DEPTHS for m in ("gcn", "cnv2")]
    if not args.logged_only:
        located = locate("frappe", [args.data])
        store, _ = prepare(located.sources, args.work / "data" / "frappe", located.options)
        for seed in range(args.seeds):
            for model, variant, depth in jobs:
                name = "dcnv2" if model == "cnv2" else model
                keys = overrides(model, variant, depth)
                log.train(store.path, name, seed, keys, args.work, threads=args.threads)
    lines = ["| variant | settings changed | depth | GCN test AUC | CN-V2 test AUC |"]
    lines.append("|---|---|---|---|---|")
    for _, variant, depth in jobs[::2]:
        cells = []
        for model in ("gcn", "cnv2"):
            name = "dcnv2" if model == "cnv2" else model
            keys = overrides(model, variant, depth)
            runs = [r for s in range(args.seeds) if (r := log.get(name, s, keys))]
            cells.append(summary(runs) if runs else "-")
        changed = ", ".join(VARIANTS[variant]) or "(the table's)"
        lines.append(f"| {variant} | {changed} | {depth or 3} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/gcn.py " + " ".join(sys.argv[1:])
        section = f"## {args.stage}\n\n{stamp}; command `{command}`.\n\n{table}\n"
        text = RESULTS.read_text() if RESULTS.is_file() else "# GCN's gap on Frappe_x1\n"
        start = text.find(f"\n## {args.stage}\n")  # the stage's earlier section is replaced
        if start < 0:
            RESULTS.write_text(text + "\n" + section)
            return
        end = text.find("\n## ", start + 1)
        RESULTS.write_text(text[: start + 1] + section + ("" if end < 0 else text[end:]))


if __name__ == "__main__":
    main()
