"""An iHAS-style instance-wise dimension search (dimension-search spec 5).

**iHAS-style, not iHAS**: the paper (Yu et al., CIKM 2023) publishes no code, hyperparameters or
cluster counts; it states three stages (searching with Bernoulli gates and a sparsity and a
bi-polarisation regulariser, clustering with deterministic gates, one retrained model per
group), and every detail below is slimctr's choice (spec 5.2):

1. Search: the start's model at one width D, each field's embedding cut into ``blocks``
   contiguous blocks of nearly equal widths (the first ones one wider when D is not a
   multiple), and a block gate per (sample, field, block) from a controller, the router of
   ``slimctr.models.routed`` (its own embeddings of width ``router_dim``, an MLP to one logit
   per gate). In training a gate is a relaxed Bernoulli sample (Gumbel-sigmoid at a
   temperature falling geometrically from ``temperature_start`` to ``temperature_end`` over
   ``search_epochs``); in evaluation it is 1[p > 0.5]. The controller has its own Adam on the
   training batches (the task loss, through the gates, plus the regulariser ``sparsity``
   mean(p) + ``polarisation`` mean(p (1 - p))), stepped with the model.

   The router embeds only the values seen at least ``router_min_count`` times in training and
   reads the rarer ones as OOV. Trained with the task loss, an embedding of a value seen a few
   times learns those samples' labels; a router that had them sent training samples to groups
   by their labels (on Criteo-shaped data its three groups held 15%, 46% and 89% positives in
   training, 25-33% on the validation split), and each group model learnt a base rate that
   new samples do not share.
2. Clustering: the deterministic gates of up to ``cluster_rows`` training samples, k-means
   (k-means++ seeding, Lloyd's iterations, seeded) into ``groups`` groups (fewer when the
   samples have fewer distinct gate patterns); group g's width of field f is the width of as
   many blocks as its centroid has open, rounded (at least one).
3. Retraining (``train_plan``): a ``routed`` model, one group model per group with its widths,
   all starting fresh, behind the frozen router (the search's controller and the centroids,
   ``initial_``), each trained on the samples routed to it.

Size (spec 5.3): every group model's tables plus the router's, which the plan counts
(``Plan.groups``, ``Plan.router``); the router's MLP counts in the model's parameters.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slimctr.config import to_dict
from slimctr.data.batch import Batch
from slimctr.data.loader import BatchLoader
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.models.routed import RoutedConfig, Router
from slimctr.nn.embedding import FieldEmbedding
from slimctr.schema import NUM_RESERVED_IDS
from slimctr.search.plan import Plan, field_sizes
from slimctr.search.runner import Start, routed_config
from slimctr.search.stages import cached, field_counts, stage_key, supernet, train_stage
from slimctr.training.callbacks import Callback
from slimctr.training.trainer import Trainer


@dataclasses.dataclass(frozen=True, kw_only=True)
class IHASConfig:
    """The iHAS-style search's settings (all slimctr's choices: spec 5.2)."""

    groups: int = 3
    blocks: int = 4
    router_dim: int = 2
    router_hidden: int = 32
    router_min_count: int = 100
    search_epochs: int = 10
    temperature_start: float = 1.0
    temperature_end: float = 0.1
    sparsity: float = 1e-2
    polarisation: float = 1e-2
    controller_lr: float = 1e-3
    cluster_rows: int = 100_000
    kmeans_iterations: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("groups", "blocks", "router_dim", "router_hidden", "router_min_count",
                     "search_epochs", "cluster_rows", "kmeans_iterations"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SlimctrError(f"search.{name} must be an int >= 1, got {value!r}")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise SlimctrError(
                "search.temperature_end and search.temperature_start must satisfy "
                "0 < temperature_end <= temperature_start"
            )
        for name in ("sparsity", "polarisation"):
            if not getattr(self, name) >= 0:
                raise SlimctrError(f"search.{name} must be >= 0, got {getattr(self, name)}")
        if not self.controller_lr > 0:
            raise SlimctrError(f"search.controller_lr must be > 0, got {self.controller_lr}")

    def temperature(self, epoch: int) -> float:
        """The relaxation's temperature in search epoch ``epoch`` (from 0)."""
        if self.search_epochs == 1:
            return self.temperature_end
        ratio = self.temperature_end / self.temperature_start
        return self.temperature_start * ratio ** (epoch / (self.search_epochs - 1))


class BlockGates:
    """The search's row hook: each field's row times its block gates, (B, F, D); sampled while
    the model trains, deterministic while it is evaluated."""

    def __init__(self, embedding: FieldEmbedding, router: Router, blocks: int, seed: int) -> None:
        dim = embedding.field_dims[0]
        if blocks > dim:
            raise SlimctrError(f"ihas cannot cut width {dim} into {blocks} blocks")
        self.embedding, self.router = embedding, router
        self.sizes = torch.tensor([dim // blocks + (i < dim % blocks) for i in range(blocks)])
        self.temperature = 1.0
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows: Tensor, batch: Batch) -> Tensor:
        logits = self.router.logits(batch)  # (B, F, blocks)
        if self.embedding.training:
            uniform = torch.rand(logits.shape, generator=self.generator).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(uniform) - torch.log1p(-uniform)  # logistic
            gates = torch.sigmoid((logits + noise) / self.temperature)
        else:
            gates = (logits > 0).to(rows.dtype)
        return rows * gates.repeat_interleave(self.sizes, dim=-1).to(rows.dtype)

    def width(self, open_blocks: float) -> int:
        """The width of ``open_blocks`` blocks (rounded, at least one)."""
        return int(self.sizes[: max(1, round(open_blocks))].sum())


class GateTraining(Callback):
    """Sets the temperature each epoch, and steps the controller (Adam) with the regulariser on
    the batch's gate probabilities after each backward pass."""

    def __init__(self, hook: BlockGates, config: IHASConfig) -> None:
        self.hook, self.config = hook, config
        self.optimizer = torch.optim.Adam(hook.router.parameters(), lr=config.controller_lr)

    def on_epoch_start(self, trainer: Trainer) -> None:
        self.hook.temperature = self.config.temperature(trainer.epoch)

    def on_before_optimizer_step(self, trainer: Trainer, batch: Batch) -> None:
        p = torch.sigmoid(self.hook.router.logits(batch))
        penalty = self.config.sparsity * p.mean() + self.config.polarisation * (p * (1 - p)).mean()
        penalty.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def frequent_rows(store: Store, min_count: int) -> dict[str, int]:
    """The rows the router keeps of each categorical field: the reserved ones and the values
    seen at least ``min_count`` times in the training split, which are the field's first ids
    (numbered most frequent first, by their training count: ``slimctr.schema``)."""
    rows = {}
    for spec in store.schema.categorical:
        counts = field_counts(store, spec.name, spec.vocab_size)[NUM_RESERVED_IDS:]
        rows[spec.name] = NUM_RESERVED_IDS + int(np.count_nonzero(counts >= min_count))
    return rows


def kmeans(points: Tensor, groups: int, iterations: int, seed: int) -> Tensor:
    """Centroids (k, d) of ``points`` (n, d): k-means++ seeding and Lloyd's iterations, with
    k = min(groups, distinct points); an emptied cluster keeps its centroid."""
    generator = torch.Generator().manual_seed(seed)
    distinct = torch.unique(points, dim=0)
    k = min(groups, len(distinct))
    first = int(torch.randint(len(points), (1,), generator=generator))
    centroids = points[first : first + 1]
    while len(centroids) < k:
        nearest = torch.cdist(points, centroids).min(dim=1).values ** 2
        pick = int(torch.multinomial(nearest / nearest.sum(), 1, generator=generator))
        centroids = torch.cat([centroids, points[pick : pick + 1]])
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(dim=1)
        moved = centroids.clone()
        for index in range(k):
            members = points[assignment == index]
            if len(members):
                moved[index] = members.mean(dim=0)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids


class IHAS:
    """The iHAS-style searcher: ``IHAS(IHASConfig()).fit(start, work).plan_``; the retrained
    routed model takes its router from ``initial_``. The search stage is kept in ``work``."""

    name = "ihas"
    plan_: Plan
    initial_: dict[str, Tensor] | None

    def __init__(self, config: IHASConfig | None = None) -> None:
        self.config = config or IHASConfig()

    def fit(self, start: Start, work: Path | None = None) -> IHAS:
        config = self.config
        model, embedding = supernet(start, self.name)
        rows = frequent_rows(start.store, config.router_min_count)
        routing = RoutedConfig(
            backbone=start.config.model_name,
            router_dim=config.router_dim,
            router_hidden=config.router_hidden,
            router_blocks=config.blocks,
            router_rows=rows,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            router = Router(start.store.schema, routing, groups=1)
        hook = BlockGates(embedding, router, config.blocks, config.seed)
        embedding.row_hook = hook
        found = cached(
            None if work is None else Path(work) / "search.pt",
            stage_key(start, to_dict(config)),
            lambda: self._search(model, hook, start),
            "ihas search",
        )
        router.load_state_dict(found["router"], strict=False)  # all but the centroids
        centroids = found["centroids"]
        names = list(embedding.field_names)
        fields, blocks = len(names), config.blocks
        open_blocks = centroids.view(len(centroids), fields, blocks).sum(dim=-1)
        groups = tuple(
            {name: hook.width(float(n)) for name, n in zip(names, row, strict=True)}
            for row in open_blocks
        )
        widest = {name: max(group[name] for group in groups) for name in names}
        schema = start.store.schema
        settings = to_dict(config) | {
            "search_valid_auc": found["valid_auc"],
            "group_shares": ",".join(f"{share:.3f}" for share in found["shares"]),
        }
        plan = Plan(
            method=self.name,
            settings=settings,
            widths=widest,
            field_sizes=field_sizes(schema),
            groups=groups,
            router={
                "router_dim": config.router_dim,
                "router_hidden": config.router_hidden,
                "router_blocks": config.blocks,
            },
            router_rows=rows,
            source_run=None if start.run_dir is None else str(start.run_dir),
            source_widths=dict(zip(names, embedding.field_dims, strict=True)),
            seconds={"search": found["seconds"], "clustering": found["cluster_seconds"]},
        )
        with torch.random.fork_rng(devices=[]):
            routed = MODELS["routed"].model(schema, routed_config(start.config, plan).model)
        params = sum(p.numel() for p in routed.parameters())
        self.plan_ = dataclasses.replace(plan, model_params=params)
        state = {f"router.{key}": value for key, value in found["router"].items()}
        self.initial_ = state | {"router.centroids": centroids}
        return self

    def _search(self, model: Any, hook: BlockGates, start: Start) -> dict[str, Any]:
        config = self.config
        train = dataclasses.replace(
            start.config.train,
            epochs=config.search_epochs,
            early_stopping_patience=config.search_epochs,
            plateau_patience=config.search_epochs,  # one rate, as the other searches
        )
        began = time.perf_counter()
        result = train_stage(model, start, [GateTraining(hook, config)], "ihas search", train)
        seconds = time.perf_counter() - began
        began = time.perf_counter()
        gates = self._gates(hook.router, start)
        centroids = kmeans(gates, config.groups, config.kmeans_iterations, config.seed)
        assignment = torch.cdist(gates, centroids).argmin(dim=1)
        shares = torch.bincount(assignment, minlength=len(centroids)).float() / len(gates)
        return {
            "router": {
                k: v.detach().clone()
                for k, v in hook.router.state_dict().items()
                if k != "centroids"
            },
            "centroids": centroids,
            "shares": shares.tolist(),
            "valid_auc": result["valid_auc"],
            "seconds": seconds,
            "cluster_seconds": time.perf_counter() - began,
        }

    @torch.no_grad()
    def _gates(self, router: Router, start: Start) -> Tensor:
        """The deterministic gates of the first ``cluster_rows`` training samples (in a seeded
        shuffle): (n, F blocks) float."""
        loader = BatchLoader(start.store, "train", batch_size=8192, shuffle=True,
                             seed=self.config.seed)  # fmt: skip
        found, count = [], 0
        for batch in loader:
            found.append((router.logits(batch) > 0).flatten(1).float())
            count += len(batch)
            if count >= self.config.cluster_rows:
                break
        return torch.cat(found)[: self.config.cluster_rows]
