"""Cross networks: explicit feature crossing of DCN (V1) and DCN-V2.

Every layer l maps (x0, x_l) to x_{l+1}, where x0 in R^D is the concatenated field embedding and
stays the same for all layers; L layers model interactions of order 1 up to L + 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError


class CrossLayerV1(nn.Module):
    """DCN cross layer (Wang et al., ADKDD 2017): x_{l+1} = x0 * (x_l^T w) + b + x_l.

    w in R^D, b in R^D; D + D parameters. The scalar x_l^T w rescales x0; the bias is added after
    the product. w ~ U(+-1/sqrt(D)) (PyTorch's Linear default), b = 0.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        scale = (x @ self.weight).unsqueeze(1)  # (B, 1)
        return x0 * scale + self.bias + x  # (B, D)


class CrossLayerV2(nn.Module):
    """DCN-V2 cross layer (Wang et al., WWW 2021): x_{l+1} = x0 ⊙ (W x_l + b) + x_l.

    Full rank: W in R^{D x D}, D^2 + D parameters. With ``low_rank`` r, the paper's low-rank
    variant W = U V^T (U, V in R^{D x r}), 2 D r + D parameters. The bias sits inside the
    bracket, before the product with x0. Weights use PyTorch's Linear default,
    U(+-1/sqrt(fan_in)); the bias starts at zero, as in the DCN-V2 of the GDCN reference code
    (the GDCN gated layer instead draws it from U(0, 1); GDCN spec 2.6).
    """

    def __init__(self, dim: int, low_rank: int | None = None) -> None:
        super().__init__()
        if low_rank is None:
            self.project: nn.Module = nn.Linear(dim, dim)
            bias = self.project.bias
        else:
            if low_rank < 1:
                raise SlimctrError(f"low_rank must be >= 1 or None, got {low_rank}")
            up = nn.Linear(low_rank, dim)
            self.project = nn.Sequential(nn.Linear(dim, low_rank, bias=False), up)  # U (V^T x) + b
            bias = up.bias
        nn.init.zeros_(bias)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        return x0 * self.project(x) + x  # (B, D)


class CrossNetwork(nn.Module):
    """``num_layers`` cross layers applied in sequence, every one with the same x0.

    ``kind`` "v1" stacks ``CrossLayerV1`` (DCN), "v2" stacks ``CrossLayerV2`` (DCN-V2, full rank
    or, with ``low_rank``, low rank). Input and output are (B, D).
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int,
        kind: Literal["v1", "v2"] = "v2",
        low_rank: int | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise SlimctrError(f"num_layers must be >= 1, got {num_layers}")
        if kind == "v1" and low_rank is not None:
            raise SlimctrError("low_rank applies to DCN-V2 cross layers only (kind='v2')")
        layers: list[nn.Module]
        if kind == "v1":
            layers = [CrossLayerV1(input_dim) for _ in range(num_layers)]
        elif kind == "v2":
            layers = [CrossLayerV2(input_dim, low_rank) for _ in range(num_layers)]
        else:
            raise SlimctrError(f"cross network kind must be 'v1' or 'v2', got {kind!r}")
        self.layers = nn.ModuleList(layers)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x  # (B, D)
