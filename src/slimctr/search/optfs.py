"""OptFS (Lyu et al., WWW 2023): keep only the feature values that help (dimension-search spec 3).

Search stage: the start's model with a gate per categorical feature value i in front of every
branch, e~_i = g_i e_i with g_i = sigma(tau m_i) / sigma(m_0) (``gates.FeatureGates``), trained
for ``search_epochs`` epochs with the start's settings plus lambda Σ_i sigma(tau m_i) over all N
gates; the logits have their own Adam (the start's learning rate, no weight decay). tau grows
from 1 to ``final_temperature`` over the search epochs (``gates.temperature``), and the weights
at the start of epoch ``rewind_epoch`` are kept.

Retraining (``train_plan`` with ``initial_``): the hard gates 1[m_i > 0] decide the kept values;
the model keeps only their rows and starts from the rewind checkpoint. The reference code keeps
the hard gate's scale 1/sigma(m_0) (about 1.607) on kept embeddings while retraining; here a kept
row is stored times that scale (``scaled=True``, the default), which gives the same embeddings
at the start and costs nothing to store; Adam then moves the stored row at its own pace, not
1.607 times it, so the training is not step-for-step the reference's. ``scaled=False`` drops
the scale. Numeric fields are not gated; a field whose every gate closes keeps its value with
the largest logit (a plan keeps at least one row per field).
"""

from __future__ import annotations

import dataclasses
import math
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
from slimctr.search.gates import FeatureGates, temperature
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
from slimctr.training.trainer import Trainer


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptFSConfig:
    """OptFS's settings: the reference README's DCN setting on Criteo (lambda 1e-8, final
    temperature 1e4, 5 search epochs, rewind to epoch 2), m_0 = 0.5 and the scaled hard gate of
    the reference code (spec 3.2-3.4). ``gate_lr``: the gate logits' Adam learning rate; None
    takes the weights' (the reference's choice). Adam moves a logit by about its learning rate
    a step, so a gate can only close within a search whose steps add up to more than m_0: on
    Criteo an epoch is about 8,800 steps of 4,096 rows, on Frappe 49."""

    strength: float = 1e-8
    final_temperature: float = 1e4
    search_epochs: int = 5
    rewind_epoch: int = 2
    m0: float = 0.5
    scaled: bool = True
    gate_lr: float | None = None

    def __post_init__(self) -> None:
        if self.gate_lr is not None and not self.gate_lr > 0:
            raise SlimctrError(f"search.gate_lr must be > 0 or null, got {self.gate_lr}")
        if not self.strength >= 0:
            raise SlimctrError(f"search.strength must be >= 0, got {self.strength}")
        if not self.final_temperature >= 1:
            raise SlimctrError(
                f"search.final_temperature must be >= 1, got {self.final_temperature}"
            )
        if self.search_epochs < 2:
            raise SlimctrError(f"search.search_epochs must be >= 2, got {self.search_epochs}")
        if not 0 <= self.rewind_epoch < self.search_epochs:
            raise SlimctrError(
                f"search.rewind_epoch must be in [0, search.search_epochs), got {self.rewind_epoch}"
            )
        if not (math.isfinite(self.m0) and self.m0 > 0):
            raise SlimctrError(f"search.m0 must be > 0 (every gate starts open), got {self.m0}")


class GatedRows:
    """The search stage's row hook: each categorical field's row times its value's gate."""

    def __init__(self, embedding: FieldEmbedding, config: OptFSConfig) -> None:
        self.embedding = embedding
        self.categorical = categorical_columns(embedding)
        names = [embedding.field_names[c] for c in self.categorical.tolist()]
        sizes = [embedding.table(name).shape[0] for name in names]
        self.starts = dict(zip(names, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))
        self.sizes = dict(zip(names, sizes, strict=True))
        self.offsets = torch.tensor(list(self.starts.values()), dtype=torch.long)
        self.gates = FeatureGates(sum(sizes), config.m0, config.scaled)

    def __call__(self, rows: Tensor, batch: Batch) -> Tensor:
        gate = torch.ones(rows.shape[:2], dtype=rows.dtype)
        gate[:, self.categorical] = self.gates(batch.categorical + self.offsets).to(rows.dtype)
        return rows * gate.unsqueeze(-1)

    @torch.no_grad()
    def kept(self) -> dict[str, np.ndarray]:
        """The values each field keeps (m > 0; its largest logit when none), for fields that
        lose any."""
        kept = {}
        for name, start in self.starts.items():
            logits = self.gates.logits[start : start + self.sizes[name]]
            ids = torch.nonzero(logits > 0).flatten()
            if not len(ids):
                ids = logits.argmax().reshape(1)
            if len(ids) < len(logits):
                kept[name] = ids.numpy().astype(np.int64)
        return kept


class GateSearch(Callback):
    """Sets tau at the start of each search epoch, keeps the rewind checkpoint, and steps the
    gate logits (Adam) with the regulariser after each backward pass."""

    def __init__(self, rows: GatedRows, config: OptFSConfig, lr: float) -> None:
        self.gates = rows.gates
        self.config = config
        self.optimizer = torch.optim.Adam([self.gates.logits], lr=lr)
        self.rewind: dict[str, Tensor] | None = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        config = self.config
        self.gates.tau = temperature(trainer.epoch, config.search_epochs, config.final_temperature)
        if trainer.epoch == config.rewind_epoch:
            self.rewind = state_copy(trainer.model)

    def on_before_optimizer_step(self, trainer: Trainer, batch: Batch) -> None:
        self.gates.regulariser(self.config.strength).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class OptFS:
    """The OptFS searcher: ``OptFS(OptFSConfig()).fit(start, work).plan_``; the retrained model
    starts from ``initial_``, the rewind checkpoint. The search stage is kept in ``work``."""

    name = "optfs"
    plan_: Plan
    initial_: dict[str, Tensor] | None

    def __init__(self, config: OptFSConfig | None = None) -> None:
        self.config = config or OptFSConfig()

    def fit(self, start: Start, work: Path | None = None) -> OptFS:
        model, embedding = supernet(start, self.name)
        rows = GatedRows(embedding, self.config)
        embedding.row_hook = rows
        found = cached(
            None if work is None else Path(work) / "search.pt",
            stage_key(start, to_dict(self.config)),
            lambda: self._search(model, rows, start),
            "optfs search",
        )
        with torch.no_grad():
            rows.gates.logits.copy_(found["logits"])
        initial = found["rewind"]
        if self.config.scaled:  # fold the hard gate's constant into the kept rows
            model.load_state_dict(initial)
            with torch.no_grad():
                for name in rows.starts:
                    embedding.table(name).mul_(rows.gates.hard_scale)
            initial = state_copy(model)
        kept = rows.kept()
        settings = to_dict(self.config) | {
            "search_valid_auc": found["valid_auc"],
        }
        self.plan_ = searched_plan(
            self.name, start, embedding, settings, {"search": found["seconds"]}, kept=kept
        )
        self.initial_ = initial
        return self

    def _search(self, model: Any, rows: GatedRows, start: Start) -> dict[str, Any]:
        config = self.config
        train = dataclasses.replace(
            start.config.train,
            epochs=config.search_epochs,
            early_stopping_patience=config.search_epochs,
            plateau_patience=config.search_epochs,  # the reference searches at one rate
        )
        search = GateSearch(rows, config, config.gate_lr or train.lr)
        began = time.perf_counter()
        result = train_stage(model, start, [search], "optfs search", train)
        assert search.rewind is not None  # epoch rewind_epoch < search_epochs always starts
        return {
            "logits": rows.gates.logits.detach().clone(),
            "rewind": search.rewind,
            "valid_auc": result["valid_auc"],
            "seconds": time.perf_counter() - began,
        }
