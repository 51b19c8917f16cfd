"""What the searchers that train their own first stage share (every one but FDO).

``supernet`` builds the start's model at one width with a fresh seed and a row hook (the masks or
gates the stage learns) installed in its field embedding; ``train_stage`` trains it with the
start's settings and the stage's callbacks; ``cached`` keeps a finished stage's result in the
search's work folder, so that a search run again skips it; ``searched_plan`` is the plan such a
search leaves.
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
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.files import atomic_path
from slimctr.nn.embedding import FieldEmbedding
from slimctr.runconfig import RunConfig, build_model
from slimctr.search.plan import Plan, field_sizes, plan_rows
from slimctr.search.runner import Start, field_embedding, implied_params
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


def field_counts(store: Store, name: str, rows: int) -> np.ndarray:
    """How often each id (0 to at least ``rows`` - 1) of the categorical field ``name`` occurs
    in the training split."""
    train = store.split("train")
    return np.bincount(np.asarray(store.column(name)[train.start : train.stop]), minlength=rows)


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


def searched_plan(
    method: str,
    start: Start,
    embedding: FieldEmbedding,
    settings: dict[str, Any],
    seconds: dict[str, float],
    *,
    widths: dict[str, int] | None = None,
    kept: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
) -> Plan:
    """The plan a search from ``start``'s supernet ``embedding`` found: ``widths`` (default:
    the supernet's own), the rows ``kept`` or the entry ``masks``, with the model's parameters
    under them and the seconds each stage took."""
    source = dict(zip(embedding.field_names, embedding.field_dims, strict=True))
    widths = source if widths is None else widths
    schema = start.store.schema
    return Plan(
        method=method,
        settings=settings,
        widths=widths,
        field_sizes=field_sizes(schema),
        kept=kept or {},
        masks=masks or {},
        source_run=None if start.run_dir is None else str(start.run_dir),
        source_widths=source,
        model_params=implied_params(start.config, schema, widths, plan_rows(kept or {})),
        seconds=seconds,
    )
