"""CIN (xDeepFM, Eq. 6-7): by hand, against a loop over (h, i, j), shapes and parameter count."""

from __future__ import annotations

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.nn.cin import CIN, CINLayer


def _naive_layer(x: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 6 term by term; ``weight`` is W^k as (H_k, H_{k-1}, m)."""
    batch, width = x.shape[0], x.shape[2]
    out = torch.zeros(batch, weight.shape[0], width, dtype=x.dtype)
    for h in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            for j in range(weight.shape[2]):
                out[:, h] += weight[h, i, j] * (x[:, i] * x0[:, j])
    return out


def test_layer_by_hand() -> None:
    layer = CINLayer(input_maps=2, num_fields=2, output_maps=1)
    with torch.no_grad():
        # W^{1,1} = [[1, 2], [0, -1]], flattened row-major over (i, j)
        layer.weight.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, -1.0]]))
    x0 = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # m = 2 fields, D = 2
    # 1 (x0_1 ∘ x0_1) + 2 (x0_1 ∘ x0_2) - (x0_2 ∘ x0_2) = [1, 4] + 2 [3, -2] - [9, 1] = [-2, -1]
    torch.testing.assert_close(layer(x0, x0), torch.tensor([[[-2.0, -1.0]]]))


def test_network_equals_naive_loops() -> None:
    torch.manual_seed(0)
    num_fields, sizes = 3, (2, 4)
    cin = CIN(num_fields, sizes).double()
    x0 = torch.randn(2, num_fields, 5, dtype=torch.float64)
    x, expected = x0, []
    for layer, h_in, h_out in zip(cin.layers, (num_fields, *sizes[:-1]), sizes, strict=True):
        weight = layer.weight.weight.view(h_out, h_in, num_fields)
        x = _naive_layer(x, x0, weight)
        expected.append(x.sum(dim=2))  # sum pooling over the embedding dimension, Eq. 7
    torch.testing.assert_close(cin(x0), torch.cat(expected, dim=1))


def test_shapes_and_parameter_count() -> None:
    num_fields, sizes = 5, (16, 8, 4)
    cin = CIN(num_fields, sizes)
    assert cin.output_dim == 28
    assert cin(torch.randn(3, num_fields, 7)).shape == (3, 28)
    expected = 16 * num_fields * num_fields + 8 * 16 * num_fields + 4 * 8 * num_fields
    assert sum(p.numel() for p in cin.parameters()) == expected
    assert CINLayer(4, num_fields, 6)(torch.randn(3, 4, 7), torch.randn(3, 5, 7)).shape == (3, 6, 7)


@pytest.mark.parametrize("num_fields, sizes", [(3, ()), (3, (4, 0)), (0, (4,))])
def test_bad_sizes_raise(num_fields: int, sizes: tuple[int, ...]) -> None:
    with pytest.raises(SlimctrError, match="CIN"):
        CIN(num_fields, sizes)
