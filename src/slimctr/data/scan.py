"""Step 1 of `prepare`: read every source once, batch by batch, into scratch files.

Labels, numeric values and ordering keys go to scratch files as they are. Each categorical column
arrives dictionary-encoded per batch (by the reader, or by pyarrow here for Parquet and buckets):
the batch-local ids go to a scratch file and the batch's distinct values to a per-field arrow
stream, so no Python runs per row and memory stays at one batch. Scratch files are named by field
position (``field-0003.raw``), never by column name.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from slimctr.data import encode
from slimctr.data.formats import RawSource
from slimctr.data.store import field_stem
from slimctr.errors import SlimctrError


@dataclass(frozen=True)
class Column:
    """How one source column becomes a field; ``position`` is its index among the fields."""

    name: str
    transform: encode.Transform
    position: int

    @property
    def kind(self) -> str:
        return "numeric" if self.transform == "standardize" else "categorical"

    @property
    def stem(self) -> str:
        """Names the field's scratch and column files."""
        return field_stem(self.position)


@dataclass
class Scan:
    """What step 1 leaves behind: scratch files, per-batch sizes and source split tags."""

    scratch: Path
    batch_rows: list[int] = field(default_factory=list)
    batch_split: list[int] = field(default_factory=list)
    labels_seen: set[int] = field(default_factory=set)

    @property
    def num_rows(self) -> int:
        return sum(self.batch_rows)

    def file(self, stem: str, suffix: str) -> Path:
        """A scratch file: ``label``, ``order`` or a field's ``Column.stem``, never a name."""
        return self.scratch / f"{stem}.{suffix}"


def scan_sources(
    raw: list[tuple[int, RawSource]],
    columns: list[Column],
    *,
    label: str,
    order_by: str | None,
    scratch: Path,
) -> Scan:
    """Read ``(split, source)`` pairs into scratch files under ``scratch``."""
    scan = Scan(scratch)
    numeric = [label, *([order_by] if order_by else [])]
    numeric += [c.name for c in columns if c.transform != "token"]
    categorical = [c.name for c in columns if c.transform == "token"]
    with ExitStack() as stack:
        stems = ["label", *(["order"] if order_by else []), *(c.stem for c in columns)]
        outputs = {stem: stack.enter_context(open(scan.file(stem, "raw"), "wb")) for stem in stems}
        dictionaries = {
            c.stem: stack.enter_context(
                pa.ipc.new_stream(scan.file(c.stem, "dict"), pa.schema([("value", pa.string())]))
            )
            for c in columns
            if c.kind == "categorical"
        }
        for split, source in raw:
            for first_row, batch in source.batches(numeric=numeric, categorical=categorical):

                def where(row: int, source: RawSource = source, first_row: int = first_row) -> str:
                    return source.where(first_row + row)

                labels = encode.parse_labels(batch.column(label), label, where)
                scan.labels_seen.update(np.unique(labels).tolist())
                if {0, -1} <= scan.labels_seen:
                    raise SlimctrError(f"labels mix 0 and -1 (use 0/1 or -1/1), {source.path}")
                outputs["label"].write((labels == 1).astype(np.uint8).tobytes())
                if order_by:
                    keys = encode.parse_numeric(batch.column(order_by), order_by, where)
                    outputs["order"].write(keys.tobytes())
                for column in columns:
                    _scan_column(
                        column,
                        batch.column(column.name),
                        where,
                        outputs[column.stem],
                        dictionaries.get(column.stem),
                    )
                scan.batch_rows.append(batch.num_rows)
                scan.batch_split.append(split)
    return scan


def _scan_column(
    column: Column,
    values: pa.Array,
    where: encode.Where,
    output: BinaryIO,
    dictionary: pa.ipc.RecordBatchStreamWriter | None,
) -> None:
    """One batch of one column: float64 values, or batch-local int32 ids plus their values."""
    if column.transform == "standardize":
        output.write(encode.parse_numeric(values, column.name, where).tobytes())
        return
    if column.transform == "bucket":
        values = encode.criteo_bucket(encode.parse_numeric(values, column.name, where))
    ids, distinct = encode.encode_tokens(values)
    output.write(ids.tobytes())
    assert dictionary is not None
    dictionary.write_batch(pa.record_batch([distinct], names=["value"]))
