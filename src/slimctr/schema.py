"""What a model needs to know about the data: the label and the fields, with their kinds and sizes.

Categorical ids are laid out the same way in every field's table::

    0            PAD  (reserved for padding; single-valued fields never produce it)
    1            OOV  (values rarer than min_count, or unseen at training time)
    2 ...        kept values, most frequent first (ties by value)

so a field's ``vocab_size`` is its number of kept values plus ``NUM_RESERVED_IDS``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

PAD_ID = 0
OOV_ID = 1
NUM_RESERVED_IDS = 2

FieldKind = Literal["categorical", "numeric"]


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One input field. ``vocab_size`` counts table rows (PAD and OOV included); 0 for numeric."""

    name: str
    kind: FieldKind
    vocab_size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "numeric"):
            raise ValueError(f"field {self.name!r}: kind must be categorical or numeric")
        if self.kind == "categorical" and self.vocab_size < NUM_RESERVED_IDS:
            raise ValueError(f"field {self.name!r}: vocab_size must be >= {NUM_RESERVED_IDS}")


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

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(label=data["label"], fields=tuple(FieldSpec(**f) for f in data["fields"]))
