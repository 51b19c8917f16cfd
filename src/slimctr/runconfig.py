"""What a training run depends on besides its data: the model, its settings, the seed.

``resolve_config`` builds a run's configuration from defaults, a YAML file, ``--set`` overrides
and flags. A saved configuration (in a run directory or a model bundle) is read back with
``read_config``, which first brings it up to date: every saved configuration carries the
``CONFIG_VERSION`` it was written with, and ``CONFIG_MIGRATIONS[v]`` turns version v into v + 1.
When a later change renames a setting (``train.bf16`` becoming ``train.precision``, say) or
changes a default, it raises ``CONFIG_VERSION`` and adds the migration that maps old files to the
settings that reproduce them, so runs and bundles written today keep loading and keep behaving
as they did. A key added with a default that reproduces the old behaviour needs no migration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimctr.config import apply_overrides, from_dict, load_yaml, to_dict
from slimctr.errors import SlimctrError, shown
from slimctr.models import MODELS
from slimctr.models.registry import ModelEntry
from slimctr.schema import Schema
from slimctr.shipped import config_path
from slimctr.training.trainer import PRESETS, TrainConfig


def _bf16_to_precision(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 replaced ``train.bf16`` (true/false) by ``train.precision`` (default ``auto``);
    a version-1 run had exactly the precision its flag said."""
    train = dict(data.get("train") or {})
    if "bf16" in train:
        train["precision"] = "bf16" if train.pop("bf16") is True else "fp32"
    else:
        train["precision"] = "fp32"  # version 1's default
    return {**data, "train": train}


def _sparse_flag_to_embedding_optimizer(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 replaced ``train.sparse_embeddings`` (true: SparseAdam) by
    ``train.embedding_optimizer`` (``lazy_adam``, or the default ``adam``); a version-2 run keeps
    the optimiser its flag chose."""
    train = dict(data.get("train") or {})
    train["embedding_optimizer"] = "lazy_adam" if train.pop("sparse_embeddings", False) else "adam"
    return {**data, "train": train}


def _paper_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 made ``auto`` the default preset, whose defaults differ from the ``paper``
    preset's, the default until then: a training key missing from a version-3 file (one that
    slimctr wrote before the key existed) takes the value it had under ``paper``."""
    old = {
        "preset": "paper",
        "epochs": 50,
        "batch_size": 4096,
        "embedding_l2": 0.0,
        "early_stopping_patience": 5,
        "plateau_patience": 3,
    }
    return {**data, "train": {**old, **(data.get("train") or {})}}


CONFIG_VERSION = 4
CONFIG_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _bf16_to_precision,
    2: _sparse_flag_to_embedding_optimizer,
    3: _paper_defaults,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run depends on besides the data; ``model`` is the chosen model's config."""

    model_name: str
    seed: int = 0
    threads: int | None = None  # None: all cores
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise SlimctrError(f"threads must be >= 1, got {self.threads}")


def resolve_config(
    model_name: str,
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    threads: int | None = None,
) -> RunConfig:
    """The run configuration: defaults, then the YAML file, then ``--set`` overrides, then flags.

    ``model_name`` may be spelled as pip spells package names (``GDCN-P`` is ``gdcn_p``); the
    configuration records the registered name. ``config_file`` is a YAML file or the name of a
    shipped config (``slimctr.shipped``).
    """
    name = canonical_model_name(model_name)
    entry = MODELS[name]
    config_file = config_path(config_file, name) if config_file else None
    data = load_yaml(config_file) if config_file else {}
    saved = data.get("model_name", name)
    if not isinstance(saved, str) or canonical_model_name(saved) != name:
        raise SlimctrError(f"{config_file} is for model {shown(saved)}, not {name!r}")
    data = {**data, "model_name": name}
    data.setdefault("model", {})
    types = {"model": entry.config}
    config = apply_overrides(from_dict(RunConfig, data, types=types), list(overrides))
    flags = {"seed": seed, "threads": threads}
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        config = from_dict(RunConfig, {**to_dict(config), **given}, types=types)
    return _apply_preset(config, data.get("train") or {}, overrides)


def read_config(raw: Mapping[str, Any], version: Any, source: str) -> RunConfig:
    """A saved configuration (written with ``CONFIG_VERSION`` ``version``), migrated to today's.

    Keys added to slimctr since it was written take their defaults, which is how that run
    behaved; ``source`` names the file in errors.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SlimctrError(f"{source}: the config version {shown(version)} is not valid")
    if version > CONFIG_VERSION:
        raise SlimctrError(
            f"{source} was written by a newer slimctr (config version {version}; this one "
            f"reads up to {CONFIG_VERSION}): upgrade slimctr"
        )
    data = dict(raw)
    for step in range(version, CONFIG_VERSION):
        data = CONFIG_MIGRATIONS[step](data)
    try:
        entry = model_entry(data.get("model_name"))
        return from_dict(RunConfig, data, types={"model": entry.config})
    except SlimctrError as error:
        raise SlimctrError(f"{source}: {error}") from None


def canonical_model_name(name: Any) -> str:
    """The registered name that ``name`` spells, ignoring case and ``-``/``_``/``.`` runs."""
    if isinstance(name, str):
        wanted = _normalise(name)
        for registered in MODELS:
            if _normalise(registered) == wanted:
                return registered
    import difflib

    close = difflib.get_close_matches(_normalise(str(name)), MODELS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SlimctrError(f"unknown model {shown(name)} ({hint}see `slimctr models`)")


def model_entry(name: Any) -> ModelEntry:
    return MODELS[canonical_model_name(name)]


def build_model(config: RunConfig, schema: Schema) -> nn.Module:
    """A freshly initialised model: the config's seed drives its initial weights."""
    torch.manual_seed(config.seed)
    return model_entry(config.model_name).model(schema, config.model)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _apply_preset(
    config: RunConfig, file_train: dict[str, Any], overrides: Sequence[str]
) -> RunConfig:
    """Fill the preset's keys that neither the config file nor ``--set`` chose."""
    chosen = set(file_train) | {
        key.strip().removeprefix("train.")
        for key, _, _ in (o.partition("=") for o in overrides)
        if key.strip().startswith("train.")
    }
    preset = {k: v for k, v in PRESETS[config.train.preset].items() if k not in chosen}
    return replace(config, train=replace(config.train, **preset))
