"""DimensionAlignment: a_f = e_f W_f per field, by hand; padding; init; bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.nn.align import DimensionAlignment


def test_projects_each_field_by_hand() -> None:
    layer = DimensionAlignment((1, 2), 2)  # e_1 in R^1, e_2 in R^2, K = 2
    with torch.no_grad():
        layer.projection(0).copy_(torch.tensor([[2.0, -1.0]]))  # W_1
        layer.projection(1).copy_(torch.tensor([[1.0, 0.0], [3.0, 1.0]]))  # W_2
    concatenated = torch.tensor([[1.0, 4.0, 5.0], [-2.0, 0.0, 1.0]])  # [e_1 || e_2]
    # Row 0: a_1 = 1 * (2, -1) = (2, -1); a_2 = 4 (1, 0) + 5 (3, 1) = (19, 5).
    # Row 1: a_1 = -2 * (2, -1) = (-4, 2); a_2 = 0 (1, 0) + 1 (3, 1) = (3, 1).
    expected = torch.tensor([[[2.0, -1.0], [19.0, 5.0]], [[-4.0, 2.0], [3.0, 1.0]]])
    torch.testing.assert_close(layer(concatenated), expected)


def test_matches_a_loop_over_fields_and_padding_holds_no_parameters() -> None:
    torch.manual_seed(0)
    widths = (3, 1, 4, 4, 2)
    layer = DimensionAlignment(widths, 5)
    assert layer.weight.shape == (sum(widths), 5)
    assert sum(p.numel() for p in layer.parameters()) == sum(widths) * 5
    concatenated = torch.randn(6, sum(widths), requires_grad=True)
    pieces = concatenated.split(widths, dim=1)
    expected = torch.stack([e @ layer.projection(f) for f, e in enumerate(pieces)], dim=1)
    torch.testing.assert_close(layer(concatenated), expected)
    weights = torch.randn(6, len(widths), 5)
    (layer(concatenated) * weights).sum().backward()
    grad_weight, grad_input = layer.weight.grad, concatenated.grad
    layer.weight.grad, concatenated.grad = None, None
    (expected * weights).sum().backward()
    torch.testing.assert_close(grad_weight, layer.weight.grad)
    torch.testing.assert_close(grad_input, concatenated.grad)


def test_xavier_uniform_per_field() -> None:
    torch.manual_seed(0)
    layer = DimensionAlignment((2, 64), 16)
    for field, width in enumerate((2, 64)):
        bound = math.sqrt(6 / (width + 16))
        projection = layer.projection(field)
        assert projection.abs().max() <= bound
        assert projection.abs().max() > 0.5 * bound


@pytest.mark.parametrize(
    ("widths", "width", "message"),
    [
        ((2, 3), 0, "width K must be an int >= 1, got 0"),
        ((2, 3), True, "width K must be an int >= 1, got True"),
        ((), 4, r"field widths >= 1, got \[\]"),
        ((2, 0), 4, r"field widths >= 1, got \[2, 0\]"),
    ],
)
def test_bad_arguments_raise(widths: tuple[int, ...], width: int, message: str) -> None:
    with pytest.raises(SlimctrError, match=message):
        DimensionAlignment(widths, width)
