"""`slimctr prepare`: raw click logs in, an encoded store out, in memory bounded by vocabularies.

Three steps, each a single sequential pass:

1. **Scan** every source batch by batch. Labels and numeric values go to scratch files as they are;
   each categorical column is dictionary-encoded within its batch (pyarrow, no Python per row),
   the batch-local ids go to a scratch file and the batch's distinct values to a per-field stream.
2. **Split**: with the row count known, assign every row to train/valid/test: by source file, by
   a seeded shuffle of exact 8:1:1 counts, or by the rank of an ordering column.
3. **Finalize** one field at a time: count each value over the *training* rows (or all rows, with
   ``vocabulary_from="all"``, the GDCN reference protocol), keep values seen
   at least ``min_count`` times, number them by count (descending) then value, map batch-local ids
   to those ids (OOV for the rest) and write the column split by split.

Peak memory is one batch in step 1, and one field's distinct values plus a few bytes per row in
step 3, never the whole table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from slimctr import __version__
from slimctr.data import encode
from slimctr.data.finalize import SplitWriter, finalize_categorical, finalize_numeric
from slimctr.data.formats import RawSource, SourceFormat, detect_format, listed
from slimctr.data.scan import Column, Scan, scan_sources
from slimctr.data.store import (
    FORMAT_VERSION,
    LABEL_FILE,
    SPLITS,
    VOCABULARY,
    Store,
    field_file,
    open_store,
    read_manifest,
)
from slimctr.errors import SlimctrError, shown
from slimctr.files import exclusive, remove_leftovers, sha256_file, staged, write_json
from slimctr.schema import OOV_ID, PAD_ID, FieldSpec, Schema

NumericEncoding = Literal["standardize", "bucket"]


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """Everything that decides the content of a store (the sources aside)."""

    format: str = "auto"
    delimiter: str | None = None
    header: bool = True
    names: tuple[str, ...] | None = None  # column names for headerless text
    label: str = "label"
    categorical: tuple[str, ...] | None = None  # None: inferred
    numeric: tuple[str, ...] | None = None  # None: inferred
    drop: tuple[str, ...] = ()
    min_count: int = 1
    vocabulary_from: Literal["train", "all"] = "train"  # which rows count towards min_count
    numeric_encoding: NumericEncoding = "standardize"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    order_by: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise SlimctrError(f"--min-count must be at least 1, got {self.min_count}")
        if self.vocabulary_from not in ("train", "all"):
            raise SlimctrError(
                f"unknown vocabulary source {shown(self.vocabulary_from)} (choose train or all)"
            )
        if self.numeric_encoding not in ("standardize", "bucket"):
            raise SlimctrError(
                f"unknown numeric encoding {shown(self.numeric_encoding)} "
                "(choose standardize or bucket)"
            )
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise SlimctrError(
                f"--split must be three non-negative fractions summing to 1, "
                f"got {','.join(map(str, self.split))}"
            )
        if self.split[0] == 0:
            raise SlimctrError("--split must give the training split a non-zero share")


@dataclass(frozen=True, kw_only=True)
class Sources:
    """Raw files per split. Without ``valid``/``test`` the train files are split by ratio."""

    train: tuple[Path, ...]
    valid: tuple[Path, ...] = ()
    test: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.train:
            raise SlimctrError("no source files given")
        if bool(self.valid) != bool(self.test):
            raise SlimctrError("--valid and --test go together (or use --split)")

    @property
    def by_split(self) -> list[tuple[int, Path]]:
        return [
            (i, p) for i, paths in enumerate((self.train, self.valid, self.test)) for p in paths
        ]


def prepare(
    sources: Sources,
    out: str | Path,
    options: PrepareOptions = PrepareOptions(),
    *,
    overwrite: bool = False,
    attach: dict[str, Path] | None = None,
) -> tuple[Store, bool]:
    """Build the store for ``sources`` in ``out``; returns (store, whether it was built).

    An ``out`` that already holds the store of exactly these sources and options is reused; one
    that holds anything else is an error unless ``overwrite``. ``attach`` copies extra files (e.g.
    a synthetic dataset's ground truth) into the store under the given names. One process at a
    time may prepare into ``out``: a second one is refused at once.
    """
    out = Path(out).resolve()  # see files.staged: every check must see the folder it replaces
    if out.exists() and not out.is_dir():
        raise SlimctrError(f"--out {out} is a file; give a directory for the store")
    if sources.valid and options.order_by:
        raise SlimctrError("--order-by orders a --split; with --valid/--test files it has no use")
    raw = [(split, RawSource(path, _format(path, options))) for split, path in sources.by_split]
    recipe = _recipe(raw, options)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlimctrError(f"cannot create the folder of --out {out}: {exc.strerror}") from None
    with exclusive(out, "the store"):
        remove_leftovers(out)
        existing = read_manifest(out) if out.is_dir() else None
        if existing is not None and existing.get("recipe_id") == recipe["id"] and not overwrite:
            return open_store(out), False  # same sources and options: their columns were checked
        columns = _plan_columns(raw, options)
        if out.exists() and not overwrite and (existing is not None or any(out.iterdir())):
            what = "a different store" if existing is not None else "other files"
            raise SlimctrError(f"{out} already holds {what} (use --overwrite to replace it)")
        _build_into(out, raw, columns, options, recipe, attach or {})
    return open_store(out, verify=False), True


def _build_into(
    out: Path,
    raw: list[tuple[int, RawSource]],
    columns: list[Column],
    options: PrepareOptions,
    recipe: dict[str, object],
    attach: dict[str, Path],
) -> None:
    """Build the store in a staging sibling and move it onto ``out`` only once it is complete."""
    with staged(out) as staging:
        manifest = _build(raw, columns, options, staging, recipe)
        for name, path in attach.items():
            shutil.copyfile(path, staging / name)
            manifest["checksums"][name] = sha256_file(staging / name)
        write_json(staging / "manifest.json", manifest)


def _format(path: Path, options: PrepareOptions) -> SourceFormat:
    return detect_format(
        path,
        options.format,
        delimiter=options.delimiter,
        header=options.header,
        names=options.names,
    )


def _plan_columns(raw: list[tuple[int, RawSource]], options: PrepareOptions) -> list[Column]:
    """Each column's role: the label, dropped, or a field; unlisted columns are inferred."""
    first = raw[0][1]
    for _, source in raw[1:]:
        if source.columns != first.columns:
            raise SlimctrError(
                f"{source.path} has columns {listed(source.columns)}, unlike "
                f"{first.path} ({listed(first.columns)})"
            )
    categorical, numeric = options.categorical or (), options.numeric or ()
    _check_named_columns(first, options)
    both = [name for name in categorical if name in numeric]
    if both:
        raise SlimctrError(f"columns given as both categorical and numeric: {listed(both)}")
    if options.label in (*categorical, *numeric, *options.drop):
        raise SlimctrError(
            f"the label column {shown(options.label)} cannot also be a field or dropped"
        )
    fields = [c for c in first.columns if c != options.label and c not in options.drop]
    if not fields:
        raise SlimctrError(f"{first.path} has no feature columns besides the label")
    unlisted = [c for c in fields if c not in categorical and c not in numeric]
    if unlisted:
        sample = first.sample()
        numeric = (*numeric, *(c for c in unlisted if encode.is_float_column(sample.column(c))))
    transform: encode.Transform = (
        "bucket" if options.numeric_encoding == "bucket" else "standardize"
    )
    return [
        Column(name, transform if name in numeric else "token", position)
        for position, name in enumerate(fields)
    ]


def _check_named_columns(source: RawSource, options: PrepareOptions) -> None:
    """Every column an option names must exist."""
    named = {
        "--label": (options.label,),
        "--drop": options.drop,
        "--categorical": options.categorical or (),
        "--numeric": options.numeric or (),
        "--order-by": (options.order_by,) if options.order_by else (),
    }
    for flag, names in named.items():
        for name in names:
            if name not in source.columns:
                raise SlimctrError(
                    f"column {shown(name)} given to {flag} not found in {source.path} "
                    f"(columns: {listed(source.columns)})"
                )


def _recipe(raw: list[tuple[int, RawSource]], options: PrepareOptions) -> dict[str, object]:
    """What decides a store's content, with a hash to recognise an identical rebuild."""
    sources = [
        {"split": SPLITS[split], "path": str(source.path.resolve()), **_fingerprint(source.path)}
        for split, source in raw
    ]
    body = {"format_version": FORMAT_VERSION, "sources": sources, "options": asdict(options)}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {"id": digest, **body}


def _fingerprint(path: Path) -> dict[str, object]:
    """Size and a hash of the first and last MiB: cheap, and enough to notice a change. The mtime
    is left out: a copy of the same file (a fresh checkout, data provisioned again) is the same
    source."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, stat.st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return {
        "bytes": stat.st_size,
        "head_tail_sha256": digest.hexdigest(),
    }


def _build(
    raw: list[tuple[int, RawSource]],
    columns: list[Column],
    options: PrepareOptions,
    staging: Path,
    recipe: dict[str, object],
) -> dict[str, Any]:
    scratch = staging / "scratch"
    scratch.mkdir()
    (staging / "columns").mkdir()
    scan = scan_sources(
        raw, columns, label=options.label, order_by=options.order_by, scratch=scratch
    )
    assignment, split_info = _assign_splits(scan, options)
    train = assignment == 0
    rows = {name: int((assignment == i).sum()) for i, name in enumerate(SPLITS)}
    if rows["train"] == 0:
        raise SlimctrError("the training split is empty")
    writer = SplitWriter(assignment, scan.batch_rows)
    checksums = {
        LABEL_FILE: writer.write(
            staging / LABEL_FILE,
            np.uint8,
            writer.read(scan.file("label", "raw"), np.uint8),
        )
    }

    def finalize(column: Column) -> tuple[dict[str, Any], pl.DataFrame | None]:
        path = staging / field_file(column.position)
        if column.kind == "numeric":
            return finalize_numeric(column, scan, train, writer, path), None
        counted = train if options.vocabulary_from == "train" else np.ones_like(train)
        return finalize_categorical(column, scan, counted, options.min_count, writer, path)

    fields, vocabularies = [], []
    # Fields are independent and numpy, polars and hashlib release the GIL: one thread per core.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        for column, (spec, vocab) in zip(columns, pool.map(finalize, columns), strict=True):
            relative = field_file(column.position)
            checksums[relative] = spec.pop("sha256")
            fields.append({**spec, "file": relative})
            if vocab is not None:
                vocabularies.append(vocab)
    shutil.rmtree(scratch)
    vocabulary = pl.concat(vocabularies) if vocabularies else _empty_vocabulary()
    vocabulary.write_parquet(staging / VOCABULARY)
    checksums[VOCABULARY] = sha256_file(staging / VOCABULARY)
    schema = Schema(
        label=options.label,
        fields=tuple(
            FieldSpec(name=f["name"], kind=f["kind"], vocab_size=f.get("vocab_size", 0))
            for f in fields
        ),
    )
    return {
        "format_version": FORMAT_VERSION,
        "slimctr_version": __version__,
        "recipe_id": recipe["id"],
        "schema": schema.to_dict(),
        "rows": rows,
        "split": split_info,
        "label_file": LABEL_FILE,
        "pad_id": PAD_ID,
        "oov_id": OOV_ID,
        "fields": fields,
        "sources": recipe["sources"],
        "options": recipe["options"],
        "checksums": checksums,
    }


def _assign_splits(scan: Scan, options: PrepareOptions) -> tuple[np.ndarray, dict[str, object]]:
    """Split index per row (0 train, 1 valid, 2 test) and a record of how it was drawn."""
    n = scan.num_rows
    if any(scan.batch_split):
        assignment = np.repeat(np.array(scan.batch_split, dtype=np.uint8), scan.batch_rows)
        info: dict[str, object] = {"method": "files"}
    else:
        n_valid, n_test = int(n * options.split[1]), int(n * options.split[2])
        counts = [n - n_valid - n_test, n_valid, n_test]
        if options.order_by:
            keys = np.fromfile(scan.file("order", "raw"), dtype=np.float64)
            ranks = np.empty(n, dtype=np.int64)
            ranks[np.argsort(keys, kind="stable")] = np.arange(n)
            assignment = np.searchsorted(np.cumsum(counts), ranks, side="right").astype(np.uint8)
            info = {"method": "ordered", "order_by": options.order_by}
        else:
            assignment = np.repeat(np.arange(3, dtype=np.uint8), counts)
            np.random.default_rng(options.seed).shuffle(assignment)
            info = {"method": "random", "seed": options.seed}
        info["ratios"] = list(options.split)
    info["assignment_sha256"] = hashlib.sha256(assignment.tobytes()).hexdigest()
    return assignment, info


def _empty_vocabulary() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"field": pl.String, "id": pl.Int32, "value": pl.String, "count": pl.Int64}
    )
