"""Cross networks: explicit feature crossing of DCN (V1), DCN-V2 and GDCN (gated).

Every layer l maps (x0, x_l) to x_{l+1}, where x0 in R^D is the concatenated field embedding and
stays the same for all layers; L layers model interactions of order 1 up to L + 1.

The D x D layers (DCN-V2 full rank, GDCN) compute in ``padded_width(D)``: matrix products run up
to 1.4x faster on this kind of CPU when the width is a multiple of 16
(benchmarks/gemm_alignment.py), and FDO's per-field widths rarely sum to one. The network pads x0
with zeros, the layers pad their weights with zeros at each call (the parameters stay D x D, and
so does the reported size), the padded entries stay zero through every layer, and the output is
cut back to D.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.functional import pad

from slimctr.errors import SlimctrError

ALIGNMENT = 16  # matrix kernels run fastest on widths that are a multiple of this
MIN_PADDED_WIDTH = 128  # below it, the extra columns cost more than alignment saves


def padded_width(dim: int) -> int:
    """The width a D x D cross network computes in: D, or from 128 on D rounded up to 16."""
    if dim < MIN_PADDED_WIDTH:
        return dim
    return -(-dim // ALIGNMENT) * ALIGNMENT


def _padded(weight: Tensor, width: int) -> Tensor:
    """``weight`` (D, D) or (D,) with zero rows and columns up to ``width``."""
    extra = width - weight.shape[0]
    if extra == 0:
        return weight
    return pad(weight, (0, extra, 0, extra) if weight.dim() == 2 else (0, extra))


def _tensor(layer: nn.Module, name: str) -> Tensor:
    """A linear layer's ``weight`` or ``bias``: an ``nn.Linear``'s parameter, or the
    dequantised weight of an int8 one (``slimctr.compress.dense``), which reads the same."""
    tensor = getattr(layer, name)
    assert isinstance(tensor, Tensor)
    return tensor


def _widened(x: Tensor, width: int) -> Tensor:
    """``x`` (B, D) with zero columns up to ``width`` (``x`` itself when D = width)."""
    return x if x.shape[-1] == width else pad(x, (0, width - x.shape[-1]))


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
        self.dim, self.low_rank = dim, low_rank
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
        """Inputs (B, D') with D' >= D, zero beyond D in x0 (``padded_width``); output (B, D')."""
        width = x.shape[-1]
        if self.low_rank is None and width != self.dim:
            weight, bias = _tensor(self.project, "weight"), _tensor(self.project, "bias")
            return x0 * nn.functional.linear(x, _padded(weight, width), _padded(bias, width)) + x
        return x0 * self.project(x) + x  # (B, D)

    @torch.no_grad()
    def matrix(self) -> Tensor:
        """W, (D, D): the weight itself (full rank, a detached view) or the product U V^T."""
        if self.low_rank is None:
            return _tensor(self.project, "weight").detach()
        down, up = self.project.children()  # V^T, then U and b
        return _tensor(up, "weight") @ _tensor(down, "weight")  # (D, r) @ (r, D)


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
        self._padded = kind == "v2" and low_rank is None  # only D x D layers gain from padding

    def forward(self, x0: Tensor) -> Tensor:
        dim = x0.shape[-1]
        x0 = _widened(x0, padded_width(dim) if self._padded else dim)
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x[:, :dim]  # (B, D)

    def cross_matrices(self) -> list[Tensor]:
        """W_l of each DCN-V2 layer, (D, D), without gradient (``CrossLayerV2.matrix``).

        DCN (V1) layers hold a vector w_l, not a matrix: asking them is an error.
        """
        layers = [layer for layer in self.layers if isinstance(layer, CrossLayerV2)]
        if len(layers) != len(self.layers):
            raise SlimctrError("DCN (V1) cross layers have weight vectors, not cross matrices")
        return [layer.matrix() for layer in layers]


class GatedCrossLayer(nn.Module):
    """GDCN gated cross layer (Wang, Gu, Li, Lu, Zhang, Gu, CIKM 2023, arXiv 2311.04635, Eq. 1):

        c_{l+1} = c0 ⊙ (W_c c_l + b) ⊙ sigmoid(W_g c_l) + c_l

    W_c (``cross.weight``, the "cross matrix") and W_g (``gate.weight``) are in R^{D x D} and
    b in R^D: 2 D^2 + D parameters. The information gate sigmoid(W_g c_l) is computed from the
    layer input c_l, not from c0, and has no bias; it weighs each of the D entries of the cross
    term.
    With every gate value 1 the layer is DCN-V2's full-rank ``CrossLayerV2``. Initialisation as
    in the GDCN reference code (spec 2.6): W_c, W_g U(+-1/sqrt(D)) (PyTorch's Linear default),
    b ~ U(0, 1) (``CrossLayerV2`` starts its bias at zero).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cross = nn.Linear(dim, dim, bias=False)  # W_c
        self.gate = nn.Linear(dim, dim, bias=False)  # W_g
        self.bias = nn.Parameter(torch.empty(dim).uniform_(0.0, 1.0))  # b

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        return self.forward_with_gate(x0, x)[0]  # (B, D)

    def forward_with_gate(self, x0: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layer output and the gate values sigmoid(W_g c_l), both (B, D).

        Inputs may be wider than D, with zeros beyond D in x0 (``padded_width``); the outputs
        then are as wide, and zero beyond D (the gates there are sigmoid(0) = 0.5).
        """
        term, gate = self.gated_term(x0, x)
        return term + x, gate

    def gated_term(self, x0: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """What the layer adds to c_l, c0 ⊙ (W_c c_l + b) ⊙ gate, and the gate, both (B, D)."""
        width = x.shape[-1]
        # One linear with the bias, as in CrossLayerV2's nn.Linear, so a gate of 1 matches it
        # bit for bit.
        cross, bias = _padded(self.cross.weight, width), _padded(self.bias, width)
        crossed = nn.functional.linear(x, cross, bias)  # (B, D)
        gate = torch.sigmoid(nn.functional.linear(x, _padded(self.gate.weight, width)))  # (B, D)
        return x0 * crossed * gate, gate


class GatedCrossNetwork(nn.Module):
    """``num_layers`` ``GatedCrossLayer`` applied in sequence, every one with the same c0.

    Input and output are (B, D); the output c_L holds interactions of order 1 up to L + 1.
    ``forward_with_gates`` also returns each layer's gate values, for explanations, at no cost
    to ``forward``. ``cross_matrices`` and ``gate_matrices`` return each layer's W_c and W_g,
    (D, D) with W[i, j] the weight of input entry j in output entry i: with per-field widths the
    block in the rows of field f and the columns of field g weighs the interaction of field f
    (through c0) with field g (through c_l).
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise SlimctrError(f"num_layers must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList(GatedCrossLayer(input_dim) for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:
        return self.forward_with_gates(x0)[0]  # (B, D)

    def forward_with_gates(self, x0: Tensor) -> tuple[Tensor, list[Tensor]]:
        """c_L, (B, D), and each layer's gate values sigmoid(W_g c_l), (B, D), in layer order."""
        output, gates, _ = self.forward_with_terms(x0)
        return output, gates

    def forward_with_terms(self, x0: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """c_L, and each layer's gates and gated cross term (``GatedCrossLayer.gated_term``),
        all (B, D), in layer order."""
        dim = x0.shape[-1]
        x0 = _widened(x0, padded_width(dim))
        x, gates, terms = x0, [], []
        for layer in self._gated_layers():
            term, gate = layer.gated_term(x0, x)
            x = term + x
            gates.append(gate[:, :dim])
            terms.append(term[:, :dim])
        return x[:, :dim], gates, terms

    def cross_matrices(self) -> list[Tensor]:
        """W_c of each layer, (D, D), detached views of the parameters (no copy, no gradient)."""
        return [layer.cross.weight.detach() for layer in self._gated_layers()]

    def gate_matrices(self) -> list[Tensor]:
        """W_g of each layer, (D, D), detached views of the parameters (no copy, no gradient)."""
        return [layer.gate.weight.detach() for layer in self._gated_layers()]

    def _gated_layers(self) -> list[GatedCrossLayer]:
        return [layer for layer in self.layers if isinstance(layer, GatedCrossLayer)]
