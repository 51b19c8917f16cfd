"""Routed group models: what an iHAS-style search retrains (dimension-search spec 5).

A router sends each sample to one of G group models (``experts``), each the ``backbone``
architecture with its own settings (in practice its own per-field embedding widths); the sample's
logit is its group model's.

The router is the search's controller, frozen: its own small field embedding (``router_dim``
per field) of the frequent feature values only, an MLP to a logit per (field, dimension block)
(``router_blocks`` per field), the deterministic gates 1[logit > 0], and the nearest of G
``centroids`` (a buffer, (G, F K)) to those gates. Its weights are parameters that do not
train (``requires_grad`` off): they count in the model's size, as spec 5.3 asks, and come from
the search (``slimctr.search.ihas``). A model of one group routes everything to it; that is
the default, so that the model builds untrained.

``router_rows`` gives, for a categorical field, how many rows the router's table keeps: ids are
numbered most frequent first (``slimctr.schema``), so it keeps the first ``router_rows[f]`` and
reads every later id as OOV. The search keeps the values seen often enough in training: an
embedding of a value seen a few times learns those samples' labels, and a router that had one
would send training samples to groups by their labels, which new samples do not follow. A
field it does not name keeps every row.

In training, each group model sees only the samples routed to it, so training the routed model
trains each group model on its group. A group that gets a single sample in a training batch is
run on that sample twice (BatchNorm needs two); only the first output is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from slimctr.config import from_dict
from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.models.checks import check_int
from slimctr.models.registry import MODELS, register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.schema import NUM_RESERVED_IDS, OOV_ID, Schema

# A group model's setting: a backbone config key's value (per-field widths are a mapping).
Setting = int | float | str | bool | None | tuple[int, ...] | dict[str, int]


@dataclass(frozen=True, kw_only=True)
class RoutedConfig:
    backbone: str = "dnn"  # a registered model: the architecture of every group model
    experts: tuple[dict[str, Setting], ...] = ({},)  # each group model's backbone settings
    router_dim: int = 2  # the router's own embedding width per field
    router_hidden: int = 32
    router_blocks: int = 4  # gates per field
    router_rows: dict[str, int] = field(default_factory=dict)  # rows the router keeps per field

    def __post_init__(self) -> None:
        if self.backbone not in MODELS or self.backbone == "routed":
            known = ", ".join(n for n in MODELS if n != "routed")
            raise SlimctrError(f"model.backbone must be one of {known}, got {self.backbone!r}")
        if not isinstance(self.experts, tuple) or not self.experts:
            raise SlimctrError(f"model.experts must list at least one group, got {self.experts!r}")
        for index, settings in enumerate(self.experts):
            expert_config(self.backbone, settings, index)
        check_int("router_dim", self.router_dim, 1)
        check_int("router_hidden", self.router_hidden, 1)
        check_int("router_blocks", self.router_blocks, 1)
        if not isinstance(self.router_rows, dict):
            raise SlimctrError("model.router_rows must map field names to row counts")
        for name, rows in self.router_rows.items():
            check_int(f"router_rows[{name!r}]", rows, NUM_RESERVED_IDS)


def expert_config(backbone: str, settings: Any, index: int) -> Any:
    """Group ``index``'s backbone config from its ``settings``; errors name the group."""
    if not isinstance(settings, dict):
        raise SlimctrError(f"model.experts[{index}] must be a mapping of settings")
    try:
        return from_dict(MODELS[backbone].config, settings, where=f"experts[{index}]")
    except SlimctrError as error:
        raise SlimctrError(f"model.experts[{index}]: {error}") from None


class Router(nn.Module):
    """Gate logits per (field, block) from the router's own embeddings of the frequent values,
    and the group whose centroid is nearest to a sample's deterministic gates."""

    centroids: Tensor  # (G, F K)
    kept: Tensor  # (F_cat,) the rows the router's table keeps of each categorical field

    def __init__(self, schema: Schema, config: RoutedConfig, groups: int) -> None:
        super().__init__()
        self.blocks = config.router_blocks
        frequent = router_schema(schema, config.router_rows)
        self.embedding = FieldEmbedding(frequent, config.router_dim)
        kept = [f.vocab_size for f in frequent.categorical]
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.int32), persistent=False)
        fields = self.embedding.num_fields
        self.mlp = nn.Sequential(
            nn.Linear(self.embedding.output_dim, config.router_hidden),
            nn.ReLU(),
            nn.Linear(config.router_hidden, fields * config.router_blocks),
        )
        self.register_buffer("centroids", torch.zeros(groups, fields * config.router_blocks))

    def logits(self, batch: Batch) -> Tensor:
        """(B, F, blocks): the gate logits; a gate is open where its logit is > 0."""
        frequent = torch.where(batch.categorical < self.kept, batch.categorical, OOV_ID)
        flat = self.mlp(self.embedding.flat(Batch(frequent, batch.numeric, batch.labels)))
        return flat.view(len(batch), self.embedding.num_fields, self.blocks)

    @torch.no_grad()
    def route(self, batch: Batch) -> Tensor:
        """(B,) long: the group of each sample."""
        if len(self.centroids) == 1:
            return torch.zeros(len(batch), dtype=torch.long)
        gates = (self.logits(batch) > 0).flatten(1).to(self.centroids.dtype)
        return torch.cdist(gates, self.centroids).argmin(dim=1)


def router_schema(schema: Schema, rows: dict[str, int]) -> Schema:
    """``schema`` with each field that ``rows`` names cut to its first ``rows[f]`` ids."""
    categorical = {f.name: f for f in schema.categorical}
    for name, kept in rows.items():
        if name not in categorical:
            raise SlimctrError(f"model.router_rows names {name!r}, not a categorical field")
        if kept > categorical[name].vocab_size:
            raise SlimctrError(
                f"model.router_rows[{name!r}] is {kept}, more than the field's "
                f"{categorical[name].vocab_size} rows"
            )
    fields = tuple(
        replace(f, vocab_size=rows[f.name]) if f.name in rows else f for f in schema.fields
    )
    return replace(schema, fields=fields)


@register(
    "routed",
    RoutedConfig,
    "group models of one backbone behind a frozen router (an iHAS-style search's result)",
    from_search=True,
)
class Routed(nn.Module):
    def __init__(self, schema: Schema, config: RoutedConfig) -> None:
        super().__init__()
        self.config = config
        entry = MODELS[config.backbone]
        self.experts = nn.ModuleList(
            entry.model(schema, expert_config(config.backbone, settings, index))
            for index, settings in enumerate(config.experts)
        )
        self.router = Router(schema, config, len(config.experts))
        self.router.requires_grad_(False)  # found by the search, not trained here

    def forward(self, batch: Batch) -> Tensor:
        if len(self.experts) == 1:
            return self.experts[0](batch)
        groups = self.router.route(batch)
        logits = torch.zeros(len(batch))
        for group, expert in enumerate(self.experts):
            rows = torch.nonzero(groups == group).flatten()
            if not len(rows):
                continue
            twice = self.training and len(rows) == 1  # BatchNorm needs two samples
            taken = rows.repeat(2) if twice else rows
            logits = logits.index_put(
                (rows,), expert(batch.rows(taken))[: len(rows)].to(logits.dtype)
            )
        return logits
