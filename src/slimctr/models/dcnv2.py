"""DCNv2: Deep & Cross Network V2 (Wang et al., WWW 2021, arXiv 2008.13535).

The input x0 = [e_1 || ... || e_F] in R^D concatenates the field embeddings (per-field widths
allowed). L cross layers

    x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l,      W_l in R^{D x D}, or U_l V_l^T with low_rank r

model explicit interactions up to order L + 1; an MLP models implicit ones. Two structures
(both shown in the paper):

    parallel (default):  logit = w^T [x_L || MLP(x0)] + b
    stacked:             logit = w^T MLP(x_L) + b

With ``hidden_dims=()`` there is no MLP and logit = w^T x_L + b (the cross network alone, CN-V2).
``cross_matrices()`` and ``field_dims`` serve the interaction heatmap (``slimctr.explain``); DCN-V2
has no gates.

Defaults: 3 full-rank cross layers and a 400-400-400 ReLU MLP with BatchNorm, the shape used
for DCN-V2 in the GDCN paper (GDCN spec 3; BatchNorm as in its reference code); cross biases
start at 0. Dropout defaults to 0.2 (until 2026-12-04 it was 0, the unregularised run of the
performance spec, Frappe test AUC 0.9788): chosen from 0, 0.2 and 0.5 by validation AUC on two
generated click logs (docs/results/defaults_selection.md), because without it untuned DCNv2 fell
below a one-hot logistic regression there. The GDCN paper uses 0.5 and BARS's tuned Frappe
DCN-V2 0.4.
Embeddings start xavier-uniform per field, as GDCN's do (``embedding_init_std=1e-4`` gives
BARS/FuxiCTR's N(0, 1e-4^2), the default until 2026-12-04): with tiny embeddings the cross terms,
products of embeddings, start near zero and take epochs to matter, while the MLP overfits a small
log first. Chosen, like the dropout, by validation AUC on the two click logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import (
    check_bool,
    check_choice,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
    check_int,
    check_optional_int,
)
from slimctr.models.registry import register
from slimctr.nn.cross import CrossNetwork
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class DCNv2Config:
    embedding_dim: int | dict[str, int] = 16  # one width, or a width per field name
    structure: Literal["parallel", "stacked"] = "parallel"
    num_cross_layers: int = 3
    low_rank: int | None = None  # None: full-rank W_l; r: W_l = U_l V_l^T of rank r
    hidden_dims: tuple[int, ...] = (400, 400, 400)  # () : cross network only
    dropout: float = 0.2  # see the module docstring
    batch_norm: bool = True
    embedding_init_std: float | None = None  # None: xavier (see above); std: N(0, std^2)

    def __post_init__(self) -> None:
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=True)
        check_choice("structure", self.structure, ("parallel", "stacked"))
        check_int("num_cross_layers", self.num_cross_layers, minimum=1)
        check_optional_int("low_rank", self.low_rank, minimum=1)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=True)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register(
    "dcnv2", DCNv2Config, "DCN-V2 (Wang et al. 2021): cross network and MLP, parallel or stacked"
)
class DCNv2(nn.Module):
    def __init__(self, schema: Schema, config: DCNv2Config) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        width = self.embedding.output_dim  # D
        self.cross = CrossNetwork(width, config.num_cross_layers, "v2", config.low_rank)
        self.mlp = MLP(width, config.hidden_dims, config.dropout, config.batch_norm)
        # Without hidden layers the MLP is the identity and both structures reduce to CN-V2.
        self.parallel = config.structure == "parallel" and len(config.hidden_dims) > 0
        self.output = nn.Linear(self.mlp.output_dim + (width if self.parallel else 0), 1)

    def forward(self, batch: Batch) -> Tensor:
        x0 = self.embedding.flat(batch)  # (B, D)
        if self.parallel:
            hidden = torch.cat([self.cross(x0), self.mlp(x0)], dim=1)  # (B, D + H)
        else:
            hidden = self.mlp(self.cross(x0))  # (B, H), or (B, D) without hidden layers
        return self.output(hidden).squeeze(1)  # (B,)

    @property
    def field_dims(self) -> tuple[int, ...]:
        """Width d_f of each field, in the order of the slices of x0 (``Schema.fields`` order)."""
        return self.embedding.field_dims

    def cross_matrices(self) -> list[Tensor]:
        """W_l of each cross layer, (D, D), for the interaction heatmap: the full-rank weight or,
        with ``low_rank``, U_l V_l^T. Rows are outputs (the field of x0), columns inputs."""
        return self.cross.cross_matrices()
