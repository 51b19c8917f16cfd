"""Issue 21's study: do the explanations recover planted truth, and how do they compare?

For every generator of the planted-truth suite (``slimctr.data.planted.SUITE``), seed and model,
this trains the model with slimctr's untuned defaults (fp32), draws ``INSTANCES`` test rows, runs
every explanation method on them and logs, per ranking, the precision@k and the rank of each
planted item (``benchmarks/results/explain_suite_runs.jsonl``; a finished cell is never rerun).
Models: GDCN-P; GDCN-P with N(0, 1e-4) embeddings (``gdcn_p-tiny``, the BARS initialisation,
under which every gate starts at 0.5); DCNv2 (heatmap, captum and permutation: it has no gates).

Every gate score x layer aggregate and every heatmap layer aggregate is logged, so the report
chooses them on the ``tune`` generators and scores the choice on the ``held-out`` ones. With
``--frappe`` it explains the Frappe runs of the search study instead (nothing planted there:
the methods' agreement and their top fields). ``--report`` writes docs/results/explain.md.

    python benchmarks/explain_suite.py [--generators pairs ...] [--models gdcn_p ...]
        [--seeds 3] [--threads 1] [--frappe] [--report]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from runlog import cpu_name

from slimctr.attribution import precision_at_k, ranking, ranks
from slimctr.compare import (
    GATE_LAYERS,
    GATE_SCORE,
    PAIR_LAYERS,
    compare,
    gate_fields,
    heatmap_pairs,
)
from slimctr.data.planted import HELD_OUT, SUITE, TUNE, scored_pairs
from slimctr.data.prepare import PrepareOptions
from slimctr.data.store import open_store
from slimctr.data.synthetic import GroundTruth, write_synthetic
from slimctr.explain import GATE_SCORES, GATES, LAYER_AGGREGATES, gather, sample_rows, supported
from slimctr.runconfig import resolve_config
from slimctr.training import run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-explain"
LOG = ROOT / "benchmarks" / "results" / "explain_suite_runs.jsonl"
REPORT = ROOT / "docs" / "results" / "explain.md"
MODELS = {
    "gdcn_p": ("gdcn_p", []),
    "gdcn_p-tiny": ("gdcn_p", ["model.embedding_init_std=0.0001"]),
    "dcnv2": ("dcnv2", []),
}
INSTANCES = 10_000


def records() -> dict[str, dict[str, Any]]:
    if not LOG.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, LOG.read_text().splitlines())}


def store_for(generator: str, seed: int) -> tuple[Path, GroundTruth]:
    """The generator's rows at ``seed``, prepared once (as the synthetic dataset is)."""
    from slimctr import api

    folder = WORK / "data" / f"{generator}-{seed}"
    rows, store = folder / "rows.parquet", folder / "store"
    config = SUITE[generator].at(seed)
    if not (store / "manifest.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_synthetic(config, rows)
        options = PrepareOptions(
            numeric=tuple(config.numeric_columns), numeric_encoding="bucket", min_count=2, seed=seed
        )
        api.prepare(rows, store, options=options, overwrite=True)
    return store, GroundTruth.from_json(f"{rows}.truth.json")


def scored(fields: dict[str, float], pairs: dict[Any, float] | None, truth: GroundTruth) -> dict:
    """Precision@k and the planted items' ranks of a field scoring (and a pair scoring)."""
    ranked = ranking(fields) if fields else None
    found: dict[str, Any] = {}
    if ranked is not None:
        found |= {
            "field_precision": precision_at_k(ranked, truth.important_fields),
            "field_ranks": ranks(ranked, truth.important_fields),
        }
    if pairs is not None:
        ordered = scored_pairs(ranking(pairs), truth)
        found |= {
            "pair_precision": precision_at_k(ordered, truth.pairs),
            "pair_ranks": ranks(ordered, truth.pairs),
        }
    return found


def run_cell(generator: str, seed: int, model: str, threads: int) -> None:
    key = f"{generator} {model} seed={seed}"
    if key in records():
        return
    store_path, truth = store_for(generator, seed)
    name, overrides = MODELS[model]
    config = resolve_config(
        name, overrides=["train.precision=fp32", *overrides], seed=seed, threads=threads
    )
    folder = WORK / f"{generator}-{seed}" / model
    began = time.perf_counter()
    metrics = run.train(store_path, folder, config, resume=True)
    trained_s = time.perf_counter() - began
    torch.set_num_threads(threads)
    module = run.load_model(folder).module
    store = open_store(store_path)
    batch = gather(store, "test", np.sort(sample_rows(store, "test", INSTANCES, seed)))
    schema = store.schema
    rankings = compare(module, batch, schema, seed=seed)
    cells: dict[str, dict[str, Any]] = {}
    if GATES in supported(module):
        for score in GATE_SCORES:
            for layers in LAYER_AGGREGATES:
                fields = gate_fields(module, batch, schema, score, layers)
                cells[f"gates:{score}:{layers}"] = scored(fields, None, truth)
    for layers in LAYER_AGGREGATES:
        cells[f"heatmap:{layers}"] = scored({}, heatmap_pairs(module, schema, layers), truth)
    for method in ("captum", "permutation"):
        cells[method] = scored(rankings.fields[method], rankings.pairs.get(method), truth)
    record = {
        "key": key,
        "generator": generator,
        "role": SUITE[generator].role,
        "seed": seed,
        "model": model,
        "test_auc": metrics["test"]["auc"],
        "bayes_auc": truth.bayes_auc,
        "train_seconds": trained_s,
        "instances": len(batch),
        "cells": cells,
        "seconds": rankings.seconds,
        "agreement": rankings.agreement(),
        "defaults": [GATE_SCORE, GATE_LAYERS, PAIR_LAYERS],
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
    }
    with LOG.open("a") as log:
        log.write(json.dumps(record) + "\n")
    shown = ["gates:mean:mean", f"gates:{GATE_SCORE}:{GATE_LAYERS}", f"heatmap:{PAIR_LAYERS}"]
    parts = [
        f"{cell} " + "/".join(f"{v:.2f}" for k, v in cells[cell].items() if k.endswith("precision"))
        for cell in [*shown, "captum", "permutation"]
        if cell in cells
    ]
    print(f"{key}: test AUC {metrics['test']['auc']:.4f}; " + "; ".join(parts), flush=True)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def report() -> str:
    logged = [r for r in records().values() if r["generator"] in SUITE]
    lines = [
        "# Explanations against planted truth (issue 21)",
        "",
        f"Generated by `python benchmarks/explain_suite.py --report` from "
        f"`benchmarks/results/explain_suite_runs.jsonl` ({len(logged)} runs).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=[*TUNE, *HELD_OUT], choices=list(SUITE))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        REPORT.write_text(report())
        print(f"wrote {REPORT}")
        return
    for seed in range(args.seeds):
        for generator in args.generators:
            for model in args.models:
                run_cell(generator, seed, model, args.threads)


if __name__ == "__main__":
    main()
