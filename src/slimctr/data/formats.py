"""Raw click logs as a stream of column batches: CSV/TSV (plain or gzip), Parquet and libfm.

Every reader yields arrow record batches of bounded size, so a file of any length is scanned in
memory proportional to one batch. Text (plain or gzip) is cut into newline-aligned pieces, each
parsed by pyarrow with the column types the caller asks for (float64 numbers, dictionary-encoded
categories, strings otherwise). Errors name the file and, where the format has lines, the line.

Text as spreadsheets save it reads as expected: a UTF-8 byte-order mark is skipped, lines may end
in ``\r\n``, values may be quoted (``"a,b"``, doubled quotes inside) or empty. Only an empty
numeric value is missing (``NA`` or ``nan`` are not). A quoted value holding a line break is
refused: a piece boundary could fall inside it, so it could not be read reliably.
"""

from __future__ import annotations

import csv
import mmap
import re
from collections import Counter, deque
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slimctr.errors import SlimctrError, shown

FORMATS = ("auto", "csv", "tsv", "parquet", "libfm")
PIECE_BYTES = 32 << 20  # text parsed at a time (bounds memory)
BLOCK_BYTES = 8 << 20  # text per batch (one dictionary per categorical column); ~30k Criteo rows
PARQUET_BATCH_ROWS = 131_072
SAMPLE_BYTES = 1 << 20  # text read to infer column kinds
SAMPLE_ROWS = 10_000  # Parquet rows read to infer column kinds
_PARQUET_SUFFIXES = (".parquet", ".pq")
_LIBFM_SUFFIXES = (".libfm", ".libsvm", ".svm")
_LIBFM_TOKEN = r"^[0-9]+:[^:]+$"
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, written by Excel and LibreOffice
LISTED_NAMES = 12  # column names a message quotes before it counts the rest
_HEADER_PROBLEMS = {  # Python's csv errors, in words that say what to fix
    "end of data": "a quoted value runs past the end of the line (line breaks inside quoted "
    "values are not supported)",
    "new-line": "a carriage return inside the line (lines must end with \\n or \\r\\n)",
}


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
        raise SlimctrError(f"unknown format {shown(requested)} (choose from {', '.join(FORMATS)})")
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
        raise SlimctrError(f"delimiter must be one character, got {shown(delimiter)}")
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

    def batches(
        self,
        *,
        numeric: Collection[str] = (),
        categorical: Collection[str] = (),
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Yield ``(first_row, batch)`` pairs; raises SlimctrError on unreadable input.

        For text, ``numeric`` columns are parsed as float64 (empty -> null) and ``categorical``
        ones dictionary-encoded while parsing (one dictionary per batch); other columns stay
        strings. Parquet columns keep their own types.
        """
        types = {
            **{c: pa.float64() for c in numeric},
            **{c: pa.dictionary(pa.int32(), pa.string()) for c in categorical},
        }
        if self.format.kind == "libfm":  # tokens are split into idx and value afterwards
            types = {c: t for c, t in types.items() if c == self.columns[0]}
        rows = 0
        try:
            for batch in self._arrow_batches(types):
                if batch.num_rows == 0:
                    continue
                if self.format.kind != "parquet":
                    self._refuse_line_breaks(batch, rows)
                if self.format.kind == "libfm":
                    batch = self._libfm_fields(batch, rows)
                yield rows, batch
                rows += batch.num_rows
        except OSError as exc:
            raise SlimctrError(f"cannot read {self.path}: {_arrow_message(exc)}") from None
        if rows == 0:
            raise SlimctrError(f"{self.path} has no data rows")

    def sample(self) -> pa.RecordBatch:
        """The first rows, every column as a string (text) or its own type (Parquet)."""
        if self.format.kind == "parquet":
            batches = pq.ParquetFile(self.path).iter_batches(batch_size=SAMPLE_ROWS)
        else:
            pieces = self._text_pieces(SAMPLE_BYTES)
            batches = (self._parse_or_explain(piece, offset, {}) for offset, piece in pieces)
        try:
            for batch in batches:
                return self._libfm_fields(batch, 0) if self.format.kind == "libfm" else batch
        except OSError as exc:
            raise SlimctrError(f"cannot read {self.path}: {_arrow_message(exc)}") from None
        raise SlimctrError(f"{self.path} has no data rows")

    # -- columns ---------------------------------------------------------------------------------

    def _read_columns(self) -> tuple[str, ...]:
        if self.format.kind == "parquet":
            try:
                names = pq.read_schema(self.path).names
            except (pa.ArrowInvalid, OSError) as exc:
                raise SlimctrError(
                    f"{self.path} is not a readable Parquet file ({_arrow_message(exc)})"
                ) from None
            return _unique(names, self.path)
        first = first_line(self.path)
        if not first.strip():
            raise SlimctrError(f"{self.path} is empty")
        if self.format.kind == "libfm":
            fields = first.split()
            generated = ("label", *(f"f{i}" for i in range(1, len(fields))))
        else:
            fields = self._first_fields(first)
            generated = tuple(f"c{i}" for i in range(len(fields)))
        if self.format.names is not None:
            if len(self.format.names) != len(fields):
                raise SlimctrError(
                    f"{self.path} has {len(fields)} columns, expected "
                    f"{len(self.format.names)} ({listed(self.format.names)})"
                )
            return self.format.names
        if not self.format.header:
            return generated
        return _unique(fields, self.path)

    def _first_fields(self, first: str) -> list[str]:
        """The delimited fields of the first line, read as pyarrow will read the data lines."""
        try:
            return next(csv.reader([first], delimiter=self.format.delimiter, strict=True))
        except csv.Error as exc:
            problem = next(
                (text for key, text in _HEADER_PROBLEMS.items() if key in str(exc)), str(exc)
            )
            raise SlimctrError(f"cannot read {self.path}, line 1: {problem}") from None

    # -- batches ---------------------------------------------------------------------------------

    def _arrow_batches(self, types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        if self.format.kind == "parquet":
            try:
                yield from pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_BATCH_ROWS)
            except pa.ArrowInvalid as exc:
                raise SlimctrError(f"cannot read {self.path}: {_arrow_message(exc)}") from None
            return
        # The next piece is parsed in the background while the caller works on this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            parsing: deque[tuple[int, memoryview, Future[pa.Table]]] = deque()
            for offset, piece in self._text_pieces(PIECE_BYTES):
                parsing.append((offset, piece, pool.submit(self._parse, piece, types, True)))
                if len(parsing) > 1:
                    yield from self._parsed(*parsing.popleft(), types)
            while parsing:
                yield from self._parsed(*parsing.popleft(), types)

    def _parse_or_explain(
        self, piece: memoryview, offset: int, types: dict[str, pa.DataType]
    ) -> pa.RecordBatch:
        try:
            return self._parse(piece, types, use_threads=True).combine_chunks().to_batches()[0]
        except pa.ArrowInvalid:
            raise self._parse_error(piece, offset, types) from None

    def _parsed(
        self,
        offset: int,
        piece: memoryview,
        future: Future[pa.Table],
        types: dict[str, pa.DataType],
    ) -> Iterator[pa.RecordBatch]:
        try:
            table = future.result()
        except pa.ArrowInvalid:
            raise self._parse_error(piece, offset, types) from None
        yield from table.to_batches()

    def _text_pieces(self, size: int) -> Iterator[tuple[int, memoryview]]:
        """The decompressed text in newline-aligned pieces, each with its offset in the text.

        pyarrow's one-shot parser on a piece is several times faster than its streaming reader,
        and memory stays at one piece. Plain files are memory-mapped rather than copied.
        (Quoted fields must not span lines.)
        """
        if _compression(self.path) is None:
            yield from self._mapped_pieces(size)
            return
        offset, carry = 0, b""
        with pa.input_stream(str(self.path), compression="gzip") as stream:
            while data := stream.read(size):
                data = carry + data if carry else data
                start = self._data_start(data) if offset == 0 else 0
                cut = max(data.rfind(b"\n") + 1, start)
                if cut > start:
                    yield offset + start, memoryview(data)[start:cut]
                carry, offset = data[cut:], offset + cut
        if carry.strip() and not (offset == 0 and self.format.header):
            yield offset, memoryview(carry)

    def _data_start(self, text: bytes | mmap.mmap) -> int:
        """Where the data lines of ``text`` (the file's start) begin: after the header line, if
        any. (pyarrow skips a byte-order mark at the start of headerless text itself.)"""
        return (text.find(b"\n") + 1 or len(text)) if self.format.header else 0

    def _mapped_pieces(self, size: int) -> Iterator[tuple[int, memoryview]]:
        with open(self.path, "rb") as handle:
            # Not closed explicitly: pieces handed out may still be referenced; GC unmaps it.
            text = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        start = self._data_start(text)
        done: deque[tuple[int, int]] = deque()
        while start < len(text):
            end = text.rfind(b"\n", start, start + size) + 1
            if start + size >= len(text):
                end = len(text)
            elif end <= start:  # a line longer than a piece
                end = text.find(b"\n", start + size) + 1 or len(text)
            if end - start > 4096 or text[start:end].strip():
                yield start, memoryview(text)[start:end]
            done.append((start, end))
            if len(done) > 2:  # two pieces back is parsed and consumed: drop it from our RSS
                first, last = done.popleft()
                page = first - first % mmap.PAGESIZE
                text.madvise(mmap.MADV_DONTNEED, page, last - page)
            start = end

    def _lines_before(self, offset: int) -> int:
        """Lines in the text before byte ``offset``; rescans the file (error messages only)."""
        lines = 0
        with pa.input_stream(str(self.path), compression=_compression(self.path)) as stream:
            while offset > 0 and (data := stream.read(min(PIECE_BYTES, offset))):
                lines, offset = lines + data.count(b"\n"), offset - len(data)
        return lines

    def _parse(
        self, piece: memoryview, types: dict[str, pa.DataType], use_threads: bool
    ) -> pa.Table:
        return pacsv.read_csv(
            pa.py_buffer(piece),
            read_options=pacsv.ReadOptions(
                column_names=list(self.columns), block_size=BLOCK_BYTES, use_threads=use_threads
            ),
            # Quote-aware block cuts: a quoted line break is then read whole and refused by name.
            parse_options=pacsv.ParseOptions(
                delimiter=self.format.delimiter, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: types.get(name, pa.string()) for name in self.columns},
                # Only an empty number, quoted or not, is missing: pyarrow's default list would
                # make "nan" and "NA" missing too. Text is never missing, just empty.
                null_values=[""],
                strings_can_be_null=False,
            ),
        )

    def _parse_error(
        self, piece: memoryview, offset: int, types: dict[str, pa.DataType]
    ) -> SlimctrError:
        """Name the line: pyarrow reports row numbers only when parsing without threads."""
        try:
            self._parse(piece, types, use_threads=False)
            return SlimctrError(f"cannot parse {self.path} near line {self._lines_before(offset)}")
        except pa.ArrowInvalid as exc:
            message, summary = str(exc), _arrow_message(exc)
        line = re.search(r"Row #(\d+)", message)
        where = (
            f"{self.path}, line {self._lines_before(offset) + int(line.group(1))}"
            if line
            else str(self.path)
        )
        ragged = re.search(r"Expected (\d+) columns, got (\d+): (.*)", message, re.DOTALL)
        if ragged:
            open_quote = ragged.group(3).count('"') % 2  # the row may stop inside a quoted value
            hint = " (a quoted value spanning lines? that is not supported)" if open_quote else ""
            return SlimctrError(
                f"ragged row: {ragged.group(2)} fields where {ragged.group(1)} "
                f"were expected{hint}, {where}"
            )
        invalid = re.search(r"CSV column #(\d+).*invalid value '(.*)'", message, re.DOTALL)
        if invalid:
            column = self.columns[int(invalid.group(1))]
            return SlimctrError(
                f"non-numeric value {shown(invalid.group(2))} in column {shown(column)} "
                f"(a number was expected), {where}"
            )
        not_utf8 = re.search(r"CSV column #(\d+).*invalid UTF8", message)
        if not_utf8:
            column = self.columns[int(not_utf8.group(1))]
            return SlimctrError(f"text that is not UTF-8 in column {shown(column)}, {where}")
        return SlimctrError(f"cannot read {where}: {summary}")

    def _refuse_line_breaks(self, batch: pa.RecordBatch, first_row: int) -> None:
        """A quoted value with a line break was parsed whole inside its piece, but the next one
        might be cut at a piece boundary and read as two rows; refuse them all alike."""
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            distinct = column.dictionary if pa.types.is_dictionary(column.type) else column
            if not pa.types.is_string(distinct.type):
                continue
            if pc.any(pc.match_substring(distinct, "\n")).as_py():
                if distinct is not column:
                    column = column.dictionary_decode()
                row = pc.index(pc.match_substring(column, "\n"), True).as_py()
                raise SlimctrError(
                    f"a quoted value in column {shown(name)} spans lines (line breaks inside "
                    f"quoted values are not supported), {self.where(first_row + row)}"
                )

    def _libfm_fields(self, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        """``label idx:val ...`` -> label plus one categorical column per token position (idx)."""
        frame = pl.DataFrame(pa.Table.from_batches([batch]))
        tokens = frame.columns[1:]
        bad = frame.select(pl.any_horizontal(~pl.col(tokens).str.contains(_LIBFM_TOKEN)).arg_true())
        if bad.height:
            row = int(bad.item(0, 0))
            token = next(t for t in frame.row(row)[1:] if not re.match(_LIBFM_TOKEN, t))
            raise SlimctrError(
                f"libfm token {shown(token)} is not idx:val, {self.where(first_row + row)}"
            )
        values = frame.select(pl.col(tokens).str.extract(r":(.+)$").cast(pl.Float64, strict=False))
        not_one = values.select(
            pl.any_horizontal(pl.col(tokens).ne(1.0).fill_null(True)).arg_true()
        )
        if not_one.height:
            row = int(not_one.item(0, 0))
            raise SlimctrError(
                f"libfm value other than 1 at {self.where(first_row + row)}; only "
                "one-hot libfm (one categorical field per token position) is supported"
            )
        ids = frame.select(pl.col(tokens).str.extract(r"^([0-9]+):"))
        fields = pl.concat([frame.select(frame.columns[0]), ids], how="horizontal")
        return fields.to_arrow().combine_chunks().to_batches()[0]


def _compression(path: Path) -> str | None:
    with open(path, "rb") as handle:
        return "gzip" if handle.read(2) == b"\x1f\x8b" else None


def first_line(path: Path) -> str:
    """The first line of a text file, plain or gzip, without byte-order mark and line ending."""
    if not path.is_file():
        raise SlimctrError(f"no such file: {path}")
    chunks: list[bytes] = []
    try:
        with pa.input_stream(str(path), compression=_compression(path)) as stream:
            while (chunk := stream.read(1 << 16)) and b"\n" not in chunk:
                chunks.append(chunk)
                if len(chunks) << 16 > PIECE_BYTES:  # not text, or not lines
                    raise SlimctrError(f"{path}: the first line is longer than {PIECE_BYTES} bytes")
    except OSError as exc:
        raise SlimctrError(f"cannot read {path}: {_arrow_message(exc)}") from None
    line = b"".join([*chunks, chunk]).split(b"\n", 1)[0]
    try:
        return line.removeprefix(_BOM).decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise SlimctrError(
            f"{path} is not UTF-8 text (for Parquet, use --format parquet)"
        ) from None


def _looks_like_libfm(line: str) -> bool:
    tokens = line.split()
    return len(tokens) > 1 and all(re.match(_LIBFM_TOKEN, t) for t in tokens[1:])


def _sniff_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def listed(names: Sequence[str]) -> str:
    """Column names for a message: each ``shown``, the first ``LISTED_NAMES`` of them."""
    text = ", ".join(shown(name) for name in names[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return f"{text} and {more} more" if more > 0 else text


def _unique(names: Sequence[str], path: Path) -> tuple[str, ...]:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise SlimctrError(f"{path}: duplicate column names {listed(duplicates)}")
    return tuple(names)


def _arrow_message(exc: BaseException) -> str:
    return _cut(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__


def _cut(message: str, limit: int = 300) -> str:
    """pyarrow quotes whole rows in some messages; a row can be megabytes long."""
    return message if len(message) <= limit else f"{message[: limit - 3]}..."
