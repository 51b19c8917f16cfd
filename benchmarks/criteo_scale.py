"""Criteo scale: `slimctr prepare` and one DCNv2 epoch on the Criteo-shaped synthetic preset.

Writes N rows (default 45M, Criteo's size) with `slimctr synth --preset criteo` as TSV, Criteo's
own format (about 290 bytes a row), then runs two child processes, each sampled every 0.2 s for
VmRSS and RssAnon in /proc/PID/status (pages of the memory-mapped store are file-backed: they count
in VmRSS, not in RssAnon):

1. `slimctr prepare --dataset synthetic SOURCE --min-count 10` (Criteo's protocol), and
2. `slimctr train` of one DCNv2 epoch out of core from the store: width 16, MLP 400-400-400,
   3 cross layers, batch 4096, 2 threads (then its validation and test scoring).

Prints wall time, rows/s and peak memory of each, and the 39 table sizes against gdcn.md section
4.7: equal at 45M rows; a sample of fewer rows keeps fewer values, as `expected_kept_values` says.
At 45M rows it needs about 20 GB of disk (TSV 13 GB, store 7 GB) and about an hour on two cores
without AMX, most of it the epoch (about 13k rows/s in fp32). Measure on a quiet machine: anything
else running can halve the speeds. Never part of `make test`. The TSV is kept in --workdir and
reused; the store and the run are made afresh.

    python benchmarks/criteo_scale.py --write         # 45M rows, appended to the results file
    python benchmarks/criteo_scale.py --rows 2000000  # a check of the script in minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from slimctr.data.store import Store, open_store
from slimctr.data.synthetic import CRITEO_TABLE_SIZES, SyntheticConfig, expected_kept_values
from slimctr.rundir import RunDir

RESULTS = Path(__file__).parent / "results" / "criteo_scale.md"
SAMPLE_SECONDS = 0.2
GIB = 2**30
DCNV2 = [
    "train.preset=paper",  # no embedding L2: the protocol of the committed results
    "model.embedding_dim=16",
    "model.hidden_dims=[400,400,400]",
    "model.num_cross_layers=3",
    "train.batch_size=4096",
    "train.epochs=1",
]
SIMD_FLAGS = ("avx", "amx", "fma", "f16c")  # the /proc/cpuinfo flags that decide torch's speed


@dataclass
class Measured:
    seconds: float
    peak_anon: float  # bytes, sampled RssAnon
    peak_rss: float  # bytes, sampled VmRSS
    kernel_peak_rss: float  # bytes, the kernel's own peak RSS of the child (wait4)


def measure(command: list[str], log: Path) -> Measured:
    """Run ``command`` with its output in ``log``; its wall time and peak memory."""
    peaks = {"RssAnon": 0, "VmRSS": 0}
    done = threading.Event()
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=sample, args=(process.pid, peaks, done))
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)} (its output is in {log})")
    return Measured(seconds, peaks["RssAnon"], peaks["VmRSS"], usage.ru_maxrss * 1024)


def sample(pid: int, peaks: dict[str, int], done: threading.Event) -> None:
    """Keep the largest VmRSS and RssAnon (bytes) of process ``pid`` until ``done``."""
    while not done.wait(SAMPLE_SECONDS):
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:  # exited between two samples
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in peaks:
                peaks[key] = max(peaks[key], int(value.split()[0]) * 1024)


def machine() -> str:
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())  # the first CPU speaks for all
    flags = sorted(f for f in info.get("flags", "").split() if f.startswith(SIMD_FLAGS))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return (
        f"{info.get('model name', platform.processor())}, {os.cpu_count()} CPUs, "
        f"{memory:.0f} GiB RAM, Python {platform.python_version()}; "
        f"flags: {' '.join(flags) or 'no avx, amx or fma'}"
    )


def synthesize(slimctr: str, rows: int, source: Path) -> str:
    """Write the source unless a complete one is there; the table cell for it."""
    if source.is_file() and Path(f"{source}.truth.json").is_file():
        return f"| synth --preset criteo | {rows:,} | reused | | | | |"
    result = measure(
        [slimctr, "synth", "--preset", "criteo", "--rows", str(rows), "--out", str(source)],
        source.with_suffix(".synth.log"),
    )
    return row(f"synth --preset criteo ({source.stat().st_size / GIB:.1f} GiB TSV)", rows, result)


def row(step: str, rows: int, result: Measured, per_second: float | None = None) -> str:
    speed = rows / result.seconds if per_second is None else per_second
    return (
        f"| {step} | {rows:,} | {result.seconds:,.0f} | {speed:,.0f} | "
        f"{result.peak_anon / GIB:.2f} | {result.peak_rss / GIB:.2f} | "
        f"{result.kernel_peak_rss / GIB:.2f} |"
    )


def size_table(store: Store, rows: int) -> list[str]:
    """Measured table sizes (gdcn.md's count: kept values + 1 OOV row) against the expectation
    at ``rows`` rows and Criteo's sizes."""
    expected = expected_kept_values(SyntheticConfig.criteo(rows=rows))
    fields = store.schema.fields
    lines = [
        "| field | table rows (kept + OOV) | expected at these rows | Criteo (gdcn.md 4.7) |",
        "|---|---|---|---|",
    ]
    measured = [spec.vocab_size - 1 for spec in fields]  # slimctr's vocab_size counts PAD too
    for spec, size, criteo in zip(fields, measured, CRITEO_TABLE_SIZES, strict=True):
        lines.append(f"| {spec.name} | {size:,} | {expected[spec.name] + 1:,.0f} | {criteo:,} |")
    total = sum(expected.values()) + len(fields)
    lines.append(f"| all | {sum(measured):,} | {total:,.0f} | {sum(CRITEO_TABLE_SIZES):,} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=SyntheticConfig.criteo().rows)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimctr-bench"))
    parser.add_argument("--write", action="store_true", help=f"append the tables to {RESULTS}")
    parser.add_argument(
        "--skip-train", action="store_true", help="stop after prepare (the epoch takes an hour)"
    )
    args = parser.parse_args()
    slimctr = str(Path(sys.executable).with_name("slimctr"))
    work, rows = args.workdir, args.rows
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"criteo-preset-{rows}.tsv"
    store, run = work / f"criteo-store-{rows}", work / f"criteo-run-{rows}"
    for leftover in (store, run):
        shutil.rmtree(leftover, ignore_errors=True)
    lines = [
        "| step | rows | wall s | rows/s | peak RssAnon GiB | peak VmRSS GiB | kernel peak RSS GiB"
        " |",
        "|---|---|---|---|---|---|---|",
    ]
    lines.append(synthesize(slimctr, rows, source))
    print(lines[-1], flush=True)
    prepare = [slimctr, "prepare", "--dataset", "synthetic", str(source), "--min-count", "10"]
    result = measure([*prepare, "--out", str(store)], work / "criteo-prepare.log")
    lines.append(row("prepare --min-count 10", rows, result))
    print(lines[-1], flush=True)
    prepared = open_store(store, verify=False)  # just written; reading it all again is slow
    if args.skip_train:
        lines += ["", "The training epoch was not run (--skip-train)."]
    else:
        lines.append(train_one_epoch(slimctr, prepared, run, work / "criteo-train.log"))
        print(lines[-1], flush=True)
        lines += [
            "",
            f"Validation AUC after the epoch {RunDir(run).metrics()['valid']['auc']:.4f}. The "
            "train wall time includes start-up and scoring the validation and test splits.",
        ]
    lines += ["", *size_table(prepared, rows)]
    report(lines, rows, args.write)


def train_one_epoch(slimctr: str, store: Store, run: Path, log: Path) -> str:
    command = [slimctr, "train", str(store.path), "--model", "dcnv2", "--out", str(run)]
    command += ["--threads", "2"]
    for setting in DCNV2:
        command += ["--set", setting]
    result = measure(command, log)
    metrics = RunDir(run).metrics()
    step = f"train DCNv2 1 epoch ({metrics['precision']}; rows/s of the epoch)"
    return row(step, len(store.split("train")), result, metrics["train_samples_per_s"])


def report(lines: list[str], rows: int, write: bool) -> None:
    text = "\n".join(lines)
    print(text)
    if not write:
        return
    command = "python benchmarks/criteo_scale.py " + " ".join(sys.argv[1:])
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = "" if RESULTS.is_file() else "# Criteo scale: prepare and one DCNv2 epoch\n"
    with open(RESULTS, "a") as handle:
        handle.write(
            f"{title}\n## {stamp}, {rows:,} rows\n\nMachine: {machine()}  \n"
            f"Command: `{command.strip()}`\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
