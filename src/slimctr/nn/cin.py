"""Compressed Interaction Network (CIN) of xDeepFM (Lian et al., KDD 2018, arXiv 1803.05170).

X^0 in R^{m x D} stacks the m field embeddings (one width D). Layer k has H_k feature maps,

    X^k_{h,*} = sum_{i=1}^{H_{k-1}} sum_{j=1}^{m} W^{k,h}_{ij} (X^{k-1}_{i,*} ∘ X^0_{j,*})   (Eq. 6)

with H_0 = m: every row of the previous layer meets every field embedding in a Hadamard product,
and each output map is a weighted sum of those H_{k-1} m vectors, so layer k holds vector-wise
interactions of order k + 1. Each layer is sum-pooled over the embedding dimension,

    p^k_h = sum_{d=1}^{D} X^k_{h,d}                                                    (Eq. 7)

and the pooled vectors of all T layers are concatenated, p+ = [p^1 || ... || p^T] (Eq. 8's input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError


class CINLayer(nn.Module):
    """One CIN layer, Eq. 6: (X^{k-1}, X^0) -> X^k, from (B, H_{k-1}, D), (B, m, D) to (B, H_k, D).

    The Hadamard products of all (i, j) pairs form an outer product over fields,
    (B, D, H_{k-1}, m); a bias-free ``nn.Linear`` over its flattened last two axes is the paper's
    1x1 convolution, and ``weight.weight[h].view(H_{k-1}, m)[i, j]`` is W^{k,h}_{ij}
    (H_k H_{k-1} m parameters). No bias and no activation, as in Eq. 6. Weights use PyTorch's
    Linear default, U(+-1/sqrt(H_{k-1} m)).
    """

    def __init__(self, input_maps: int, num_fields: int, output_maps: int) -> None:
        super().__init__()
        if min(input_maps, num_fields, output_maps) < 1:
            raise SlimctrError(
                "CIN layer sizes must be >= 1, got "
                f"input_maps={input_maps}, num_fields={num_fields}, output_maps={output_maps}"
            )
        self.weight = nn.Linear(input_maps * num_fields, output_maps, bias=False)

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        products = torch.einsum("bid,bjd->bdij", x, x0)  # (B, D, H_{k-1}, m)
        return self.weight(products.flatten(2)).transpose(1, 2)  # (B, H_k, D)


class CIN(nn.Module):
    """``len(layer_sizes)`` CIN layers on stacked field embeddings, sum-pooled and concatenated.

    Input X^0 is (B, m, D); the output p+ is (B, sum_k H_k). Every layer's pooled maps reach the
    output, as in the paper's equations (some implementations instead pool only half of each
    layer's maps and feed the other half on, a "split half" that the paper does not describe).
    """

    def __init__(self, num_fields: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        if not layer_sizes or num_fields < 1 or min(layer_sizes) < 1:
            raise SlimctrError(
                "CIN needs num_fields >= 1 and at least one layer size, all >= 1, got "
                f"num_fields={num_fields}, layer_sizes={list(layer_sizes)}"
            )
        inputs = [num_fields, *layer_sizes[:-1]]
        self.layers = nn.ModuleList(
            CINLayer(h_in, num_fields, h_out)
            for h_in, h_out in zip(inputs, layer_sizes, strict=True)
        )
        self._output_dim = sum(layer_sizes)

    @property
    def output_dim(self) -> int:
        """sum_k H_k, the width of p+."""
        return self._output_dim

    def forward(self, x0: Tensor) -> Tensor:
        x, pooled = x0, []
        for layer in self.layers:
            x = layer(x, x0)  # (B, H_k, D)
            pooled.append(x.sum(dim=2))  # p^k: (B, H_k)
        return torch.cat(pooled, dim=1)  # p+: (B, sum_k H_k)
