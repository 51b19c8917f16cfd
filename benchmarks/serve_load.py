"""Load test of `slimctr serve` (issue 20): throughput and latency under concurrent clients, a
soak that watches the server's memory, and ONNX Runtime against slimctr's own predictor.

Starts `slimctr serve BUNDLE` on 127.0.0.1 (a free port, one worker) in a subprocess, waits for
/health, then for 1, 16 and 256 rows per request sends ``--requests`` requests from
``--clients`` concurrent clients (each waits for its answer before sending the next) and reports
rows/s and p50/p99 latency. The soak then sends mixed traffic, bad requests among it, for
``--soak-s`` seconds, sampling the server's RSS every second, and counts 5xx answers. Both stop
by themselves. The ONNX comparison scores the test rows with ONNX Runtime and with the bundle's
predictor in this process, one thread and two. Run it alone on the machine.

    python benchmarks/serve_load.py [--bundle runs/bench-search/frappe/gdcn_p-0/full]
        [--rows-from FILE.csv(.gz)] [--requests 2000] [--clients 4] [--soak-s 180] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import psutil
from runlog import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_load.md"
BODIES = 64  # distinct request bodies per size, sent in turn
JSON = {"content-type": "application/json"}
BAD_BODIES = [b"[{", b"[]", b"{}", b"[1]", b'[{"nope": 1}]', b"NaN"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(bundle: Path, port: int, threads: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "slimctr", "serve", str(bundle), "--port", str(port),
               "--threads", str(threads)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-2000:]}")


async def load(url: str, rows: list[dict[str, Any]], size: int, requests: int,
               clients: int) -> dict[str, Any]:  # fmt: skip
    """Send ``requests`` requests of ``size`` rows from ``clients`` concurrent clients."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    # bodies are serialised before the clock starts: the load measured is the server's, not the
    # clients' JSON encoding, which shares the machine's cores
    starts = [(index * size) % max(len(rows) - size, 1) for index in range(BODIES)]
    bodies = [json.dumps(rows[start : start + size]).encode() for start in starts]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)

    async def client() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = bodies[index % BODIES]
                began = time.perf_counter()
                response = await http.post(url, content=body, headers=JSON)
                latencies.append(time.perf_counter() - began)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "rows_per_request": size,
        "requests": requests,
        "clients": clients,
        "rows_per_s": requests * size / seconds,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "statuses": statuses,
    }


async def soak(url: str, rows: list[dict[str, Any]], seconds: float, server: psutil.Process,
               clients: int) -> dict[str, Any]:  # fmt: skip
    """Mixed traffic (1-256 rows, one bad body in ten) for ``seconds``; the server's RSS each
    second and the answers by status."""
    statuses: dict[int, int] = {}
    rss: list[int] = []
    stop = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        generator = np.random.default_rng(seed)
        async with httpx.AsyncClient(timeout=30) as http:
            while time.perf_counter() < stop:
                if generator.random() < 0.1:
                    body = BAD_BODIES[int(generator.integers(len(BAD_BODIES)))]
                    response = await http.post(url, content=body)
                else:
                    size = int(generator.choice([1, 16, 256]))
                    start = int(generator.integers(max(len(rows) - size, 1)))
                    response = await http.post(url, json=rows[start : start + size])
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async def watch() -> None:
        while time.perf_counter() < stop:
            rss.append(server.memory_info().rss)
            await asyncio.sleep(1)

    await asyncio.gather(watch(), *(client(seed) for seed in range(clients)))
    tenth = max(len(rss) // 10, 1)
    return {
        "seconds": seconds,
        "statuses": statuses,
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        "rss_first_mib": statistics.mean(rss[:tenth]) / 2**20,
        "rss_last_mib": statistics.mean(rss[-tenth:]) / 2**20,
        "rss_max_mib": max(rss) / 2**20,
    }


def onnx_against_predictor(bundle: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scoring samples/s of ONNX Runtime and of the bundle's predictor on the same encoded
    rows, one thread and two (best of 3 each)."""
    import onnxruntime
    import torch

    from slimctr.onnx_export import export_onnx
    from slimctr.training import run

    loaded = run.load_model(bundle)
    batch = next(loaded.encoder.frame_batches(pl.DataFrame(rows)))
    found = []
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(loaded, Path(folder) / "onnx")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            session = onnxruntime.InferenceSession(str(Path(folder) / "onnx" / "model.onnx"),
                                                   options)  # fmt: skip
            feeds = {"categorical": batch.categorical.numpy(), "numeric": batch.numeric.numpy()}
            feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
            timings = {"onnxruntime": [], "slimctr": []}
            for _ in range(3):
                began = time.perf_counter()
                session.run(None, feeds)
                timings["onnxruntime"].append(time.perf_counter() - began)
                began = time.perf_counter()
                with torch.no_grad():
                    loaded.module(batch)
                timings["slimctr"].append(time.perf_counter() - began)
            found.append({"threads": threads, "rows": len(batch)} | {
                f"{name}_rows_per_s": len(batch) / min(times) for name, times in timings.items()
            })  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs = ROOT / "runs" / "bench-search"
    frappe = ROOT.parent / "shared" / "data" / "frappe" / "Frappe_x1_csv"
    parser.add_argument("--bundle", type=Path, default=runs / "frappe" / "gdcn_p-0" / "full")
    parser.add_argument("--rows-from", type=Path, default=frappe / "test.csv.gz")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--soak-s", type=float, default=180.0)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--write", action="store_true", help=f"append the results to {RESULTS}")
    args = parser.parse_args()
    rows = pl.read_csv(args.rows_from).head(20_000).to_dicts()
    port = free_port()
    server = start_server(args.bundle, port, args.threads)
    url = f"http://127.0.0.1:{port}/predict"
    try:
        results = [asyncio.run(load(url, rows, size, args.requests, args.clients))
                   for size in (1, 16, 256)]  # fmt: skip
        soaked = asyncio.run(soak(url, rows, args.soak_s, psutil.Process(server.pid),
                                  args.clients))  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    compared = onnx_against_predictor(args.bundle, rows[:8192])
    report = {"load": results, "soak": soaked, "onnx": compared}
    print(json.dumps(report, indent=1))
    if args.write:
        write(args, report)


def write(args: argparse.Namespace, report: dict[str, Any]) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {stamp}, {args.bundle.name} of {args.bundle.parent.name}\n",
        f"{cpu_name()} ({os.cpu_count()} vCPUs); one uvicorn worker, {args.threads} torch "
        f"thread(s); {args.clients} concurrent clients on the same machine; command "
        f"`python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`.\n",
        "| rows per request | requests | rows/s | p50 ms | p99 ms | answers |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['rows_per_request']} | {r['requests']} | {r['rows_per_s']:,.0f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['statuses']} |"
        for r in report["load"]
    ]
    soaked = report["soak"]
    lines += [
        "",
        f"Soak, {soaked['seconds']:.0f} s of mixed traffic (1, 16 and 256 rows; one bad body in "
        f"ten): answers {soaked['statuses']}, {soaked['server_errors']} 5xx; server RSS "
        f"{soaked['rss_first_mib']:.0f} MiB in the first tenth, {soaked['rss_last_mib']:.0f} "
        f"MiB in the last (max {soaked['rss_max_mib']:.0f}).",
        "",
        "| threads | rows | ONNX Runtime rows/s | slimctr rows/s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['threads']} | {c['rows']} | {c['onnxruntime_rows_per_s']:,.0f} | "
        f"{c['slimctr_rows_per_s']:,.0f} |"
        for c in report["onnx"]
    ]
    previous = RESULTS.read_text() if RESULTS.is_file() else "# Serving under load\n\n"
    RESULTS.write_text(previous + "\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
