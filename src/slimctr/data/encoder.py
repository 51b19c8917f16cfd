"""Raw rows to batches with a prepared store's encoding: what `slimctr predict` feeds a model.

New input is read the way the store's sources were (format, delimiter, header, column names);
every categorical value goes through the store's vocabulary (unseen or rare values get the field's
OOV id) and every numeric value through its training mean and std. Row order is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from slimctr.data import encode
from slimctr.data.batch import Batch
from slimctr.data.formats import RawSource, SourceFormat, detect_format
from slimctr.data.store import VOCABULARY, Store
from slimctr.errors import SlimctrError
from slimctr.schema import OOV_ID


class StoreEncoder:
    """Encodes raw files into ``Batch`` objects exactly as ``prepare`` encoded the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fields = {f["name"]: f for f in store.manifest["fields"]}
        vocabulary = pl.read_parquet(store.path / VOCABULARY)
        self.vocabularies = {
            name: frame.drop("field", "count")
            for (name,), frame in vocabulary.partition_by("field", as_dict=True).items()
        }

    def batches(self, path: Path) -> Iterator[Batch]:
        """Batches of ``path`` in file order; labels are those of the file when it has them."""
        source = self._source(path)
        label = self.store.schema.label
        has_label = label in source.columns
        missing = [name for name in self.fields if name not in source.columns]
        if missing:
            raise SlimctrError(
                f"{path} lacks the columns {', '.join(missing)} "
                f"(the model was trained on {', '.join(self.fields)})"
            )
        numeric = [n for n, f in self.fields.items() if f["transform"] != "token"]
        numeric += [label] if has_label else []
        categorical = [n for n, f in self.fields.items() if f["transform"] == "token"]
        for first_row, batch in source.batches(numeric=numeric, categorical=categorical):

            def where(row: int, first_row: int = first_row) -> str:
                return source.where(first_row + row)

            labels = (
                encode.parse_labels(batch.column(label), label, where) == 1
                if has_label
                else np.zeros(batch.num_rows, dtype=bool)
            )
            yield Batch(
                categorical=torch.from_numpy(self._categorical(batch, where)),
                numeric=torch.from_numpy(self._numeric(batch, where)),
                labels=torch.from_numpy(labels.astype(np.float32)),
            )

    def _source(self, path: Path) -> RawSource:
        options = self.store.manifest["options"]
        names = options.get("names")
        label = self.store.schema.label
        fmt = detect_format(
            path,
            options["format"],
            delimiter=options["delimiter"],
            header=options["header"],
            names=tuple(names) if names else None,
        )
        if names and fmt.kind != "parquet":
            try:
                return RawSource(path, fmt)
            except SlimctrError:  # the same layout without its label column
                fmt = SourceFormat(
                    kind=fmt.kind,
                    delimiter=fmt.delimiter,
                    header=fmt.header,
                    names=tuple(n for n in names if n != label),
                )
        return RawSource(path, fmt)

    def _categorical(self, batch: pa.RecordBatch, where: encode.Where) -> np.ndarray:
        columns = []
        for spec in self.store.schema.categorical:
            field = self.fields[spec.name]
            values = batch.column(spec.name)
            if field["transform"] == "bucket":
                values = encode.criteo_bucket(encode.parse_numeric(values, spec.name, where))
            local, distinct = encode.encode_tokens(values)
            lookup = (
                pl.DataFrame({"value": pl.Series(distinct)})
                .join(
                    self.vocabularies.get(spec.name, _EMPTY),
                    on="value",
                    how="left",
                    maintain_order="left",
                )
                .get_column("id")
                .fill_null(OOV_ID)
                .cast(pl.Int32)
                .to_numpy()
            )
            columns.append(lookup[local])
        return np.stack(columns, axis=1) if columns else np.empty((batch.num_rows, 0), np.int32)

    def _numeric(self, batch: pa.RecordBatch, where: encode.Where) -> np.ndarray:
        columns = []
        for spec in self.store.schema.numeric:
            field = self.fields[spec.name]
            values = encode.parse_numeric(batch.column(spec.name), spec.name, where)
            scale = field["std"] if field["std"] > 0 else 1.0
            columns.append(np.nan_to_num((values - field["mean"]) / scale, nan=0.0))
        if not columns:
            return np.empty((batch.num_rows, 0), np.float32)
        return np.stack(columns, axis=1).astype(np.float32)


_EMPTY = pl.DataFrame(schema={"id": pl.Int32, "value": pl.String})
