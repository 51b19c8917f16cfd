"""Value checks shared by the model configs' ``__post_init__``; messages name the config key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slimctr.errors import SlimctrError


def _fail(key: str, expected: str, value: Any) -> SlimctrError:
    return SlimctrError(f"model.{key} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(key: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise _fail(key, f"an int >= {minimum}", value)


def check_optional_int(key: str, value: Any, minimum: int) -> None:
    if value is not None:
        check_int(key, value, minimum)


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(key, f"one of {', '.join(choices)}", value)


def check_dropout(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise _fail(key, "a number in [0, 1)", value)


def check_init_std(key: str, value: Any) -> None:
    """None (xavier-uniform) or a positive standard deviation."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _fail(key, "a number > 0, or None for xavier-uniform", value)


def check_hidden_dims(key: str, value: Any, *, allow_empty: bool) -> None:
    if not isinstance(value, tuple | list) or not all(_is_int(w) and w >= 1 for w in value):
        raise _fail(key, "a list of ints >= 1", value)
    if not value and not allow_empty:
        raise _fail(key, "a list of at least one layer width", value)


def check_embedding_dim(key: str, value: Any, *, per_field: bool) -> None:
    """An int >= 1, or a mapping field name -> width >= 1 whose widths, without ``per_field``
    (models that stack the field embeddings and have no ``embedding_align_dim`` set), must all
    be equal."""
    if isinstance(value, Mapping):
        if not value or not all(_is_int(w) and w >= 1 for w in value.values()):
            raise _fail(key, "an int >= 1 or a mapping of field names to ints >= 1", value)
        if not per_field and len(set(value.values())) > 1:
            by_width: dict[int, list[str]] = {}
            for name, width in value.items():
                by_width.setdefault(width, []).append(name)
            groups = "; ".join(
                f"width {w}: {', '.join(names)}" for w, names in sorted(by_width.items())
            )
            raise SlimctrError(
                f"model.{key} must be one width for all fields in this model, got {groups} "
                "(use equal widths, or set model.embedding_align_dim=K: FDO's dimension "
                "alignment layer, which projects each field to width K)"
            )
        return
    if not _is_int(value) or value < 1:
        expected = "an int >= 1" + (
            " or a mapping of field names to ints >= 1" if per_field else ""
        )
        raise _fail(key, expected, value)
