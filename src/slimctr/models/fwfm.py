"""FwFM: field-weighted factorization machine (Pan et al., WWW 2018, arXiv 1806.03514).

The FwFM model equation (Sec. 4) gives every pair of fields its own learned interaction
strength r_{F(i),F(j)}:

    logit = w_0 + sum_f w_f(x_f) + sum_{i<j} <e_i, e_j> r_{F(i),F(j)}

Each slimctr field holds one feature per sample, so F(i) = i and there are F (F - 1) / 2
scalars r (a weight r_{F,F} for two features of one field, which multi-valued fields would need,
never arises). The pairwise sum is computed in a batch: E E^T, (B, F, F), holds every
<e_i, e_j>, and its strict upper triangle is weighted by r in one matrix product.

The r start at 1 (our choice), so an untrained FwFM equals the FM with the same embeddings.

The first-order term has the paper's three forms (Sec. 4.2), chosen by ``linear_type``:

    "lw"    w_0 + sum_i w_{x_i}               a learned scalar per id (the default)
    "felv"  w_0 + sum_i <e_i, v_{x_i}>        a learned vector per id: a second embedding table
    "filv"  w_0 + sum_i <e_i, v_{F(i)}>       a learned vector per field

BARS tunes FwFM with "felv". Defaults match ``fm``: width 16, embeddings N(0, 1e-4^2). All
fields need one width, or ``embedding_align_dim=K`` to project each to width K
(``slimctr.nn.align``); a "felv" table takes the common width K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import (
    check_choice,
    check_embedding_dim,
    check_init_std,
    check_optional_int,
)
from slimctr.models.registry import register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm
from slimctr.schema import Schema


def field_weighted_interactions(embeddings: Tensor, pair_weights: Tensor) -> Tensor:
    """sum_{i<j} <e_i, e_j> r_ij for (B, F, d) embeddings and r in upper-triangle order, (B,).

    ``pair_weights`` has F (F - 1) / 2 entries, pair (i, j) with i < j in row-major order of the
    strict upper triangle (``torch.triu_indices(F, F, offset=1)``).
    """
    num_fields = embeddings.shape[1]
    rows, cols = torch.triu_indices(num_fields, num_fields, offset=1, device=embeddings.device)
    inner = embeddings @ embeddings.transpose(1, 2)  # (B, F, F): <e_i, e_j>
    return inner[:, rows, cols] @ pair_weights  # (B,)


LINEAR_TYPES = ("lw", "felv", "filv")


@dataclass(frozen=True, kw_only=True)
class FwFMConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier
    linear_type: str = "lw"  # first-order term: "lw", "felv" or "filv" (module docstring)

    def __post_init__(self) -> None:
        check_choice("linear_type", self.linear_type, LINEAR_TYPES)
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("fwfm", FwFMConfig, "FwFM (Pan et al. 2018): FM with a learned weight per field pair")
class FwFM(nn.Module):
    def __init__(self, schema: Schema, config: FwFMConfig) -> None:
        super().__init__()
        self.config = config
        std = config.embedding_init_std
        # The first-order term: exactly one of the three below is set, by linear_type.
        self.linear = LinearTerm(schema, init_std=std) if config.linear_type == "lw" else None
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=std, align_dim=config.embedding_align_dim
        )
        num_fields = self.embedding.num_fields
        width = self.embedding.output_dim // num_fields  # d, after any alignment
        self.pair_weights = nn.Parameter(torch.ones(num_fields * (num_fields - 1) // 2))  # r
        self.linear_vectors: FieldEmbedding | None = None  # felv: v per id, (B, F, d) looked up
        self.field_vectors: nn.Parameter | None = None  # filv: v per field, (F, d)
        if config.linear_type == "felv":
            self.linear_vectors = FieldEmbedding(schema, width, init_std=std)
        elif config.linear_type == "filv":
            self.field_vectors = nn.Parameter(torch.empty(num_fields, width))
            if std is None:
                nn.init.xavier_uniform_(self.field_vectors)
            else:
                nn.init.normal_(self.field_vectors, std=std)
        self.linear_bias = nn.Parameter(torch.zeros(1)) if self.linear is None else None  # w_0

    def forward(self, batch: Batch) -> Tensor:
        embeddings = self.embedding(batch)  # (B, F, d)
        pairs = field_weighted_interactions(embeddings, self.pair_weights)  # (B,)
        return self.first_order(batch, embeddings) + pairs  # (B,)

    def first_order(self, batch: Batch, embeddings: Tensor) -> Tensor:
        """The linear term of ``linear_type`` for (B, F, d) ``embeddings`` of ``batch``, (B,)."""
        if self.linear is not None:
            return self.linear(batch)
        if self.linear_vectors is not None:
            vectors = self.linear_vectors(batch)  # (B, F, d): v_{x_i}
        else:
            vectors = self.field_vectors  # (F, d): v_{F(i)}, broadcast over the batch
        return (embeddings * vectors).sum(dim=(1, 2)) + self.linear_bias  # (B,)

    def pair_weight_matrix(self) -> Tensor:
        """r as a symmetric (F, F) matrix with a zero diagonal, detached, rows in field order."""
        num_fields = self.embedding.num_fields
        rows, cols = torch.triu_indices(
            num_fields, num_fields, offset=1, device=self.pair_weights.device
        )
        matrix = self.pair_weights.new_zeros(num_fields, num_fields)
        matrix[rows, cols] = self.pair_weights.detach()
        return matrix + matrix.T
