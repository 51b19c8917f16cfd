"""FinalMLP (Mao et al., AAAI 2023, arXiv 2304.00902): two gated MLP streams, bilinearly fused.

Both streams read the concatenated field embeddings e = [e_1 || ... || e_F] in R^D. With
``feature_gating``, stream k first re-weights e with its own gate (Sec. 3.2, Eq. 5-6),

    h_k = 2 sigmoid(W_k c_k + b_k) ⊙ e,        c_k in R^d a learned context vector

the paper's choice when no conditioning features are given (the gate input is then a learned
embedding, so the gate is the same for every sample). Then o_k = MLP_k(h_k). The streams are
fused by multi-head bilinear fusion (Sec. 3.3, Eq. 7-8): o_1 and o_2 are cut into H heads
o_1^j, o_2^j and

    logit = sum_j BF(o_1^j, o_2^j),   BF(x, y) = b_j + w_1j^T x + w_2j^T y + x^T W_3j y

Summed over heads the linear parts are w_1^T o_1 + w_2^T o_2 + b with w_1 = [w_11 || ... ||
w_1H] (one ``nn.Linear`` each); the H bilinear terms are one batched product with W_3 of shape
(H, d_1 / H, d_2 / H), so the last widths of both streams must be divisible by H.

Initialisation (ours; the paper does not say): c_k ~ N(0, 0.01^2) and b_k = 0, so the gates start
near 1 and the untrained streams see e itself; W_3 starts at 0, so the untrained fusion is linear
in o_1 and o_2 (xavier W_3 gives logits of order 10 on 400-wide streams). Streams follow the deep
part of ``dcnv2`` (400-400-400 with BatchNorm, dropout 0, embeddings N(0, 1e-4^2)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.models.checks import (
    check_bool,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
    check_int,
)
from slimctr.models.registry import register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema

CONTEXT_DIM = 16  # width of each gate's learned context vector c_k


def bilinear_fusion(o1: Tensor, o2: Tensor, weight: Tensor) -> Tensor:
    """sum_j (o_1^j)^T W_3j o_2^j, (B,), for o_k (B, d_k) and W_3 of shape (H, d_1/H, d_2/H)."""
    heads, width1, width2 = weight.shape
    x = o1.view(-1, heads, width1)  # (B, H, d_1/H)
    y = o2.view(-1, heads, width2)  # (B, H, d_2/H)
    return torch.einsum("bhi,hij,bhj->b", x, weight, y)


@dataclass(frozen=True, kw_only=True)
class FinalMLPConfig:
    embedding_dim: int | dict[str, int] = 16  # one width, or a width per field name
    stream1_dims: tuple[int, ...] = (400, 400, 400)
    stream2_dims: tuple[int, ...] = (400, 400, 400)
    num_heads: int = 1  # H heads of the bilinear fusion
    feature_gating: bool = True
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    def __post_init__(self) -> None:
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=True)
        check_hidden_dims("stream1_dims", self.stream1_dims, allow_empty=False)
        check_hidden_dims("stream2_dims", self.stream2_dims, allow_empty=False)
        check_int("num_heads", self.num_heads, minimum=1)
        if self.stream1_dims[-1] % self.num_heads or self.stream2_dims[-1] % self.num_heads:
            raise SlimctrError(
                f"model.num_heads must divide the last widths of both streams, got "
                f"{self.num_heads} for {self.stream1_dims[-1]} and {self.stream2_dims[-1]}"
            )
        check_bool("feature_gating", self.feature_gating)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


class FeatureGate(nn.Module):
    """h = 2 sigmoid(W c + b) ⊙ e with a learned context c (FinalMLP Eq. 5-6): (B, D) -> (B, D)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.context = nn.Parameter(0.01 * torch.randn(CONTEXT_DIM))  # c
        self.linear = nn.Linear(CONTEXT_DIM, width)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return 2 * torch.sigmoid(self.linear(self.context)) * x  # (B, D)


@register("finalmlp", FinalMLPConfig, "FinalMLP (Mao et al. 2023): two gated MLPs, bilinear fusion")
class FinalMLP(nn.Module):
    def __init__(self, schema: Schema, config: FinalMLPConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        width = self.embedding.output_dim  # D
        self.gates = nn.ModuleList()
        if config.feature_gating:
            self.gates.extend([FeatureGate(width), FeatureGate(width)])
        self.streams = nn.ModuleList(
            MLP(width, dims, config.dropout, config.batch_norm)
            for dims in (config.stream1_dims, config.stream2_dims)
        )
        heads, width1, width2 = config.num_heads, config.stream1_dims[-1], config.stream2_dims[-1]
        self.linear1 = nn.Linear(width1, 1)  # w_1, and b summed over heads
        self.linear2 = nn.Linear(width2, 1, bias=False)  # w_2
        self.bilinear = nn.Parameter(torch.zeros(heads, width1 // heads, width2 // heads))  # W_3

    def forward(self, batch: Batch) -> Tensor:
        e = self.embedding.flat(batch)  # (B, D)
        inputs = [gate(e) for gate in self.gates] if self.config.feature_gating else [e, e]
        o1, o2 = (stream(h) for stream, h in zip(self.streams, inputs, strict=True))  # (B, d_k)
        linear = (self.linear1(o1) + self.linear2(o2)).squeeze(1)  # (B,)
        return linear + bilinear_fusion(o1, o2, self.bilinear)  # (B,)
