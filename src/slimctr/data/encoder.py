"""Raw rows to batches with a store's encoding: what `slimctr predict` and a bundle feed a model.

An ``Encoder`` holds what ``prepare`` learned (the label's name, how the sources were read, each
field's transform, the numeric fields' training mean and std, and the categorical vocabularies)
and nothing else, so a model bundle carries it without the store. Every categorical value goes
through the field's vocabulary (unseen or rare values get the OOV id), every numeric value through
its training mean and std; row order is kept.

Columns are matched by name wherever the input names them (CSV with a header, Parquet, a data
frame); extra columns are ignored and reported. Headerless input is positional: libfm and
registered headerless layouts (Criteo's train.txt) in their registered order, with or without the
label column, and a headerless CSV with the names given to ``--columns``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from slimctr.data import encode
from slimctr.data.batch import Batch
from slimctr.data.formats import RawSource, detect_format
from slimctr.data.store import VOCABULARY, Store
from slimctr.errors import SlimctrError, shown
from slimctr.schema import OOV_ID

_FRAME_BATCH_ROWS = 65_536


def encoding_of(store: Store) -> dict[str, Any]:
    """What an ``Encoder`` needs from a store's manifest, as plain JSON data."""
    options = store.manifest["options"]
    keys = ("name", "kind", "transform", "mean", "std")
    return {
        "label": store.schema.label,
        "reading": {
            key: options[key] for key in ("format", "delimiter", "header", "names", "drop")
        },
        "fields": [{k: f[k] for k in keys if k in f} for f in store.manifest["fields"]],
    }


class Encoder:
    """Encodes raw rows into ``Batch`` objects exactly as ``prepare`` encoded the store."""

    def __init__(self, encoding: Mapping[str, Any], vocabulary: pl.DataFrame) -> None:
        self.label: str = encoding["label"]
        self.reading: dict[str, Any] = dict(encoding["reading"])
        self.fields = {f["name"]: f for f in encoding["fields"]}
        self.vocabularies = {
            name: frame.select("value", "id")
            for (name,), frame in vocabulary.partition_by("field", as_dict=True).items()
        }
        self._lookups: dict[str, dict[str, int]] = {}  # built on first use, see _ids

    @classmethod
    def from_store(cls, store: Store) -> Encoder:
        return cls(encoding_of(store), pl.read_parquet(store.path / VOCABULARY))

    def open(self, path: Path, columns: Sequence[str] | None = None) -> RawSource:
        """``path`` as a source whose column names are the ones the fields are matched by."""
        reading = self.reading
        fmt = detect_format(
            path, reading["format"], delimiter=reading["delimiter"], header=reading["header"]
        )
        if columns is not None:
            if fmt.kind != "csv":
                raise SlimctrError(
                    f"--columns names a headerless CSV's columns; {path} is {fmt.kind}"
                )
            return RawSource(path, replace(fmt, header=False, names=tuple(columns)))
        if fmt.kind == "parquet" or (fmt.kind == "csv" and reading["header"]):
            return RawSource(path, fmt)
        names = self._positional_names()
        try:
            return RawSource(path, replace(fmt, names=names))
        except SlimctrError:  # the same layout without its label column
            return RawSource(path, replace(fmt, names=tuple(n for n in names if n != self.label)))

    def unused(self, columns: Sequence[str]) -> list[str]:
        """Columns of an input that no field reads (the label aside)."""
        return [c for c in columns if c not in self.fields and c != self.label]

    def batches(self, source: RawSource, *, labels: bool = False) -> Iterator[Batch]:
        """Batches of ``source`` in row order; ``labels`` reads and checks its label column
        (otherwise labels are zeros and the column may be absent or empty)."""
        self._check_columns(source.columns, str(source.path), labels=labels)
        numeric = [n for n, f in self.fields.items() if f["transform"] != "token"]
        categorical = [n for n, f in self.fields.items() if f["transform"] == "token"]
        for first_row, batch in source.batches(
            numeric=numeric + ([self.label] if labels else []), categorical=categorical
        ):

            def where(row: int, first_row: int = first_row) -> str:
                return source.where(first_row + row)

            yield self.encode_batch(batch, where, labels=labels)

    def frame_batches(self, frame: Any) -> Iterator[Batch]:
        """Batches of an in-memory table: a polars or pandas DataFrame, or a mapping of columns."""
        try:
            table = pl.DataFrame(frame).to_arrow()
        except (TypeError, ValueError, pl.exceptions.PolarsError) as error:
            raise SlimctrError(f"cannot read the rows as a table ({error})") from None
        self._check_columns(table.column_names, "the data frame", labels=False)
        done = 0
        for batch in table.to_batches(max_chunksize=_FRAME_BATCH_ROWS):

            def where(row: int, first_row: int = done) -> str:
                return f"row {first_row + row + 1}"

            yield self.encode_batch(batch, where, labels=False)
            done += batch.num_rows

    def encode_batch(self, batch: pa.RecordBatch, where: encode.Where, *, labels: bool) -> Batch:
        """One batch of raw columns (by name) as model input."""
        values = (
            encode.parse_labels(batch.column(self.label), self.label, where) == 1
            if labels
            else np.zeros(batch.num_rows, dtype=bool)
        )
        return Batch(
            categorical=torch.from_numpy(self._categorical(batch, where)),
            numeric=torch.from_numpy(self._numeric(batch, where)),
            labels=torch.from_numpy(values.astype(np.float32)),
        )

    # -- internals -------------------------------------------------------------------------------

    def _positional_names(self) -> tuple[str, ...]:
        """The column names of the training sources, in order: the registered layout, or the
        ``c0, c1, ...`` that prepare gave a headerless file."""
        if self.reading["names"]:
            return tuple(self.reading["names"])
        count = 1 + len(self.fields) + len(self.reading.get("drop") or ())
        return tuple(f"c{i}" for i in range(count))

    def _check_columns(self, columns: Sequence[str], what: str, *, labels: bool) -> None:
        needed = [*self.fields, *([self.label] if labels else [])]
        missing = [name for name in needed if name not in columns]
        if not missing:
            return
        names = ", ".join(shown(m) for m in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        headed = what != "the data frame" and self.reading["header"]
        hint = " (if it has no header, name its columns with --columns)" if headed else ""
        raise SlimctrError(
            f"{what} lacks the column{'s' if len(missing) > 1 else ''} {names}{more}{hint}"
        )

    def _categorical(self, batch: pa.RecordBatch, where: encode.Where) -> np.ndarray:
        columns = []
        for name, field in self.fields.items():
            if field["kind"] != "categorical":
                continue
            values = batch.column(name)
            if field["transform"] == "bucket":
                values = encode.criteo_bucket(encode.parse_numeric(values, name, where))
            local, distinct = encode.encode_tokens(values)
            columns.append(self._ids(name, distinct)[local])
        return np.stack(columns, axis=1) if columns else np.empty((batch.num_rows, 0), np.int32)

    def _ids(self, name: str, distinct: pa.Array) -> np.ndarray:
        """The id of each distinct value of field ``name`` (OOV when not in its vocabulary).

        A few values (a served request) are looked up in a dict of the field's vocabulary, built
        once: a join costs about half a millisecond whatever its size, a dict lookup well under a
        microsecond a value. Many values (a file's batch) are joined, so scoring files never
        builds the dicts of large vocabularies."""
        if len(distinct) <= _DICT_LOOKUP_MAX:
            if name not in self._lookups:
                vocabulary = self.vocabularies.get(name, _EMPTY)
                self._lookups[name] = dict(zip(vocabulary["value"], vocabulary["id"], strict=True))
            lookup = self._lookups[name]
            found = (lookup.get(value, OOV_ID) for value in distinct.to_pylist())
            return np.fromiter(found, np.int32, len(distinct))
        return (
            pl.DataFrame({"value": pl.Series(distinct)})
            .join(
                self.vocabularies.get(name, _EMPTY), on="value", how="left", maintain_order="left"
            )
            .get_column("id")
            .fill_null(OOV_ID)
            .cast(pl.Int32)
            .to_numpy()
        )

    def _numeric(self, batch: pa.RecordBatch, where: encode.Where) -> np.ndarray:
        columns = []
        for name, field in self.fields.items():
            if field["kind"] != "numeric":
                continue
            values = encode.parse_numeric(batch.column(name), name, where)
            scale = field["std"] if field["std"] > 0 else 1.0
            columns.append(np.nan_to_num((values - field["mean"]) / scale, nan=0.0))
        if not columns:
            return np.empty((batch.num_rows, 0), np.float32)
        return np.stack(columns, axis=1).astype(np.float32)


_EMPTY = pl.DataFrame(schema={"value": pl.String, "id": pl.Int32})
_DICT_LOOKUP_MAX = 1_024  # distinct values of a batch up to which _ids looks them up in a dict
