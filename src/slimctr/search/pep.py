"""PEP (Liu et al., ICLR 2021): learnable soft thresholds on every embedding entry
(dimension-search spec 6, property 20).

Search stage: the start's model at one width, each categorical entry v read through the soft
threshold v^ = sign(v) ReLU(|v| - sigma(s)), with s learned (``threshold``: one per feature and
dimension, the reference's Criteo setting, or shared per feature, field, field and dimension,
dimension, or one global s). No sparsity term: s is trained by the task loss through its own Adam,
whose weight decay ``threshold_decay`` is the reference's L2 on every parameter. At s_0 = -150,
sigma(s) underflows to 0 in float32, so v^ = v and the task gradient of s is 0; the decay term
(1e-5 s, negative) is then what moves s, and under Adam it does so by about the learning rate
a step whatever its size: s climbs steadily until sigma(s) reaches the size of the entries and
the task loss takes part. On Criteo (about 36k steps an epoch at batch 1024) that takes a few
epochs; on smaller data raise ``threshold_init`` or ``threshold_lr``.

The search stops at the first step where the thresholded table keeps at most ``keep`` of its
entries (the reference saves the table when it crosses each target size) and takes the mask
1[|v| > sigma(s)] there; a search that runs out of epochs first takes the mask at its end and
says so (``reached`` in the plan's settings). Retraining (``train_plan`` with ``initial_``) starts
from the supernet's initial weights with the mask fixed (the lottery ticket), and the retrained
model stores only the kept entries (``slimctr.nn.masked``). Numeric fields are not thresholded.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimctr.config import to_dict
from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding
from slimctr.search.plan import Plan
from slimctr.search.runner import Start
from slimctr.search.stages import (
    cached,
    categorical_columns,
    field_masks,
    searched_plan,
    stage_key,
    state_copy,
    supernet,
    train_stage,
)
from slimctr.training.callbacks import Callback
from slimctr.training.trainer import Trainer

Threshold = Literal["feature_dim", "feature", "field_dim", "field", "dimension", "global"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PEPConfig:
    """PEP's settings: the reference code's Criteo setting (a threshold per feature and
    dimension, s_0 = -150, the weights' Adam rate and an L2 of 1e-5 on s) and ``keep``, the
    share of the categorical tables' entries the result keeps (the reference saves tables at
    fixed parameter counts). ``threshold_lr`` None takes the weights' learning rate;
    ``search_epochs`` None the start's epoch budget."""

    keep: float = 0.2
    threshold: Threshold = "feature_dim"
    threshold_init: float = -150.0
    threshold_lr: float | None = None
    threshold_decay: float = 1e-5
    search_epochs: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.keep < 1:
            raise SlimctrError(f"search.keep must be in (0, 1), got {self.keep}")
        if self.threshold not in Threshold.__args__:  # type: ignore[attr-defined]
            raise SlimctrError(
                f"search.threshold must be one of {', '.join(Threshold.__args__)}, "  # type: ignore[attr-defined]
                f"got {self.threshold!r}"
            )
        if not math.isfinite(self.threshold_init):
            raise SlimctrError(f"search.threshold_init must be finite, got {self.threshold_init}")
        if self.threshold_lr is not None and not self.threshold_lr > 0:
            raise SlimctrError(f"search.threshold_lr must be > 0 or null, got {self.threshold_lr}")
        if not self.threshold_decay >= 0:
            raise SlimctrError(f"search.threshold_decay must be >= 0, got {self.threshold_decay}")
        if self.search_epochs is not None and self.search_epochs < 1:
            raise SlimctrError(
                f"search.search_epochs must be >= 1 or null, got {self.search_epochs}"
            )


class SoftThreshold:
    """The search stage's row hook: categorical entries v become sign(v) ReLU(|v| - sigma(s)),
    with s shaped by ``threshold`` over the fused table's rows (N, d) and fields. Not a module:
    s is not one of the model's parameters."""

    def __init__(self, embedding: FieldEmbedding, config: PEPConfig) -> None:
        if embedding.fused_table is None:
            raise SlimctrError("pep needs the categorical fields at one width")
        self.table = embedding.fused_table.weight
        self.categorical = categorical_columns(embedding)
        self.offsets = embedding.offsets.long()
        rows, width = self.table.shape
        sizes = torch.diff(torch.cat([self.offsets, torch.tensor([rows])]))
        self.field_of_row = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        shape = {
            "feature_dim": (rows, width),
            "feature": (rows, 1),
            "field_dim": (len(sizes), width),
            "field": (len(sizes), 1),
            "dimension": (width,),
            "global": (1,),
        }[config.threshold]
        self.kind = config.threshold
        self.s = nn.Parameter(torch.full(shape, float(config.threshold_init)))

    def _thresholds(self, rows: Tensor) -> Tensor:
        """sigma(s) for the fused-table ``rows`` (any shape): (..., d) or (..., 1)."""
        if self.kind.startswith("feature"):
            return torch.sigmoid(self.s[rows])
        if self.kind.startswith("field"):
            return torch.sigmoid(self.s[self.field_of_row[rows]])
        return torch.sigmoid(self.s).expand(*rows.shape, -1)

    def __call__(self, rows: Tensor, batch: Batch) -> Tensor:
        fused = batch.categorical.long() + self.offsets  # (B, Fc)
        values = rows[:, self.categorical]
        thresholded = torch.sign(values) * torch.relu(values.abs() - self._thresholds(fused))
        rows = rows.clone()
        rows[:, self.categorical] = thresholded.to(rows.dtype)
        return rows

    @torch.no_grad()
    def mask(self) -> Tensor:
        """The entries of the fused table the thresholds keep: |v| > sigma(s), (N, d)."""
        return self.table.abs() > self._thresholds(torch.arange(self.table.shape[0]))


class ThresholdSearch(Callback):
    """Steps the thresholds (Adam with the reference's L2) after each backward pass, and stops
    the search at the first step whose mask keeps at most ``target`` entries."""

    def __init__(self, hook: SoftThreshold, config: PEPConfig, lr: float, target: int) -> None:
        self.hook = hook
        self.optimizer = torch.optim.Adam([hook.s], lr=lr, weight_decay=config.threshold_decay)
        self.target = target
        self.found: Tensor | None = None
        self.steps = 0

    def on_before_optimizer_step(self, trainer: Trainer, batch: Batch) -> None:
        if self.found is None:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def on_step_end(self, trainer: Trainer, batch: Batch, loss: float) -> None:
        if self.found is not None:
            return
        self.steps += 1
        mask = self.hook.mask()
        if int(mask.sum()) <= self.target:
            self.found = mask
            trainer.stop = True  # after this epoch


class PEP:
    """The PEP searcher: ``PEP(PEPConfig()).fit(start, work).plan_``; the retrained model starts
    from ``initial_``, the supernet's initial weights. The search stage is kept in ``work``."""

    name = "pep"
    plan_: Plan
    initial_: dict[str, Tensor] | None

    def __init__(self, config: PEPConfig | None = None) -> None:
        self.config = config or PEPConfig()

    def fit(self, start: Start, work: Path | None = None) -> PEP:
        model, embedding = supernet(start, self.name)
        hook = SoftThreshold(embedding, self.config)
        initial = state_copy(model)
        embedding.row_hook = hook
        found = cached(
            None if work is None else Path(work) / "search.pt",
            stage_key(start, to_dict(self.config)),
            lambda: self._search(model, hook, start),
            "pep search",
        )
        if not found["reached"]:
            print(
                f"pep: the search ended before the tables kept {self.config.keep:.0%} of their "
                f"entries ({found['kept_share']:.1%} kept); raise search.threshold_init or "
                "search.threshold_lr",
                file=sys.stderr,
            )
        elif found["kept_share"] < self.config.keep / 2:  # one step cut far past the target
            print(
                f"pep: step {found['steps']} of the search left {found['kept_share']:.1%} of the "
                f"entries against a target of {self.config.keep:.0%}; lower "
                "search.threshold_init or search.threshold_lr",
                file=sys.stderr,
            )
        masks = field_masks(embedding, found["mask"])
        settings = to_dict(self.config) | {
            "reached": found["reached"],
            "search_steps": found["steps"],
            "search_valid_auc": found["valid_auc"],
        }
        self.plan_ = searched_plan(
            self.name, start, embedding, settings, {"search": found["seconds"]}, masks=masks
        )
        self.initial_ = initial
        return self

    def _search(self, model: nn.Module, hook: SoftThreshold, start: Start) -> dict[str, Any]:
        config = self.config
        train = start.config.train
        epochs = config.search_epochs or train.for_rows(len(start.store.split("train"))).epochs
        assert epochs is not None  # for_rows chooses one
        train = dataclasses.replace(
            train,
            epochs=epochs,
            early_stopping_patience=epochs,  # the target, not validation, ends the search
            plateau_patience=epochs,  # the reference searches at one rate
        )
        target = math.floor(config.keep * hook.table.numel())
        search = ThresholdSearch(hook, config, config.threshold_lr or train.lr, target)
        began = time.perf_counter()
        result = train_stage(model, start, [search], "pep search", train)
        mask = search.found if search.found is not None else hook.mask()
        return {
            "mask": mask,
            "reached": search.found is not None,
            "kept_share": float(mask.float().mean()),
            "steps": search.steps,
            "valid_auc": result["valid_auc"],
            "seconds": time.perf_counter() - began,
        }
