"""xDeepFM (Lian et al., KDD 2018, arXiv 1803.05170): linear term, CIN and an MLP, summed.

The combined model (Eq. 9) is

    logit = w_linear^T a + w_dnn^T x_dnn + w_cin^T p+ + b

with a the raw features (``LinearTerm``, whose w_0 is b), x_dnn the last hidden layer of an MLP
on the concatenated field embeddings, and p+ the sum-pooled feature maps of the Compressed
Interaction Network on the stacked embeddings X^0 (``slimctr.nn.cin``, Eq. 6-7). The MLP's own
output unit carries a second, redundant bias, as in ``deepfm``. CIN and MLP share the embeddings,
so all fields need one width, or ``embedding_align_dim=K`` to project each to width K
(``slimctr.nn.align``).

Defaults: ``cin_layer_sizes=(16, 16, 16)`` is a small, BARS-like CIN chosen to keep the model
cheap; the paper tunes depth and feature maps per data set, so set it per run. The MLP is the
deep part of ``dcnv2`` and ``deepfm`` (400-400-400 with BatchNorm, dropout 0, embeddings
N(0, 1e-4^2)) so that the models compare on one footing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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
from slimctr.nn.cin import CIN
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema
from slimctr.tuning.space import Choice, Param, generic_space_of


@dataclass(frozen=True, kw_only=True)
class XDeepFMConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    cin_layer_sizes: tuple[int, ...] = (16, 16, 16)  # H_1, ..., H_T feature maps per CIN layer
    hidden_dims: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    # slimctr tune: the generic keys and the CIN's layers
    search_space: ClassVar[tuple[Param, ...]] = (
        *generic_space_of("embedding_dim", "hidden_dims", "dropout"),
        Choice("cin_layer_sizes", ((16, 16, 16), (64,), (64, 64), (128, 128))),
    )

    def __post_init__(self) -> None:
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_hidden_dims("cin_layer_sizes", self.cin_layer_sizes, allow_empty=False)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=False)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("xdeepfm", XDeepFMConfig, "xDeepFM (Lian et al. 2018): linear term, CIN and an MLP")
class XDeepFM(nn.Module):
    def __init__(self, schema: Schema, config: XDeepFMConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = LinearTerm(schema, init_std=config.embedding_init_std)
        self.embedding = FieldEmbedding(
            schema,
            config.embedding_dim,
            init_std=config.embedding_init_std,
            align_dim=config.embedding_align_dim,
        )
        self.cin = CIN(self.embedding.num_fields, config.cin_layer_sizes)
        self.cin_output = nn.Linear(self.cin.output_dim, 1, bias=False)  # w_cin
        self.mlp = MLP(
            self.embedding.output_dim,
            config.hidden_dims,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            output_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        embeddings = self.embedding(batch)  # (B, F, d)
        cin = self.cin_output(self.cin(embeddings)).squeeze(1)  # (B,)
        deep = self.mlp(embeddings.flatten(1)).squeeze(1)  # (B,)
        return self.linear(batch) + cin + deep  # (B,)
