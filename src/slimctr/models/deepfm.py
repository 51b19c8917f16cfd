"""DeepFM (Guo et al., IJCAI 2017, arXiv 1703.04247): an FM and an MLP sharing one embedding.

    logit = w_0 + sum_f w_f(x_f)           first order (the FM's linear part)
          + sum_{i<j} <e_i, e_j>           second order (FM, Rendle 2010)
          + MLP([e_1 || ... || e_F])       deep part, ending in one output unit

The FM term needs one width for all fields (or ``embedding_align_dim=K``, which projects each
field to width K, ``slimctr.nn.align``). Defaults match the deep part of ``dcnv2``
(400-400-400, BatchNorm, dropout 0, embeddings N(0, 1e-4^2)) so that the models compare on one
footing; the DeepFM paper reports 400-400-400 with dropout 0.5.
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
    check_optional_int,
)
from slimctr.models.registry import register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm, fm_second_order
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class DeepFMConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    hidden_dims: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    def __post_init__(self) -> None:
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=False)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("deepfm", DeepFMConfig, "DeepFM (Guo et al. 2017): FM and an MLP on shared embeddings")
class DeepFM(nn.Module):
    def __init__(self, schema: Schema, config: DeepFMConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = LinearTerm(schema, init_std=config.embedding_init_std)
        self.embedding = FieldEmbedding(
            schema,
            config.embedding_dim,
            init_std=config.embedding_init_std,
            align_dim=config.embedding_align_dim,
        )
        self.mlp = MLP(
            self.embedding.output_dim,
            config.hidden_dims,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            output_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        embeddings = self.embedding(batch)  # (B, F, d)
        deep = self.mlp(embeddings.flatten(1)).squeeze(1)  # (B,)
        return self.linear(batch) + fm_second_order(embeddings) + deep  # (B,)
