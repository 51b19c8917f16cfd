"""Why the cross networks compute in a width padded to a multiple of 16 (``nn.cross.padded_width``).

Times a 3-layer GDCN gated cross network, forward and backward on a batch of 4096, at widths D
that FDO plans produce, with the padding on and off, interleaved over several rounds in one
process (medians). Prints the speed-up the padding gives at each width.

    python benchmarks/gemm_alignment.py [--widths 97 150 233 300 431 489] [--rounds 7]
        [--threads 1] [--write]
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

import torch

from slimctr.nn import cross

RESULTS = Path(__file__).parent / "results" / "gemm_alignment.md"


def step_seconds(net: torch.nn.Module, x0: torch.Tensor, padded: bool) -> float:
    cross.MIN_PADDED_WIDTH = 128 if padded else sys.maxsize  # padded_width reads it per call
    started = time.perf_counter()
    net(x0).sum().backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[97, 150, 233, 300, 431, 489])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {d: (cross.GatedCrossNetwork(d, 3), torch.randn(4096, d)) for d in args.widths}
    times: dict[tuple[int, bool], list[float]] = {}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for d, (net, x0) in nets.items():
            for padded in (False, True):
                times.setdefault((d, padded), []).append(step_seconds(net, x0, padded))
    cross.MIN_PADDED_WIDTH = 128
    lines = ["| D | computed in | plain ms | padded ms | speed-up |", "|---|---|---|---|---|"]
    for d in args.widths:
        plain = statistics.median(times[d, False][1:]) * 1000
        padded = statistics.median(times[d, True][1:]) * 1000
        width = cross.padded_width(d)
        lines.append(f"| {d} | {width} | {plain:.1f} | {padded:.1f} | {plain / padded:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/gemm_alignment.py " + " ".join(sys.argv[1:])
        RESULTS.write_text(
            f"# Cross-network widths padded to a multiple of 16\n\n{stamp}; "
            f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s); command "
            f"`{command}`. A 3-layer gated cross network, forward and backward, batch 4096; "
            f"medians of {args.rounds} interleaved rounds.\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
