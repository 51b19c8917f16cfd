"""OptEmbed's and OptFS's gate primitives: dimension-search spec 8, properties 5-8 and 11-13."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from slimctr.search.gates import (
    FeatureGates,
    RowMask,
    binary_step,
    prefix_masks,
    sample_width_masks,
    temperature,
)


def test_binary_step_is_exactly_zero_one_with_the_surrogate_gradient():
    """Property 5: s(0) = 2, s(0.3) = 0.8, s(0.5) = 0.4, s(1.5) = 0, symmetric in x."""
    x = torch.tensor([0.0, 0.3, 0.5, 1.5, -0.3, -0.5, -1.5, 1.0], requires_grad=True)
    y = binary_step(x)
    assert y.tolist() == [0, 1, 1, 1, 0, 0, 0, 1]
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 0.8, 0.4, 0.0, 0.8, 0.4, 0.0, 0.4]))


def test_the_threshold_regulariser_raises_every_threshold():
    """Property 6: d/dt_f of alpha Σ exp(-t_f) is -alpha exp(-t_f) < 0."""
    mask = RowMask(num_fields=3)
    with torch.no_grad():
        mask.thresholds.copy_(torch.tensor([0.0, 0.5, -1.0]))
    mask.regulariser(alpha=3e-4).backward()
    assert mask.thresholds.grad is not None
    expected = -3e-4 * torch.exp(-torch.tensor([0.0, 0.5, -1.0]))
    torch.testing.assert_close(mask.thresholds.grad, expected)
    before = mask.thresholds.detach().clone()
    torch.optim.SGD(mask.parameters(), lr=1.0).step()
    assert torch.all(mask.thresholds > before)


def test_the_row_mask_keeps_rows_whose_norm_passes_the_fields_threshold():
    mask = RowMask(num_fields=2)
    with torch.no_grad():
        mask.thresholds.copy_(torch.tensor([1.0, 3.0]))
    rows = torch.tensor([[[0.5, 0.4], [2.0, 2.0]], [[1.0, -1.0], [-1.0, 1.5]]])  # (B=2, F=2, D)
    assert mask(rows).squeeze(-1).tolist() == [[0, 1], [1, 0]]  # L1: 0.9, 4; 2, 2.5
    assert mask.kept(torch.tensor([[0.5, 0.4], [1.0, -1.0], [0.0, 3.5]]), 1).tolist() == [2]


def test_widths_are_drawn_uniformly_per_sample_and_field():
    """Property 7: independent draws from {1..D}; every width appears, about equally often."""
    dim = 8
    masks = sample_width_masks(4000, 5, dim, generator=torch.Generator().manual_seed(0))
    widths = masks.sum(-1).long()  # a prefix mask's width is its number of ones
    assert torch.equal(masks, prefix_masks(widths, dim))  # every mask is a prefix
    counts = torch.bincount(widths.flatten(), minlength=dim + 1)
    assert counts[0] == 0 and torch.all(counts[1:] > 0)
    expected = widths.numel() / dim
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 24.3  # the chi-square 0.999 quantile at 7 degrees of freedom
    assert not torch.equal(widths[:, 0], widths[:, 1])  # fields draw independently


def test_soft_gates_start_at_one_and_sharpen_with_the_temperature():
    """Property 11: at tau = 1 and m = m0 every soft gate is 1."""
    gates = FeatureGates(num_values=6)
    ids = torch.tensor([[0, 3], [5, 5]])
    torch.testing.assert_close(gates(ids), torch.ones(2, 2))
    with torch.no_grad():
        gates.logits.copy_(torch.tensor([2.0, -2.0, 0.5, 0.0, 1.0, -0.1]))
    gates.tau = 50.0
    sharp = gates(torch.arange(6)) * (1 / (1 + math.exp(-0.5)))
    assert sharp[0] > 0.99 and sharp[1] < 0.01


def test_the_temperature_reaches_its_final_value_in_the_last_search_epoch():
    """Property 12."""
    taus = [temperature(e, 5, 200.0) for e in range(5)]
    assert taus[0] == 1.0 and taus[-1] == pytest.approx(200.0)
    ratios = [b / a for a, b in itertools.pairwise(taus)]
    assert ratios == pytest.approx([200.0**0.25] * 4)
    with pytest.raises(ValueError, match="search epochs"):
        temperature(5, 5, 200.0)


def test_the_gate_regulariser_covers_every_gate_not_only_a_batchs():
    """Property 13."""
    gates = FeatureGates(num_values=10)
    gates.tau = 3.0
    gates(torch.tensor([1, 2])).sum().backward()  # a batch touches two values
    gates.logits.grad = None
    gates.regulariser(1e-3).backward()
    assert gates.logits.grad is not None and torch.all(gates.logits.grad > 0)
    torch.testing.assert_close(
        gates.regulariser(1.0), torch.sigmoid(3.0 * gates.logits.detach()).sum()
    )


@pytest.mark.parametrize(
    ("scaled", "open_value"), [(True, 1 / (1 / (1 + math.exp(-0.5)))), (False, 1.0)]
)
def test_hard_gates_are_zero_exactly_where_the_logit_is_not_positive(scaled, open_value):
    """Property 14 (first half): 1[m > 0], scaled by 1 / sigma(m0) as the reference code does."""
    gates = FeatureGates(num_values=4, scaled=scaled)
    with torch.no_grad():
        gates.logits.copy_(torch.tensor([0.3, 0.0, -0.2, 1e-6]))
    gates.harden()
    assert gates(torch.arange(4)).tolist() == pytest.approx([open_value, 0, 0, open_value])
    assert gates.kept().tolist() == [0, 3] and not gates.logits.requires_grad
