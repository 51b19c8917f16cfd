"""Training and inference speed of FDO models against their full-width source, in one process.

Issue 5's target: the model retrained at variance ratio 0.8 trains at least 1.5x faster than the
full-width one. Separate runs on a shared 2-vCPU machine time the machine's load as much as the
models, so this script builds the full model and each plan's model from one finished run and
passes the same training batches through each, interleaved, for several rounds: a slow moment
hits every model alike, and the ratio to the full model is the result. A training step is the
trainer's own (`Trainer.step`: forward, loss with the embedding L2, backward, Adam); inference is
a forward pass without gradients. The models are freshly initialised: speed does not depend on
the weights.

    python benchmarks/fdo_speed.py RUN_DIR [--ratio 0.8 0.95] [--uniform 8] [--steps 8]
        [--rounds 5] [--threads 1] [--write NAME]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from slimctr.data.loader import BatchLoader
from slimctr.runconfig import build_model
from slimctr.search.fdo import FDO, FDOConfig, uniform_plan
from slimctr.search.runner import Start, config_for_plan
from slimctr.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished full-width run")
    parser.add_argument("--ratio", type=float, nargs="+", default=[0.8, 0.95])
    parser.add_argument("--uniform", type=int, nargs="*", default=[8])
    parser.add_argument("--steps", type=int, default=8, help="timed batches per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", metavar="NAME", help="write benchmarks/results/NAME.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    start = Start.from_run(args.run_dir)
    config, store = start.config, start.store
    plans = {f"FDO {r}": FDO(FDOConfig(variance_ratio=r)).fit(start).plan_ for r in args.ratio}
    plans |= {f"uniform {w}": uniform_plan(store.schema, w) for w in args.uniform}
    configs = {"full": config} | {
        name: config_for_plan(config, p.widths) for name, p in plans.items()
    }
    loader = BatchLoader(store, "train", batch_size=config.train.batch_size)
    rng = np.random.default_rng(0)
    rows = store.split("train")
    batches = [
        loader.gather(rng.integers(rows.start, rows.stop, config.train.batch_size))
        for _ in range(args.steps)
    ]
    train: dict[str, list[float]] = {name: [] for name in configs}
    infer: dict[str, list[float]] = {name: [] for name in configs}
    params: dict[str, int] = {}
    trainers = {}
    for name, cfg in configs.items():
        model = build_model(cfg, store.schema)
        params[name] = sum(p.numel() for p in model.parameters())
        trainers[name] = Trainer(model, store, cfg.train, seed=0)
        trainers[name].step(batches[0])  # warm-up: allocate Adam state and buffers
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            trainer.model.train()
            started = time.perf_counter()
            for batch in batches:
                trainer.step(batch)
            train[name].append(len(batches) * len(batches[0]) / (time.perf_counter() - started))
            trainer.model.eval()
            started = time.perf_counter()
            with torch.no_grad():
                for batch in batches:
                    trainer.model(batch)
            infer[name].append(len(batches) * len(batches[0]) / (time.perf_counter() - started))

    full_train, full_infer = statistics.median(train["full"]), statistics.median(infer["full"])
    lines = [
        "| model | parameters | train samples/s | vs full | infer samples/s | vs full |",
        "|---|---|---|---|---|---|",
    ]
    for name in configs:
        t, i = statistics.median(train[name]), statistics.median(infer[name])
        lines.append(
            f"| {name} | {params[name]:,} | {t:,.0f} | {t / full_train:.2f}x | {i:,.0f} | "
            f"{i / full_infer:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/fdo_speed.py " + " ".join(sys.argv[1:])
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
        text = (
            f"# FDO speed: {config.model_name}, source run `{args.run_dir}`\n\n"
            f"{stamp}; {machine}, {args.threads} thread(s); command `{command}`.\n\n"
            f"Medians over {args.rounds} interleaved rounds of {args.steps} batches of "
            f"{config.train.batch_size}; ratios are against the full-width model in the same "
            "process.\n\n" + table + "\n"
        )
        out = RESULTS / f"{args.write}.md"
        out.with_suffix(".tmp").write_text(text)
        out.with_suffix(".tmp").replace(out)


if __name__ == "__main__":
    main()
