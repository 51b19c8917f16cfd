"""The MODELS registry: name -> (frozen config class, nn.Module class, one-line description, and
whether a search builds it: ``from_search`` models, like ``routed``, are what a dimension search
retrains, not baselines that studies train from scratch).

A model is built as ``Model(schema, config)`` and maps a ``Batch`` to logits of shape (B,).
Whatever is registered here is covered by the common model test suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    config: type[Any]
    model: type[nn.Module]
    description: str
    from_search: bool = False


MODELS: dict[str, ModelEntry] = {}


ModelClass = TypeVar("ModelClass", bound=type[nn.Module])


def register(
    name: str, config: type[Any], description: str, *, from_search: bool = False
) -> Callable[[ModelClass], ModelClass]:
    """Class decorator: ``@register("dcnv2", DCNv2Config, "...")`` above the model class."""

    def add(model: ModelClass) -> ModelClass:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelEntry(config, model, description, from_search)
        return model

    return add
