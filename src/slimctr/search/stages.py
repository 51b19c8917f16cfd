"""What the searchers that train their own first stage share (OptEmbed, OptFS).

``supernet`` builds the start's model at one width with a fresh seed and a row hook (the masks or
gates the stage learns) installed in its field embedding; ``train_stage`` trains it with the
start's settings and the stage's callbacks; ``cached`` keeps a finished stage's result in the
search's work folder, so that a search run again skips it.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from slimctr.config import to_dict
from slimctr.errors import SlimctrError
from slimctr.files import atomic_path
from slimctr.nn.embedding import FieldEmbedding
from slimctr.runconfig import RunConfig, build_model
from slimctr.search.runner import Start, field_embedding
from slimctr.training.callbacks import Callback, ProgressBar
from slimctr.training.trainer import TrainConfig, Trainer

T = TypeVar("T")


def supernet(start: Start, method: str) -> tuple[nn.Module, FieldEmbedding]:
    """A fresh model of ``start``'s settings (its seed draws the weights) and its field
    embedding, which must give every field one width."""
    model = build_model(start.config, start.store.schema)
    embedding = field_embedding(model, method)
    if len(set(embedding.field_dims)) != 1 or embedding.alignment is not None:
        raise SlimctrError(
            f"{method} searches from one embedding width: give the model a single "
            f"embedding_dim, not per-field widths {list(embedding.field_dims)}"
        )
    return model, embedding


def categorical_columns(embedding: FieldEmbedding) -> Tensor:
    """The positions, in the embedding's field order, of its categorical fields: (F_cat,)."""
    return torch.tensor(embedding.categorical_positions, dtype=torch.long)


def train_stage(
    model: nn.Module,
    start: Start,
    callbacks: Sequence[Callback],
    title: str,
    train: TrainConfig | None = None,
) -> dict[str, Any]:
    """Train ``model`` on the start's store with its settings (or ``train``) and ``callbacks``;
    returns ``Trainer.fit``'s result with the best validation AUC."""
    config: RunConfig = start.config
    if config.threads:
        torch.set_num_threads(config.threads)
    trainer = Trainer(
        model,
        start.store,
        train or config.train,
        seed=config.seed,
        callbacks=[ProgressBar(title=title), *callbacks],
    )
    result = trainer.fit()
    return {**result, "valid_auc": float(trainer.best["auc"])}


def cached(path: Path | None, key: dict[str, Any], compute: Callable[[], T], what: str) -> T:
    """``compute()``, kept in ``path`` (torch's tensor-only format) with ``key`` (what it was
    computed from: settings, store), or the result an earlier run with the same ``key`` kept
    there; one kept for another key is an error."""
    if path is not None and path.is_file():
        try:
            found = torch.load(path, weights_only=True)
        except Exception as error:  # any unreadable file is one message
            raise SlimctrError(
                f"{path} is damaged ({error}); delete it to run {what} again"
            ) from None
        if found.get("key") != key:
            raise SlimctrError(
                f"{path} holds {what} of another search (other settings or data); give another "
                "--out, or delete it"
            )
        print(f"{what}: reusing {path}", file=sys.stderr)
        return found["value"]
    value = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"key": key, "value": value}, buffer)
        with atomic_path(path) as staged:
            staged.write_bytes(buffer.getvalue())
    return value


def stage_key(start: Start, settings: dict[str, Any]) -> dict[str, Any]:
    """What a stage's result depends on: the start's settings and store (threads aside), and
    the method's ``settings`` that the stage reads."""
    return {
        "config": to_dict(dataclasses.replace(start.config, threads=None)),
        "recipe_id": start.store.manifest["recipe_id"],
        "settings": settings,
    }


def field_masks(embedding: FieldEmbedding, mask: Tensor) -> dict[str, np.ndarray]:
    """A mask of the fused categorical table (N, d), cut into each categorical field's rows:
    a plan's ``masks`` (PEP, DNIS)."""
    names = [embedding.field_names[c] for c in embedding.categorical_positions]
    bounds = [*embedding.offsets.tolist(), mask.shape[0]]
    return {
        name: mask[bounds[i] : bounds[i + 1]].numpy().astype(np.bool_)
        for i, name in enumerate(names)
    }


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}
