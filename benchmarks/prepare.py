"""Benchmark `slimctr prepare` on synthetic Criteo-like CSV (13 numeric + 26 categorical columns).

For each size, generates the CSV once with `slimctr synth`, then times `slimctr prepare` end to end
(raw CSV to verified store) in a child process and reads its peak RSS from the kernel (wait4).
The baseline, run in the same job on the same file, is a pandas pipeline of the kind the peers use
(read the whole CSV, factorize each categorical column, standardise numerics, split, save).

    python benchmarks/prepare.py                      # 1M and 10M rows, baseline on 1M
    python benchmarks/prepare.py --rows 1000000 --baseline-rows 1000000 --write

With --write, appends the table to benchmarks/results/prepare.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

NUMERIC = ",".join(f"I{i}" for i in range(1, 14))
RESULTS = Path(__file__).parent / "results" / "prepare.md"

PANDAS_BASELINE = """
import sys, numpy as np, pandas as pd
source, out = sys.argv[1], sys.argv[2]
frame = pd.read_csv(source)
numeric = [f"I{i}" for i in range(1, 14)]
categorical = [f"C{i}" for i in range(1, 27)]
frame[categorical] = frame[categorical].fillna("")
for column in categorical:
    frame[column] = pd.factorize(frame[column])[0].astype(np.int32)
values = frame[numeric].astype(np.float64)
frame[numeric] = ((values - values.mean()) / values.std()).fillna(0).astype(np.float32)
order = np.random.default_rng(0).permutation(len(frame))
np.save(out, frame.to_numpy()[order])
"""


def median_run(command: list[str], repeat: int, cleanup: Path) -> tuple[float, float]:
    """Median wall seconds and peak RSS (GiB) over ``repeat`` runs of one command."""
    runs = []
    for _ in range(repeat):
        if cleanup.is_dir():
            shutil.rmtree(cleanup)
        cleanup.unlink(missing_ok=True)
        runs.append(run(command))
    seconds, rss = zip(*runs, strict=True)
    return statistics.median(seconds), max(rss)


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark command failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 2**20


def machine() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--baseline-rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimctr-bench"))
    parser.add_argument("--write", action="store_true", help="append results to " + str(RESULTS))
    args = parser.parse_args()
    slimctr = str(Path(sys.executable).with_name("slimctr"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    lines = []
    for rows in args.rows:
        source = args.workdir / f"synthetic-{rows}.csv"
        if not source.is_file():
            subprocess.run(
                [slimctr, "synth", "--rows", str(rows), "--out", str(source)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        size = source.stat().st_size / 2**20
        out = args.workdir / f"store-{rows}"
        seconds, rss = median_run(
            [slimctr, "prepare", str(source), "--numeric", NUMERIC, "--out", str(out)],
            args.repeat,
            cleanup=out,
        )
        line = (
            f"| slimctr prepare | {rows:,} | {size:,.0f} | {seconds:.1f} | "
            f"{seconds / rows * 1e6:.2f} | {rows / seconds:,.0f} | {rss:.2f} |"
        )
        if rows in args.baseline_rows:
            pandas_out = args.workdir / "pandas.npy"
            base_seconds, base_rss = median_run(
                [sys.executable, "-c", PANDAS_BASELINE, str(source), str(pandas_out)],
                args.repeat,
                cleanup=pandas_out,
            )
            line += f" {base_seconds / seconds:.1f}x |"
            lines.append(line)
            lines.append(
                f"| pandas baseline | {rows:,} | {size:,.0f} | {base_seconds:.1f} | "
                f"{base_seconds / rows * 1e6:.2f} | {rows / base_seconds:,.0f} | "
                f"{base_rss:.2f} | 1.0x |"
            )
        else:
            lines.append(line + " |")
        print(lines[-1] if rows not in args.baseline_rows else "\n".join(lines[-2:]), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    header = [
        "| job | rows | CSV MiB | seconds | s per M rows | rows/s | peak RSS GiB | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = "\n".join(header + lines)
    print(table)
    if args.write:
        RESULTS.parent.mkdir(exist_ok=True)
        command = "python benchmarks/prepare.py " + " ".join(sys.argv[1:])
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a") as handle:
            handle.write(
                f"\n## {stamp}\n\nMachine: {machine()}  \nCommand: `{command}`\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
