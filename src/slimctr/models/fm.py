"""FM: factorisation machine (Rendle, ICDM 2010) with one embedding per field.

    logit = w_0 + sum_f w_f(x_f) + sum_{i<j} <e_i, e_j>

with e_f the field embeddings of ``FieldEmbedding`` (one width for all fields); the pairwise sum is
computed in O(F d) by ``fm_second_order``. Per-field widths need ``embedding_align_dim=K``, which
projects every field to width K first (``slimctr.nn.align``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import check_embedding_dim, check_init_std, check_optional_int
from slimctr.models.registry import register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm, fm_second_order
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class FMConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    def __post_init__(self) -> None:
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register(
    "fm", FMConfig, "factorization machine (Rendle 2010): linear terms plus pairwise <e_i, e_j>"
)
class FM(nn.Module):
    def __init__(self, schema: Schema, config: FMConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = LinearTerm(schema, init_std=config.embedding_init_std)
        self.embedding = FieldEmbedding(
            schema,
            config.embedding_dim,
            init_std=config.embedding_init_std,
            align_dim=config.embedding_align_dim,
        )

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch) + fm_second_order(self.embedding(batch))  # (B,)
