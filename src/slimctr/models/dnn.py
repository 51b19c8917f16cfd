"""DNN: an MLP on the concatenated field embeddings.

    logit = w^T MLP([e_1 || ... || e_F]) + b

Per-field embedding widths are allowed (the input is a concatenation). Defaults are the deep
part of ``dcnv2``: 400-400-400 ReLU with BatchNorm, dropout 0, embeddings N(0, 1e-4^2).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import (
    check_bool,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
)
from slimctr.models.registry import register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class DNNConfig:
    embedding_dim: int | dict[str, int] = 16  # one width, or a width per field name
    hidden_dims: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    def __post_init__(self) -> None:
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=True)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=False)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("dnn", DNNConfig, "MLP on the concatenated field embeddings")
class DNN(nn.Module):
    def __init__(self, schema: Schema, config: DNNConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        self.mlp = MLP(
            self.embedding.output_dim,
            config.hidden_dims,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            output_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        return self.mlp(self.embedding.flat(batch)).squeeze(1)  # (B,)
