"""Dimension Alignment Layer (GDCN paper, Appendix A; GDCN spec 4.3): one width for every field.

After field-level dimension optimisation the fields have widths d_f, but models that stack the
field embeddings to (B, F, d) need one width. The layer projects each field to a common width K,

    a_f = e_f W_f         W_f in R^{d_f x K}

with sum_f d_f K parameters. The paper does not publish whether the projection has a bias (spec
4.3 marks it unverified); slimctr's choice is the bias-free linear map above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError


class DimensionAlignment(nn.Module):
    """Per-field linear maps d_f -> K, no bias: (B, sum_f d_f) concatenated fields -> (B, F, K).

    ``weight`` stacks the maps, [W_1; ...; W_F] in R^{D x K} (D = sum_f d_f): field f owns the
    d_f rows from s_f = d_1 + ... + d_{f-1} on, and ``projection(f)`` is a view of them.
    Each W_f is xavier-uniform, U(+-sqrt(6 / (d_f + K))), the rule of ``FieldEmbedding``'s
    tables and the usual one for a linear map: a_f starts on the scale of e_f whatever d_f is.

    The F products are one batched matmul: each e_f and W_f is zero-padded to the widest d_f
    (m), giving (B, F, m) x (F, m, K); the padding holds no parameters.
    """

    index: Tensor  # (F m,): the column of the input each padded slot reads; D (a zero) for padding

    def __init__(self, field_dims: Sequence[int], output_dim: int) -> None:
        super().__init__()
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
            raise SlimctrError(f"alignment width K must be an int >= 1, got {output_dim!r}")
        if not field_dims or min(field_dims) < 1:
            raise SlimctrError(f"alignment needs field widths >= 1, got {list(field_dims)}")
        self.field_dims = tuple(field_dims)
        self.output_dim = output_dim
        self._starts = [sum(self.field_dims[:i]) for i in range(len(self.field_dims))]
        self.weight = nn.Parameter(torch.empty(sum(self.field_dims), output_dim))
        widest, zero = max(self.field_dims), sum(self.field_dims)
        index = [
            start + j if j < width else zero
            for start, width in zip(self._starts, self.field_dims, strict=True)
            for j in range(widest)
        ]
        self.register_buffer("index", torch.tensor(index), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for field in range(len(self.field_dims)):
            bound = math.sqrt(6.0 / (self.field_dims[field] + self.output_dim))
            self.projection(field).uniform_(-bound, bound)

    def projection(self, field: int) -> Tensor:
        """W_f of field number ``field``, (d_f, K), as a view of ``weight``."""
        return self.weight.narrow(0, self._starts[field], self.field_dims[field])

    def forward(self, concatenated: Tensor) -> Tensor:
        """[e_1 || ... || e_F], (B, D) -> stacked [a_1, ..., a_F], (B, F, K)."""
        num_fields = len(self.field_dims)
        padded = nn.functional.pad(concatenated, (0, 1))  # (B, D + 1), the last column is 0
        inputs = padded.index_select(1, self.index).view(padded.shape[0], num_fields, -1)
        weight = nn.functional.pad(self.weight, (0, 0, 0, 1))  # (D + 1, K), the last row is 0
        maps = weight.index_select(0, self.index).view(num_fields, -1, self.output_dim)
        return torch.einsum("bfm,fmk->bfk", inputs, maps)  # (B, F, K)
