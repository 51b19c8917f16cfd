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

from slimctr.attribution import pair_interactions, precision_at_k, rank_correlation, ranking, ranks
from slimctr.compare import (
    GATE_LAYERS,
    GATE_SCORE,
    LAYERS_MEANING,
    PAIR_LAYERS,
    Rankings,
    compare,
    gate_fields,
    heatmap_pairs,
)
from slimctr.data.batch import Batch
from slimctr.data.planted import HELD_OUT, ROWS, SUITE, TUNE, scored_pairs
from slimctr.data.prepare import PrepareOptions
from slimctr.data.store import Store, open_store
from slimctr.data.synthetic import GroundTruth, write_synthetic
from slimctr.explain import GATE_SCORES, GATES, LAYER_AGGREGATES, gather, sample_rows, supported
from slimctr.runconfig import resolve_config
from slimctr.training import run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-explain"
LOG = ROOT / "benchmarks" / "results" / "explain_suite_runs.jsonl"
PAIRS_LOG = ROOT / "benchmarks" / "results" / "explain_suite_pairs.jsonl"
REPORT = ROOT / "docs" / "results" / "explain.md"
MODELS = {
    "gdcn_p": ("gdcn_p", []),
    "gdcn_p-tiny": ("gdcn_p", ["model.embedding_init_std=0.0001"]),
    "dcnv2": ("dcnv2", []),
}
INSTANCES = 10_000
AGNOSTIC = ("captum", "permutation")
PAIR_REPEATS, PAIR_ROWS = 3, 5_000  # the rescored permutation pairs (``--pairs``)
FRAPPE_RUNS = ROOT / "runs" / "bench-search" / "frappe"  # benchmarks/search.py's full models


def records(log: Path = LOG) -> dict[str, dict[str, Any]]:
    if not log.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, log.read_text().splitlines())}


def log(record: dict[str, Any], rankings: Rankings) -> None:
    """Append ``record`` to the log, with the methods' times and agreement, the defaults it ran
    under, the CPU and the date."""
    record |= {
        "seconds": rankings.seconds,
        "agreement": rankings.agreement(),
        "defaults": [GATE_SCORE, GATE_LAYERS, PAIR_LAYERS],
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
    }
    with LOG.open("a") as file:
        file.write(json.dumps(record) + "\n")


def test_rows(store: Store, seed: int) -> Batch:
    """The ``INSTANCES`` test rows (all, when fewer) every method of a run explains."""
    return gather(store, "test", np.sort(sample_rows(store, "test", INSTANCES, seed)))


def store_for(generator: str, seed: int) -> tuple[Path, GroundTruth]:
    """The generator's rows at ``seed``, prepared once (as the synthetic dataset is)."""
    from slimctr import api

    config = SUITE[generator].at(seed)
    folder = WORK / "data" / f"{generator}-{seed}-{config.rows}"
    rows, store = folder / "rows.parquet", folder / "store"
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
    size = SUITE[generator].config.rows
    key = f"{generator} {model} seed={seed} rows={size}"
    if key in records():
        return
    store_path, truth = store_for(generator, seed)
    name, overrides = MODELS[model]
    config = resolve_config(
        name, overrides=["train.precision=fp32", *overrides], seed=seed, threads=threads
    )
    folder = WORK / f"{generator}-{seed}-{size}" / model
    began = time.perf_counter()
    metrics = run.train(store_path, folder, config, resume=True)
    trained_s = time.perf_counter() - began
    torch.set_num_threads(threads)
    module = run.load_model(folder).module
    store = open_store(store_path)
    batch = test_rows(store, seed)
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
        "rows": size,
        "model": model,
        "test_auc": metrics["test"]["auc"],
        "bayes_auc": truth.bayes_auc,
        "train_seconds": trained_s,
        "instances": len(batch),
        "cells": cells,
    }
    log(record, rankings)
    shown = ["gates:mean:mean", f"gates:{GATE_SCORE}:{GATE_LAYERS}", f"heatmap:{PAIR_LAYERS}"]
    parts = [
        f"{cell} " + "/".join(f"{v:.2f}" for k, v in cells[cell].items() if k.endswith("precision"))
        for cell in [*shown, "captum", "permutation"]
        if cell in cells
    ]
    print(f"{key}: test AUC {metrics['test']['auc']:.4f}; " + "; ".join(parts), flush=True)


def rescore_pairs(record: dict[str, Any], threads: int) -> None:
    """The permutation pair statistic of a logged suite run again, with more shuffles of more
    rows (``PAIR_REPEATS`` of ``PAIR_ROWS``) than compare's default (one of 2,000), logged to
    ``PAIRS_LOG``."""
    key = f"{record['key']} pairs={PAIR_REPEATS}x{PAIR_ROWS}"
    if key in records(PAIRS_LOG):
        return
    generator, seed, model = record["generator"], record["seed"], record["model"]
    store_path, truth = store_for(generator, seed)
    folder = WORK / f"{generator}-{seed}-{record['rows']}" / model
    torch.set_num_threads(threads)
    module = run.load_model(folder).module
    store = open_store(store_path)
    batch = test_rows(store, seed)
    began = time.perf_counter()
    sample = batch.rows(slice(0, PAIR_ROWS))
    pairs = pair_interactions(module, sample, store.schema, repeats=PAIR_REPEATS, seed=seed)
    found = scored({}, pairs, truth) | {"key": key, "of": record["key"]}
    found |= {"seconds": time.perf_counter() - began, "rows": len(sample)}
    with PAIRS_LOG.open("a") as file:
        file.write(json.dumps(found | {"repeats": PAIR_REPEATS}) + "\n")
    print(f"{key}: pair precision {found['pair_precision']:.2f}", flush=True)


def explain_frappe(model: str, seed: int, threads: int) -> None:
    """Every method on a Frappe run of the search study (nothing planted: what they say)."""
    key = f"frappe {model} seed={seed}"
    if key in records():
        return
    folder = FRAPPE_RUNS / f"{model}-{seed}" / "full"
    torch.set_num_threads(threads)
    bundle = run.load_model(folder)
    store = open_store(run.training_store(folder))
    batch = test_rows(store, seed)
    rankings = compare(bundle.module, batch, store.schema, seed=seed)
    gates = None
    if GATES in supported(bundle.module):
        means = gate_fields(bundle.module, batch, store.schema, "mean", "mean")
        variants = {
            f"{score}:{layers}": gate_fields(bundle.module, batch, store.schema, score, layers)
            for score in GATE_SCORES
            for layers in LAYER_AGGREGATES
        }
        gates = {
            "spread": max(means.values()) - min(means.values()),
            "means": means,
            "variants": variants,
            "rho": {
                variant: {m: rank_correlation(scores, rankings.fields[m]) for m in AGNOSTIC}
                for variant, scores in variants.items()
            },
        }
    record = {
        "key": key,
        "generator": "frappe",
        "seed": seed,
        "model": model,
        "test_auc": bundle.metrics.get("test", {}).get("auc"),
        "fields": rankings.fields,
        "pairs": {s: [[a, b, v] for (a, b), v in p.items()] for s, p in rankings.pairs.items()},
        "mean_gates": gates,
    }
    log(record, rankings)
    print(f"{key}: " + "; ".join(f"{m} top {ranking(f)[:3]}" for m, f in rankings.fields.items()))


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def cell_mean(runs: list[dict[str, Any]], cell: str, metric: str) -> tuple[float, int]:
    """Mean of ``metric`` of ``cell`` over the runs that have it, and how many do."""
    values = [r["cells"][cell][metric] for r in runs if metric in r["cells"].get(cell, {})]
    return mean(values), len(values)


def mean_rank(runs: list[dict[str, Any]], cell: str, ranks: str) -> float:
    return mean([mean(r["cells"][cell][ranks]) for r in runs if ranks in r["cells"].get(cell, {})])


def choose(runs: list[dict[str, Any]], cells: list[str], metric: str, ranks: str) -> list[tuple]:
    """Each cell's mean ``metric`` and mean planted rank over ``runs``, best first (higher
    precision, then lower rank)."""
    scored = [(c, *cell_mean(runs, c, metric), mean_rank(runs, c, ranks)) for c in cells]
    return sorted(scored, key=lambda row: (-row[1], row[3]))


def fmt(value: float, count: int | None = None) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:.2f}" + ("" if count is None else f" ({count})")


def report() -> str:
    suite = [r for r in records().values() if r["generator"] in SUITE]
    rescored = f"permutation:{PAIR_REPEATS}x{PAIR_ROWS}"
    for r in suite:
        again = records(PAIRS_LOG).get(f"{r['key']} pairs={PAIR_REPEATS}x{PAIR_ROWS}")
        if again is not None:
            r["cells"][rescored] = {k: again[k] for k in ("pair_precision", "pair_ranks")}
            r["seconds"][rescored] = again["seconds"]
    logged = [r for r in suite if r["rows"] == ROWS]
    easy = [r for r in suite if r["rows"] != ROWS]
    tune = [r for r in logged if r["role"] == "tune"]
    held = [r for r in logged if r["role"] == "held-out"]
    gated = ("gdcn_p", "gdcn_p-tiny")
    gate_cells = [f"gates:{s}:{a}" for s in GATE_SCORES for a in LAYER_AGGREGATES]
    pair_cells = [f"heatmap:{a}" for a in LAYER_AGGREGATES]
    cpus = sorted({r["cpu"] for r in logged})
    lines = [
        "# Explanations against planted truth (issue 21)",
        "",
        f"Generated by `python benchmarks/explain_suite.py --report` from "
        f"`benchmarks/results/explain_suite_runs.jsonl` ({len(logged)} runs, "
        f"{', '.join(cpus)}, one thread a run).",
        "",
        f"Protocol: each generator of `slimctr.data.planted.SUITE` writes {ROWS:,} rows (16 "
        "categorical fields with log-spaced cardinalities, a few count fields encoded as Criteo "
        "buckets, `prepare` as the synthetic dataset: min count 2, split 80/10/10); the model "
        "trains with slimctr's untuned defaults in fp32; every method explains the same test rows"
        " (all of them: 5,000). Precision@k: the share of the k planted items among the top k (k "
        "= how many were planted); a pair that is only part of a planted triple is left out of "
        "the pair ranking (it does interact). Models: `gdcn_p`, `gdcn_p-tiny` (GDCN-P with N(0, "
        "1e-4) embeddings, BARS's initialisation, under which every gate starts at 0.5) and "
        "`dcnv2` (no gates: heatmap, captum and permutation only). Cells show the mean and, in "
        "brackets, the number of runs.",
        "",
        *easy_paragraph(easy),
        "## The suite",
        "",
        "| generator | role | what makes it hard | Bayes AUC | "
        + " | ".join(f"{m} test AUC" for m in MODELS)
        + " |",
        "|---|---|---|---|" + "---|" * len(MODELS),
    ]
    for name, generator in SUITE.items():
        runs = [r for r in logged if r["generator"] == name]
        aucs = [mean([r["test_auc"] for r in runs if r["model"] == m]) for m in MODELS]
        lines.append(
            f"| {name} | {generator.role} | {generator.hard} | "
            f"{fmt(mean([r['bayes_auc'] for r in runs]))} | "
            + " | ".join("-" if a != a else f"{a:.4f}" for a in aucs)
            + " |"
        )
    lines += [
        "",
        "## Choosing the gate score and the layer aggregate on the tuning generators",
        "",
        f"Tuning generators: {', '.join(TUNE)}. Field precision@k of every gate score "
        "(`slimctr.explain.GATE_SCORES`: `mean` is the spec's gate importance, `centred` the "
        "mean distance of the gates from 0.5, `spread` their standard deviation over "
        "instances, `term` the size of the gated cross term that flows) and layer aggregate, "
        "and the mean rank of the planted fields (lower is better).",
        "",
        "| gate score : layers | gdcn_p | gdcn_p-tiny | both | mean planted rank |",
        "|---|---|---|---|---|",
    ]
    tune_gated = [r for r in tune if r["model"] in gated]
    for cell, value, count, rank in choose(
        tune_gated, gate_cells, "field_precision", "field_ranks"
    ):
        by_model = [cell_mean([r for r in tune if r["model"] == m], cell, "field_precision")
                    for m in gated]  # fmt: skip
        lines.append(
            f"| {cell.removeprefix('gates:')} | {fmt(*by_model[0])} | {fmt(*by_model[1])} | "
            f"{fmt(value, count)} | {fmt(rank)} |"
        )
    lines += [
        "",
        "Pairs: the heatmap's pair strengths (normalised block norms) per layer aggregate, "
        "pair precision@k on the tuning generators, every model.",
        "",
        "| heatmap layers | pair precision@k | mean planted rank |",
        "|---|---|---|",
    ]
    for cell, value, count, rank in choose(tune, pair_cells, "pair_precision", "pair_ranks"):
        lines.append(f"| {cell.removeprefix('heatmap:')} | {fmt(value, count)} | {fmt(rank)} |")
    chosen_gates = f"gates:{GATE_SCORE}:{GATE_LAYERS}"
    chosen_pairs = f"heatmap:{PAIR_LAYERS}"
    methods = [("gates (spec: mean gate)", "gates:mean:mean"), (f"gates ({GATE_SCORE}, "
               f"{LAYERS_MEANING[GATE_LAYERS]})", chosen_gates), ("captum", "captum"),
               ("permutation", "permutation")]  # fmt: skip
    pair_methods = [
        (f"heatmap ({LAYERS_MEANING[PAIR_LAYERS]})", chosen_pairs),
        ("permutation (1 shuffle of 2,000 rows)", "permutation"),
        (f"permutation ({PAIR_REPEATS} shuffles of {PAIR_ROWS:,} rows)", rescored),
    ]
    lines += [
        "",
        f"slimctr's defaults (`slimctr.compare`), the best of each table by precision@k, then "
        f"by mean planted rank: gate score `{GATE_SCORE}` of the {LAYERS_MEANING[GATE_LAYERS]}"
        f"; heatmap {LAYERS_MEANING[PAIR_LAYERS]}.",
        "",
        "## Held-out generators",
        "",
        f"Held-out generators: {', '.join(HELD_OUT)}: scored only, nothing was chosen on them.",
        "",
        "| generator | model | "
        + " | ".join(f"fields: {n}" for n, _ in methods)
        + " | "
        + " | ".join(f"pairs: {n}" for n, _ in pair_methods)
        + " |",
        "|---|---|" + "---|" * (len(methods) + len(pair_methods)),
    ]
    for name in [*HELD_OUT, *TUNE]:
        for model in MODELS:
            runs = [r for r in logged if r["generator"] == name and r["model"] == model]
            if not runs:
                continue
            cells = [fmt(*cell_mean(runs, c, "field_precision")) for _, c in methods]
            pairs = [fmt(*cell_mean(runs, c, "pair_precision")) for _, c in pair_methods]
            role = "" if name in HELD_OUT else " (tuning)"
            lines.append(f"| {name}{role} | {model} | " + " | ".join(cells + pairs) + " |")
    lines += [
        "",
        "## Across the suite",
        "",
        "Mean precision@k over every run (generators x seeds x models that have the method); "
        "held-out generators alone beside it.",
        "",
        "| method | field precision@k, all | held-out | pair precision@k, all | held-out | "
        f"seconds on {mean([r['instances'] for r in logged]):,.0f} rows |",
        "|---|---|---|---|---|---|",
    ]
    seconds = {
        "gates:mean:mean": "gates", chosen_gates: "gates", "captum": "captum",
        "permutation": "permutation", chosen_pairs: "gates", rescored: rescored,
    }  # fmt: skip
    for label, cell in [*methods, pair_methods[0], pair_methods[2]]:
        spent = mean([r["seconds"][seconds[cell]] for r in logged if seconds[cell] in r["seconds"]])
        lines.append(
            f"| {label} | {fmt(*cell_mean(logged, cell, 'field_precision'))} | "
            f"{fmt(*cell_mean(held, cell, 'field_precision'))} | "
            f"{fmt(*cell_mean(logged, cell, 'pair_precision'))} | "
            f"{fmt(*cell_mean(held, cell, 'pair_precision'))} | {fmt(spent)} |"
        )
    best_fields = max(methods, key=lambda m: cell_mean(logged, m[1], "field_precision")[0])
    best_pairs = max(pair_methods, key=lambda m: cell_mean(logged, m[1], "pair_precision")[0])
    field_best = cell_mean(logged, best_fields[1], "field_precision")[0]
    pair_best = cell_mean(logged, best_pairs[1], "pair_precision")[0]
    lines += [
        "",
        f"Best on fields: {best_fields[0]} ({field_best:.2f}; target 0.9: "
        f"{'met' if field_best >= 0.9 else 'not met'}). Best on pairs: {best_pairs[0]} "
        f"({pair_best:.2f}; target 0.8: {'met' if pair_best >= 0.8 else 'not met'}). The "
        "README's Explainable section says what the numbers mean.",
    ]
    lines += ["", "## The issue's planted data, imitated (`issue` generator)", ""]
    for model in MODELS:
        runs = [r for r in logged if r["generator"] == "issue" and r["model"] == model]
        for r in sorted(runs, key=lambda r: r["seed"]):
            parts = [
                f"{label} fields ranked {r['cells'][cell]['field_ranks']}"
                for label, cell in methods
                if "field_ranks" in r["cells"].get(cell, {})
            ] + [
                f"{label} pairs ranked {r['cells'][cell]['pair_ranks']}"
                for label, cell in pair_methods
                if "pair_ranks" in r["cells"].get(cell, {})
            ]
            lines.append(f"- {model}, seed {r['seed']}: " + "; ".join(parts) + ".")
    lines += [
        "",
        "## Agreement between methods",
        "",
        "Mean Spearman rho between the methods' scores (every field, every pair), per model.",
        "",
        "| model | what | methods | mean rho | runs |",
        "|---|---|---|---|---|",
    ]
    for model in MODELS:
        pairs: dict[tuple[str, str, str], list[float]] = {}
        for r in logged:
            if r["model"] == model:
                for what, a, b, rho in r["agreement"]:
                    if rho is not None:
                        pairs.setdefault((what, a, b), []).append(rho)
        for (what, a, b), rhos in pairs.items():
            lines.append(f"| {model} | {what} | {a} vs {b} | {mean(rhos):.2f} | {len(rhos)} |")
    lines += frappe_section([r for r in records().values() if r["generator"] == "frappe"])
    lines.append("")
    return "\n".join(lines)


def easy_paragraph(runs: list[dict[str, Any]]) -> list[str]:
    """What the first, larger version of the suite showed (why the suite has fewer rows)."""
    if not runs:
        return []
    cells = [c for r in runs for c in r["cells"].values() if "field_precision" in c]
    pairs = [c for r in runs for c in r["cells"].values() if "pair_precision" in c]
    perfect = (
        sum(c["field_precision"] == 1 for c in cells),
        sum(c["pair_precision"] == 1 for c in pairs),
    )
    names = sorted({f"{r['generator']} {r['model']} seed {r['seed']}" for r in runs})
    return [
        f"The suite first had {runs[0]['rows']:,} rows per generator. On its first "
        f"{len(runs)} runs ({', '.join(names)}), {perfect[0]} of {len(cells)} field rankings "
        f"(every method and variant) had precision@k 1 and {perfect[1]} of {len(pairs)} pair "
        "rankings: a suite on which everything is right chooses nothing, so it was cut to "
        f"{ROWS:,} rows (those runs stay in the log).",
        "",
    ]


def frappe_section(runs: list[dict[str, Any]]) -> list[str]:
    """What the methods say on Frappe (shipped ``frappe_x1`` settings), where nothing is
    planted: each method's field order, the spread of the spec's mean gates, the top pairs and
    the methods' agreement."""
    if not runs:
        return []
    lines = [
        "",
        "## Frappe: nothing planted, what the methods say",
        "",
        "The full models of the search study (`benchmarks/search.py`, shipped `frappe_x1` "
        "settings, 3 seeds), 10,000 test rows each. Fields in each method's order, most "
        "important first.",
        "",
        "| model | seed | test AUC | method | fields, most important first |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["model"], r["seed"])):
        for method, scores in r["fields"].items():
            lines.append(
                f"| {r['model']} | {r['seed']} | {fmt(r['test_auc'] or float('nan'))} | "
                f"{method} | {', '.join(ranking(scores))} |"
            )
    lines += ["", "| model | seed | source | top 5 pairs |", "|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["model"], r["seed"])):
        for source, pairs in r["pairs"].items():
            top = sorted(pairs, key=lambda row: -row[2])[:5]
            shown = ", ".join(f"{a} x {b}" for a, b, _ in top)
            lines.append(f"| {r['model']} | {r['seed']} | {source} | {shown} |")
    gated = [r for r in runs if r.get("mean_gates") and "rho" in r["mean_gates"]]
    if gated:
        lines += [
            "",
            "Every gate score against the model-agnostic methods on Frappe (GDCN-P): Spearman "
            "rho of the field scores, mean over seeds.",
            "",
            "| gate score : layers | rho with captum | rho with permutation |",
            "|---|---|---|",
        ]
        for variant in gated[0]["mean_gates"]["rho"]:
            rhos = [
                mean([r["mean_gates"]["rho"][variant][m] for r in gated
                      if r["mean_gates"]["rho"][variant][m] is not None])
                for m in AGNOSTIC
            ]  # fmt: skip
            lines.append(f"| {variant} | {fmt(rhos[0])} | {fmt(rhos[1])} |")
    spreads = [r["mean_gates"]["spread"] for r in runs if r.get("mean_gates")]
    lines += [
        "",
        "Spread (largest minus smallest) of the spec's mean field-wise gate, GDCN-P: "
        + ", ".join(f"{v:.4f}" for v in spreads)
        + " (the explain summary calls a ranking flat below 0.005).",
        "",
        "| model | what | methods | rho per seed |",
        "|---|---|---|---|",
    ]
    by: dict[tuple[str, str, str, str], list[str]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        for what, a, b, rho in r["agreement"]:
            by.setdefault((r["model"], what, a, b), []).append("-" if rho is None else f"{rho:.2f}")
    for (model, what, a, b), rhos in sorted(by.items()):
        lines.append(f"| {model} | {what} | {a} vs {b} | {', '.join(rhos)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=[*TUNE, *HELD_OUT], choices=list(SUITE))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frappe", action="store_true", help="the Frappe runs instead")
    parser.add_argument(
        "--pairs", action="store_true", help="rescore the logged runs' permutation pairs"
    )
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        REPORT.write_text(report())
        print(f"wrote {REPORT}")
        return
    if args.pairs:
        logged = [r for r in records().values() if r.get("rows") == ROWS]
        for record in sorted(logged, key=lambda r: (r["seed"], r["generator"], r["model"])):
            if record["generator"] in args.generators and record["model"] in args.models:
                rescore_pairs(record, args.threads)
        return
    if args.frappe:
        for seed in range(args.seeds):
            for model in ("gdcn_p", "dcnv2"):
                explain_frappe(model, seed, args.threads)
        return
    for seed in range(args.seeds):
        for generator in args.generators:
            for model in args.models:
                run_cell(generator, seed, model, args.threads)


if __name__ == "__main__":
    main()
