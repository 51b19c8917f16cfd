"""The gate and mask primitives of OptEmbed and OptFS (dimension-search spec 1.3, 2.2, 3.2).

OptEmbed (supernet stage) masks each embedding row e_i of field f(i) by m_i = H(|e_i|_1 - t_f), a
unit step whose gradient is the piecewise surrogate of ``binary_step``, with one learnable
threshold t_f per field and the regulariser alpha Σ_f exp(-t_f) that pushes thresholds up; and it
trains every width at once by giving each (sample, field) pair its own prefix width k ~ U{1..D}
in training (``sample_width_masks``), none in evaluation.

OptFS gives each feature value i a logit m_i (m_0 = 0.5 at the start); the soft gate
sigma(tau m_i) / sigma(m_0) is 1 at the start and sharpens as the temperature tau grows
(``temperature``), the regulariser lambda Σ_i sigma(tau m_i) runs over all N gates, and the hard
gate 1[m_i > 0] (times 1 / sigma(m_0), as the reference code keeps it, unless ``scaled=False``)
replaces it for retraining.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class _BinaryStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        size = x.abs()
        slope = torch.where(size <= 0.4, 2 - 4 * size, torch.where(size <= 1, 0.4, 0.0))
        return grad * slope


def binary_step(x: Tensor) -> Tensor:
    """1[x > 0] forward; backward, the gradient times s(x) = 2 - 4|x| for |x| <= 0.4, 0.4 for
    0.4 < |x| <= 1, and 0 beyond (OptEmbed's straight-through estimator, spec 2.2)."""
    return _BinaryStep.apply(x)


class RowMask(nn.Module):
    """OptEmbed's row mask: a learnable threshold t_f per field (initialised to 0) and
    m = H(|e|_p - t_f) on embedded rows (B, F, D) -> (B, F, 1), p = 1 (default) or 2."""

    def __init__(self, num_fields: int, norm: int = 1) -> None:
        super().__init__()
        if norm not in (1, 2):
            raise ValueError(f"the row norm is 1 or 2, got {norm}")
        self.norm = norm
        self.thresholds = nn.Parameter(torch.zeros(num_fields))

    def forward(self, rows: Tensor) -> Tensor:
        size = torch.linalg.vector_norm(rows, ord=self.norm, dim=-1, keepdim=True)
        return binary_step(size - self.thresholds[:, None])

    def regulariser(self, alpha: float) -> Tensor:
        """alpha Σ_f exp(-t_f): falls as thresholds rise, so descent prunes more."""
        return alpha * torch.exp(-self.thresholds).sum()

    @torch.no_grad()
    def kept(self, table: Tensor, field: int) -> Tensor:
        """The ids of ``table``'s rows (one field's, (n_f, D)) that the mask keeps."""
        size = torch.linalg.vector_norm(table, ord=self.norm, dim=-1)
        return torch.nonzero(size > self.thresholds[field]).flatten()


def prefix_masks(widths: Tensor, dim: int) -> Tensor:
    """M_k = [1]*k + [0]*(dim - k) for each width k in ``widths`` (any shape): (..., dim)."""
    return (torch.arange(dim, device=widths.device) < widths[..., None]).to(torch.float32)


def sample_width_masks(
    batch: int, fields: int, dim: int, generator: torch.Generator | None = None
) -> Tensor:
    """OptEmbed's width sampling: every (sample, field) pair its own k ~ U{1..dim}, as the prefix
    mask M_k: (batch, fields, dim)."""
    widths = torch.randint(1, dim + 1, (batch, fields), generator=generator)
    return prefix_masks(widths, dim)


class FeatureGates(nn.Module):
    """OptFS's gate per feature value: logits m (N,) at ``m0``; ``forward(ids)`` the soft gates
    sigma(tau m_ids) / sigma(m0) at ``tau``, or after ``harden()`` the hard ones."""

    def __init__(self, num_values: int, m0: float = 0.5, scaled: bool = True) -> None:
        super().__init__()
        self.m0 = m0
        self.scaled = scaled
        self.logits = nn.Parameter(torch.full((num_values,), float(m0)))
        self.tau = 1.0
        self.hard = False

    @property
    def hard_scale(self) -> float:
        """What an open hard gate multiplies its row by: 1 / sigma(m0), or 1 unscaled."""
        return 1 / _sigmoid(self.m0) if self.scaled else 1.0

    def forward(self, ids: Tensor) -> Tensor:
        logits = self.logits[ids]
        if self.hard:
            return (logits > 0).to(logits.dtype) * self.hard_scale
        return torch.sigmoid(self.tau * logits) / _sigmoid(self.m0)

    def regulariser(self, strength: float) -> Tensor:
        """lambda Σ_i sigma(tau m_i) over all N gates, not only a batch's."""
        return strength * torch.sigmoid(self.tau * self.logits).sum()

    def harden(self) -> None:
        """Switch to the hard gates 1[m > 0] and freeze the logits."""
        self.hard = True
        self.logits.requires_grad_(False)

    @torch.no_grad()
    def kept(self) -> Tensor:
        """The ids whose hard gate is open."""
        return torch.nonzero(self.logits > 0).flatten()


def temperature(epoch: int, search_epochs: int, final: float) -> float:
    """OptFS's tau in search epoch ``epoch`` (from 0): 1, multiplied by final^(1/(E - 1)) at the
    start of every later epoch, so that it is ``final`` in the last of the E search epochs."""
    if search_epochs < 2 or not 0 <= epoch < search_epochs:
        raise ValueError(f"epoch {epoch} is not one of {search_epochs} (>= 2) search epochs")
    return float(final ** (epoch / (search_epochs - 1)))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))
