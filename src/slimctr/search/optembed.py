"""OptEmbed (Lyu et al., CIKM 2022): prune embedding rows and give each field its own width
(dimension-search spec 2).

Three stages, the first two here and the third the shared runner's:

1. **Supernet.** The start's model at one width D, trained with its settings and two masks on
   every embedded row e_i of field f: the row mask m_i = H(|e_i|_1 - t_f) with a learnable
   threshold per field (``gates.RowMask``: surrogate gradient, regulariser alpha Σ exp(-t_f),
   thresholds by plain SGD at ``threshold_lr``) and, in training only, a prefix width mask
   M_k with k ~ U{1..D} drawn for every (sample, field) pair. The initial weights are kept.
2. **Evolution.** With the row mask frozen, ``evolution.evolve`` searches per-field widths whose
   prefix masks give the supernet the best validation AUC; nothing is trained.
3. **Retraining** (``train_plan`` with ``initial_``): a model whose tables keep only the kept
   rows and the found widths, starting from the supernet's initial weights (spec 2.4).

Numeric fields (one vector each, scaled by the value) get a width but are never pruned: a row
mask on z_f v_f would switch the field on and off with its value. A field whose every row falls
under its threshold keeps its largest row (a plan keeps at least one row per field).
``prune_rows=False`` is the paper's OptEmbed-D ablation (widths only), ``search_widths=False``
its OptEmbed-E (rows only, at width D).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slimctr.config import to_dict
from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding
from slimctr.search.evolution import EvolutionConfig, evolve
from slimctr.search.gates import RowMask, prefix_masks, sample_width_masks
from slimctr.search.plan import Plan
from slimctr.search.runner import Start
from slimctr.search.stages import (
    cached,
    categorical_columns,
    searched_plan,
    stage_key,
    state_copy,
    supernet,
    train_stage,
)
from slimctr.training.callbacks import Callback
from slimctr.training.trainer import Trainer, score


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptEmbedConfig(EvolutionConfig):
    """OptEmbed's settings: its evolution's (``EvolutionConfig``, the reference command's) and
    its own. ``alpha`` and ``threshold_lr``: the reference README's DCN setting on Criteo (spec
    2.6). ``seed``: None takes the start's.
    ``max_embedding_params`` (slimctr's addition, None in the reference): the evolution keeps to
    widths whose tables, kept rows times widths, hold at most that many floats."""

    alpha: float = 1e-5
    threshold_lr: float = 1e-4
    norm: int = 1
    prune_rows: bool = True
    search_widths: bool = True
    seed: int | None = None
    max_embedding_params: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha >= 0:
            raise SlimctrError(f"search.alpha must be >= 0, got {self.alpha}")
        if not self.threshold_lr > 0:
            raise SlimctrError(f"search.threshold_lr must be > 0, got {self.threshold_lr}")
        if self.norm not in (1, 2):
            raise SlimctrError(f"search.norm must be 1 or 2, got {self.norm}")
        if self.max_embedding_params is not None and self.max_embedding_params < 1:
            raise SlimctrError(
                f"search.max_embedding_params must be >= 1 or null, got {self.max_embedding_params}"
            )
        if self.max_embedding_params is not None and not self.search_widths:
            raise SlimctrError(
                "search.max_embedding_params bounds the width search: keep search.search_widths"
            )
        if not (self.prune_rows or self.search_widths):
            raise SlimctrError("OptEmbed needs prune_rows or search_widths (or both)")


class SupernetMasks:
    """The supernet's row hook: (B, F, D) rows times the row mask (categorical fields) and, in
    training, a sampled prefix width mask per (sample, field); with ``widths`` set (evolution),
    those fixed prefix widths instead. In evaluation without ``widths`` no width mask applies."""

    def __init__(self, embedding: FieldEmbedding, config: OptEmbedConfig, seed: int) -> None:
        self.embedding = embedding
        self.categorical = categorical_columns(embedding)
        self.row_mask = RowMask(len(self.categorical), config.norm)  # t_f per categorical field
        self.prune = config.prune_rows
        self.sample = config.search_widths
        self.dim = embedding.field_dims[0]
        self.generator = torch.Generator().manual_seed(seed)
        self.widths: Tensor | None = None

    def __call__(self, rows: Tensor, batch: Batch) -> Tensor:
        if self.prune:
            mask = torch.ones((*rows.shape[:2], 1), dtype=rows.dtype)
            mask[:, self.categorical] = self.row_mask(rows[:, self.categorical]).to(rows.dtype)
            rows = rows * mask
        if self.widths is not None:
            return rows * prefix_masks(self.widths, self.dim)
        if self.sample and self.embedding.training:
            masks = sample_width_masks(len(rows), rows.shape[1], self.dim, self.generator)
            return rows * masks
        return rows

    @torch.no_grad()
    def kept(self) -> dict[str, np.ndarray]:
        """The ids each pruned categorical field keeps (its largest row when the threshold
        passes none); fields that keep every row are left out."""
        kept = {}
        for index, column in enumerate(self.categorical.tolist()):
            name = self.embedding.field_names[column]
            table = self.embedding.table(name)
            ids = self.row_mask.kept(table, index)
            if not len(ids):
                norms = torch.linalg.vector_norm(table, ord=self.row_mask.norm, dim=-1)
                ids = norms.argmax().reshape(1)
            if len(ids) < len(table):
                kept[name] = ids.numpy().astype(np.int64)
        return kept


class ThresholdTraining(Callback):
    """Steps the thresholds with plain SGD after each backward pass, with the regulariser's
    gradient added; keeps the thresholds of the best epoch, which the trainer's weights go
    back to at the end."""

    def __init__(self, masks: SupernetMasks, config: OptEmbedConfig) -> None:
        self.row_mask = masks.row_mask
        self.thresholds = masks.row_mask.thresholds
        self.alpha = config.alpha
        self.optimizer = torch.optim.SGD([self.thresholds], lr=config.threshold_lr)
        self.best = self.thresholds.detach().clone()

    def on_before_optimizer_step(self, trainer: Trainer, batch: Batch) -> None:
        self.row_mask.regulariser(self.alpha).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["best"]:
            self.best = self.thresholds.detach().clone()

    def on_fit_end(self, trainer: Trainer) -> None:
        with torch.no_grad():
            self.thresholds.copy_(self.best)


class OptEmbed:
    """The OptEmbed searcher: ``OptEmbed(OptEmbedConfig()).fit(start, work).plan_``; the
    retrained model starts from ``initial_``. Each finished stage is kept in ``work`` and reused
    by a search run again with the same settings and data."""

    name = "optembed"
    plan_: Plan
    initial_: dict[str, Tensor] | None

    def __init__(self, config: OptEmbedConfig | None = None) -> None:
        self.config = config or OptEmbedConfig()

    def fit(self, start: Start, work: Path | None = None) -> OptEmbed:
        seed = start.config.seed if self.config.seed is None else self.config.seed
        settings = to_dict(self.config) | {"seed": seed}
        evolution = {f.name for f in dataclasses.fields(EvolutionConfig)} | {"max_embedding_params"}
        trained_from = {k: v for k, v in settings.items() if k not in evolution}
        model, embedding = supernet(start, self.name)
        masks = SupernetMasks(embedding, self.config, seed)
        embedding.row_hook = masks
        supernet_work = None if work is None else Path(work) / "supernet.pt"
        trained = cached(
            supernet_work,
            stage_key(start, trained_from),
            lambda: self._supernet(model, masks, start),
            "optembed supernet",
        )
        model.load_state_dict(trained["model"])
        with torch.no_grad():
            masks.row_mask.thresholds.copy_(trained["thresholds"])
        kept = masks.kept() if self.config.prune_rows else {}
        evolution_work = None if work is None else Path(work) / "evolution.pt"
        found = cached(
            evolution_work,
            stage_key(start, settings),
            lambda: self._evolution(model, masks, kept, start, seed),
            "optembed evolution",
        )
        widths = dict(zip(embedding.field_names, found["widths"], strict=True))
        settings |= {
            "supernet_valid_auc": trained["valid_auc"],
            "evolution_valid_auc": found["fitness"],
        }
        seconds = {"supernet": trained["seconds"], "evolution": found["seconds"]}
        self.plan_ = searched_plan(
            self.name, start, embedding, settings, seconds, widths=widths, kept=kept
        )
        self.initial_ = trained["initial"]
        return self

    def _supernet(self, model: Any, masks: SupernetMasks, start: Start) -> dict[str, Any]:
        initial = state_copy(model)
        began = time.perf_counter()
        result = train_stage(
            model, start, [ThresholdTraining(masks, self.config)], "optembed supernet"
        )
        return {
            "initial": initial,
            "model": state_copy(model),
            "thresholds": masks.row_mask.thresholds.detach().clone(),
            "valid_auc": result["valid_auc"],
            "seconds": time.perf_counter() - began,
        }

    def _evolution(
        self,
        model: Any,
        masks: SupernetMasks,
        kept: dict[str, np.ndarray],
        start: Start,
        seed: int,
    ) -> dict[str, Any]:
        num_fields, dim = masks.embedding.num_fields, masks.dim
        began = time.perf_counter()
        if not self.config.search_widths:
            return {"widths": [dim] * num_fields, "fitness": None, "seconds": 0.0}
        evaluated, batch_size = 0, start.config.train.eval_batch_size

        def fitness(widths: np.ndarray) -> float:
            nonlocal evaluated
            masks.widths = torch.from_numpy(widths.astype(np.int64))
            try:
                scores = score(model, start.store, "valid", batch_size=batch_size)
            finally:
                masks.widths = None
            evaluated += 1
            if evaluated % 20 == 0:
                print(f"optembed evolution: {evaluated} candidates scored", file=sys.stderr)
            return scores["auc"]

        budget = self.config.max_embedding_params
        names = masks.embedding.field_names
        rows = np.array([len(kept.get(n, masks.embedding.table(n))) for n in names])

        def feasible(widths: np.ndarray) -> bool:
            return budget is None or int((rows * widths).sum()) <= budget

        found = evolve(fitness, num_fields, dim, self.config, seed, feasible)
        print(
            f"optembed evolution: best valid AUC {found.fitness:.4f} after {evaluated} "
            f"candidates, widths {found.widths.tolist()}",
            file=sys.stderr,
        )
        return {
            "widths": [int(w) for w in found.widths],
            "fitness": found.fitness,
            "seconds": time.perf_counter() - began,
        }
