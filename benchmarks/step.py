"""What one training step costs, and what each change to it saves, measured in one process.

On one prepared store (by default the 1M-row Criteo-like store that ``benchmarks/peers.py``
prepares), each variant trains ``--steps`` steps of the same model from the same weights and
batches, after ``--warmup`` steps; the variants take turns, ``--rounds`` times, and the median
round counts. Steps are timed with the loader included (the next batch is part of a step's
cost). Variants:

- ``adam``: dense Adam on whole tables (the default embedding optimiser);
- ``lazy_adam``: SparseAdam on the rows a batch touches (``train.embedding_optimizer=lazy_adam``);
- ``lazy_adam+prefetch``: the same, the next batch read by a background thread (``prefetched``,
  here only: it was measured and not adopted);
- ``adam+compile``: dense Adam, the model's forward wrapped in ``torch.compile`` (inductor cannot
  compile the backward of sparse embedding gradients: "Cannot access storage of
  SparseTensorImpl", so it is measured against dense Adam).

Then torch.profiler records ``--profile-steps`` steps of the default (dense Adam) and the
heaviest operators by self CPU time are listed. ``--write`` appends the tables, machine, CPU
flags and command to benchmarks/results/step.md.

    python benchmarks/step.py [--store PATH] [--model dcnv2] [--threads 2] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from slimctr.data.batch import Batch
from slimctr.data.store import open_store
from slimctr.nn.embedding import FieldEmbedding
from slimctr.runconfig import build_model, resolve_config
from slimctr.training.trainer import Trainer, _cpu_flags, resolve_precision

RESULTS = Path(__file__).parent / "results" / "step.md"
WIDE = ["model.embedding_dim=16", "model.hidden_dims=[400,400,400]"]  # benchmarks/peers.py's
SETTINGS = {
    "dcnv2": [*WIDE, "model.num_cross_layers=3"],
    "deepfm": WIDE,
    "gdcn_p": [*WIDE, "model.num_cross_layers=3"],
}
T = TypeVar("T")
VARIANTS = ("adam", "adam+compile", "lazy_adam", "lazy_adam+prefetch", "lazy_adam+compile")


def trainer_for(store_path: Path, model: str, variant: str, args: argparse.Namespace) -> Trainer:
    optimizer = variant.split("+")[0]
    overrides = [*SETTINGS[model], f"train.embedding_optimizer={optimizer}", *args.overrides]
    overrides = ["train.preset=paper", *overrides]  # the protocol of the committed results
    config = resolve_config(model, overrides=overrides, threads=args.threads)
    store = open_store(store_path)
    trainer = Trainer(build_model(config, store.schema), store, config.train, seed=0)
    if variant.endswith("+compile"):
        for module in trainer.model.modules():  # lookups stay eager: their gradients are sparse
            if isinstance(module, FieldEmbedding):
                module.flat = torch.compiler.disable(module.flat)  # type: ignore[method-assign]
                module.forward = torch.compiler.disable(module.forward)  # type: ignore[method-assign]
        trainer.model.forward = torch.compile(trainer.model.forward)  # type: ignore[method-assign]
    return trainer


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items``, produced up to ``depth`` ahead by a background thread: the next batch is read
    from the store while the model computes on this one (numpy's gathers and torch's kernels
    release the GIL). Measured, not adopted: the loader is under 1% of a step (results/step.md).
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(kind: str, value: Any) -> bool:
        """Queue one message unless the consumer has stopped; whether it was queued."""
        while not stop.is_set():
            try:
                ready.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over("item", item):
                    return
            hand_over("done", None)
        except BaseException as exc:  # raised in the consumer
            hand_over("error", exc)

    thread = threading.Thread(target=produce, name="slimctr-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def batches(trainer: Trainer, variant: str) -> Iterator[Batch]:
    trainer.model.train()
    loader: Iterator[Batch] = iter(trainer.loader)
    return prefetched(loader) if variant.endswith("+prefetch") else loader


def timed_steps(trainer: Trainer, source: Iterator[Batch], steps: int) -> float:
    """Seconds for ``steps`` steps, the loader's time included."""
    started = time.perf_counter()
    for batch in itertools.islice(source, steps):
        trainer.step(batch)
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> list[str]:
    trainers = {v: trainer_for(args.store, args.model, v, args) for v in args.variants}
    sources = {v: batches(t, v) for v, t in trainers.items()}
    for variant, trainer in trainers.items():
        timed_steps(trainer, sources[variant], args.warmup)
    seconds: dict[str, list[float]] = {v: [] for v in trainers}
    for _ in range(args.rounds):
        for variant, trainer in trainers.items():
            seconds[variant].append(timed_steps(trainer, sources[variant], args.steps))
    batch = trainers[args.variants[0]].config.batch_size
    base = statistics.median(seconds[args.variants[0]])
    lines = [
        f"| variant | ms per step (median of {args.rounds}) | samples/s | speed vs "
        f"{args.variants[0]} |",
        "|---|---|---|---|",
    ]
    for variant, values in seconds.items():
        median = statistics.median(values)
        lines.append(
            f"| {variant} | {1000 * median / args.steps:.1f} | "
            f"{batch * args.steps / median:,.0f} | {base / median:.2f}x |"
        )
    return lines


def profile_steps(args: argparse.Namespace) -> list[str]:
    """The heaviest operators of ``--profile-steps`` default steps, by self CPU time."""
    trainer = trainer_for(args.store, args.model, "adam", args)
    source = batches(trainer, "adam")
    timed_steps(trainer, source, args.warmup)
    step: Callable[[Batch], float] = trainer.step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            with record_function("loader: next batch"):
                batch = next(source)
            with record_function("step"):
                step(batch)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    return ["```", table.strip(), "```"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/slimctr-peers/store-1000000"))
    parser.add_argument("--model", choices=sorted(SETTINGS), default="dcnv2")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    precision = resolve_precision(
        resolve_config(args.model, overrides=args.overrides).train.precision
    )
    lines = measure(args)
    print("\n".join(lines), flush=True)
    profiled = profile_steps(args) if args.profile_steps else []
    print("\n".join(profiled))
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        flags = sorted(_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
        header = (
            f"\n## {args.model}, {stamp}\n\n{platform.processor() or platform.machine()}, CPU "
            f"flags {', '.join(flags) or 'none of note'}, {args.threads} threads, {precision}; "
            f"store `{args.store}`; command `python benchmarks/step.py "
            f"{' '.join(sys.argv[1:])}`.\n\n"
        )
        with open(RESULTS, "a") as handle:
            handle.write(header + "\n".join(lines) + "\n\nProfile of the default:\n\n")
            handle.write("\n".join(profiled) + "\n")


if __name__ == "__main__":
    main()
