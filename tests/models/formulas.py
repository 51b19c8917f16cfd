"""Parameter-count formulas shared by the model tests, written independently of the models."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp_params(width_in: int, hidden: tuple[int, ...], output: bool = False) -> int:
    """Linear (weights + bias) and BatchNorm (gamma + beta) per hidden layer, then an optional
    Linear(., 1)."""
    total = 0
    for width_out in hidden:
        total += width_in * width_out + width_out + 2 * width_out
        width_in = width_out
    return total + (width_in + 1 if output else 0)
