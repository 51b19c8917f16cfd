"""Strict configuration: frozen, keyword-only dataclasses built from YAML and ``--set key=value``.

A run's configuration is a tree of dataclasses. ``from_dict`` builds one from plain data and refuses
anything it does not understand: an unknown key (with the closest valid name as a hint), a value of
the wrong type, a missing required key. Validation inside a dataclass's ``__post_init__`` (a
ValueError) comes back as a ``SlimctrError`` that names the section it failed in.

Types understood in field annotations: ``int``, ``float`` (an int is accepted), ``bool`` (only
true/false), ``str``, ``Literal[...]``, unions such as ``X | None``, ``tuple[X, ...]`` and
``tuple[X, Y]`` (from a YAML list), ``dict[str, X]`` and nested dataclasses.

Where the class of a section depends on a choice (the ``model`` section's class depends on the
model's name), the caller says which class to build with ``types``, a map from dotted key to class
that takes precedence over the field's annotation::

    raw = load_yaml("run.yaml")
    config = from_dict(RunConfig, raw, types={"model": MODELS[raw["model_name"]].config})
    config = apply_overrides(config, ["model.num_cross_layers=4", "train.lr=1e-3"])

``apply_overrides`` keeps the classes it finds in the instance, so it needs no ``types``.

YAML is read with YAML 1.2 scalars: only true/false are booleans (``no`` and ``yes`` stay text),
``1e-3`` is a float, dates stay text and a key given twice is an error. Write a resolved config with
``dump_yaml(to_dict(config))``: it quotes any text that a reader could take for another type, so
``load_yaml`` gives back exactly ``to_dict(config)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import types as pytypes
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from slimctr.errors import SlimctrError

T = TypeVar("T")


def from_dict(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    where: str = "",
    types: Mapping[str, type] | None = None,
) -> T:
    """Build dataclass ``cls`` from ``data`` (nested dicts, e.g. loaded YAML), checking every key.

    ``where`` is the dotted key of ``data`` inside a larger config, used in messages; ``types``
    maps full dotted keys (``"model"``) to the dataclass to build there.

    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class Train:
    ...     lr: float = 0.001
    ...     epochs: int = 10
    >>> from_dict(Train, {"lr": 1})
    Train(lr=1.0, epochs=10)
    >>> from_dict(Train, {"epoch": 3}, where="train")
    Traceback (most recent call last):
    slimctr.errors.SlimctrError: unknown config key 'train.epoch' (did you mean 'train.epochs'?)
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        what = f"config section {where!r}" if where else "a config"
        raise SlimctrError(f"{what} must be a mapping of keys to values, got {_show(data)}")
    hints = _field_types(cls)
    for name in data:
        if name not in hints:
            raise SlimctrError(_unknown_key(_join(where, str(name)), list(hints), where))
    values = {}
    for name, annotation in hints.items():
        if name in data:
            values[name] = _convert(annotation, data[name], _join(where, name), types or {})
        elif name in _required_fields(cls):
            raise SlimctrError(f"missing config key {_join(where, name)!r}")
    try:
        return cls(**values)
    except SlimctrError:
        raise  # its message already names the key
    except ValueError as error:
        raise SlimctrError(f"{where}: {error}" if where else str(error)) from error


def to_dict(instance: Any) -> dict[str, Any]:
    """Plain data for YAML or JSON: nested dicts, tuples as lists; ``from_dict`` reads it back.

    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class Model:
    ...     hidden_dims: tuple[int, ...] = (400, 400)
    >>> to_dict(Model())
    {'hidden_dims': [400, 400]}
    """
    if not dataclasses.is_dataclass(instance) or isinstance(instance, type):
        raise TypeError(f"{instance!r} is not a dataclass instance")
    return {
        f.name: _plain(getattr(instance, f.name)) for f in dataclasses.fields(instance) if f.init
    }


def apply_overrides(
    instance: T,
    overrides: Sequence[str],
    *,
    types: Mapping[str, type] | None = None,
    where: str = "",
) -> T:
    """A copy of ``instance`` with each ``key=value`` applied, then validated as a whole;
    errors name the keys under ``where`` (the section ``instance`` is, e.g. ``search``).

    Each value is parsed as YAML (``4``, ``0.0005``, ``[400,400]``, ``null``, ``true``, text); keys
    are dotted paths. Nested sections keep the classes they have in ``instance``; ``types`` can
    name others, as in ``from_dict``.

    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class Model:
    ...     hidden_dims: tuple[int, ...] = (400, 400)
    ...     dropout: float | None = 0.1
    >>> apply_overrides(Model(), ["hidden_dims=[64, 32]", "dropout=null"])
    Model(hidden_dims=(64, 32), dropout=None)
    """
    raw = to_dict(instance)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SlimctrError(
                f"malformed override {override!r} (expected key=value, e.g. train.lr=0.001)"
            )
        _set_path(raw, key, _parse_value(text, override))
    sections = {**_section_types(instance), **(types or {})}
    return from_dict(type(instance), raw, where=where, types=sections)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file ({} for an empty file); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SlimctrError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SlimctrError(f"cannot read config file {path}: {error}") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, source: str | Path) -> dict[str, Any]:
    """The mapping in YAML ``text`` read from ``source`` (named in errors); {} for no text."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as error:
        raise SlimctrError(f"invalid YAML in {source}{_yaml_location(error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SlimctrError(
            f"config file {source} must hold a mapping of keys to values, not {_show(data)}"
        )
    return data


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text that ``load_yaml`` reads back as ``data`` (text such as ``'1e-3'`` stays quoted).

    >>> print(dump_yaml({"lr": 1e-05, "name": "1e-3", "hidden_dims": [400, 400]}), end="")
    lr: 1.0e-05
    name: '1e-3'
    hidden_dims:
    - 400
    - 400
    """
    return yaml.dump(dict(data), Dumper=_StrictDumper, sort_keys=False, allow_unicode=True)


# --- type checking --------------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of the fields that ``__init__`` takes, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


@functools.cache
def _required_fields(cls: type) -> frozenset[str]:
    missing = dataclasses.MISSING
    return frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is missing and f.default_factory is missing
    )


def _convert(annotation: Any, value: Any, key: str, types: Mapping[str, type]) -> Any:
    """``value`` checked (and converted: list -> tuple, int -> float) against ``annotation``."""
    annotation = types.get(key, annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):  # type: ignore[arg-type]
            return value
        return from_dict(annotation, value, where=key, types=types)  # type: ignore[arg-type]
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
    elif origin in (typing.Union, pytypes.UnionType):
        return _convert_union(annotation, value, key, types)
    elif origin is tuple and isinstance(value, list | tuple):
        return _convert_tuple(annotation, value, key, types)
    elif origin is dict and isinstance(value, Mapping):
        return {k: _convert(args[1], v, f"{key}.{k}", types) for k, v in value.items()}
    elif annotation in _SCALARS:
        if _SCALARS[annotation](value):
            return float(value) if annotation is float else value
    elif origin not in (tuple, dict):
        raise TypeError(f"config key {key!r}: unsupported annotation {annotation!r}")
    raise SlimctrError(f"config key {key!r} expects {_describe(annotation)}, got {_show(value)}")


_SCALARS: dict[Any, typing.Callable[[Any], bool]] = {
    bool: lambda v: type(v) is bool,
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    type(None): lambda v: v is None,
}


def _convert_union(annotation: Any, value: Any, key: str, types: Mapping[str, type]) -> Any:
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if value is None and len(members) < len(typing.get_args(annotation)):
        return None
    if len(members) == 1 and isinstance(value, Mapping | list | tuple):
        return _convert(members[0], value, key, types)  # errors name the key inside
    for member in members:
        try:
            return _convert(member, value, key, types)
        except SlimctrError:
            continue
    raise SlimctrError(f"config key {key!r} expects {_describe(annotation)}, got {_show(value)}")


def _convert_tuple(annotation: Any, value: Any, key: str, types: Mapping[str, type]) -> tuple:
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    elif len(args) != len(value):
        raise SlimctrError(
            f"config key {key!r} expects {_describe(annotation)}, "
            f"got {len(value)} values {_show(value)}"
        )
    return tuple(
        _convert(a, v, f"{key}[{i}]", types)
        for i, (a, v) in enumerate(zip(args, value, strict=True))
    )


def _describe(annotation: Any) -> str:
    """A type as a user reads it: ``int or null``, ``list of float``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(_show(a) for a in args)
    if origin in (typing.Union, pytypes.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if origin is dict:
        return f"a mapping of names to {_describe(args[1])}"
    if dataclasses.is_dataclass(annotation):
        return "a mapping (a config section)"
    return {type(None): "null"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _show(value: Any) -> str:
    """A value as a user wrote it: text quoted, ``null``, ``true``, ``[1, 2]``; shortened."""
    text = repr(value) if isinstance(value, str) else json.dumps(_plain(value), default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _unknown_key(key: str, valid: list[str], where: str) -> str:
    name = key.rpartition(".")[2]
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"unknown config key {key!r} (did you mean {_join(where, close[0])!r}?)"
    return f"unknown config key {key!r} (valid keys here: {', '.join(valid) or 'none'})"


# --- overrides and YAML ---------------------------------------------------------------------------


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Put ``value`` at dotted ``key``; missing or null sections on the way become ``{}``."""
    *sections, last = key.split(".")
    node = raw
    for depth, part in enumerate(sections):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            section = ".".join(sections[: depth + 1])
            raise SlimctrError(f"config key {section!r} is a value, not a section (in {key!r})")
        node = child
    node[last] = value


def _parse_value(text: str, override: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as error:
        raise SlimctrError(
            f"invalid value in override {override!r}: {_yaml_problem(error)}"
        ) from None


def _section_types(instance: Any, where: str = "") -> dict[str, type]:
    """The class of every nested dataclass in ``instance``, by dotted key."""
    found: dict[str, type] = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            key = _join(where, f.name)
            found[key] = type(value)
            found.update(_section_types(value, key))
    return found


def _yaml_problem(error: yaml.YAMLError) -> str:
    return str(getattr(error, "problem", None) or error).strip()


def _yaml_location(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {_yaml_problem(error)}"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and no duplicate keys."""

    yaml_implicit_resolvers: typing.ClassVar[dict] = {}

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # SafeLoader itself rejects unhashable keys
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _StrictDumper(yaml.SafeDumper):
    """SafeDumper that also quotes text that ``_StrictLoader`` would read as something else.

    It keeps the YAML 1.1 rules too, so that other readers see the same values (``'yes'``).
    """


for _tag, _pattern, _first in [
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)", list("-+0123456789")),
    ("float", r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", list("-+.0123456789")),
    ("float", r"[-+]?[0-9]+[eE][-+]?[0-9]+", list("-+0123456789")),
    ("float", r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", list("-+.")),
]:
    for _class in (_StrictLoader, _StrictDumper):
        _class.add_implicit_resolver(
            f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), _first
        )
