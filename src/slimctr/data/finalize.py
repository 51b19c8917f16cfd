"""Step 3 of `prepare`: turn scratch files into the store's columns, one field at a time.

A categorical field's values are counted over the counted rows (training rows by default), the
frequent ones numbered by count then value, and every batch-local id rewritten as its final id
(OOV for the rest). A numeric field is standardised with the training mean and std. Columns are
written split by split (train, valid, test), a span of about ``SPAN_ROWS`` rows at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from slimctr.data.scan import Column, Scan
from slimctr.files import sha256_file
from slimctr.schema import NUM_RESERVED_IDS, OOV_ID

SPAN_ROWS = 1 << 20  # rows finalized at a time


class SplitWriter:
    """Writes columns into .npy files laid out train | valid | test, a span of rows at a time.

    A span is a run of whole scan batches of about ``SPAN_ROWS`` rows; for each span the stable
    order that groups its rows by split is computed once and shared by every column.
    """

    def __init__(self, assignment: np.ndarray, batch_rows: list[int]) -> None:
        self.assignment = assignment
        self.batch_rows = np.asarray(batch_rows, dtype=np.int64)
        batch_bounds = np.cumsum([0, *batch_rows])
        self.spans: list[tuple[int, int, int, int]] = []  # row start, row stop, batch range
        first = 0
        for b in range(1, len(batch_rows) + 1):
            if batch_bounds[b] - batch_bounds[first] >= SPAN_ROWS or b == len(batch_rows):
                self.spans.append((int(batch_bounds[first]), int(batch_bounds[b]), first, b))
                first = b
        self.orders = [
            np.argsort(assignment[start:stop], kind="stable").astype(np.int32)
            for start, stop, _, _ in self.spans
        ]
        self.split_counts = [
            np.bincount(assignment[start:stop], minlength=3) for start, stop, _, _ in self.spans
        ]
        counts = np.bincount(assignment, minlength=3)
        self.split_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def read(self, path: Path, dtype: type) -> Iterator[np.ndarray]:
        """A scratch file written during the scan, back one span at a time."""
        with open(path, "rb") as handle:
            for start, stop, _, _ in self.spans:
                yield np.fromfile(handle, dtype=dtype, count=stop - start)

    def write(self, path: Path, dtype: type, spans: Iterator[np.ndarray]) -> str:
        """Write one array per span; returns the file's sha256."""
        header = np.lib.format.open_memmap(
            path, mode="w+", dtype=dtype, shape=(len(self.assignment),)
        )
        offset, itemsize = header.offset, header.itemsize
        del header
        positions = self.split_starts.copy()
        fd = os.open(path, os.O_WRONLY)
        try:
            for values, order, counts in zip(spans, self.orders, self.split_counts, strict=True):
                grouped: np.ndarray = np.ascontiguousarray(values[order], dtype=dtype)
                bounds = np.cumsum([0, *counts])
                for split in range(3):
                    part = grouped[bounds[split] : bounds[split + 1]]
                    os.pwrite(fd, part.data, offset + int(positions[split]) * itemsize)
                    positions[split] += len(part)
        finally:
            os.close(fd)
        return sha256_file(path)


def finalize_numeric(
    column: Column, scan: Scan, train: np.ndarray, writer: SplitWriter, path: Path
) -> dict[str, object]:
    """Standardise with the training rows' mean and std; missing values become 0 (the mean)."""
    scratch = scan.file(column.stem, "raw")
    mean, std = _mean_std(
        values[train[start:stop]]
        for (start, stop, _, _), values in zip(
            writer.spans, writer.read(scratch, np.float64), strict=True
        )
    )
    scale = std if std > 0 else 1.0
    standardised = (
        np.nan_to_num((values - mean) / scale, nan=0.0)
        for values in writer.read(scratch, np.float64)
    )
    sha = writer.write(path, np.float32, standardised)
    return {
        "name": column.name,
        "kind": "numeric",
        "source_column": column.name,
        "transform": "standardize",
        "mean": mean,
        "std": std,
        "dtype": "float32",
        "sha256": sha,
    }


def _mean_std(spans: Iterator[np.ndarray]) -> tuple[float, float]:
    """Mean and population std of the non-missing values, merged span by span (Chan et al.).

    Summing squares instead (E[x^2] - mean^2) loses every digit of the std when the mean is
    large against it, as for timestamps.
    """
    count, mean, squares = 0, 0.0, 0.0  # squares: summed squared deviations from the mean
    for values in spans:
        kept = values[~np.isnan(values)]
        if not len(kept):
            continue
        span_mean = float(kept.mean())
        delta, total = span_mean - mean, count + len(kept)
        squares += float(((kept - span_mean) ** 2).sum()) + delta**2 * count * len(kept) / total
        mean, count = mean + delta * len(kept) / total, total
    return mean, float(np.sqrt(squares / count)) if count else 0.0


def finalize_categorical(
    column: Column,
    scan: Scan,
    counted: np.ndarray,
    min_count: int,
    writer: SplitWriter,
    path: Path,
) -> tuple[dict[str, object], pl.DataFrame]:
    """Count values over the ``counted`` rows, keep those seen ``min_count`` times, rewrite ids.

    Every scan batch has its own dictionary; ``entries`` stacks them, so batch ``b``'s local id
    ``i`` is entry ``offsets[b] + i``.
    """
    with pa.ipc.open_stream(scan.file(column.stem, "dict")) as reader:
        distinct = reader.read_all().column("value")
    sizes = np.array([len(chunk) for chunk in distinct.chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    scratch = scan.file(column.stem, "raw")

    def entry_keys() -> Iterator[np.ndarray]:
        for (_, _, first, last), local in zip(
            writer.spans, writer.read(scratch, np.int32), strict=True
        ):
            yield local + np.repeat(offsets[first:last], writer.batch_rows[first:last])

    counts = np.zeros(int(sizes.sum()), dtype=np.int64)
    for (start, stop, _, _), keys in zip(writer.spans, entry_keys(), strict=True):
        counts += np.bincount(keys[counted[start:stop]], minlength=len(counts))
    entries = pl.LazyFrame({"value": pl.Series(distinct.combine_chunks()), "count": counts})
    kept = (
        entries.group_by("value")
        .agg(pl.col("count").sum())
        .filter(pl.col("count") >= min_count)
        .sort(["count", "value"], descending=[True, False])
        .with_row_index("id", offset=NUM_RESERVED_IDS)
    )
    ids = entries.join(kept.select("value", "id"), on="value", how="left", maintain_order="left")
    vocab, ids_frame = pl.collect_all([kept, ids.select(pl.col("id").fill_null(OOV_ID))])
    lookup = ids_frame.get_column("id").cast(pl.Int32).to_numpy()
    sha = writer.write(path, np.int32, (lookup[keys] for keys in entry_keys()))
    spec = {
        "name": column.name,
        "kind": "categorical",
        "source_column": column.name,
        "transform": column.transform,
        "vocab_size": vocab.height + NUM_RESERVED_IDS,
        "dtype": "int32",
        "sha256": sha,
    }
    vocabulary = vocab.select(
        pl.lit(column.name).alias("field"), pl.col("id").cast(pl.Int32), "value", "count"
    )
    return spec, vocabulary
