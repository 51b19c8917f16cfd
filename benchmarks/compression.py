"""Post-training compression of embedding tables (issue 19): every codec on trained models.

The source models are the search study's full models (``benchmarks/search.py``: the same runs,
trained there when missing): Frappe with the shipped ``frappe_x1`` settings and the
Criteo-shaped data (``criteo-300k-mc2``) with the untuned defaults, fp32, GDCN-P and DCNv2, 3 seeds.
Each codec of ``CODECS`` compresses each source model (``slimctr.compress.model.compress``),
which is scored on the test split through the unchanged model on the tables it decodes (the
tables stay compressed in memory: nothing is simulated) and written as a bundle, whose files are
measured. The codecs of ``DENSE_CODECS`` also run with the dense layers int8 (cells named
``CODEC+dense-int8``). Every finished cell is logged to benchmarks/results/compression_runs.jsonl.
``--searched`` compresses the search study's retrained models too (cells ``SEARCH_CELL+CODEC``;
``--rebuild`` trains a logged cell again where this machine lacks its run, as runs are not
committed; ``--cells`` keeps only the named cells), and each model's report ends with the cell
of fewest embedding bytes within 0.001 of float32.

``--timing`` measures, for seed 0 and each codec, a fresh process that loads the bundle and
scores the test split: the bytes of the loaded model's parameters and buffers (exact), its RSS
after loading and its peak RSS, and its samples/s (best of 3), against the float32 bundle in the
same job: run it alone on the machine (``--again``: every timed codec, logged ones too, so that
one job has them all).

    python benchmarks/compression.py [--datasets frappe criteo-300k-mc2] [--models gdcn_p dcnv2]
        [--seeds 3] [--threads 1] [--searched [--rebuild] [--cells CELL...]]
        [--timing [--again]] [--write] [--logged-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import search
import torch
from paired import interval
from runlog import cpu_name

from slimctr.compress.model import compress

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "benchmarks" / "results" / "compression_runs.jsonl"
TIMING_LOG = ROOT / "benchmarks" / "results" / "compression_timing.jsonl"
RESULTS = ROOT / "docs" / "results" / "compression.md"
PLOT = ROOT / "docs" / "results" / "compression.png"
CODECS = (
    "fp16",
    "bf16",
    "int8",
    "int8@row",
    "fp8-e4m3",
    "fp8-e4m3@block64",
    "fp8-e4m3@field",
    "fp8-e5m2",
    "fp8-e5m2@field",
    "binary",
    "pca:0.75",
    "pca:0.5",
    "pca:0.25",
    "pca:0.5+fp8-e4m3",
    "pca:0.5+fp8-e4m3@field",
    "pca:0.5+int8",
    "head:0.05:fp16/fp8-e4m3@field",
    "head:0.05:fp16/int8",
)
TIMED = ("float32", "fp16", "int8", "fp8-e4m3@field", "pca:0.5+fp8-e4m3@field",
         "fp8-e4m3@field+dense-int8")  # fmt: skip
# Table codecs also tried with the dense layers int8 (``slimctr.compress.dense``): on Frappe the
# dense layers hold most of a model's bytes.
DENSE_CODECS = ("int8", "fp8-e4m3@field")
DENSE = "+dense-int8"  # how such a cell is named: the table codec, then this
# Searched models compressed (``--searched``): the codecs that lose nothing on the full models.
SEARCHED_CODECS = ("int8", "fp8-e4m3@field", "fp8-e4m3@field" + DENSE)
# Search cells not compressed: masked models are stored sparse already, and the drop cells are
# the search study's check that the largest fields matter, not a search result.
UNCOMPRESSED = ("pep", "dnis", "drop-3")
TARGET = 0.001  # issue 19: the smallest embedding bytes within this of float32's test AUC


def records(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    return {r["key"]: r for r in (json.loads(line) for line in lines if line.strip())}


def log(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def source_run(args: argparse.Namespace, dataset: str, model: str, seed: int) -> Path:
    """The search study's full run of (dataset, model, seed), trained there when missing."""
    where = (dataset, model, seed, "full")
    search.train_cell(args, search.store_of(dataset, args.data), where, rebuild=True)
    return search.run_of(args, where)


def compress_afresh(source: Path, cell: str, bundle: Path) -> dict[str, Any]:
    """``compress`` by ``cell`` (a codec, or one with ``DENSE`` after it) into the bundle folder
    ``bundle`` (what an interrupted try left there is removed first), with the size of its
    ``weights.safetensors`` as ``weight_bytes``."""
    shutil.rmtree(bundle, ignore_errors=True)
    codec = cell.removesuffix(DENSE)
    result = compress(source, codec, bundle, dense="int8" if codec != cell else None)
    return {**result, "weight_bytes": (bundle / "weights.safetensors").stat().st_size}


def study(args: argparse.Namespace) -> None:
    for dataset in args.datasets:
        for seed in range(args.seeds):
            for model in args.models:
                name = f"{dataset} {model} seed={seed}"
                codecs = [*CODECS, *(c + DENSE for c in DENSE_CODECS)]
                missing = [c for c in codecs if f"{name} {c}" not in records(LOG)]
                if missing:  # the source run may have to be trained again first
                    source = source_run(args, dataset, model, seed)
                for codec in missing:
                    key = f"{name} {codec}"
                    bundle = args.work / "compressed" / dataset / f"{model}-{seed}" / codec
                    result = compress_afresh(source, codec, bundle)
                    log(LOG, {
                        "key": key, "dataset": dataset, "model": model, "seed": seed,
                        "codec": codec, "test": result["test"], "valid": result["valid"],
                        "float32_test": result["float32"]["test"],
                        "embedding_bytes": result["embedding_bytes"],
                        "float32_embedding_bytes": result["float32"]["embedding_bytes"],
                        "bundle_bytes": result["bundle_bytes"],
                        "weight_bytes": result["weight_bytes"],
                        "machine": platform.machine(),
                    })  # fmt: skip
                    print(f"{key}: test AUC {result['test']['auc']:.5f}", flush=True)


SCORING = """
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from slimctr.training import run
bundle = run.load_model(sys.argv[1])
tensors = [*bundle.module.parameters(), *bundle.module.buffers()]
held = sum(t.numel() * t.element_size() for t in tensors)
status = open("/proc/self/status").read().split("VmRSS:")[1]
loaded = int(status.split()[0])
from slimctr.data.store import open_store
from slimctr.training.trainer import score
store = open_store(sys.argv[2])
rows = len(store.split("test"))
best = float("inf")
for _ in range(3):
    began = time.perf_counter()
    score(bundle.module, store, "test", batch_size=4096, bf16=bundle.bf16)
    best = min(best, time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"samples_per_s": rows / best, "peak_rss_kib": peak, "model_bytes": held,
                  "loaded_rss_kib": loaded}))
"""


def searched(args: argparse.Namespace) -> None:
    """Compress the search study's retrained models (masked ones are stored sparse already and
    skipped), so that sizes multiply, into bundles; logged against the full float32 model of the
    same seed. Runs are not committed: a cell whose run is not here is trained again with
    ``--rebuild``, else left out (the report keeps the cells with every seed)."""
    found = search.records()
    for dataset in args.datasets:
        for model in args.models:
            runs = [r for r in found.values() if r["dataset"] == dataset and r["model"] == model]
            full = {r["seed"]: r for r in runs if r["cell"] == "full"}
            for cell, seed in sorted(
                (r["cell"], r["seed"]) for r in runs if r["seed"] < args.seeds
            ):
                wanted = not args.cells or cell in args.cells
                if cell == "full" or not _kept(dataset, model, cell) or not wanted:
                    continue
                source = search.run_of(args, (dataset, model, seed, cell))
                name = f"{dataset} {model} seed={seed} {cell}"
                done = records(LOG)
                missing = [c for c in SEARCHED_CODECS if f"{name}+{c}" not in done]
                if missing and not source.is_dir():
                    if not args.rebuild:
                        print(f"{name}: its run is not here to compress (see --rebuild)")
                        continue
                    data = search.store_of(dataset, args.data)
                    search.train_cell(args, data, (dataset, model, seed, cell), rebuild=True)
                for codec in missing:
                    key = f"{name}+{codec}"
                    folder = f"{model}-{seed}/{cell}+{codec}".replace(":", "-")
                    bundle = args.work / "compressed" / dataset / folder
                    result = compress_afresh(source, codec, bundle)
                    log(LOG, {
                        "key": key, "dataset": dataset, "model": model, "seed": seed,
                        "codec": f"{cell}+{codec}", "test": result["test"],
                        "valid": result["valid"], "float32_test": full[seed]["test"],
                        "embedding_bytes": result["embedding_bytes"],
                        "float32_embedding_bytes": full[seed]["embedding_bytes"],
                        "searched_float32_test": result["float32"]["test"],
                        "bundle_bytes": result["bundle_bytes"],
                        "weight_bytes": result["weight_bytes"],
                        "machine": platform.machine(),
                    })  # fmt: skip
                    print(f"{key}: test AUC {result['test']['auc']:.5f}", flush=True)


def _kept(dataset: str, model: str, cell: str) -> bool:
    """Whether the searched ``cell`` is one the study compresses: not a masked or drop cell, and
    for a searcher with variants, the one the search study chose (or a budgeted cell)."""
    method = cell.split(":")[0]
    if method in UNCOMPRESSED:
        return False
    return (
        ":" not in cell or cell in search.BUDGETED or cell == search.chosen(dataset, model, method)
    )


def timing(args: argparse.Namespace) -> None:
    """Peak RSS and scoring samples/s of each timed codec's bundle (seed 0), in fresh
    processes one after another, the float32 bundle among them."""
    for dataset in args.datasets:
        data = search.store_of(dataset, args.data)
        for model in args.models:
            source = source_run(args, dataset, model, 0)
            for codec in TIMED:
                key = f"{dataset} {model} seed=0 {codec} threads={args.threads or 1}"
                logged = "model_bytes" in records(TIMING_LOG).get(key, {})  # older ones lack it
                if logged and not args.again:
                    continue
                bundle = source / "bundle"
                if codec != "float32":
                    bundle = args.work / "compressed" / dataset / f"{model}-0" / codec
                    if not bundle.is_dir():
                        compress_afresh(source, codec, bundle)
                threads = str(args.threads or 1)
                command = [sys.executable, "-c", SCORING, str(bundle), str(data), threads]
                found = json.loads(subprocess.run(command, capture_output=True, text=True,
                                                  check=True).stdout)  # fmt: skip
                log(TIMING_LOG, {"key": key, "dataset": dataset, "model": model, "codec": codec,
                                 "threads": int(threads), "cpu": cpu_name(), **found})  # fmt: skip
                print(f"{key}: {found}", flush=True)


def table(logged: list[dict[str, Any]], dataset: str, model: str) -> list[str]:
    runs = [r for r in logged if r["dataset"] == dataset and r["model"] == model]
    if not runs:
        return []
    base_bytes = statistics.mean(r["float32_embedding_bytes"] for r in runs)
    base_auc = statistics.mean(r["float32_test"]["auc"] for r in runs if r["codec"] in CODECS)
    lines = [
        f"### {dataset}, {model}\n",
        f"float32: test AUC {base_auc:.5f}, {base_bytes:,.0f} embedding bytes.\n",
        "| codec | seeds | test AUC | paired diff to float32 (95% CI) | logloss diff | "
        "embedding bytes | x smaller | bundle bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    combined = sorted({r["codec"] for r in runs} - set(CODECS))  # searched model + codec
    for codec in [*CODECS, *combined]:
        group = [r for r in runs if r["codec"] == codec]
        if not group:
            continue
        diffs = [r["test"]["auc"] - r["float32_test"]["auc"] for r in group]
        losses = [r["test"]["logloss"] - r["float32_test"]["logloss"] for r in group]
        mean, half = interval(diffs)
        ci = f" ({mean - half:+.5f}, {mean + half:+.5f})" if len(diffs) > 1 else ""
        size = statistics.mean(r["embedding_bytes"] for r in group)
        bundles = [r["bundle_bytes"] for r in group if "bundle_bytes" in r]
        bundle = f"{statistics.mean(bundles):,.0f}" if bundles else "-"
        lines.append(
            f"| {codec} | {len(group)} | {statistics.mean(r['test']['auc'] for r in group):.5f} | "
            f"{mean:+.5f}{ci} | {statistics.mean(losses):+.5f} | {size:,.0f} | "
            f"{base_bytes / size:.1f} | {bundle} |"
        )
    lines += ["", _smallest_line(runs, base_bytes)]
    timed = [t for t in records(TIMING_LOG).values()
             if t["dataset"] == dataset and t["model"] == model]  # fmt: skip
    if timed:
        lines += ["", "| codec (seed 0) | threads | scoring samples/s | model bytes in memory "
                  "| RSS after loading MiB | peak RSS MiB | CPU |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {t['codec']} | {t['threads']} | {t['samples_per_s']:,.0f} | "
            f"{_count(t.get('model_bytes'))} | {_count(t.get('loaded_rss_kib'), 1024)} | "
            f"{t['peak_rss_kib'] / 1024:,.0f} | {t['cpu']} |"
            for t in timed
        ]
    return lines


def smallest(runs: list[dict[str, Any]]) -> tuple[str, float, float, float, int] | None:
    """The cell with the fewest embedding bytes (then the smallest bundle) whose mean paired
    test-AUC difference to float32 is within ``TARGET``, among those with the most seeds: its
    name, embedding bytes, bundle bytes, difference and seeds (None: no such cell)."""
    groups = {c: [r for r in runs if r["codec"] == c] for c in sorted({r["codec"] for r in runs})}
    seeds = max(len(g) for g in groups.values())
    within = []
    for codec, group in groups.items():
        size, diff = _point(group)
        if len(group) == seeds and diff >= -TARGET:
            within.append((size, statistics.mean(r["bundle_bytes"] for r in group), codec, diff))
    if not within:
        return None
    size, bundle, codec, diff = min(within)
    return codec, size, bundle, diff, seeds


def _point(group: list[dict[str, Any]]) -> tuple[float, float]:
    """A cell's mean embedding bytes and mean paired test-AUC difference to float32."""
    size = statistics.mean(r["embedding_bytes"] for r in group)
    return size, statistics.mean(r["test"]["auc"] - r["float32_test"]["auc"] for r in group)


def _smallest_line(runs: list[dict[str, Any]], base_bytes: float) -> str:
    found = smallest(runs)
    if found is None:
        return f"No cell with every seed is within {TARGET} of float32's test AUC."
    codec, size, bundle, diff, seeds = found
    return (
        f"Smallest within {TARGET} of float32's test AUC ({seeds} seeds): **{codec}**, "
        f"{size:,.0f} embedding bytes, {base_bytes / size:.1f}x smaller, mean paired difference "
        f"{diff:+.5f}, bundle {bundle:,.0f} bytes."
    )


def _count(value: int | None, unit: int = 1) -> str:
    """``value / unit`` with thousands separators; "-" for a measure an older entry lacks."""
    return "-" if value is None else f"{value / unit:,.0f}"


def plot(logged: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = search.panel_grid(plt, logged)
    for axis, dataset, model in panels:
        runs = [r for r in logged if (r["dataset"], r["model"]) == (dataset, model)]
        for codec in CODECS:
            group = [r for r in runs if r["codec"] == codec]
            if not group:
                continue
            size, diff = _point(group)
            axis.scatter([size], [diff], s=20)
            axis.annotate(
                codec, (size, diff), fontsize=6, xytext=(2, 2), textcoords="offset points"
            )
        _plot_searched(axis, runs)
        base = statistics.mean(r["float32_embedding_bytes"] for r in runs)
        axis.scatter([base], [0.0], marker="*", s=120, color="black", label="float32")
        axis.axhline(-0.0005, color="grey", linestyle=":", linewidth=0.8)
        axis.axhline(-TARGET, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_yscale("symlog", linthresh=1e-4)  # linear within 1e-4 of float32, log beyond
        axis.set_xlabel("embedding bytes stored (log)")
        axis.set_ylabel("test AUC minus float32's (mean over seeds; symlog)")
        axis.set_title(f"{dataset}, {model}")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)


def _plot_searched(axis: Any, runs: list[dict[str, Any]]) -> None:
    """The searched models with compressed tables (``--searched``, the cells with as many seeds
    as the codecs'; their int8-dense twins store the same tables) as grey crosses, and the
    smallest within ``TARGET`` of float32 ringed and named."""
    seeds = max(sum(r["codec"] == c for r in runs) for c in CODECS)
    searched = {r["codec"] for r in runs} - set(CODECS)
    points = []
    for codec in sorted(c for c in searched if not c.endswith(DENSE)):
        group = [r for r in runs if r["codec"] == codec]
        if len(group) == seeds:
            points.append(_point(group))
    if not points:
        return
    sizes, diffs = zip(*points, strict=True)
    axis.scatter(sizes, diffs, marker="x", s=18, color="grey", label="searched + codec")
    found = smallest(runs)
    if found is not None and found[0] in searched:
        codec, size, _, diff, _ = found
        axis.scatter([size], [diff], s=90, facecolors="none", edgecolors="red")
        axis.annotate(f"{codec}: smallest within {TARGET}", (size, diff), fontsize=6,
                      color="red", xytext=(4, -10), textcoords="offset points")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["frappe"])
    parser.add_argument("--models", nargs="+", default=["gdcn_p", "dcnv2"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=search.SHARED / "frappe", help="Frappe folder")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-search")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--timing", action="store_true", help="peak RSS and samples/s, alone")
    parser.add_argument("--again", action="store_true", help="--timing: every codec, logged or not")
    parser.add_argument("--searched", action="store_true", help="compress searched models too")
    parser.add_argument(
        "--rebuild", action="store_true", help="--searched: train again the runs not here"
    )
    parser.add_argument("--cells", nargs="+", help="--searched: only these cells (default: all)")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS} and {PLOT}")
    parser.add_argument("--logged-only", action="store_true", help="compress nothing, tabulate")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.logged_only:
        study(args)
        if args.searched:
            searched(args)
        if args.timing:
            timing(args)
    logged = list(records(LOG).values())
    sections = []
    for dataset in args.datasets:
        for model in args.models:
            sections += [*table(logged, dataset, model), ""]
    text = "\n".join(sections)
    print(text)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/compression.py " + " ".join(sys.argv[1:])
        RESULTS.write_text(
            f"# Compression of embedding tables\n\n{stamp}; command `{command}`; "
            f"{cpu_name()} ({os.cpu_count()} vCPUs), torch {torch.__version__}.\n\n{NOTES}\n\n"
            f"{text}\n"
        )
        plot(logged)


NOTES = """\
Source models: the search study's full models (benchmarks/search.py), fp32. Each codec stores
every categorical table (numeric vectors and first-order weights stay float32); the compressed
model keeps its tables compressed in memory and decodes only the rows a batch gathers, so every
score here is of the real compressed model, not a simulation. Embedding bytes are everything a
decoder needs (codes, scales, minimums and steps, PCA components and means, numeric vectors);
bundle bytes are the whole bundle folder (weights, vocabulary, config, schema). Differences are
test AUC minus the source model's, paired by seed, with a 95% t-interval."""


if __name__ == "__main__":
    main()
