"""Training and inference throughput of DCNv2 and DeepFM on 1M synthetic Criteo-like rows.

Setting (issue "Foundation II"): 26 categorical + 13 numeric fields, embedding width 16, MLP
400-400-400, 3 cross layers, batch 4096, one epoch, 2 threads. Each model runs in its own child
process so that its peak RSS is its own. Prints samples/s for training (the epoch) and inference
(the whole training split, no gradients) and the validation AUC after the epoch.

    python benchmarks/train_throughput.py [--rows 1000000] [--write] [--set train.precision=bf16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from runlog import cpu_name

RESULTS = Path(__file__).parent / "results" / "train_throughput.md"
NUMERIC = ",".join(f"I{i}" for i in range(1, 14))
MODEL_SETTINGS = {
    "dcnv2": [
        "model.embedding_dim=16",
        "model.hidden_dims=[400,400,400]",
        "model.num_cross_layers=3",
    ],
    "deepfm": ["model.embedding_dim=16", "model.hidden_dims=[400,400,400]"],
}

CHILD = """
import json, sys, time, resource
from pathlib import Path
from slimctr.runconfig import resolve_config
from slimctr.training import run
from slimctr.training.trainer import resolve_precision, score
data, out, model, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
config = resolve_config(model, overrides=overrides, threads=2)
metrics = run.train(Path(data), out, config)
_, trained, store = run.load_run(out)
started = time.perf_counter()
bf16 = resolve_precision(config.train.precision) == "bf16"
score(trained, store, "train", batch_size=config.train.batch_size, bf16=bf16)
infer = len(store.split("train")) / (time.perf_counter() - started)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"train": metrics["train_samples_per_s"], "infer": infer, "rss": rss,
                  "valid_auc": metrics["valid"]["auc"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimctr-bench"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    slimctr = str(Path(sys.executable).with_name("slimctr"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.workdir / f"synthetic-{args.rows}.csv"
    if not source.is_file():
        subprocess.run(
            [slimctr, "synth", "--rows", str(args.rows), "--out", str(source)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    data = args.workdir / f"store-train-{args.rows}"
    subprocess.run(
        [
            slimctr,
            "prepare",
            str(source),
            "--numeric",
            NUMERIC,
            "--min-count",
            "2",
            "--out",
            str(data),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    lines = [
        "| model | train samples/s | inference samples/s | peak RSS GiB | valid AUC (1 epoch) |",
        "|---|---|---|---|---|",
    ]
    for model, settings in MODEL_SETTINGS.items():
        out = args.workdir / f"run-{model}-{time.time_ns()}"
        overrides = [*settings, "train.epochs=1", "train.batch_size=4096", *args.overrides]
        overrides = ["train.preset=paper", *overrides]  # the protocol of the committed results
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(data), str(out), model, json.dumps(overrides)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        lines.append(
            f"| {model} | {result['train']:,.0f} | {result['infer']:,.0f} | "
            f"{result['rss']:.2f} | {result['valid_auc']:.4f} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.write:
        RESULTS.parent.mkdir(exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
        with open(RESULTS, "a") as handle:
            handle.write(
                f"\n## {stamp}\n\nMachine: {os.cpu_count()} CPUs "
                f"({cpu_name()})  \nCommand: `{command}`\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
