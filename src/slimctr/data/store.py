"""The encoded store: one contiguous array per field plus a manifest, memory-mapped for reading.

Layout of ``DATA_DIR``::

    manifest.json          schema, rows per split, split recipe, sources, checksums (below)
    vocabulary.parquet     field, id, value, count: the kept values of every categorical field
    columns/label.npy      uint8, one per row
    columns/field-NNNN.npy int32 ids (categorical) or float32 values (numeric) of the field at
                           position NNNN, one per row

Rows are stored split by split: train, then valid, then test, so every split is a contiguous range
of every array. Files are named by field position (the manifest maps names to files), never by
column name: a name is user data (it may hold ``/`` or ``..``, or be an absolute path) and never
becomes a path. A store is written into a temporary sibling directory and renamed into place, so
a reader never sees half of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from slimctr.errors import SlimctrError, shown
from slimctr.files import sha256_file
from slimctr.schema import Schema

FORMAT_VERSION = 2  # 2: column files named by field position (1 named them after the column)
MANIFEST = "manifest.json"
VOCABULARY = "vocabulary.parquet"
LABEL_FILE = "columns/label.npy"
SPLITS = ("train", "valid", "test")


def field_stem(position: int) -> str:
    """The file name stem of the field at ``position`` (its index among the fields)."""
    return f"field-{position:04d}"


def field_file(position: int) -> str:
    """The column file of the field at ``position``, relative to the store."""
    return f"columns/{field_stem(position)}.npy"


@dataclass(frozen=True)
class SplitRange:
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


class Store:
    """A prepared data directory: schema, split ranges and memory-mapped columns."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.schema = Schema.from_dict(manifest["schema"])
        offsets = np.cumsum([0] + [manifest["rows"][s] for s in SPLITS])
        self._ranges = {
            s: SplitRange(int(offsets[i]), int(offsets[i + 1])) for i, s in enumerate(SPLITS)
        }
        self._files = {f["name"]: f["file"] for f in manifest["fields"]}

    @property
    def num_rows(self) -> int:
        return self._ranges["test"].stop

    def split(self, name: str) -> SplitRange:
        if name not in self._ranges:
            raise SlimctrError(f"unknown split {shown(name)} (choose from {', '.join(SPLITS)})")
        return self._ranges[name]

    def labels(self) -> np.ndarray:
        return self._array(self.manifest["label_file"])

    def column(self, field: str) -> np.ndarray:
        """The whole memory-mapped column of one field, all splits."""
        return self._array(self._files[field])

    def vocabulary(self, field: str) -> pl.DataFrame:
        """Kept values of a categorical field with their ids and training counts."""
        vocab = pl.scan_parquet(self.path / VOCABULARY).filter(pl.col("field") == field)
        return vocab.drop("field").collect()

    def _array(self, relative: str) -> np.ndarray:
        return np.load(self.path / relative, mmap_mode="r")


def open_store(path: str | Path, *, verify: bool = True) -> Store:
    """Open a store, refusing one from another format version or whose checksums do not match."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise SlimctrError(
            f"{path} is not a slimctr data directory (no {MANIFEST}; "
            "create one with `slimctr prepare`)"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise SlimctrError(
            f"{path} was written with store format {version} by slimctr "
            f"{manifest.get('slimctr_version', '?')}; this slimctr reads format {FORMAT_VERSION} "
            "(prepare it again with --overwrite)"
        )
    for relative, expected in manifest["checksums"].items():
        file = path / relative
        if not file.is_file():
            raise SlimctrError(f"{path} is incomplete: {relative} is missing")
        if verify and sha256_file(file) != expected:
            raise SlimctrError(
                f"checksum mismatch for {file}: the store is corrupt "
                "(prepare it again with --overwrite)"
            )
    return Store(path, manifest)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of ``path`` if it holds one, else None; an unreadable one is an error."""
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SlimctrError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise SlimctrError(f"{file} is not a slimctr manifest")
    return manifest
