"""Wide & Deep (Cheng et al., DLRS 2016, arXiv 1606.07792): a linear model beside an MLP.

The joint model (Eq. 3) sums the logits of the two parts, trained together:

    logit = w_wide^T [x, phi(x)] + w_deep^T a^{(l_f)} + b

Wide part: the first-order term w_0 + sum_f w_f(x_f) over all fields (``LinearTerm``). The
paper's cross-product transformations phi(x) (Eq. 1) are hand-chosen feature conjunctions; they
are not generated here: add a crossed column to the data as a field of its own to get one.
Deep part: the layers a^{(l+1)} = ReLU(W^{(l)} a^{(l)} + b^{(l)}) (Eq. 2) on the concatenated
field embeddings (per-field widths allowed), ending in one output unit.

Defaults match the deep part of ``dcnv2`` and ``deepfm`` (width 16, 400-400-400 with BatchNorm,
dropout 0, embeddings and wide weights N(0, 1e-4^2)) so that the models compare on one footing;
the paper's app-store model used 32-wide embeddings and 1024-512-256 ReLU layers.
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
from slimctr.nn.fm import LinearTerm
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class WideDeepConfig:
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


@register("wide_deep", WideDeepConfig, "Wide & Deep (Cheng et al. 2016): linear term plus an MLP")
class WideDeep(nn.Module):
    def __init__(self, schema: Schema, config: WideDeepConfig) -> None:
        super().__init__()
        self.config = config
        self.wide = LinearTerm(schema, init_std=config.embedding_init_std)
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        self.deep = MLP(
            self.embedding.output_dim,
            config.hidden_dims,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            output_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        deep = self.deep(self.embedding.flat(batch)).squeeze(1)  # (B,)
        return self.wide(batch) + deep  # (B,)
