"""FiBiNET (Huang, Zhang, Zhang, RecSys 2019, arXiv 1905.09433): SENET and bilinear interactions.

The F field embeddings E = (e_1, ..., e_F), (B, F, d), are re-weighted by a SENET layer
(Sec. 3.3, Eq. 3-5):

    z_f = (1 / d) sum_t e_f^(t)                       squeeze: mean over the embedding
    A = s(W_2 ReLU(W_1 z)),  W_1 in R^{F/r x F}, W_2 in R^{F x F/r}   excitation (no biases)
    v_f = a_f e_f                                     re-weight

The bilinear interaction layer of type "field all" (Sec. 3.4, Eq. 6) uses one shared W in R^{d x d}
for every pair i < j:  p_ij = (e_i W) ⊙ e_j on E, and q_ij = (v_i W) ⊙ v_j on V (the same W, as in
the paper's "field all"). All pairs come from one (B, F, d) x (d, d) product. The combination
layer (Eq. 8) concatenates c = [p_12 || ... || p_{F-1,F} || q_12 || ... || q_{F-1,F}], of width
F (F - 1) d, and the model (Eq. 9-10) is

    logit = w_0 + sum_f w_f(x_f) + MLP(c)

The outer activation s is ``excitation_activation``: "sigmoid" (default; the gate of Hu et al.'s
SENet, CVPR 2018) or "relu" (the choice of many FiBiNET implementations). With ReLU, A is
positively homogeneous in E, so with N(0, 1e-4^2) embeddings A starts near 1e-5 and q near 1e-18:
the SENET half of c is dead at init and its weights' gradients underflow in float32. A sigmoid
gate starts near 1/2 and does not depend on the embeddings' scale.

Defaults: reduction ratio r = 3 (the paper's), F/r rounded down to at least 1; the MLP is the deep
part of ``dcnv2`` (400-400-400 with BatchNorm, dropout 0, embeddings N(0, 1e-4^2)); W is
xavier-uniform, W_1, W_2 PyTorch's Linear default. All fields need one width, or
``embedding_align_dim=K`` to project each to width K (``slimctr.nn.align``).
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
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


class SENET(nn.Module):
    """Squeeze-excitation over fields, Eq. 3-5: (B, F, d) -> (B, F, d); ``weights`` gives A."""

    def __init__(self, num_fields: int, reduction_ratio: int, activation: str = "sigmoid") -> None:
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            nn.Sigmoid() if activation == "sigmoid" else nn.ReLU(),
        )

    def weights(self, embeddings: Tensor) -> Tensor:
        return self.excitation(embeddings.mean(dim=2))  # A: (B, F)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.weights(embeddings).unsqueeze(2) * embeddings  # V: (B, F, d)


def bilinear_field_all(embeddings: Tensor, weight: Tensor) -> Tensor:
    """p_ij = (e_i W) ⊙ e_j for all i < j, (B, F (F - 1) / 2, d), pairs in upper-triangle order."""
    num_fields = embeddings.shape[1]
    rows, cols = torch.triu_indices(num_fields, num_fields, offset=1, device=embeddings.device)
    projected = embeddings @ weight  # (B, F, d): e_i W
    return projected[:, rows] * embeddings[:, cols]


@dataclass(frozen=True, kw_only=True)
class FiBiNETConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    reduction_ratio: int = 3  # r of the SENET excitation
    excitation_activation: Literal["sigmoid", "relu"] = "sigmoid"  # s, the gate of A
    hidden_dims: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    def __post_init__(self) -> None:
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_int("reduction_ratio", self.reduction_ratio, minimum=1)
        check_choice("excitation_activation", self.excitation_activation, ("sigmoid", "relu"))
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=False)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("fibinet", FiBiNETConfig, "FiBiNET (Huang et al. 2019): SENET and bilinear pairs, MLP")
class FiBiNET(nn.Module):
    def __init__(self, schema: Schema, config: FiBiNETConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = LinearTerm(schema, init_std=config.embedding_init_std)
        self.embedding = FieldEmbedding(
            schema,
            config.embedding_dim,
            init_std=config.embedding_init_std,
            align_dim=config.embedding_align_dim,
        )
        num_fields = self.embedding.num_fields
        width = self.embedding.output_dim // num_fields  # d
        self.senet = SENET(num_fields, config.reduction_ratio, config.excitation_activation)
        self.bilinear = nn.Parameter(nn.init.xavier_uniform_(torch.empty(width, width)))  # W
        self.mlp = MLP(
            num_fields * (num_fields - 1) * width,
            config.hidden_dims,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            output_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        embeddings = self.embedding(batch)  # E: (B, F, d)
        p = bilinear_field_all(embeddings, self.bilinear)  # (B, F(F-1)/2, d)
        q = bilinear_field_all(self.senet(embeddings), self.bilinear)  # (B, F(F-1)/2, d)
        combined = torch.cat([p.flatten(1), q.flatten(1)], dim=1)  # (B, F (F - 1) d)
        return self.linear(batch) + self.mlp(combined).squeeze(1)  # (B,)
