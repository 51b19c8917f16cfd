"""The encoded store: one contiguous array per field plus a manifest, memory-mapped for reading.

Layout of ``DATA_DIR``::

    manifest.json          schema, rows per split, split recipe, sources, checksums (below)
    vocabulary.parquet     field, id, value, count: the kept values of every categorical field
    columns/label.npy      uint8, one per row
    columns/<field>.npy    int32 ids (categorical) or float32 values (numeric), one per row

Rows are stored split by split: train, then valid, then test, so every split is a contiguous range
of every array. A store is written into a temporary sibling directory and renamed into place, so a
reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from slimctr.errors import SlimctrError
from slimctr.files import atomic_path
from slimctr.schema import Schema

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VOCABULARY = "vocabulary.parquet"
SPLITS = ("train", "valid", "test")


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
            raise SlimctrError(f"unknown split {name!r} (choose from {', '.join(SPLITS)})")
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


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary name in the same directory, then a rename."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def staging_dir(out: Path) -> Path:
    """A fresh temporary sibling of ``out`` where a store is built before it is moved in."""
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, out: Path) -> None:
    """Move a finished store into place, replacing whatever ``out`` held only at the last step."""
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, trash)
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)
