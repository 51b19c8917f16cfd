"""Multi-head self-attention over fields: the interacting layer of AutoInt (Song et al., CIKM 2019,
arXiv 1810.11921).

The input stacks the F field embeddings, (B, F, d). For head h, field m attends to every field k:

    alpha^(h)_{m,k} = softmax_k(<W_Q^(h) e_m, W_K^(h) e_k>)                             (Eq. 5)
    e~^(h)_m = sum_k alpha^(h)_{m,k} W_V^(h) e_k                                          (Eq. 6)
    e~_m = e~^(1)_m || ... || e~^(H)_m                                                    (Eq. 7)
    e^Res_m = ReLU(e~_m + W_Res e_m)                                                      (Eq. 8)

with W_Q^(h), W_K^(h), W_V^(h) in R^{d' x d} and W_Res in R^{d'H x d}. By default the score is
the plain inner product of Eq. 5. All heads are computed at once with batched matrix products
over (B, H, F, F) score tensors.

Four switches, all off by default, give the layer FuxiCTR's form, which BARS's tuned AutoInt+
runs use: ``scale_scores`` divides the scores by sqrt(d'); ``dropout`` drops attention weights
(after the softmax) and the concatenated heads (before the residual); ``identity_residual``
adds e_m itself instead of W_Res e_m when d = d'H; ``layer_norm`` normalises the sum before
the ReLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError


class InteractingLayer(nn.Module):
    """One AutoInt interacting layer, Eq. 5-8: (B, F, input_dim) -> (B, F, num_heads * head_dim).

    The H heads' W_Q^(h) are the row blocks of one bias-free ``nn.Linear`` (likewise W_K, W_V):
    rows h d' .. (h + 1) d' belong to head h. ``use_residual=False`` drops W_Res e_m from Eq. 8
    (the ReLU stays). Weights are xavier-uniform, like ``MLP``.
    """

    def __init__(
        self,
        input_dim: int,
        head_dim: int,
        num_heads: int,
        use_residual: bool = True,
        *,
        scale_scores: bool = False,
        dropout: float = 0.0,
        identity_residual: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if min(input_dim, head_dim, num_heads) < 1:
            raise SlimctrError(
                "interacting layer sizes must be >= 1, got "
                f"input_dim={input_dim}, head_dim={head_dim}, num_heads={num_heads}"
            )
        self.head_dim, self.num_heads = head_dim, num_heads
        width = head_dim * num_heads
        self.query = nn.Linear(input_dim, width, bias=False)
        self.key = nn.Linear(input_dim, width, bias=False)
        self.value = nn.Linear(input_dim, width, bias=False)
        self.residual: nn.Module | None = None  # W_Res, the identity, or no residual at all
        if use_residual:
            identity = identity_residual and input_dim == width
            self.residual = nn.Identity() if identity else nn.Linear(input_dim, width, bias=False)
        self.score_scale = head_dim**-0.5 if scale_scores else 1.0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    @property
    def output_dim(self) -> int:
        """d' H, the width of each field's output vector."""
        return self.head_dim * self.num_heads

    def _heads(self, x: Tensor) -> Tensor:
        batch, fields, _ = x.shape
        return x.view(batch, fields, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, F, d')

    def forward(self, x: Tensor) -> Tensor:
        query, key, value = (self._heads(proj(x)) for proj in (self.query, self.key, self.value))
        scores = query @ key.transpose(2, 3) * self.score_scale  # (B, H, F, F): <W_Q e_m, W_K e_k>
        attended = self.dropout(torch.softmax(scores, dim=3)) @ value  # (B, H, F, d')
        out = self.dropout(attended.transpose(1, 2).flatten(2))  # (B, F, H d'): Eq. 7
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(self.norm(out))
