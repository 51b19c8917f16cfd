"""What a model needs to know about the data: the label and the fields, with their kinds and sizes.

Categorical ids are laid out the same way in every field's table::

    0            PAD  (reserved for padding; single-valued fields never produce it)
    1            OOV  (values rarer than min_count, or unseen at training time)
    2 ...        kept values, most frequent first (ties by value)

so a field's ``vocab_size`` is its number of kept values plus ``NUM_RESERVED_IDS``.

A model retrained after a search that prunes feature values (OptEmbed, OptFS) is built from a
schema whose categorical fields may give ``kept_rows``: its table stores only that many rows,
and an id-to-row map sends every other id to a zero vector (``slimctr.nn.embedding``). The data
is encoded as before; ``unpruned`` gives back the data's schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

PAD_ID = 0
OOV_ID = 1
NUM_RESERVED_IDS = 2

FieldKind = Literal["categorical", "numeric"]


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One input field. ``vocab_size`` counts table rows (PAD and OOV included); 0 for numeric.
    ``kept_rows``: the rows a pruned model stores for it (None: all ``vocab_size``).
    ``kept_entries``: the non-zero entries a masked model stores of its table (PEP's
    unstructured result; None: a dense table). ``codec``: how a compressed model stores its
    table (``slimctr.compress.codecs``; None: float32)."""

    name: str
    kind: FieldKind
    vocab_size: int = 0
    kept_rows: int | None = None
    kept_entries: int | None = None
    codec: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "numeric"):
            raise ValueError(f"field {self.name!r}: kind must be categorical or numeric")
        if self.kind == "categorical" and self.vocab_size < NUM_RESERVED_IDS:
            raise ValueError(f"field {self.name!r}: vocab_size must be >= {NUM_RESERVED_IDS}")
        if self.kept_rows is not None and not (
            self.kind == "categorical" and 1 <= self.kept_rows <= self.vocab_size
        ):
            raise ValueError(
                f"field {self.name!r}: kept_rows must be in [1, vocab_size] of a categorical field"
            )
        if self.kept_entries is not None and not (
            self.kind == "categorical" and self.kept_entries >= 0
        ):
            raise ValueError(
                f"field {self.name!r}: kept_entries must be >= 0 on a categorical field"
            )
        if self.codec is not None and self.kind != "categorical":
            raise ValueError(f"field {self.name!r}: only a categorical table has a codec")


@dataclass(frozen=True, kw_only=True)
class Schema:
    """The label column and the fields in source-column order.

    Batches carry the categorical fields as one id matrix and the numeric fields as one value
    matrix, each in the order of ``categorical`` and ``numeric`` below.
    """

    label: str
    fields: tuple[FieldSpec, ...]

    @property
    def categorical(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.kind == "categorical")

    @property
    def numeric(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.kind == "numeric")

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def with_kept_rows(self, kept_rows: Mapping[str, int]) -> Schema:
        """This schema with ``kept_rows`` (field name to rows kept) on the fields it names."""
        unknown = [name for name in kept_rows if name not in {f.name for f in self.fields}]
        if unknown:
            raise KeyError(unknown[0])
        fields = tuple(
            replace(f, kept_rows=kept_rows.get(f.name, f.kept_rows)) for f in self.fields
        )
        return replace(self, fields=fields)

    def with_kept_entries(self, kept_entries: Mapping[str, int]) -> Schema:
        """This schema with ``kept_entries`` (field name to non-zero entries stored) on the
        fields it names."""
        unknown = [name for name in kept_entries if name not in {f.name for f in self.fields}]
        if unknown:
            raise KeyError(unknown[0])
        fields = tuple(
            replace(f, kept_entries=kept_entries.get(f.name, f.kept_entries)) for f in self.fields
        )
        return replace(self, fields=fields)

    def with_codecs(self, codecs: Mapping[str, str]) -> Schema:
        """This schema with the ``codecs`` (field name to codec name) on the fields it names."""
        unknown = [name for name in codecs if name not in {f.name for f in self.fields}]
        if unknown:
            raise KeyError(unknown[0])
        fields = tuple(replace(f, codec=codecs.get(f.name, f.codec)) for f in self.fields)
        return replace(self, fields=fields)

    def unpruned(self) -> Schema:
        """The data's schema: no field's rows pruned, entries masked or table compressed."""
        fields = tuple(
            replace(f, kept_rows=None, kept_entries=None, codec=None) for f in self.fields
        )
        return replace(self, fields=fields)

    def to_dict(self) -> dict[str, Any]:
        optional = ("kept_rows", "kept_entries", "codec")
        fields = [
            {k: v for k, v in asdict(f).items() if k not in optional or v is not None}
            for f in self.fields
        ]
        return {"label": self.label, "fields": fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(label=data["label"], fields=tuple(FieldSpec(**f) for f in data["fields"]))
