"""How one embedding table is stored compressed: codecs (dimension-search spec 7.4).

A codec encodes a float32 table (n, d) into named tensors, the only thing stored, and decodes
the rows a batch gathers back to float32 (``decode(stored, rows, d)``), so a model keeps its tables
compressed in memory and dequantises only what it reads. Every tensor a decoder needs (scales,
minimums, steps, PCA components and mean) is stored and counted (``stored_bytes``).

Codec names (``parse``):

    fp16, bf16           a plain cast; values beyond the format's range are refused
    fp8-e4m3, fp8-e5m2   float8 codes times a float32 scale per group of rows, the scale
                         mapping the group's largest |x| to the format's largest finite value;
                         ``@row`` (the default), ``@field`` (one scale) or ``@blockN`` (N rows
                         a scale); ``@none``: no scale, refused when a value is out of range
    int8                 affine codes in [0, 255]: x^ = min + code step, step = (max - min) / 255,
                         round to nearest and clip (never wrap); ``@dim`` (the default: a min and
                         step per dimension, calibrated on the table itself) or ``@row``
    binary               one bit per entry (x > 0) and a float32 scale per row, the row's mean
                         |x| (the scale that minimises the squared error of sign(x) times it)
    pca:F                per-field PCA keeping round(F d) components (``dim_fraction``; at
                         least 1): float32 codes, components and mean; x^ = mean + codes V^T
    pca:F+CODEC          the PCA codes stored with CODEC (quantised after PCA, as the spec says)
    head:S:HEAD/TAIL     the first round(S n) rows (at least one) stored with HEAD, the rest with
                         TAIL: ``prepare`` numbers a field's values by descending count, so the
                         head is the frequent values (after PAD and OOV), e.g. head:0.05:fp16/int8
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal, Protocol

import torch
from torch import Tensor

from slimctr.errors import SlimctrError
from slimctr.pca import FieldPCA

Stored = dict[str, Tensor]
Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]  # stored name -> (shape, dtype)
FLOAT8 = {"fp8-e4m3": torch.float8_e4m3fn, "fp8-e5m2": torch.float8_e5m2}
CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Codec(Protocol):
    @property
    def name(self) -> str: ...

    def encode(self, table: Tensor) -> Stored: ...

    def layout(self, rows: int, width: int) -> Layout: ...

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor: ...


def stored_bytes(stored: Mapping[str, Tensor]) -> int:
    """The bytes of every stored tensor."""
    return sum(t.numel() * t.element_size() for t in stored.values())


def range_violations(table: Tensor, dtype: torch.dtype) -> int:
    """How many finite entries of ``table`` lie beyond ``dtype``'s largest finite value."""
    return int((table.abs() > torch.finfo(dtype).max).sum())


@dataclasses.dataclass(frozen=True)
class Cast:
    """A plain cast to float16 or bfloat16."""

    name: str

    def encode(self, table: Tensor) -> Stored:
        dtype = CASTS[self.name]
        if violations := range_violations(table, dtype):
            raise SlimctrError(f"{self.name}: {violations} values exceed the format's range")
        return {"values": table.to(dtype)}

    def layout(self, rows: int, width: int) -> Layout:
        return {"values": ((rows, width), CASTS[self.name])}

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor:
        return stored["values"][rows].float()


def _groups(rows: Tensor, block: int | None) -> Tensor:
    """The scale group of each row: row // block, or 0 for one scale (``block`` None)."""
    return (
        torch.zeros_like(rows) if block is None else torch.div(rows, block, rounding_mode="floor")
    )


def _group_max(table: Tensor, block: int | None) -> Tensor:
    """max |x| per group of rows: (groups,)."""
    size = table.abs().amax(dim=1) if len(table) else table.new_zeros(0)
    if block is None:
        return size.max().reshape(1) if len(size) else table.new_zeros(1)
    padded = torch.nn.functional.pad(size, (0, -len(size) % block))
    return padded.view(-1, block).amax(dim=1)


@dataclasses.dataclass(frozen=True)
class Float8:
    """float8 codes times a scale per group of ``block`` rows (None: one scale; 0: no scale,
    refused when a value is out of range)."""

    name: str
    block: int | None = 1

    @property
    def dtype(self) -> torch.dtype:
        return FLOAT8[self.name.split("@")[0]]

    def encode(self, table: Tensor) -> Stored:
        largest = torch.finfo(self.dtype).max
        if self.block == 0:
            if violations := range_violations(table, self.dtype):
                raise SlimctrError(
                    f"{self.name}: {violations} values exceed the format's range "
                    f"(|x| > {largest:g}); use a scale (@row, @field or @blockN)"
                )
            return {"codes": table.to(self.dtype)}
        block = self.block
        scales = _group_max(table, block) / largest
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        groups = _groups(torch.arange(len(table)), block)
        codes = (table / scales[groups, None]).clamp(-largest, largest).to(self.dtype)
        return {"codes": codes, "scales": scales.float()}

    def layout(self, rows: int, width: int) -> Layout:
        codes: Layout = {"codes": ((rows, width), self.dtype)}
        if self.block == 0:
            return codes
        groups = 1 if self.block is None else -(-rows // self.block)
        return codes | {"scales": ((groups,), torch.float32)}

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor:
        values = stored["codes"][rows].float()
        if "scales" not in stored:
            return values
        groups = _groups(rows, self.block)
        return values * stored["scales"][groups].unsqueeze(-1)


def int8_codes(table: Tensor, minimum: Tensor, step: Tensor) -> Tensor:
    """clip(round((x - min) / step), 0, 255) as uint8: rounded to nearest, never wrapped."""
    return torch.round((table - minimum) / step).clamp(0, 255).to(torch.uint8)


@dataclasses.dataclass(frozen=True)
class Int8:
    """Affine uint8 codes with a min and step per dimension (``per="dim"``) or per row."""

    name: str
    per: Literal["dim", "row"] = "dim"

    def encode(self, table: Tensor) -> Stored:
        axis = 0 if self.per == "dim" else 1
        if table.numel():
            low = table.amin(dim=axis, keepdim=True)
            high = table.amax(dim=axis, keepdim=True)
        else:
            low = high = table.new_zeros((1, table.shape[1]) if axis == 0 else (0, 1))
        step = (high - low) / 255
        step = torch.where(step > 0, step, torch.ones_like(step))
        return {"codes": int8_codes(table, low, step), "min": low.float(), "step": step.float()}

    def layout(self, rows: int, width: int) -> Layout:
        shape = (1, width) if self.per == "dim" else (rows, 1)
        return {
            "codes": ((rows, width), torch.uint8),
            "min": (shape, torch.float32),
            "step": (shape, torch.float32),
        }

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor:
        codes = stored["codes"][rows].float()
        if self.per == "dim":
            return stored["min"][0] + codes * stored["step"][0]
        return stored["min"][rows] + codes * stored["step"][rows]


# Each byte's 8 bits, most significant first, as signs -1/+1: (256, 8). Decoding looks them up
# rather than shifting bits, which the ONNX exporter does not translate.
_BYTE_SIGNS = ((torch.arange(256).unsqueeze(1) >> torch.arange(7, -1, -1)) & 1).float() * 2 - 1


@dataclasses.dataclass(frozen=True)
class Binary:
    """One bit per entry and a float32 scale per row: x^ = scale (2 bit - 1)."""

    name: str = "binary"

    def encode(self, table: Tensor) -> Stored:
        bits = (table > 0).to(torch.uint8)
        width = table.shape[1]
        padded = torch.nn.functional.pad(bits, (0, -width % 8)).view(len(table), -1, 8)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
        packed = (padded * weights).sum(dim=-1).to(torch.uint8)
        return {"bits": packed, "scales": table.abs().mean(dim=1).float()}

    def layout(self, rows: int, width: int) -> Layout:
        return {"bits": ((rows, -(-width // 8)), torch.uint8), "scales": ((rows,), torch.float32)}

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor:
        packed = stored["bits"][rows]  # (..., bytes)
        signs = _BYTE_SIGNS[packed.long()].flatten(-2)[..., :width]  # (..., width)
        return signs * stored["scales"][rows].unsqueeze(-1)


@dataclasses.dataclass(frozen=True)
class PCA:
    """Per-field PCA to ``fraction`` of the dimensions, the codes stored by ``inner`` (None:
    float32)."""

    name: str
    fraction: float
    inner: Codec | None = None

    def encode(self, table: Tensor) -> Stored:
        pca = FieldPCA.fit(table)
        width = self.kept(*table.shape)
        codes = pca.project(table, width).float()
        stored = {"mean": pca.mean.float(), "components": pca.components[:width].float()}
        inner = {"codes": codes} if self.inner is None else self.inner.encode(codes)
        return stored | {f"codes.{key}": value for key, value in inner.items()}

    def kept(self, rows: int, width: int) -> int:
        """The components kept of a (rows, width) table: round(fraction width), at least 1, at
        most min(rows, width)."""
        return min(max(1, round(self.fraction * width)), rows, width)

    def layout(self, rows: int, width: int) -> Layout:
        kept = self.kept(rows, width)
        basis: Layout = {
            "mean": ((width,), torch.float32),
            "components": ((kept, width), torch.float32),
        }
        inner = (
            {"codes": ((rows, kept), torch.float32)}
            if self.inner is None
            else self.inner.layout(rows, kept)
        )
        return basis | {f"codes.{key}": value for key, value in inner.items()}

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor:
        inner = {k.removeprefix("codes."): v for k, v in stored.items() if k.startswith("codes.")}
        kept = stored["components"].shape[0]
        codes = inner["codes"][rows] if self.inner is None else self.inner.decode(inner, rows, kept)
        return codes @ stored["components"] + stored["mean"]


@dataclasses.dataclass(frozen=True)
class Split:
    """The first ``share`` of the rows (the frequent values) by ``head``, the rest by ``tail``."""

    name: str
    share: float
    head: Codec
    tail: Codec

    def split(self, rows: int) -> int:
        """The head's rows: round(share rows), at least one, and at least one left."""
        if rows < 2:
            raise SlimctrError(f"codec {self.name!r} needs tables of at least 2 rows")
        return min(max(1, round(self.share * rows)), rows - 1)

    def encode(self, table: Tensor) -> Stored:
        cut = self.split(len(table))
        head = {f"head.{k}": v for k, v in self.head.encode(table[:cut]).items()}
        tail = {f"tail.{k}": v for k, v in self.tail.encode(table[cut:]).items()}
        return head | tail | {"cut": torch.tensor([cut], dtype=torch.int32)}

    def layout(self, rows: int, width: int) -> Layout:
        cut = self.split(rows)
        head = {f"head.{k}": v for k, v in self.head.layout(cut, width).items()}
        tail = {f"tail.{k}": v for k, v in self.tail.layout(rows - cut, width).items()}
        return head | tail | {"cut": ((1,), torch.int32)}

    def decode(self, stored: Mapping[str, Tensor], rows: Tensor, width: int) -> Tensor:
        cut = int(stored["cut"][0])
        part = {side: {k.removeprefix(f"{side}."): v for k, v in stored.items()
                       if k.startswith(f"{side}.")} for side in ("head", "tail")}  # fmt: skip
        in_head = rows < cut
        head = self.head.decode(part["head"], rows.clamp(max=cut - 1), width)
        tail = self.tail.decode(part["tail"], (rows - cut).clamp(min=0), width)
        return torch.where(in_head.unsqueeze(-1), head, tail)


def parse(name: str) -> Codec:
    """The codec a name gives (module docstring); an unknown name is a one-line error."""
    text = name.strip()
    if text.startswith("head:"):
        share_text, _, pair = text.removeprefix("head:").partition(":")
        head_name, slash, tail_name = pair.partition("/")
        try:
            share = float(share_text)
        except ValueError:
            share = math.nan
        if not (0 < share < 1 and slash):
            raise SlimctrError(f"codec {name!r}: head:S:HEAD/TAIL needs a share S in (0, 1)")
        return Split(text, share, parse(head_name), parse(tail_name))
    if text.startswith("pca:"):
        fraction_text, plus, rest = text.removeprefix("pca:").partition("+")
        try:
            fraction = float(fraction_text)
        except ValueError:
            fraction = math.nan
        if not 0 < fraction <= 1:
            raise SlimctrError(f"codec {name!r}: pca:F needs a dim_fraction F in (0, 1]")
        inner = parse(rest) if plus else None
        if isinstance(inner, PCA):
            raise SlimctrError(f"codec {name!r}: PCA cannot be applied twice")
        return PCA(text, fraction, inner)
    base, _, granularity = text.partition("@")
    if base in CASTS and not granularity:
        return Cast(base)
    if base == "binary" and not granularity:
        return Binary()
    if base == "int8" and granularity in ("", "dim", "row"):
        return Int8(text, "row" if granularity == "row" else "dim")
    if base in FLOAT8:
        block: int | None
        if granularity in ("", "row"):
            block = 1
        elif granularity == "field":
            block = None
        elif granularity == "none":
            block = 0
        elif granularity.startswith("block") and granularity[5:].isdigit() and int(granularity[5:]):
            block = int(granularity[5:])
        else:
            block = -1
        if block != -1:
            return Float8(text, block)
    raise SlimctrError(
        f"unknown codec {name!r}; known: fp16, bf16, fp8-e4m3 and fp8-e5m2 (@row, @field, "
        "@blockN, @none), int8 (@dim, @row), binary, pca:F, pca:F+CODEC, head:S:HEAD/TAIL"
    )
