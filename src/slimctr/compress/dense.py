"""int8 dense layers: a model's ``nn.Linear`` weights stored as int8, one scale per output row.

On Frappe the dense layers hold most of a model's bytes (GDCN-P: 88% of its parameters are
linear weights), so compressing only the tables leaves most of a bundle as it was. ``Int8Linear``
keeps a weight matrix W (out x in) as q = round(W / s) clipped to [-127, 127], with
s_o = max_i |W_oi| / 127 per output row (symmetric: no zero point), and its bias in float32;
each call dequantises the whole matrix, q s, and runs the float layer on it, so the stored and
in-memory weights are int8 and nothing is simulated. ``weight`` is that dequantised matrix, so
the layers that read a linear module's weight rather than call it (the cross layers, and the
explanations of their matrices) work unchanged. Layers inside a field embedding (the alignment
maps) keep float32.

torch's own dynamic quantisation (``torch.ao.quantization.quantize_dynamic``) is deprecated in
torch 2.13 and its modules neither save to safetensors nor export to ONNX; this is the small part
of it that a bundle needs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from slimctr.nn.embedding import FieldEmbedding

LEVELS = 127  # symmetric int8: -127 .. 127


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with a float32 scale per output row."""

    codes: Tensor  # (out, in) int8
    scale: Tensor  # (out,) float32
    bias: Tensor | None  # (out,) float32

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("codes", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @torch.no_grad()
    def fill(self, linear: nn.Linear) -> Int8Linear:
        """Quantise ``linear``'s weight into this layer and copy its bias."""
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / LEVELS
        self.codes.copy_(torch.round(weight / scale.unsqueeze(1)).clamp(-LEVELS, LEVELS))
        self.scale.copy_(scale)
        if self.bias is not None:
            self.bias.copy_(linear.bias.detach())
        return self

    @property
    def weight(self) -> Tensor:
        """The float32 weight the layer computes with, q s."""
        return self.codes.float() * self.scale.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return functional.linear(x, self.weight.to(x.dtype), bias)

    @property
    def params(self) -> int:
        """The entries it stands for: the weight's and the bias's."""
        return self.codes.numel() + (0 if self.bias is None else self.bias.numel())

    @property
    def stored_bytes(self) -> int:
        """A byte per weight, four per scale and bias entry."""
        biases = 0 if self.bias is None else self.bias.numel()
        return self.codes.numel() + 4 * (self.scale.numel() + biases)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_dense(model: nn.Module, *, fill: bool = True) -> int:
    """Replace every ``nn.Linear`` of ``model`` outside its field embeddings with an
    ``Int8Linear``, quantised from it (``fill``) or empty, to load a saved state into; returns
    how many it replaced."""
    inside = {id(m) for e in model.modules() if isinstance(e, FieldEmbedding) for m in e.modules()}
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) and id(child) not in inside
    ]
    for parent, name, child in targets:
        layer = Int8Linear(child.in_features, child.out_features, child.bias is not None)
        setattr(parent, name, layer.fill(child) if fill else layer)
    return len(targets)
