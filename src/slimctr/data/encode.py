"""Per-batch column transforms shared by `prepare` and, later, `predict`.

Each function takes one raw column of a batch (text from CSV/libfm, or a native Parquet type) and
returns numpy arrays or arrow tokens; problems raise SlimctrError naming the column and the row,
through a ``where(row) -> str`` callback that turns a batch row into a file location.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from slimctr.errors import SlimctrError, shown

Where = Callable[[int], str]
Transform = Literal["token", "bucket", "standardize"]
MISSING_TOKEN = ""  # missing categorical values (empty or null) form one ordinary category


def parse_labels(column: pa.Array, name: str, where: Where) -> np.ndarray:
    """Labels as float64 in {-1, 0, 1}; anything else (or an empty label) is an error at its row.

    The caller maps them to 0/1 (``labels == 1``) after checking that 0 and -1 are not mixed.
    """
    values = _to_float(column, name, where, what="label")
    missing = np.isnan(values)
    if missing.any():
        row = int(np.argmax(missing))
        raise SlimctrError(f"empty label in column {shown(name)}, {where(row)}")
    bad = (values != 0) & (values != 1) & (values != -1)
    if bad.any():
        row = int(np.argmax(bad))
        raise SlimctrError(
            f"label {_number(values[row])} is not 0/1 or -1/1 in column {shown(name)}, {where(row)}"
        )
    return values


def parse_numeric(column: pa.Array, name: str, where: Where) -> np.ndarray:
    """Float64 values with NaN for missing (empty or null); a non-number, or a number that is
    not finite (``inf``, ``nan``, an overflow such as ``1e400``), is an error at its row."""
    return _to_float(column, name, where, what="numeric")


def criteo_bucket(values: np.ndarray) -> pa.Array:
    """Criteo's integer bucketing: floor(ln(v)^2) for v > 2, else floor(v) - 2; null if missing.

    The buckets are then treated as categories. (GDCN reference code; spec gdcn.md section 7.4.)
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        large = np.floor(np.log(values) ** 2)
    buckets = np.where(values > 2, large, np.floor(values) - 2)
    missing = np.isnan(buckets)
    return pa.array(np.where(missing, 0, buckets).astype(np.int64), mask=missing)


def encode_tokens(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode one batch of a categorical column: (int32 index per row, distinct values).

    Values of any type become strings (``3`` and ``"3"`` are one category), and a missing value
    (null) becomes the missing token. Text columns arrive already dictionary-encoded by the reader.
    """
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array, null_encoding="encode")
    distinct = array.dictionary
    if not pa.types.is_string(distinct.type):
        distinct = distinct.cast(pa.string())
    if distinct.null_count:
        distinct = pl.Series(distinct).fill_null(MISSING_TOKEN).to_arrow().cast(pa.string())
    return _view(array.indices, np.int32), distinct


def is_float_column(column: pa.Array) -> bool:
    """Inference rule: a column is numeric when its values are real numbers, not all integers.

    Integer-looking columns (ids, hours, Frappe's feature indices) are categorical by default;
    name integer counts with ``--numeric``.
    """
    if pa.types.is_floating(column.type):
        return True
    if not pa.types.is_string(column.type):
        return False
    series = pl.Series(column)
    present = series.filter(series.str.len_chars() > 0)
    parsed = present.cast(pl.Float64, strict=False)
    if present.is_empty() or parsed.null_count() > 0:
        return False
    return bool((parsed != parsed.floor()).any())


def _to_float(array: pa.Array, name: str, where: Where, what: str) -> np.ndarray:
    """Finite float64 values, NaN where missing; raises at the first bad row."""
    if pa.types.is_dictionary(array.type):  # a categorical field that also orders the split
        array = array.dictionary_decode()
    present: np.ndarray | None  # None: every row holds a value
    text: pl.Series | None = None  # the original text, quoted by the error
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        values, present, text = _parse_text(array, name, where, what)
    else:
        values, present = _numbers(array, name, what)
    not_finite = ~np.isfinite(values)
    if present is not None:
        not_finite &= present
    if not_finite.any():
        row = int(np.argmax(not_finite))
        value = shown(text[row]) if text is not None else str(values[row])
        raise SlimctrError(
            f"non-finite value {value} in {what} column {shown(name)} "
            f"(numbers must be finite), {where(row)}"
        )
    return values


def _parse_text(
    array: pa.Array, name: str, where: Where, what: str
) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    """Text to float64 (NaN where empty), which rows hold a value, and the text itself."""
    text = pl.Series(array).str.strip_chars()
    present = text.is_not_null() & (text.str.len_chars() > 0)
    parsed = text.cast(pl.Float64, strict=False)
    bad = present & parsed.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise SlimctrError(
            f"non-numeric value {shown(text[row])} in {what} column {shown(name)}, {where(row)}"
        )
    return parsed.fill_null(np.nan).to_numpy(), present.to_numpy(), text


def _numbers(array: pa.Array, name: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric arrow array as float64 (NaN where null) and its validity (None: no nulls)."""
    if not (
        pa.types.is_integer(array.type)
        or pa.types.is_floating(array.type)
        or pa.types.is_boolean(array.type)
    ):
        raise SlimctrError(f"{what} column {shown(name)} has type {array.type}, expected numbers")
    floats = array.cast(pa.float64())
    values = _view(floats, np.float64)
    if not floats.null_count:
        return values, None
    bits = np.unpackbits(
        np.frombuffer(floats.buffers()[0], dtype=np.uint8),
        bitorder="little",
        count=floats.offset + len(floats),
    )
    present = bits[floats.offset :].view(bool)
    return np.where(present, values, np.nan), present


def _view(array: pa.Array, dtype: type) -> np.ndarray:
    """Zero-copy numpy view of the values of a primitive arrow array (nulls hold garbage).

    ``Array.to_numpy`` (like ``pc.fill_null`` with a scalar) would import pandas whenever it is
    installed, which costs half a second per process.
    """
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * itemsize
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
