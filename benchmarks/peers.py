"""slimctr against DeepCTR-Torch 0.3.0 on the same generated data, one process at a time.

Setting (issue 15): a synthetic Criteo-like CSV (`slimctr synth`: 13 numeric + 26 categorical
columns), embedding width 16, MLP 400-400-400 with batch norm, 3 cross layers, batch 4096 for
training and scoring, one epoch over the 80% training rows, the same torch thread count.

- slimctr runs its real pipeline: `slimctr prepare` on the CSV, then `slimctr train --set
  train.epochs=1` (its own loader included), then a child that scores the training split.
  Its precision is `train.precision`'s default; where that resolves to bf16, an explicit
  `train.precision=fp32` run follows, the precision the peer computes in.
- DeepCTR-Torch runs its Criteo example's pipeline in one child per model: pandas `read_csv`,
  `LabelEncoder` per categorical column, `MinMaxScaler` on the numeric ones and
  `train_test_split(test_size=0.2)` (timed as "prepare"), then `fit(epochs=1, verbose=0)` and
  `predict` over the training rows. DCNv2 is its `DCN(cross_parameterization="matrix")`.

Every measured child runs alone, with its thread pools capped at `--threads`; its peak RSS comes
from the kernel (wait4). Prints samples/s for both and the ratio slimctr / peer.

What still differs, by the peer's design rather than its settings:
- DeepCTR-Torch feeds each numeric column to the MLP and the cross network as one scalar, slimctr
  as a 16-wide vector like a categorical field: the peer's DCN input is 26 x 16 + 13 = 429 wide
  against 39 x 16 = 624, about 60% of the matrix work (6.3 against 10.4 MFLOP a sample), and its
  DeepFM's FM part sees the 26 categorical fields only.
- The peer keeps its defaults: L2 of 1e-5 on the embeddings, the linear part and the cross
  kernels, added to the loss every step; the loss summed over the batch; a linear part with its
  own width-1 tables; a `TensorDataset` read row by row (its loader).

    pip install -e ".[peers]"
    python benchmarks/peers.py [--rows 1000000] [--threads 2] [--models dcnv2,deepfm,gdcn_p] \
        [--repeats 3] [--write]

This machine's speed drifts by up to 25% over minutes (two identical DCNv2 epochs: 15.0k and
11.8k samples/s, minutes apart), so one run of each can put the ratio anywhere in a wide band:
``--repeats N`` runs peer and slimctr N times each, taking turns, and reports the medians.

With --write, appends the table, machine, CPU flags, versions, date and command to
benchmarks/results/peers.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "peers.md"
NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
BATCH_SIZE = 4096  # both train and score with it; DeepCTR-Torch's predict defaults to 256
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# torch (OpenMP, MKL), polars and pyarrow (which reads OMP_NUM_THREADS) size their pools from these
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS")
SHAPE = ["model.embedding_dim=16", "model.hidden_dims=[400,400,400]"]
SLIMCTR_MODELS = {
    "dcnv2": [*SHAPE, "model.num_cross_layers=3"],
    "deepfm": SHAPE,
    "gdcn_p": [*SHAPE, "model.num_cross_layers=3"],
}
PEER_MODELS = {"dcnv2": "DCN (matrix)", "deepfm": "DeepFM"}  # GDCN is not in DeepCTR-Torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=_models, default=list(SLIMCTR_MODELS))
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each, taking turns; medians reported"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimctr-peers"))
    parser.add_argument("--write", action="store_true")
    # a measured child: this file runs itself so that the parent never imports torch or pandas
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(CHILD_JOBS[job.pop("job")](**job)))
        return
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = _machine(args)
    print(f"Date: {stamp}", *header, sep="\n", flush=True)
    table = _measure_all(args)
    print(table)
    if args.write:
        _write(stamp, header, table)


def _models(text: str) -> list[str]:
    names = text.split(",")
    unknown = sorted(set(names) - set(SLIMCTR_MODELS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(SLIMCTR_MODELS)}")
    return names


# -- the parent: runs every measurement in turn ----------------------------------------------------


def _measure_all(args: argparse.Namespace) -> str:
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = _synthetic_csv(args.workdir, args.rows)
    store, prepare = _slimctr_prepare(source, args)
    lines = [
        "| model (slimctr / DeepCTR-Torch) | DeepCTR-Torch train / infer samples/s | precision | "
        "slimctr train / infer samples/s | ratio train / infer (slimctr / peer) | "
        "peak RSS GiB peer / slimctr | held-out AUC peer / slimctr |",
        "|---|---|---|---|---|---|---|",
    ]
    peer_prepare = []
    for model in args.models:
        # peer and slimctr take turns, so that a slow spell of the machine hits both
        peers, ours = [], []
        for _ in range(args.repeats):
            if model in PEER_MODELS:
                peers.append(_peer(source, model, args))
            ours.append(_slimctr_runs(store, model, args))
        peer_prepare += peers
        peer = _median(peers) if peers else None
        for runs in zip(*ours, strict=True):  # the default precision, then fp32 if different
            lines.append(_row(model, peer, _median(list(runs))))
            print(lines[-1], flush=True)
    lines.append(_prepare_row(args.rows, prepare, peer_prepare))
    return "\n".join(lines)


def _synthetic_csv(workdir: Path, rows: int) -> Path:
    source = workdir / f"synthetic-{rows}.csv"
    if not source.is_file():
        command = [_slimctr(), "synth", "--rows", str(rows), "--out", str(source)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return source


def _slimctr_prepare(source: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    store = args.workdir / f"store-{args.rows}"
    shutil.rmtree(store, ignore_errors=True)  # a real prepare every time, never a reused store
    # --vocab-from all: the peer's LabelEncoder numbers every value of every row, so both get
    # embedding tables of the same size (dense Adam's cost per step grows with them)
    command = [_slimctr(), "prepare", str(source), "--numeric", ",".join(NUMERIC)]
    command += ["--vocab-from", "all", "--out", str(store), "--json"]
    _, child = _measure(command, args, args.workdir / "slimctr-prepare.log")
    return store, child


def _slimctr_runs(store: Path, model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    default = _slimctr_model(store, model, args, None)
    if default["precision"] == "fp32":
        return [default]
    return [default, _slimctr_model(store, model, args, "fp32")]


def _slimctr_model(
    store: Path, model: str, args: argparse.Namespace, precision: str | None
) -> dict[str, Any]:
    """Train one epoch through `slimctr train`, then score the training split in a second child."""
    out = args.workdir / f"run-{model}-{precision or 'default'}"
    shutil.rmtree(out, ignore_errors=True)
    settings = [*SLIMCTR_MODELS[model], "train.epochs=1", f"train.batch_size={BATCH_SIZE}"]
    settings = ["train.preset=paper", *settings]  # no embedding L2, as the peer and earlier runs
    settings += [f"train.precision={precision}"] if precision else []
    command = [_slimctr(), "train", str(store), "--model", model, "--out", str(out)]
    command += ["--threads", str(args.threads), "--json"]
    command += [arg for setting in settings for arg in ("--set", setting)]
    metrics, trained = _measure(command, args, args.workdir / f"{out.name}.log")
    job = {"job": "score", "run_dir": str(out), "threads": args.threads}
    scored, scoring = _measure(_child(job), args, args.workdir / f"{out.name}-score.log")
    return {
        "precision": metrics["precision"],
        "train": metrics["train_samples_per_s"],
        "infer": scored["infer"],
        "rss": max(trained["rss"], scoring["rss"]),
        "auc": metrics["valid"]["auc"],
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over repeated runs; peak memory is the largest, other values the
    first run's."""
    merged = dict(runs[0])
    for key, value in merged.items():
        if isinstance(value, float):
            values = [run[key] for run in runs]
            merged[key] = max(values) if key == "rss" else statistics.median(values)
    return merged


def _peer(source: Path, model: str, args: argparse.Namespace) -> dict[str, Any]:
    job = {"job": "peer", "source": str(source), "model": model, "threads": args.threads}
    result, child = _measure(_child(job), args, args.workdir / f"peer-{model}.log")
    return {**result, "rss": child["rss"]}


def _measure(
    command: list[str], args: argparse.Namespace, log: Path
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run one child alone: its last stdout line (JSON), and its wall seconds and peak RSS (GiB).
    Its stderr and any other output go to ``log``."""
    os.sync()  # writeback of the files just written would otherwise run during the measurement
    environment = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(args.threads))}
    with open(log, "w") as output:
        started = time.perf_counter()
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=output, text=True, env=environment
        )
        assert child.stdout is not None
        lines = child.stdout.read().splitlines()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        output.write("\n".join(lines))
    if child.returncode != 0 or not lines:
        sys.exit(f"failed (exit {child.returncode}): {' '.join(command)}; see {log}")
    return json.loads(lines[-1]), {"seconds": seconds, "rss": usage.ru_maxrss / 2**20}


def _child(job: dict[str, Any]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]


def _slimctr() -> str:
    return str(Path(sys.executable).with_name("slimctr"))


# -- the table ------------------------------------------------------------------------------------


def _row(model: str, peer: dict[str, Any] | None, ours: dict[str, Any]) -> str:
    theirs = peer or dict.fromkeys(ours)
    ratio = {k: ours[k] / theirs[k] if peer else None for k in ("train", "infer")}
    cells = [
        f"{model} / {PEER_MODELS.get(model, '-')}",
        _pair(theirs["train"], theirs["infer"], ",.0f"),
        ours["precision"],
        _pair(ours["train"], ours["infer"], ",.0f"),
        _pair(ratio["train"], ratio["infer"], ".2f"),
        _pair(theirs["rss"], ours["rss"], ".2f"),
        _pair(theirs["auc"], ours["auc"], ".4f"),
    ]
    return "| " + " | ".join(cells) + " |"


def _prepare_row(rows: int, ours: dict[str, float], peers: list[dict[str, Any]]) -> str:
    """slimctr's process wall time (interpreter start and imports included) against the peer's
    pandas preprocessing alone, in its fastest child; the ratio is of rows/s, as above."""
    peer = min(peers, key=lambda p: p["prepare"], default=None)
    seconds, rss = (peer["prepare"], peer["prepare_rss"]) if peer else (None, None)
    cells = [
        f"prepare {rows:,} rows",
        "-" if seconds is None else f"{seconds:.1f} s",
        "",
        f"{ours['seconds']:.1f} s",
        "-" if seconds is None else f"{seconds / ours['seconds']:.2f}",
        _pair(rss, ours["rss"], ".2f"),
        "",
    ]
    return "| " + " | ".join(cells) + " |"


def _pair(first: float | None, second: float | None, spec: str) -> str:
    """``first / second`` in format ``spec``; a missing figure is "-"."""
    return " / ".join("-" if value is None else format(value, spec) for value in (first, second))


def _machine(args: argparse.Namespace) -> list[str]:
    """The machine, its CPU flags, the versions, the setting and the command, one per line."""
    with open("/proc/cpuinfo") as info:
        lines = info.read().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    present = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS)
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return [
        f"Machine: {names[0] if names else 'unknown CPU'}, {os.cpu_count()} CPUs; {present}",
        f"Versions: torch {version('torch')}, deepctr-torch {version('deepctr-torch')}, "
        f"slimctr {revision or 'unknown revision'}",
        f"Setting: {args.rows:,} rows, {args.threads} threads, batch {BATCH_SIZE}, "
        f"median of {args.repeats} run(s) each, taking turns",
        "Command: `python benchmarks/peers.py " + " ".join(sys.argv[1:]) + "`",
    ]


def _write(stamp: str, header: list[str], table: str) -> None:
    if not RESULTS.is_file():
        RESULTS.write_text(
            "# slimctr against DeepCTR-Torch (issue 15)\n\n"
            "Written by `benchmarks/peers.py`; its docstring gives the setting.\n"
        )
    with open(RESULTS, "a") as results:
        results.write(f"\n## {stamp}\n\n" + "  \n".join(header) + f"\n\n{table}\n")


# -- the children ---------------------------------------------------------------------------------


def _score_job(run_dir: str, threads: int) -> dict[str, float]:
    """Score a finished run's training split with its own loader, in the precision it trained in;
    scores only, as the peer's ``predict`` (no AUC)."""
    import torch

    from slimctr.data.loader import BatchLoader
    from slimctr.training import run
    from slimctr.training.trainer import predict_logits, resolve_precision

    torch.set_num_threads(threads)
    config, model, store = run.load_run(Path(run_dir))
    bf16 = resolve_precision(config.train.precision) == "bf16"
    rows = len(store.split("train"))
    started = time.perf_counter()
    predict_logits(model, BatchLoader(store, "train", batch_size=BATCH_SIZE), rows, bf16=bf16)
    return {"infer": rows / (time.perf_counter() - started)}


def _peer_job(source: str, model: str, threads: int) -> dict[str, float]:
    """DeepCTR-Torch's Criteo example end to end, with this benchmark's shape, Adam and batch."""
    import resource

    import torch
    from sklearn.metrics import roc_auc_score

    _without_version_check()
    from deepctr_torch.models import DCN, DeepFM

    torch.set_num_threads(threads)
    started = time.perf_counter()
    train, held_out, columns = _peer_prepare(source)
    prepare = time.perf_counter() - started
    prepare_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # slimctr's MLP has batch norm; everything not set here is DeepCTR-Torch's default
    shape = {"dnn_hidden_units": (400, 400, 400), "dnn_use_bn": True, "device": "cpu"}
    if model == "dcnv2":
        net = DCN(columns, columns, cross_num=3, cross_parameterization="matrix", **shape)
    else:
        net = DeepFM(columns, columns, **shape)
    net.compile("adam", "binary_crossentropy")  # Adam, lr 1e-3: slimctr's optimiser
    inputs = {name: train[name] for name in [*NUMERIC, *CATEGORICAL]}
    started = time.perf_counter()
    # verbose=0: at 1 or 2 (the example's) fit computes sklearn metrics on every batch
    net.fit(inputs, train["label"].to_numpy(), batch_size=BATCH_SIZE, epochs=1, verbose=0)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    net.predict(inputs, batch_size=BATCH_SIZE)
    infer_seconds = time.perf_counter() - started
    held_out_inputs = {name: held_out[name] for name in inputs}
    scores = net.predict(held_out_inputs, batch_size=BATCH_SIZE)
    return {
        "prepare": prepare,
        "prepare_rss": prepare_rss,
        "train": len(train) / train_seconds,
        "infer": len(train) / infer_seconds,
        "auc": float(roc_auc_score(held_out["label"], scores)),
    }


def _peer_prepare(source: str) -> tuple[Any, Any, list[Any]]:
    """The preprocessing of DeepCTR-Torch's Criteo example, at width 16."""
    import pandas as pd
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder, MinMaxScaler

    data = pd.read_csv(source)
    data[CATEGORICAL] = data[CATEGORICAL].fillna("-1")
    data[NUMERIC] = data[NUMERIC].fillna(0)
    for column in CATEGORICAL:
        data[column] = LabelEncoder().fit_transform(data[column])
    data[NUMERIC] = MinMaxScaler(feature_range=(0, 1)).fit_transform(data[NUMERIC])
    columns = [SparseFeat(c, data[c].nunique(), embedding_dim=16) for c in CATEGORICAL]
    columns += [DenseFeat(c, 1) for c in NUMERIC]
    train, held_out = train_test_split(data, test_size=0.2, random_state=2020)
    return train, held_out, columns


def _without_version_check() -> None:
    """Importing deepctr_torch starts a thread that asks PyPI for a newer release
    (`deepctr_torch.utils.check_version`): a network call racing the timed code, or hanging
    where there is no network. Make it fail at once; the thread then prints a notice and ends."""
    import requests

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise requests.ConnectionError("no version check during a benchmark")

    requests.get = offline


CHILD_JOBS: dict[str, Callable[..., dict[str, float]]] = {"score": _score_job, "peer": _peer_job}


if __name__ == "__main__":
    main()
