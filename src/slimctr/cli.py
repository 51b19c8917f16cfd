"""slimctr: deeper, lighter and explainable click-through-rate models.

The command line is a thin adapter over ``slimctr.api`` and the modules it names. User errors
print one line, ``slimctr: error: ...``, and exit 1; ``--json`` prints one JSON object on stdout
while progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from slimctr import __version__
from slimctr.data.datasets import DATASETS, data_root, locate, with_overrides
from slimctr.data.planted import ROWS as PLANTED_ROWS
from slimctr.data.planted import SUITE
from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.data.store import Store
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.errors import SlimctrError, shown


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a one-line error with exit status 1."""

    def error(self, message: str) -> NoReturn:
        raise SlimctrError(f"{message} (see `{self.prog} --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.run(args) or 0)
    except SlimctrError as exc:
        print(f"slimctr: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("slimctr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `slimctr datasets | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _build_parser() -> _Parser:
    parser = _Parser(prog="slimctr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"slimctr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("prepare", help="encode raw click logs into a columnar store")
    p.add_argument(
        "sources",
        nargs="*",
        type=Path,
        metavar="SOURCE",
        help="raw files (CSV/TSV/Parquet/libfm, gzip allowed) or a dataset folder",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DATA_DIR")
    p.add_argument(
        "--dataset",
        choices=None,
        metavar="NAME",
        help=f"a registered dataset ({', '.join(DATASETS)})",
    )
    p.add_argument("--format", choices=("auto", "csv", "tsv", "parquet", "libfm"))
    p.add_argument("--no-header", dest="header", action="store_const", const=False)
    p.add_argument("--delimiter", metavar="C")
    p.add_argument("--label", metavar="COL", help="label column (default: label)")
    p.add_argument("--categorical", type=_names, metavar="COL,COL...")
    p.add_argument("--numeric", type=_names, metavar="COL,COL...")
    p.add_argument("--drop", type=_names, metavar="COL,COL...")
    p.add_argument(
        "--min-count",
        type=int,
        metavar="N",
        help="values seen fewer times in training map to the field's OOV id",
    )
    p.add_argument(
        "--vocab-from",
        dest="vocabulary_from",
        choices=("train", "all"),
        help="rows whose values form the vocabulary (default: train; unseen -> OOV)",
    )
    p.add_argument(
        "--numeric-encoding",
        choices=("standardize", "bucket"),
        help="numeric columns as standardised floats (default) or Criteo's "
        "floor(ln(v)^2) buckets as categories",
    )
    p.add_argument("--valid", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--test", nargs="+", type=Path, metavar="FILE")
    p.add_argument(
        "--split",
        type=_fractions,
        metavar="TRAIN,VALID,TEST",
        help="random (or --order-by) split of the sources (default 0.8,0.1,0.1)",
    )
    p.add_argument("--order-by", metavar="COL", help="split by the order of a numeric column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a different store in DATA_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=_prepare)

    p = commands.add_parser(
        "datasets", help="list registered datasets and where they are looked for"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_datasets)

    p = commands.add_parser(
        "synth", help="write a synthetic dataset (the default or a preset) and its ground truth"
    )
    p.add_argument(
        "--preset",
        choices=("criteo", *(f"planted:{name}" for name in SUITE)),
        help="criteo: Criteo's 39 table sizes at 45M rows (with prepare --min-count 10), "
        "signal in large fields too; planted:NAME: a generator of the planted-truth suite "
        "that explanations are scored on (docs/results/explain.md)",
    )
    p.add_argument(
        "--rows",
        type=int,
        metavar="N",
        help=f"default {SyntheticConfig.rows:,} ({SyntheticConfig.criteo().rows:,} with the criteo "
        f"preset, {PLANTED_ROWS:,} with a planted one)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help=".parquet, .csv or .tsv (optionally .gz); the truth goes to FILE.truth.json",
    )
    p.add_argument(
        "--numeric", type=int, metavar="N", help=f"default {SyntheticConfig.num_numeric}"
    )
    p.add_argument(
        "--categorical", type=int, metavar="N", help=f"default {SyntheticConfig.num_categorical}"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_synth)

    p = commands.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_models)

    p = commands.add_parser("configs", help="list the shipped configs and what they reached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_configs)

    p = commands.add_parser("train", help="train a model on a prepared store")
    p.add_argument("data", type=Path, metavar="DATA_DIR")
    p.add_argument("--model", required=True, metavar="NAME")
    p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--config",
        metavar="FILE.yaml|NAME",
        help="a YAML config file, or the name of a shipped config (see `slimctr configs`)",
    )
    _add_set(p, "override one setting, e.g. train.epochs=3 or model.num_cross_layers=4")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in RUN_DIR (a finished one is reused)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_train)

    p = commands.add_parser("evaluate", help="AUC and logloss of a finished run or bundle")
    p.add_argument("model", type=Path, metavar="RUN_OR_BUNDLE")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--data", type=Path, metavar="DATA_DIR", help="default: the run's own store")
    p.add_argument(
        "--input", type=Path, metavar="LABELLED_FILE", help="score raw labelled rows instead"
    )
    _columns_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("predict", help="click probabilities for raw rows, in input order")
    p.add_argument("model", type=Path, metavar="RUN_OR_BUNDLE")
    p.add_argument("input", type=Path, metavar="INPUT")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="OUTPUT",
        help=".csv (one 'probability' column) or .parquet",
    )
    _columns_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_predict)

    p = commands.add_parser("export", help="ship a finished run's model: its bundle, or ONNX")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument(
        "--format",
        default="bundle",
        metavar="FORMAT",
        help="bundle (default): the portable model folder that predict and evaluate read; onnx: "
        "model.onnx and sidecar.json, checked against PyTorch on the test split",
    )
    p.add_argument("--data", type=Path, metavar="DATA_DIR", help="the store to check onnx on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_export)

    p = commands.add_parser(
        "compress", help="store a finished run's embedding tables compressed (int8, fp8, PCA...)"
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--codec",
        metavar="CODEC",
        help="fp16, bf16, int8[@row], fp8-e4m3|fp8-e5m2[@row|@field|@blockN], binary, pca:F, "
        "pca:F+CODEC",
    )
    p.add_argument(
        "--dense", choices=["int8"], help="store the dense layers int8 too (one scale per row)"
    )
    p.add_argument("--sweep", action="store_true", help="score every codec: a table and a plot")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the bundle (or sweep)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_compress)

    p = commands.add_parser("serve", help="an HTTP scoring service for a bundle (POST /predict)")
    p.add_argument("bundle", type=Path, metavar="RUN_OR_BUNDLE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes, each with the model")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: all cores)")
    p.add_argument("--max-rows", type=int, default=4096, help="rows a request may hold")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="wait for more requests")
    p.add_argument("--queue-size", type=int, default=256, help="waiting requests before 429")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per request, then 503")
    p.set_defaults(run=_serve)

    p = commands.add_parser("tune", help="tune a model's settings on a store with Optuna")
    p.add_argument("data", type=Path, metavar="DATA_DIR")
    p.add_argument("--model", required=True, metavar="NAME")
    p.add_argument("--trials", required=True, type=int, metavar="N", help="finished trials in all")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S s")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the study; resumable")
    p.add_argument("--config", metavar="FILE.yaml|NAME", help="the base config (as for train)")
    _add_set(p, "fix one setting (it is then not tuned), e.g. train.epochs=10")
    p.add_argument(
        "--objective",
        default="auc",
        metavar="auc|auc,bytes",
        help="auc (default), or auc,bytes: AUC and embedding bytes together (a Pareto front)",
    )
    p.add_argument("--rerun-top", type=int, default=0, metavar="K", help="retrain the best K")
    p.add_argument("--seeds", type=int, default=3, metavar="S", help="seeds of --rerun-top")
    p.add_argument("--seed", type=int, default=0, help="the sampler's and the trials' seed")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_tune)

    p = commands.add_parser("fdo", help="field-level dimension optimisation of a finished run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--ratio",
        dest="ratios",
        action="append",
        type=float,
        default=[],
        metavar="R",
        help="explained-variance ratio in (0, 1] each field's width must keep (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FDO_DIR")
    p.add_argument("--retrain", action="store_true", help="train a fresh model for each plan")
    p.add_argument("--formula", action="store_true", help="add the ceil(6 n_f^0.25) plan")
    p.add_argument(
        "--uniform",
        action="append",
        type=int,
        default=[],
        metavar="W",
        help="add a plan with every field at width W (repeatable)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_fdo)

    p = commands.add_parser("searchers", help="list the dimension searches and what each needs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_searchers)

    p = commands.add_parser(
        "search", help="search per-field embedding widths (see `slimctr searchers`), then retrain"
    )
    p.add_argument("method", metavar="METHOD")
    p.add_argument("source", type=Path, metavar="RUN_DIR|DATA_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="plan.json, run/")
    p.add_argument("--model", metavar="NAME", help="the model, when starting from data")
    p.add_argument("--config", metavar="FILE.yaml|NAME", help="its config, as for train")
    _add_set(p, "search.KEY sets the method (e.g. search.variance_ratio=0.9); model.KEY and "
             "train.KEY the model, when starting from data")  # fmt: skip
    p.add_argument("--retrain", action="store_true", help="train the plan into DIR/run")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_search)

    p = commands.add_parser(
        "explain",
        help="interaction heatmaps, gate importance and model-agnostic attributions, as a report",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_OR_BUNDLE")
    p.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    p.add_argument("--data", type=Path, metavar="DATA_DIR", help="default: the run's own store")
    p.add_argument(
        "--input",
        type=Path,
        metavar="LABELLED_FILE",
        help="draw the instances from raw labelled rows instead (what a bundle needs)",
    )
    _columns_option(p)
    p.add_argument(
        "--method",
        choices=("gates", "captum", "permutation", "all"),
        default="gates",
        help="gates: the model's own gates and heatmap (default); captum: feature ablation per "
        "field; permutation: AUC drop per field and pair interactions; all: side by side, with "
        "their rank agreement",
    )
    p.add_argument(
        "--instances",
        type=int,
        default=10_000,
        metavar="N",
        help="test rows the explanations are computed on (default 10000)",
    )
    p.add_argument(
        "--ratio",
        type=float,
        default=0.95,
        metavar="R",
        help="explained-variance ratio of the FDO widths shown beside importance (default 0.95)",
    )
    p.add_argument(
        "--raw-norms",
        action="store_true",
        help="heatmap block norms not divided by sqrt(d_i d_j) (GDCN spec 5.1's definition; "
        "the default divides, so that fields of different widths compare)",
    )
    p.add_argument(
        "--split",
        choices=("valid", "test"),
        default="test",
        help="the store's split the instances come from (default test)",
    )
    p.add_argument("--seed", type=int, default=0, help="which instances are drawn")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_explain)

    p = commands.add_parser("demo", help="the whole story on the embedded synthetic default")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_demo)
    return parser


def _columns_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--columns",
        type=_names,
        metavar="COL,COL...",
        help="the column names of a headerless CSV input, in order",
    )


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of column names")
    return names


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        train, valid, test = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected three fractions like 0.8,0.1,0.1, got {text!r}"
        ) from None
    return train, valid, test


def _prepare(args: argparse.Namespace) -> int:
    given = {
        "format": args.format,
        "header": args.header,
        "delimiter": args.delimiter,
        "label": args.label,
        "categorical": args.categorical,
        "numeric": args.numeric,
        "drop": args.drop,
        "min_count": args.min_count,
        "vocabulary_from": args.vocabulary_from,
        "split": args.split,
        "numeric_encoding": args.numeric_encoding,
        "order_by": args.order_by,
        "seed": args.seed,
    }
    if args.dataset:
        if args.valid or args.test:
            raise SlimctrError("--valid/--test do not apply to --dataset (it knows its files)")
        located = locate(
            args.dataset, list(args.sources), resplit=args.split is not None, seed=args.seed
        )
        sources, options, attach = located.sources, located.options, located.attach
    else:
        if not args.sources:
            raise SlimctrError("give SOURCE files or --dataset NAME (see `slimctr prepare --help`)")
        sources = Sources(
            train=tuple(args.sources), valid=tuple(args.valid or ()), test=tuple(args.test or ())
        )
        if sources.valid and args.split:
            raise SlimctrError("--split and --valid/--test exclude each other")
        options, attach = PrepareOptions(), {}
    options = with_overrides(options, **given)
    started = time.perf_counter()
    store, built = prepare(sources, args.out, options, overwrite=args.overwrite, attach=attach)
    summary = _store_summary(store)
    if args.json:
        print(json.dumps(summary))
    else:
        verb = f"prepared in {time.perf_counter() - started:.1f} s" if built else "up to date"
        _print_store(store, verb)
    return 0


def _store_summary(store: Store) -> dict[str, Any]:
    return {
        "out": str(store.path),
        "rows": dict(store.manifest["rows"]),
        "label": store.schema.label,
        "fields": [
            {
                "name": f["name"],
                "kind": f["kind"],
                "vocab_size": f.get("vocab_size", 0),
                "transform": f["transform"],
            }
            for f in store.manifest["fields"]
        ],
    }


def _print_store(store: Store, verb: str) -> None:
    rows = store.manifest["rows"]
    print(f"{store.path}: {verb}")
    print(
        f"  rows   train {rows['train']:,}  valid {rows['valid']:,}  test {rows['test']:,}"
        f"  (split: {store.manifest['split']['method']})"
    )
    print(f"  label  {_cell(store.schema.label)}")
    names = [_cell(f["name"]) for f in store.manifest["fields"]]
    width = max(map(len, names))
    for name, f in zip(names, store.manifest["fields"], strict=True):
        size = (
            f"vocab {f['vocab_size']:,}"
            if f["kind"] == "categorical"
            else f"mean {f['mean']:.4g}, std {f['std']:.4g}"
        )
        print(f"  {name:<{width}}  {f['kind']:<11}  {f['transform']:<11}  {size}")


def _cell(name: str) -> str:
    """A column name for a table: as it is, unless it is long or would break the line."""
    return name if name.isprintable() and len(name) <= 40 else shown(name, limit=40)


def _datasets(args: argparse.Namespace) -> int:
    root = data_root()
    rows = [
        {
            "name": d.name,
            "description": d.description,
            "folder": str(root / d.name),
            "looks_for": d.looks_for,
        }
        for d in DATASETS.values()
    ]
    if args.json:
        print(json.dumps({"data_root": str(root), "datasets": rows}))
        return 0
    print(f"datasets (looked for under $SLIMCTR_DATA = {root}, or pass the folder):")
    for row in rows:
        print(f"  {row['name']:<10} {row['description']}")
        print(f"  {'':<10} {row['folder']}/: {row['looks_for']}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    shape = {"num_numeric": args.numeric, "num_categorical": args.categorical}
    given = {name: value for name, value in shape.items() if value is not None}
    if args.preset and given:
        flag = "--" + next(iter(given)).removeprefix("num_")
        raise SlimctrError(f"{flag} conflicts with --preset {args.preset}, which sets it")
    rows = {} if args.rows is None else {"rows": args.rows}  # else the preset's default
    try:
        if args.preset == "criteo":
            config = SyntheticConfig.criteo(**rows, seed=args.seed)
        elif args.preset:
            config = SUITE[args.preset.removeprefix("planted:")].at(args.seed, args.rows)
        else:
            config = SyntheticConfig(**rows, **given, seed=args.seed)
    except ValueError as exc:
        raise SlimctrError(str(exc)) from None
    started = time.perf_counter()
    try:
        truth = write_synthetic(config, args.out)
    except ValueError as exc:
        raise SlimctrError(str(exc)) from None
    result = {
        "out": str(args.out),
        "truth": f"{args.out}.truth.json",
        "rows": config.rows,
        "positive_rate": truth.positive_rate,
        "important_fields": list(truth.important_fields),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"wrote {config.rows:,} rows to {args.out} in {time.perf_counter() - started:.1f} s "
            f"(positive rate {truth.positive_rate:.3f}); ground truth in {result['truth']}"
        )
    return 0


def _models(args: argparse.Namespace) -> int:
    from slimctr.models import MODELS

    if args.json:
        print(json.dumps({name: entry.description for name, entry in MODELS.items()}))
        return 0
    for name, entry in MODELS.items():
        print(f"  {name:<10} {entry.description}")
    return 0


def _configs(args: argparse.Namespace) -> int:
    from slimctr.shipped import shipped_configs

    found = shipped_configs()
    if args.json:
        print(json.dumps({name: config.to_json() for name, config in found.items()}))
        return 0
    for config in found.values():
        print(f"{config.name}: {config.description}\n  numbers from {config.study}")
        for model in config.models:
            reached = config.test_auc.get(model)
            auc = f"test AUC {reached['mean']:.4f} ({reached['seeds']} seeds)" if reached else ""
            print(f"    {model:<10} {auc}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from slimctr.runconfig import resolve_config
    from slimctr.training import run
    from slimctr.training.callbacks import ProgressBar

    config = resolve_config(
        args.model,
        config_file=args.config,
        overrides=args.overrides,
        seed=args.seed,
        threads=args.threads,
    )
    progress = None if args.json else ProgressBar(title=config.model_name)
    metrics = run.train(args.data, args.out, config, resume=args.resume, progress=progress)
    if os.environ.get("RANK", "0") != "0":  # started by torchrun: rank 0 reports for all
        return 0
    text = (
        f"{args.out}: {config.model_name}, best epoch {metrics['best_epoch']}, "
        f"valid AUC {metrics['valid']['auc']:.4f} logloss {metrics['valid']['logloss']:.4f}, "
        f"test AUC {metrics['test']['auc']:.4f} logloss {metrics['test']['logloss']:.4f}, "
        f"{metrics['num_params']:,} parameters, "
        f"{metrics['train_samples_per_s']:,.0f} training samples/s"
    )
    return _report(args, metrics, text)


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _report(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    """One JSON object on stdout with --json, else the human line."""
    print(json.dumps(data) if args.json else text)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from slimctr.training import run

    if args.columns and not args.input:
        raise SlimctrError("--columns names the columns of an --input file; give one")
    scores = run.evaluate(
        args.model, data_dir=args.data, split=args.split, source=args.input, columns=args.columns
    )
    what = args.input or args.split
    text = f"{args.model} on {what}: AUC {scores['auc']:.4f}, logloss {scores['logloss']:.4f}"
    return _report(args, scores, text)


def _predict(args: argparse.Namespace) -> int:
    from slimctr.training import run

    written = run.predict(args.model, args.input, args.out, columns=args.columns)
    if written.ignored:
        print(
            f"slimctr: ignored {len(written.ignored)} column{_s(written.ignored)} of "
            f"{args.input} that the model does not read: "
            f"{', '.join(shown(c) for c in written.ignored[:10])}"
            f"{' ...' if len(written.ignored) > 10 else ''}",
            file=sys.stderr,
        )
    noun = "probability" if written.rows == 1 else "probabilities"
    text = f"wrote {written.rows:,} {noun} to {args.out}"
    data = {"out": str(args.out), "rows": written.rows, "ignored_columns": written.ignored}
    return _report(args, data, text)


def _export(args: argparse.Namespace) -> int:
    from slimctr.training import run

    result = run.export(args.run_dir, args.out, format=args.format, data_dir=args.data)
    text = f"exported to {result['out']}"
    if "check" in result:
        check = result["check"]
        text += (
            f"; ONNX Runtime matches PyTorch on {check['rows']:,} test rows "
            f"(largest difference {check['max_abs_difference']:.1e})"
        )
    return _report(args, result, text)


def _compress(args: argparse.Namespace) -> int:
    import torch

    from slimctr.compress.model import compress, sweep

    if (args.codec is None) == (not args.sweep):
        raise SlimctrError("give --codec CODEC or --sweep")
    if args.dense and args.sweep:
        raise SlimctrError("--dense goes with --codec; the sweep scores table codecs")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep:
        rows = sweep(args.run_dir, args.out)
        text = f"{len(rows)} codecs scored: {args.out / 'sweep.md'}, {args.out / 'sweep.png'}"
        return _report(args, {"sweep": rows}, text)
    result = compress(args.run_dir, args.codec, args.out, dense=args.dense)
    base = result["float32"]
    dense = " with int8 dense layers" if args.dense else ""
    text = (
        f"{args.out}: {args.codec}{dense}, test AUC {result['test']['auc']:.4f} "
        f"(float32 {base['test']['auc']:.4f}), embedding bytes {result['embedding_bytes']:,} "
        f"({base['embedding_bytes'] / result['embedding_bytes']:.1f}x smaller), "
        f"bundle {result['bundle_bytes']:,} bytes"
    )
    return _report(args, result, text)


def _serve(args: argparse.Namespace) -> int:
    from slimctr.serving import ServeConfig, serve
    from slimctr.training import run

    config = ServeConfig(
        max_rows=args.max_rows,
        max_body_bytes=args.max_body_bytes,
        batch_wait_ms=args.batch_wait_ms,
        queue_size=args.queue_size,
        timeout_s=args.timeout_s,
    )
    if args.workers < 1:
        raise SlimctrError(f"--workers must be >= 1, got {args.workers}")
    bundle = run.load_model(args.bundle).path
    print(f"serving {bundle} on http://{args.host}:{args.port} ({args.workers} worker(s))")
    serve(bundle, host=args.host, port=args.port, workers=args.workers, config=config,
          threads=args.threads)  # fmt: skip
    return 0


def _s(items: Sequence[object]) -> str:
    return "" if len(items) == 1 else "s"


def _tune(args: argparse.Namespace) -> int:
    from slimctr.tuning.tune import TuneOptions, tune

    options = TuneOptions(
        trials=args.trials,
        timeout=args.timeout,
        objectives=tuple(o.strip() for o in args.objective.split(",")),
        seed=args.seed,
        rerun_top=args.rerun_top,
        seeds=args.seeds,
        threads=args.threads,
    )
    summary = tune(
        args.data,
        args.model,
        args.out,
        options,
        config_file=args.config,
        overrides=args.overrides,
    )
    best = summary["best"]
    seeds = len(best["seeds"])
    settings = ", ".join(f"{k}={v}" for k, v in best["settings"].items())
    text = (
        f"{args.out}: {summary['trials'].get('complete', 0)} trials complete, "
        f"{summary['trials'].get('pruned', 0)} pruned; best trial {best['trial']}: valid AUC "
        f"{best['valid_auc_mean']:.4f} (mean of {seeds} seed{'s' * (seeds > 1)}), test AUC "
        f"{best['test_auc_mean']:.4f}; {settings}\n"
        f"train it: slimctr train DATA --model {summary['model']} --config {summary['config']}"
    )
    return _report(args, summary, text)


def _searchers(args: argparse.Namespace) -> int:
    from slimctr.search import SEARCHERS

    needs = {"run": "a finished run", "store": "data and --model"}
    found = {
        n: {"starts_from": needs[e.starts_from], "summary": e.summary} for n, e in SEARCHERS.items()
    }
    if args.json:
        print(json.dumps(found))
        return 0
    for name, entry in found.items():
        print(f"  {name:<10} from {entry['starts_from']}: {entry['summary']}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from slimctr.bundle import is_bundle
    from slimctr.config import apply_overrides
    from slimctr.data.store import open_store
    from slimctr.runconfig import resolve_config
    from slimctr.rundir import RECORD
    from slimctr.search import SEARCHERS, Start, train_plan
    from slimctr.training.callbacks import ProgressBar

    if args.method not in SEARCHERS:
        raise SlimctrError(f"unknown search method {args.method!r}; known: {', '.join(SEARCHERS)}")
    entry = SEARCHERS[args.method]
    method = [o.removeprefix("search.") for o in args.overrides if o.startswith("search.")]
    model = [o for o in args.overrides if not o.startswith("search.")]
    if (args.source / RECORD).is_file():
        given = [
            flag for flag, value in (("--model", args.model), ("--config", args.config)) if value
        ]
        if given or model:
            what = given[0] if given else f"--set {model[0]}"
            raise SlimctrError(f"{what}: a search from a run keeps the run's model and settings")
        start = Start.from_run(args.source)
        if args.threads is not None:  # the retrained run's threads: no result depends on them
            config = dataclasses.replace(start.config, threads=args.threads)
            start = dataclasses.replace(start, config=config)
    elif is_bundle(args.source):
        raise SlimctrError(f"{args.source} is a model bundle; a search starts from a finished run")
    elif entry.starts_from == "run":
        raise SlimctrError(f"{args.method} starts from a finished run: {args.source} is not one")
    elif args.model is None:
        raise SlimctrError("give --model NAME to search on data")
    else:
        config = resolve_config(
            args.model, config_file=args.config, overrides=model, threads=args.threads
        )
        start = Start(config, open_store(args.source))
    searcher = entry.searcher(apply_overrides(entry.config(), method, where="search"))
    plan = searcher.fit(start, args.out / "work").plan_
    args.out.mkdir(parents=True, exist_ok=True)
    plan.save(args.out / "plan.json")
    summary: dict[str, Any] = {"plan": str(args.out / "plan.json"), **plan.to_dict()}
    text = (
        f"{args.out / 'plan.json'}: {plan.method}, widths {list(plan.widths.values())}, "
        f"{plan.embedding_params:,} embedding parameters ({plan.embedding_bytes:,} bytes), "
        f"{plan.feature_ratio:.1%} of the feature values kept"
    )
    if plan.masks:
        entries = sum(mask.size for mask in plan.masks.values())
        text += f", {sum(plan.kept_entries.values()) / entries:.1%} of the table entries kept"
    if args.retrain:
        progress = None if args.json else ProgressBar(title=f"{plan.method} plan")
        metrics = train_plan(
            plan, start, args.out / "run", initial=searcher.initial_, progress=progress
        )
        summary |= {"run": str(args.out / "run"), "metrics": metrics}
        text += f"\n{args.out / 'run'}: test AUC {metrics['test']['auc']:.4f}"
    return _report(args, summary, text)


def _fdo(args: argparse.Namespace) -> int:
    from slimctr.search.fdo import fdo
    from slimctr.training.callbacks import ProgressBar

    if not args.ratios and not args.formula and not args.uniform:
        raise SlimctrError("give at least one --ratio R (or --formula, --uniform W)")
    progress = ProgressBar() if args.retrain and not args.json else None
    summaries = fdo(
        args.run_dir,
        args.ratios,
        args.out,
        retrain=args.retrain,
        formula=args.formula,
        uniform=args.uniform,
        progress=progress,
    )
    plans = [
        {
            "name": s["name"],
            "ratio": s["variance_ratio"],
            "dims": s["widths"],
            "embedding_params": s["embedding_params"],
            "model_params": s["model_params"],
            "d_bar": s["d_bar"],
            "k_bar": s["k_bar"],
            "plan": s["plan"],
            "run": s.get("run"),
            "test": s["metrics"]["test"] if "metrics" in s else None,
        }
        for s in summaries
    ]
    lines = [f"  {'plan':<12} {'D-bar':>6} {'K-bar':>6} {'embedding':>11} {'params':>11} test AUC"]
    for plan in plans:
        auc = f"{plan['test']['auc']:.4f}" if plan["test"] else "-"
        lines.append(
            f"  {plan['name']:<12} {plan['d_bar']:>6.2f} {plan['k_bar']:>6.2f} "
            f"{plan['embedding_params']:>11,} {plan['model_params']:>11,} {auc}"
        )
    text = f"plans in {args.out}:\n" + "\n".join(lines)
    return _report(args, {"plans": plans}, text)


def _explain(args: argparse.Namespace) -> int:
    import torch

    from slimctr.compare import METHODS
    from slimctr.report import explain_run

    if not 0 < args.ratio <= 1:
        raise SlimctrError(f"--ratio must be in (0, 1], got {args.ratio}")
    if args.data is not None and args.input is not None:
        raise SlimctrError("give --data DATA_DIR or --input LABELLED_FILE, not both")
    methods = METHODS if args.method == "all" else (args.method,)
    if args.threads:
        torch.set_num_threads(args.threads)
    explanation = explain_run(
        args.run_dir,
        args.out,
        instances=args.instances,
        variance_ratio=args.ratio,
        seed=args.seed,
        data_dir=args.data,
        source=args.input,
        columns=args.columns,
        methods=methods,
        normalise=not args.raw_norms,
        split=args.split,
    )
    page = args.out / "report.html"
    rankings = explanation.rankings
    data = {
        "report": str(page),
        "field_importance": explanation.field_importance(),
        "interactions": [list(pair) for pair in explanation.ranked_pairs()],
        "methods": {} if rankings is None else rankings.fields,
        "method_pairs": {}
        if rankings is None
        else {
            source: [[a, b, score] for (a, b), score in scores.items()]
            for source, scores in rankings.pairs.items()
        },
        "agreement": [] if rankings is None else [list(row) for row in rankings.agreement()],
        "seconds": {} if rankings is None else rankings.seconds,
    }
    return _report(args, data, f"{explanation.summary}\nreport: {page}")


def _demo(args: argparse.Namespace) -> int:
    from slimctr.demo import run_demo

    run_demo(args.out, args.seed, show_store=_print_store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
