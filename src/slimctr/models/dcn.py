"""DCN: Deep & Cross Network (Wang, Fu, Fu, Wang, ADKDD 2017, arXiv 1708.05123).

The input x0 = [e_1 || ... || e_F] in R^D concatenates the field embeddings (Eq. 2; per-field
widths allowed). L cross layers (Eq. 3)

    x_{l+1} = x0 x_l^T w_l + b_l + x_l,        w_l, b_l in R^D

model bounded-degree interactions with 2 D parameters per layer; an MLP (Eq. 4) runs in parallel
on the same x0, and the combination layer (Eq. 5) is

    logit = w_logits^T [x_L || MLP(x0)] + b

(the bias b is ours; Eq. 5 has none). With ``hidden_dims=()`` there is no MLP and
logit = w^T x_L + b, the cross network alone.

Defaults follow ``dcnv2`` so the two compare on one footing: width 16, 3 cross layers, a
400-400-400 ReLU MLP with BatchNorm (the DCN paper also batch-normalises its deep network),
dropout 0, embeddings N(0, 1e-4^2). Cross weights start U(+-1/sqrt(D)), cross biases at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import (
    check_bool,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
    check_int,
)
from slimctr.models.registry import register
from slimctr.nn.cross import CrossNetwork
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class DCNConfig:
    embedding_dim: int | dict[str, int] = 16  # one width, or a width per field name
    num_cross_layers: int = 3
    hidden_dims: tuple[int, ...] = (400, 400, 400)  # () : cross network only
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    def __post_init__(self) -> None:
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=True)
        check_int("num_cross_layers", self.num_cross_layers, minimum=1)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=True)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("dcn", DCNConfig, "DCN (Wang et al. 2017): cross network (x0 x_l^T w + b) beside an MLP")
class DCN(nn.Module):
    def __init__(self, schema: Schema, config: DCNConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        width = self.embedding.output_dim  # D
        self.cross = CrossNetwork(width, config.num_cross_layers, "v1")
        self.mlp = MLP(width, config.hidden_dims, config.dropout, config.batch_norm)
        self.has_mlp = len(config.hidden_dims) > 0
        self.output = nn.Linear(width + (self.mlp.output_dim if self.has_mlp else 0), 1)

    def forward(self, batch: Batch) -> Tensor:
        x0 = self.embedding.flat(batch)  # (B, D)
        hidden = self.cross(x0)  # (B, D)
        if self.has_mlp:
            hidden = torch.cat([hidden, self.mlp(x0)], dim=1)  # (B, D + H)
        return self.output(hidden).squeeze(1)  # (B,)
