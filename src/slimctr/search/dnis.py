"""DNIS (Cheng, Shen and Huang, 2020): differentiable neural input search
(dimension-search spec 4, properties 16-18).

Feature values are ranked by their training-split frequency across all categorical fields (most
frequent first) and cut into feature blocks by the shares ``blocks``; a soft selection weight
alpha_{k,j} in [0, 1] (initially 1) scales dimension j of every row of block k:
e~_i = e_i * alpha_{block(i)} (the ``free`` search space of the reference scripts).

1. Warm start: the start's model trained for at most ``warm_epochs`` with alpha = 1 (its best
   validation epoch kept).
2. Search, for at most ``search_epochs`` with the start's schedule: after each Adam step on a
   training batch, which updates only the field embeddings (every other weight stays the warm
   start's; BatchNorm's running statistics, which are not weights, keep moving), one SGD step
   on alpha (``alpha_lr``) for the loss on the next validation batch plus ``l1`` |alpha|_1,
   its gradient divided per block by the block's mean absolute gradient
   (``grad_norm``, so frequent blocks do not dominate), then alpha clamped to [0, 1]. The alpha
   of the best validation epoch goes with that epoch's weights.
3. Deriving the table: alpha folded into the table (``fold_alpha``; else left out, as the
   reference notebook leaves it), then the entries of largest magnitude kept, ``keep`` of the
   categorical tables' entries, the rest masked: a global magnitude cut of |e alpha| (or |e|),
   the spec's slimctr default. The derived model is fine-tuned (``train_plan`` with
   ``initial_``, the searched weights, no reset: spec 1.2) with the start's schedule, whose
   early stopping ends it after a few epochs; the reference fine-tunes about 2.

Numeric fields and first-order weights are not scaled or pruned. What is stored is the masked
table (``slimctr.nn.masked``): kept values and a bit per entry.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from slimctr.config import to_dict
from slimctr.data.batch import Batch
from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding
from slimctr.search.plan import Plan
from slimctr.search.runner import Start
from slimctr.search.stages import (
    cached,
    categorical_columns,
    field_counts,
    field_masks,
    searched_plan,
    stage_key,
    state_copy,
    supernet,
    train_stage,
)
from slimctr.training.callbacks import Callback
from slimctr.training.trainer import Trainer

DERIVING = ("keep", "fold_alpha")  # settings of the derivation alone, not of the search


@dataclasses.dataclass(frozen=True, kw_only=True)
class DNISConfig:
    """DNIS's settings: the reference's CTR script (warm start of at most 20 epochs, at most 50
    search epochs, alpha's SGD rate 1e-2, L1 1e-5, per-block gradient normalisation) with the
    MovieLens script's feature-block shares, and ``keep``, the share of the categorical
    tables' entries the derived table keeps."""

    keep: float = 0.2
    blocks: tuple[float, ...] = (0.1, 0.2, 0.2, 0.2, 0.3)
    warm_epochs: int = 20
    search_epochs: int = 50
    alpha_lr: float = 1e-2
    l1: float = 1e-5
    grad_norm: bool = True
    fold_alpha: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.keep < 1:
            raise SlimctrError(f"search.keep must be in (0, 1), got {self.keep}")
        blocks = tuple(self.blocks)
        if not blocks or any(not share > 0 for share in blocks) or abs(sum(blocks) - 1) > 1e-6:
            raise SlimctrError(f"search.blocks must be positive shares that sum to 1, got {blocks}")
        object.__setattr__(self, "blocks", blocks)
        for name in ("warm_epochs", "search_epochs"):
            if getattr(self, name) < 1:
                raise SlimctrError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        if not self.alpha_lr > 0:
            raise SlimctrError(f"search.alpha_lr must be > 0, got {self.alpha_lr}")
        if not self.l1 >= 0:
            raise SlimctrError(f"search.l1 must be >= 0, got {self.l1}")


def frequency_blocks(counts: np.ndarray, shares: tuple[float, ...]) -> Tensor:
    """The feature block of each table row: rows ranked by ``counts`` (descending; ties by row)
    and cut into contiguous ranges of the ``shares`` of all rows (each at least one row, the
    last taking the rest). (N,) long."""
    rows = len(counts)
    if rows < len(shares):
        raise SlimctrError(f"{rows} feature values cannot fill {len(shares)} blocks")
    order = np.argsort(-counts, kind="stable")
    sizes = [max(1, round(share * rows)) for share in shares[:-1]]
    edges = np.minimum(np.cumsum(sizes), rows - (len(shares) - 1 - np.arange(len(sizes))))
    rank_block = np.searchsorted(edges, np.arange(rows), side="right")
    blocks = np.empty(rows, dtype=np.int64)
    blocks[order] = rank_block
    return torch.from_numpy(blocks)


def training_counts(start: Start, embedding: FieldEmbedding) -> np.ndarray:
    """How often each row of the fused categorical table occurs in the training split."""
    names = [embedding.field_names[c] for c in categorical_columns(embedding).tolist()]
    return np.concatenate(
        [field_counts(start.store, n, embedding.table(n).shape[0]) for n in names]
    )


class SelectedRows:
    """The search's row hook: categorical rows times their block's selection weights."""

    def __init__(self, embedding: FieldEmbedding, blocks: Tensor) -> None:
        if embedding.fused_table is None:
            raise SlimctrError("dnis needs the categorical fields at one width")
        self.table = embedding.fused_table.weight
        self.categorical = categorical_columns(embedding)
        self.offsets = embedding.offsets.long()
        self.blocks = blocks
        num_blocks = int(blocks.max()) + 1
        self.alpha = nn.Parameter(torch.ones(num_blocks, self.table.shape[1]))

    def __call__(self, rows: Tensor, batch: Batch) -> Tensor:
        fused = batch.categorical.long() + self.offsets  # (B, Fc)
        scale = torch.ones(*rows.shape[:2], rows.shape[2], dtype=rows.dtype)
        scale[:, self.categorical] = self.alpha[self.blocks[fused]].to(rows.dtype)
        return rows * scale

    @torch.no_grad()
    def folded(self) -> Tensor:
        """The fused table with alpha folded in: row i times alpha_{block(i)}."""
        return self.table * self.alpha[self.blocks]


def normalised(grad: Tensor) -> Tensor:
    """alpha's gradient divided per block (row) by its mean absolute value (plus 1e-8)."""
    return grad / (grad.abs().mean(dim=1, keepdim=True) + 1e-8)


class AlphaSearch(Callback):
    """After each training step, one SGD step on alpha for the loss on the next validation
    batch plus the L1 term, clamped to [0, 1]; keeps alpha at the end of every epoch, and at
    the end the one of the best epoch (whose weights the trainer restores)."""

    def __init__(self, hook: SelectedRows, config: DNISConfig, valid: Iterator[Batch]) -> None:
        self.hook, self.config, self.valid = hook, config, valid
        self.by_epoch: dict[int, Tensor] = {}

    def on_step_end(self, trainer: Trainer, batch: Batch, loss: float) -> None:
        alpha = self.hook.alpha
        held_out = next(self.valid)
        logits = trainer.model(held_out)
        task = functional.binary_cross_entropy_with_logits(logits, held_out.labels)
        (grad,) = torch.autograd.grad(task + self.config.l1 * alpha.abs().sum(), [alpha])
        if self.config.grad_norm:
            grad = normalised(grad)
        with torch.no_grad():
            alpha.sub_(self.config.alpha_lr * grad).clamp_(0.0, 1.0)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.by_epoch[trainer.epoch - 1] = self.hook.alpha.detach().clone()

    def on_fit_end(self, trainer: Trainer) -> None:
        with torch.no_grad():
            self.hook.alpha.copy_(self.by_epoch[trainer.best_epoch])


class DNIS:
    """The DNIS searcher: ``DNIS(DNISConfig()).fit(start, work).plan_``; the fine-tuned model
    starts from ``initial_``, the searched weights with alpha folded in. Both stages are kept in
    ``work``."""

    name = "dnis"
    plan_: Plan
    initial_: dict[str, Tensor] | None

    def __init__(self, config: DNISConfig | None = None) -> None:
        self.config = config or DNISConfig()

    def fit(self, start: Start, work: Path | None = None) -> DNIS:
        config = self.config
        model, embedding = supernet(start, self.name)
        blocks = frequency_blocks(training_counts(start, embedding), config.blocks)
        folder = None if work is None else Path(work)
        warm = cached(
            None if folder is None else folder / "warm.pt",
            stage_key(start, {"warm_epochs": config.warm_epochs}),
            lambda: self._warm_start(model, start),
            "dnis warm start",
        )
        model.load_state_dict(warm["state"])
        hook = SelectedRows(embedding, blocks)
        embedding.row_hook = hook
        found = cached(
            None if folder is None else folder / "search.pt",
            stage_key(start, {k: v for k, v in to_dict(config).items() if k not in DERIVING}),
            lambda: self._search(model, hook, start),
            "dnis search",
        )
        model.load_state_dict(found["state"])
        with torch.no_grad():
            hook.alpha.copy_(found["alpha"])
            if config.fold_alpha:
                hook.table.copy_(hook.folded())
        embedding.row_hook = None
        masks = field_masks(embedding, _largest(hook.table.detach(), config.keep))
        alpha = found["alpha"]
        settings = to_dict(config) | {
            "blocks": ",".join(f"{share:g}" for share in config.blocks),
            "warm_valid_auc": warm["valid_auc"],
            "search_valid_auc": found["valid_auc"],
            "alpha_zero_share": float((alpha == 0).float().mean()),
        }
        seconds = {"warm start": warm["seconds"], "search": found["seconds"]}
        self.plan_ = searched_plan(self.name, start, embedding, settings, seconds, masks=masks)
        self.initial_ = state_copy(model)
        return self

    def _warm_start(self, model: nn.Module, start: Start) -> dict[str, Any]:
        train = start.config.train
        epochs = train.for_rows(len(start.store.split("train"))).epochs
        assert epochs is not None  # for_rows chooses one
        train = dataclasses.replace(train, epochs=min(epochs, self.config.warm_epochs))
        began = time.perf_counter()
        result = train_stage(model, start, [], "dnis warm start", train)
        return {
            "state": state_copy(model),
            "valid_auc": result["valid_auc"],
            "seconds": time.perf_counter() - began,
        }

    def _search(self, model: nn.Module, hook: SelectedRows, start: Start) -> dict[str, Any]:
        config = self.config
        train = dataclasses.replace(start.config.train, epochs=config.search_epochs)
        train = train.for_rows(len(start.store.split("train")))
        features = {id(p) for m in model.modules() if isinstance(m, FieldEmbedding)
                    for p in m.parameters()}  # fmt: skip
        frozen = [p for p in model.parameters() if id(p) not in features and p.requires_grad]
        for parameter in frozen:  # the MLP and every other non-embedding weight
            parameter.requires_grad_(False)
        valid = BatchLoader(start.store, "valid", batch_size=train.batch_size or 1, shuffle=True,
                            seed=start.config.seed)  # fmt: skip
        search = AlphaSearch(hook, config, _forever(valid))
        began = time.perf_counter()
        try:
            result = train_stage(model, start, [search], "dnis search", train)
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)
        return {
            "state": state_copy(model),
            "alpha": hook.alpha.detach().clone(),
            "valid_auc": result["valid_auc"],
            "seconds": time.perf_counter() - began,
        }


def _largest(table: Tensor, keep: float) -> Tensor:
    """The ``keep`` share of ``table``'s entries of largest magnitude (ties at the cut kept
    together), zeros never: (N, d) bool."""
    size = table.abs()
    count = max(1, math.floor(keep * size.numel()))
    cut = torch.topk(size.flatten(), count).values[-1]
    return (size >= cut) & (size > 0)


def _forever(loader: BatchLoader) -> Iterator[Batch]:
    """``loader``'s batches, epoch after epoch (each reshuffled)."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader
