"""An HTTP scoring service for a model bundle: ``slimctr serve BUNDLE`` and ``create_app``.

Endpoints (a Starlette app, served by uvicorn):

    POST /predict   a JSON list of raw rows (field name to value) -> {"probabilities": [...]}
    GET  /health    {"status": "ok"}
    GET  /metadata  the model, its fields, versions and the bundle's checksum
    GET  /metrics   Prometheus text: requests by status, latency, batch rows, OOV rate per field

A row must give every field of the model: a categorical value is a string, a number (matched
as the text ``prepare`` saw: 123 and "123" are one category) or null (the missing value, its
own category); a numeric value is a finite number or null (missing). Other keys are ignored.
An unseen category is the field's OOV id, as in ``predict``. A bad request is a 4xx with a
one-line ``error``: malformed JSON, not a list of objects, an empty list, a missing field, a
wrong type, a non-finite number (400); a body over ``max_body_bytes`` or more than ``max_rows``
rows (413); a full queue (429); unknown paths (404) and methods (405).

Workers (``--workers N``, uvicorn processes) each load the bundle with its weights file memory-
mapped (``Bundle(share_weights=True)``), so they share its pages instead of holding a copy each.
Requests that arrive together are scored as one batch: a single batcher takes what is queued
within ``batch_wait_ms`` of the first request (up to ``max_batch_rows``) and scores it in a
worker thread. Scores do not depend on which requests share a batch: the model runs on blocks of
exactly ``block_rows`` rows (the last one padded), so each row goes through the same kernels
whatever its neighbours. A request that waits longer than ``timeout_s`` gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slimctr import __version__
from slimctr.bundle import Bundle
from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.schema import OOV_ID


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """The service's limits and batching (``slimctr serve`` flags of the same names)."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_rows: int = 4096
    batch_wait_ms: float = 2.0
    max_batch_rows: int = 8192
    block_rows: int = 64
    queue_size: int = 256
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_rows", "max_batch_rows", "block_rows", "queue_size"):
            if getattr(self, name) < 1:
                raise SlimctrError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.batch_wait_ms >= 0 or not self.timeout_s > 0:
            raise SlimctrError("batch_wait_ms must be >= 0 and timeout_s > 0")


class BadRequest(Exception):
    """A request the service refuses: its status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Scorer:
    """Encodes requests and scores them in batches (one batcher task, one worker thread)."""

    def __init__(self, bundle: Bundle, config: ServeConfig, metrics: Metrics) -> None:
        self.bundle, self.config, self.metrics = bundle, config, metrics
        self.categorical = [f.name for f in bundle.schema.categorical]
        self.numeric = [f.name for f in bundle.schema.numeric]
        self.queue: asyncio.Queue[tuple[Batch, asyncio.Future[np.ndarray]]] | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.config.queue_size)
        self.task = asyncio.create_task(self._batcher())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def encode(self, rows: Any) -> Batch:
        """The model's inputs for a parsed request body; ``BadRequest`` for anything else."""
        if not isinstance(rows, list) or not rows:
            raise BadRequest(400, "the body must be a non-empty JSON list of rows (objects)")
        if len(rows) > self.config.max_rows:
            raise BadRequest(413, f"{len(rows)} rows; at most {self.config.max_rows} a request")
        columns: dict[str, list[Any]] = {name: [] for name in [*self.categorical, *self.numeric]}
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest(400, f"row {index + 1} is not an object")
            for name in self.categorical:
                columns[name].append(_category(row, name, index))
            for name in self.numeric:
                columns[name].append(_number(row, name, index))
        frame = pl.DataFrame(
            {n: pl.Series(n, columns[n], dtype=pl.String) for n in self.categorical}
            | {n: pl.Series(n, columns[n], dtype=pl.Float64) for n in self.numeric}
        )
        try:
            batches = list(self.bundle.encoder.frame_batches(frame))
        except SlimctrError as error:
            raise BadRequest(400, str(error)) from None
        batch = batches[0] if len(batches) == 1 else Batch.concat(batches)
        self.metrics.count_oov(batch, self.categorical)
        return batch

    async def score(self, batch: Batch) -> np.ndarray:
        """The probabilities of ``batch``, scored with whatever else is queued."""
        assert self.queue is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((batch, future))
        except asyncio.QueueFull:
            raise BadRequest(429, "too many requests are waiting; retry shortly") from None
        try:
            return await asyncio.wait_for(future, self.config.timeout_s)
        except TimeoutError:
            raise BadRequest(503, f"not scored within {self.config.timeout_s:g} s") from None

    async def _batcher(self) -> None:
        """Take the first waiting request, wait ``batch_wait_ms`` for others, take what has come
        (up to ``max_batch_rows``; never cancelling a ``get``, which could lose a request), and
        score it all in a worker thread."""
        assert self.queue is not None
        while True:
            taken = [await self.queue.get()]
            rows = len(taken[0][0])
            if self.config.batch_wait_ms > 0:
                await asyncio.sleep(self.config.batch_wait_ms / 1000)
            while rows < self.config.max_batch_rows and not self.queue.empty():
                item = self.queue.get_nowait()
                taken.append(item)
                rows += len(item[0])
            waiting = [(b, f) for b, f in taken if not f.done()]  # timed out ones are dropped
            if not waiting:
                continue
            batch = Batch.concat([b for b, _ in waiting])
            self.metrics.batch_rows.observe(len(batch))
            try:
                probabilities = await asyncio.to_thread(self._probabilities, batch)
            except Exception as error:  # scoring failed: every waiting request hears it
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for part, future in waiting:
                if not future.done():
                    future.set_result(probabilities[start : start + len(part)])
                start += len(part)

    @torch.no_grad()
    def _probabilities(self, batch: Batch) -> np.ndarray:
        """Scores in blocks of exactly ``block_rows`` rows, the last padded with its first row."""
        block = self.config.block_rows
        rows = len(batch)
        padded = -rows % block
        index = torch.cat([torch.arange(rows), torch.zeros(padded, dtype=torch.long)])
        scores = []
        for start in range(0, rows + padded, block):
            part = index[start : start + block]
            chunk = batch.rows(part)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bundle.bf16):
                scores.append(self.bundle.module(chunk).float())
        return torch.sigmoid(torch.cat(scores)[:rows]).double().numpy()


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, fields: list[str]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "slimctr_requests", "Requests by path and status", ["path", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "slimctr_request_seconds", "Time to answer a /predict request", registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        )  # fmt: skip
        self.batch_rows = Histogram(
            "slimctr_batch_rows", "Rows scored together", registry=self.registry,
            buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384),
        )  # fmt: skip
        self.rows = Counter("slimctr_rows", "Rows scored", registry=self.registry)
        self.oov = Counter(
            "slimctr_oov_values", "Categorical values not in the vocabulary, by field", ["field"],
            registry=self.registry,
        )  # fmt: skip
        for name in fields:
            self.oov.labels(field=name)

    def count_oov(self, batch: Batch, fields: list[str]) -> None:
        self.rows.inc(len(batch))
        unseen = (batch.categorical == OOV_ID).sum(dim=0).tolist()
        for name, count in zip(fields, unseen, strict=True):
            if count:
                self.oov.labels(field=name).inc(count)


def create_app(bundle: Bundle | str | Path, config: ServeConfig | None = None) -> Starlette:
    """The scoring service of ``bundle`` (a ``Bundle`` or its folder) as an ASGI app, to serve
    with uvicorn or to mount in one's own service."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle, share_weights=True)
    config = config or ServeConfig()
    metrics = Metrics([f.name for f in bundle.schema.categorical])
    scorer = Scorer(bundle, config, metrics)
    metadata = {
        "model": bundle.config.model_name,
        "fields": [{"name": f.name, "kind": f.kind} for f in bundle.schema.fields],
        "label": bundle.schema.label,
        "bundle_checksum": bundle.checksum,
        "slimctr_version": __version__,
        "trained_with": bundle.versions,
        "limits": dataclasses.asdict(config),
    }

    async def predict(request: Request) -> Response:
        began = time.perf_counter()
        try:
            body = await _body(request, config.max_body_bytes)
            try:
                rows = json.loads(body, parse_constant=_no_constant)
            except (ValueError, UnicodeDecodeError) as error:
                raise BadRequest(400, f"the body is not valid JSON ({error})") from None
            batch = scorer.encode(rows)
            probabilities = await scorer.score(batch)
        except BadRequest as refused:
            metrics.requests.labels(path="/predict", status=refused.status).inc()
            return JSONResponse({"error": str(refused)}, status_code=refused.status)
        metrics.requests.labels(path="/predict", status=200).inc()
        metrics.latency.observe(time.perf_counter() - began)
        return JSONResponse({"probabilities": probabilities.tolist()})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def describe(request: Request) -> Response:
        return JSONResponse(metadata)

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, error: Exception) -> Response:
        status = getattr(error, "status_code", 404)
        return JSONResponse({"error": f"{request.method} {request.url.path}: "
                             f"{'no such path' if status == 404 else 'method not allowed'}"},
                            status_code=status)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await scorer.start()
        yield
        await scorer.stop()

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metadata", describe, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
        lifespan=lifespan,
    )


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) beyond ``limit`` bytes, however it is sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is over {limit:,} bytes")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is over {limit:,} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _no_constant(name: str) -> Any:
    raise BadRequest(400, f"{name} is not a number JSON allows")


def _category(row: dict[str, Any], name: str, index: int) -> str | None:
    if name not in row:
        raise BadRequest(400, f"row {index + 1} has no field {name!r}")
    value = row[name]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(400, f"row {index + 1}, field {name!r}: a category is text or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(400, f"row {index + 1}, field {name!r}: not a finite number")
    return str(value)


def _number(row: dict[str, Any], name: str, index: int) -> float | None:
    if name not in row:
        raise BadRequest(400, f"row {index + 1} has no field {name!r}")
    value = row[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(400, f"row {index + 1}, field {name!r}: a number or null is expected")
    if not math.isfinite(value):
        raise BadRequest(400, f"row {index + 1}, field {name!r}: not a finite number")
    return float(value)


ENVIRONMENT = "SLIMCTR_SERVE"  # how ``slimctr serve`` tells each uvicorn worker what to serve


def app_from_environment() -> Starlette:
    """The app ``slimctr serve`` describes in ``$SLIMCTR_SERVE`` (its bundle and limits), for
    uvicorn's workers, which each build their own."""
    settings = json.loads(os.environ[ENVIRONMENT])
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    return create_app(settings["bundle"], ServeConfig(**settings["config"]))


def serve(
    bundle: Path, *, host: str, port: int, workers: int, config: ServeConfig, threads: int | None
) -> None:
    """Serve ``bundle`` with uvicorn until interrupted."""
    import uvicorn

    Bundle(bundle)  # a bad bundle is an error before the server starts
    os.environ[ENVIRONMENT] = json.dumps(
        {"bundle": str(bundle), "config": dataclasses.asdict(config), "threads": threads}
    )
    uvicorn.run(
        "slimctr.serving:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
