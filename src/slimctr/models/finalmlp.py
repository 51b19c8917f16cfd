"""FinalMLP (Mao et al., AAAI 2023, arXiv 2304.00902): two gated MLP streams, bilinearly fused.

Both streams read the concatenated field embeddings e = [e_1 || ... || e_F] in R^D. With
``feature_gating``, stream k first re-weights e with its own gate (Sec. 3.2, Eq. 5-6),

    h_k = 2 sigmoid(MLP_gk(c_k)) ⊙ e

where c_k is the concatenated embeddings of stream k's context fields (``gate1_context``,
``gate2_context``; BARS's Frappe run conditions stream 1 on the user and stream 2 on the item),
or, with no context fields, a learned vector (the paper's choice when none are given: the gate is
then the same for every sample). MLP_gk has ``gate_hidden_dims`` ReLU layers (none: one linear
map W_k c_k + b_k). The context embeddings are the model's own e_f, so the gates train them too;
FuxiCTR gives each gate separate tables for its context fields instead (on Frappe, 50,400 more
parameters for user and item). Then o_k = MLP_k(h_k). The streams are
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

import itertools
from dataclasses import dataclass
from typing import ClassVar

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
from slimctr.tuning.space import MLPS, Choice, Param, generic_space_of

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
    gate1_context: tuple[str, ...] = ()  # fields conditioning stream 1's gate; (): learned vector
    gate2_context: tuple[str, ...] = ()  # likewise for stream 2
    gate_hidden_dims: tuple[int, ...] = ()  # ReLU layers inside each gate; (): one linear map
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    # slimctr tune: the width, dropout and both streams' MLPs
    search_space: ClassVar[tuple[Param, ...]] = (
        *generic_space_of("embedding_dim", "dropout"),
        Choice("stream1_dims", MLPS),
        Choice("stream2_dims", ((100,), *MLPS)),
    )

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
        for key in ("gate1_context", "gate2_context"):
            fields = getattr(self, key)
            if not isinstance(fields, tuple | list) or not all(isinstance(f, str) for f in fields):
                raise SlimctrError(f"model.{key} must be a list of field names, got {fields!r}")
            if len(set(fields)) < len(fields):
                raise SlimctrError(f"model.{key} names a field twice: {list(fields)}")
            if fields and not self.feature_gating:
                raise SlimctrError(f"model.{key} conditions a gate: set model.feature_gating=true")
        check_hidden_dims("gate_hidden_dims", self.gate_hidden_dims, allow_empty=True)
        if self.gate_hidden_dims and not self.feature_gating:
            raise SlimctrError(
                "model.gate_hidden_dims shapes the gates: set model.feature_gating=true"
            )
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


class FeatureGate(nn.Module):
    """h = 2 sigmoid(MLP(c)) ⊙ e (FinalMLP Eq. 5-6): (B, D) -> (B, D).

    ``columns`` picks c out of e (the context fields' embeddings); empty, c is a learned vector.
    The MLP's last layer is ``linear`` (xavier weights, zero bias), after ``hidden_dims`` ReLU
    layers, if any.
    """

    def __init__(self, width: int, columns: Tensor, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.columns: Tensor
        self.register_buffer("columns", columns, persistent=False)
        self.context = None if len(columns) else nn.Parameter(0.01 * torch.randn(CONTEXT_DIM))
        context_dim = len(columns) or CONTEXT_DIM
        self.hidden = MLP(context_dim, hidden_dims) if hidden_dims else None
        self.linear = nn.Linear(hidden_dims[-1] if hidden_dims else context_dim, width)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        context = x[:, self.columns] if self.context is None else self.context  # (B, c) or (c,)
        if self.hidden is not None:
            context = self.hidden(context)
        return 2 * torch.sigmoid(self.linear(context)) * x  # (B, D)


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
            for key in ("gate1_context", "gate2_context"):
                columns = _columns(self.embedding, key, getattr(config, key))
                self.gates.append(FeatureGate(width, columns, config.gate_hidden_dims))
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


def _columns(embedding: FieldEmbedding, key: str, fields: tuple[str, ...]) -> Tensor:
    """Where ``fields``' embeddings sit in ``embedding.flat``'s output, in the given order."""
    names = embedding.field_names
    unknown = [f for f in fields if f not in names]
    if unknown:
        raise SlimctrError(
            f"model.{key} names {', '.join(unknown)}, not a field of the data "
            f"(fields: {', '.join(names)})"
        )
    if not fields:
        return torch.zeros(0, dtype=torch.long)
    starts = dict(zip(names, itertools.accumulate(embedding.field_dims, initial=0), strict=False))
    widths = dict(zip(names, embedding.field_dims, strict=True))
    return torch.cat([torch.arange(starts[f], starts[f] + widths[f]) for f in fields])
