"""Search spaces: which settings ``slimctr tune`` samples, and from where.

A space is a tuple of parameters, each a dotted config key with its range. The training
settings every model shares are in ``TRAIN_SPACE``; a model's own space is declared beside its
config as the class attribute ``search_space`` (``xDeepFMConfig.search_space`` tunes the CIN's
layers, say), and a model that declares none gets ``generic_space``: the keys of its config that
most models share (width, MLP, dropout, cross depth). Values are plain YAML data, so a sampled
setting is a ``--set key=value`` override like any other (``model.hidden_dims=[400, 400]``).

This module imports nothing heavy; ``slimctr.tuning.tune`` turns parameters into Optuna calls.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Float:
    """A real number in [low, high], sampled on a log scale with ``log``."""

    key: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    """An integer in [low, high]."""

    key: str
    low: int
    high: int


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (any YAML data: numbers, text, lists)."""

    key: str
    choices: tuple[Any, ...]

    @property
    def labels(self) -> list[str]:
        """The choices as text, the only kind of category Optuna stores for any value."""
        return [json.dumps(c) for c in self.choices]


Param = Float | Int | Choice

TRAIN_SPACE: tuple[Param, ...] = (
    Float("train.lr", 1e-4, 1e-2, log=True),
    Float("train.embedding_l2", 1e-6, 0.3, log=True),
    Choice("train.batch_size", (512, 1024, 2048, 4096)),
)

MLPS = ((200, 200), (400, 400), (400, 400, 400), (1024, 512, 256))
_GENERIC: tuple[Param, ...] = (
    Choice("embedding_dim", (8, 10, 16, 24, 32)),
    Choice("hidden_dims", MLPS),
    Float("dropout", 0.0, 0.5),
    Int("num_cross_layers", 1, 6),
)


def generic_space(config_class: type) -> tuple[Param, ...]:
    """The shared keys (width, MLP, dropout, cross depth) that ``config_class`` has."""
    return generic_space_of(*(f.name for f in dataclasses.fields(config_class)))


def generic_space_of(*keys: str) -> tuple[Param, ...]:
    """The generic parameters of ``keys``, for a model's own ``search_space``."""
    return tuple(p for p in _GENERIC if p.key in keys)


def model_space(config_class: type) -> tuple[Param, ...]:
    """The model's parameters as ``model.<key>``: its ``search_space``, else the generic one."""
    declared = getattr(config_class, "search_space", None)
    own = generic_space(config_class) if declared is None else declared
    return tuple(dataclasses.replace(p, key=f"model.{p.key}") for p in own)


def full_space(config_class: type, fixed: Sequence[str] = ()) -> tuple[Param, ...]:
    """The model's space and the training one, without the keys in ``fixed`` (set by the user)."""
    return tuple(p for p in (*model_space(config_class), *TRAIN_SPACE) if p.key not in fixed)
