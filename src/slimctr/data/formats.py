"""Raw click logs as a stream of column batches: CSV/TSV (plain or gzip), Parquet and libfm.

Every reader yields polars DataFrames of bounded size, so a file of any length is scanned in
memory proportional to one batch. Text formats are read with pyarrow's streaming CSV reader (which
also streams gzip) with every column as a string; the caller decides what each column means.
Errors name the file and, where the format has lines, the line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slimctr.errors import SlimctrError

FORMATS = ("auto", "csv", "tsv", "parquet", "libfm")
BLOCK_BYTES = 32 << 20  # text read per batch; about 100k Criteo rows
PARQUET_BATCH_ROWS = 131_072
_PARQUET_SUFFIXES = (".parquet", ".pq")
_LIBFM_SUFFIXES = (".libfm", ".libsvm", ".svm")
_LIBFM_TOKEN = r"^[0-9]+:[^:]+$"


@dataclass(frozen=True, kw_only=True)
class SourceFormat:
    """How to read one file. ``names``, if given, names the columns (a header row is skipped)."""

    kind: Literal["csv", "parquet", "libfm"]
    delimiter: str = ","
    header: bool = True
    names: tuple[str, ...] | None = None


def detect_format(
    path: Path,
    requested: str = "auto",
    *,
    delimiter: str | None = None,
    header: bool = True,
    names: tuple[str, ...] | None = None,
) -> SourceFormat:
    """Pick the reader from ``requested`` or, for ``auto``, from the suffix and the first line."""
    if requested not in FORMATS:
        raise SlimctrError(f"unknown format {requested!r} (choose from {', '.join(FORMATS)})")
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    if requested == "parquet" or (requested == "auto" and suffix in _PARQUET_SUFFIXES):
        return SourceFormat(kind="parquet")
    if requested == "libfm" or (requested == "auto" and suffix in _LIBFM_SUFFIXES):
        return SourceFormat(kind="libfm", delimiter=" ", header=False, names=names)
    line = first_line(path)
    if requested == "auto" and _looks_like_libfm(line):
        return SourceFormat(kind="libfm", delimiter=" ", header=False, names=names)
    if delimiter is None:
        delimiter = "\t" if requested == "tsv" or suffix == ".tsv" else _sniff_delimiter(line)
    if len(delimiter) != 1:
        raise SlimctrError(f"delimiter must be one character, got {delimiter!r}")
    return SourceFormat(kind="csv", delimiter=delimiter, header=header, names=names)


class RawSource:
    """One raw file: its columns (known on construction) and a stream of batches."""

    def __init__(self, path: Path, fmt: SourceFormat) -> None:
        if not path.is_file():
            raise SlimctrError(f"no such file: {path}")
        self.path = path
        self.format = fmt
        self.columns = self._read_columns()

    def where(self, row: int) -> str:
        """Human location of 0-based data row ``row``: a line for text, a row for Parquet."""
        if self.format.kind == "parquet":
            return f"{self.path}, row {row + 1}"
        return f"{self.path}, line {row + 1 + int(self.format.header)}"

    def batches(self) -> Iterator[tuple[int, pa.Table]]:
        """Yield ``(first_row, table)`` pairs; raises SlimctrError on unreadable input."""
        rows = 0
        try:
            for batch in self._arrow_batches():
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch])
                if self.format.kind == "libfm":
                    table = self._libfm_fields(table, rows)
                yield rows, table
                rows += batch.num_rows
        except pa.ArrowInvalid as exc:
            raise self._read_error(exc) from None
        except OSError as exc:
            raise SlimctrError(f"cannot read {self.path}: {_arrow_message(exc)}") from None
        if rows == 0:
            raise SlimctrError(f"{self.path} has no data rows")

    # -- columns ---------------------------------------------------------------------------------

    def _read_columns(self) -> tuple[str, ...]:
        if self.format.kind == "parquet":
            try:
                return tuple(pq.read_schema(self.path).names)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SlimctrError(f"{self.path} is not a readable Parquet file "
                                   f"({_arrow_message(exc)})") from None
        first = first_line(self.path)
        if not first.strip():
            raise SlimctrError(f"{self.path} is empty")
        if self.format.kind == "libfm":
            fields = first.split()
            generated = ("label", *(f"f{i}" for i in range(1, len(fields))))
        else:
            fields = next(csv.reader([first], delimiter=self.format.delimiter))
            generated = tuple(f"c{i}" for i in range(len(fields)))
        if self.format.names is not None:
            if len(self.format.names) != len(fields):
                raise SlimctrError(f"{self.path} has {len(fields)} columns, expected "
                                   f"{len(self.format.names)} ({', '.join(self.format.names)})")
            return self.format.names
        if not self.format.header:
            return generated
        duplicates = sorted({name for name in fields if fields.count(name) > 1})
        if duplicates:
            raise SlimctrError(f"{self.path}: duplicate column names {', '.join(duplicates)}")
        return tuple(fields)

    # -- batches ---------------------------------------------------------------------------------

    def _arrow_batches(self, use_threads: bool = True) -> Iterator[pa.RecordBatch]:
        if self.format.kind == "parquet":
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_BATCH_ROWS)
            return
        read = pacsv.ReadOptions(
            block_size=BLOCK_BYTES,
            use_threads=use_threads,
            column_names=list(self.columns),
            skip_rows=int(self.format.header),
        )
        parse = pacsv.ParseOptions(delimiter=self.format.delimiter)
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in self.columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        stream = pa.input_stream(str(self.path), compression=_compression(self.path))
        with pacsv.open_csv(stream, read_options=read, parse_options=parse,
                            convert_options=convert) as reader:
            yield from reader

    def _read_error(self, exc: pa.ArrowInvalid) -> SlimctrError:
        message = _arrow_message(exc)
        if "Expected" in message and "columns" in message:
            return SlimctrError(self._ragged_row_message())
        if "Empty CSV file" in message:
            return SlimctrError(f"{self.path} is empty")
        return SlimctrError(f"cannot read {self.path}: {message}")

    def _ragged_row_message(self) -> str:
        """Rescan without threads: only then does pyarrow report the physical line number."""
        try:
            for _ in self._arrow_batches(use_threads=False):
                pass
        except pa.ArrowInvalid as exc:
            message = _arrow_message(exc)
            line = re.search(r"Row #(\d+)", message)
            got = re.search(r"Expected (\d+) columns, got (\d+)", message)
            if line and got:
                return (f"ragged row: {got.group(2)} fields where {got.group(1)} were expected, "
                        f"{self.path}, line {line.group(1)}")
            return f"malformed row in {self.path}: {message}"
        return f"malformed row in {self.path}"

    def _libfm_fields(self, table: pa.Table, first_row: int) -> pa.Table:
        """``label idx:val ...`` -> label plus one categorical column per token position (idx)."""
        frame = pl.DataFrame(table)
        tokens = frame.columns[1:]
        bad = frame.select(pl.any_horizontal(~pl.col(tokens).str.contains(_LIBFM_TOKEN)).arg_true())
        if bad.height:
            row = int(bad.item(0, 0))
            token = next(t for t in frame.row(row)[1:] if not re.match(_LIBFM_TOKEN, t))
            raise SlimctrError(f"libfm token {token!r} is not idx:val, "
                               f"{self.where(first_row + row)}")
        values = frame.select(pl.col(tokens).str.extract(r":(.+)$").cast(pl.Float64, strict=False))
        not_one = values.select(pl.any_horizontal(pl.col(tokens).ne(1.0).fill_null(True)).arg_true())
        if not_one.height:
            row = int(not_one.item(0, 0))
            raise SlimctrError(f"libfm value other than 1 at {self.where(first_row + row)}; only "
                               "one-hot libfm (one categorical field per token position) is supported")
        ids = frame.select(pl.col(tokens).str.extract(r"^([0-9]+):"))
        return pl.concat([frame.select(frame.columns[0]), ids], how="horizontal").to_arrow()


def _compression(path: Path) -> str | None:
    with open(path, "rb") as handle:
        return "gzip" if handle.read(2) == b"\x1f\x8b" else None


def first_line(path: Path) -> str:
    """The first line of a text file, plain or gzip, without its line ending."""
    if not path.is_file():
        raise SlimctrError(f"no such file: {path}")
    try:
        with pa.input_stream(str(path), compression=_compression(path)) as stream:
            head = stream.read(1 << 16)
    except OSError as exc:
        raise SlimctrError(f"cannot read {path}: {_arrow_message(exc)}") from None
    try:
        return head.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise SlimctrError(f"{path} is not UTF-8 text (for Parquet, use --format parquet)") from None


def _looks_like_libfm(line: str) -> bool:
    tokens = line.split()
    return len(tokens) > 1 and all(re.match(_LIBFM_TOKEN, t) for t in tokens[1:])


def _sniff_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _arrow_message(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
