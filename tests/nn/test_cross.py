"""Cross layers of DCN and DCN-V2, checked against the formulas by hand on 2-wide inputs."""

from __future__ import annotations

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.nn.cross import CrossLayerV1, CrossLayerV2, CrossNetwork

X0 = torch.tensor([[1.0, 2.0]])


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_v1_layer_by_hand() -> None:
    layer = CrossLayerV1(2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, -1.0]))
        layer.bias.copy_(torch.tensor([0.1, 0.2]))
    # x0^T w = 0.5 - 2 = -1.5;  x1 = x0 * -1.5 + b + x0 = [-1.5 + 0.1 + 1, -3 + 0.2 + 2]
    torch.testing.assert_close(layer(X0, X0), torch.tensor([[-0.4, -0.8]]))
    assert _num_params(CrossLayerV1(7)) == 2 * 7


def _full_rank(weight: list[list[float]], bias: list[float]) -> CrossLayerV2:
    layer = CrossLayerV2(2)
    with torch.no_grad():
        layer.project.weight.copy_(torch.tensor(weight))  # type: ignore[union-attr]
        layer.project.bias.copy_(torch.tensor(bias))  # type: ignore[union-attr]
    return layer


def test_v2_layer_by_hand() -> None:
    layer = _full_rank([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5])
    # W x0 + b = [5.5, 10.5];  x0 ⊙ that = [5.5, 21];  + x0 = [6.5, 23]
    torch.testing.assert_close(layer(X0, X0), torch.tensor([[6.5, 23.0]]))


def test_v2_network_reuses_x0_in_every_layer() -> None:
    net = CrossNetwork(2, 2, "v2")
    weights = ([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        for layer, w in zip(net.layers, weights, strict=True):
            layer.project.weight.copy_(torch.tensor(w))
            layer.project.bias.zero_()
    # x1 = x0 ⊙ x0 + x0 = [2, 6];  x2 = x0 ⊙ [6, 2] + x1 = [6 + 2, 4 + 6]
    torch.testing.assert_close(net(X0), torch.tensor([[8.0, 10.0]]))


def test_v2_low_rank_equals_full_rank_with_w_equal_u_vt() -> None:
    torch.manual_seed(0)
    low = CrossLayerV2(5, low_rank=2)
    down, up = low.project[0], low.project[1]  # type: ignore[index]
    full = CrossLayerV2(5)
    with torch.no_grad():
        full.project.weight.copy_(up.weight @ down.weight)  # U V^T, (5, 2) @ (2, 5)
        full.project.bias.copy_(up.bias)
    x0, x = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(low(x0, x), full(x0, x))


def test_v2_parameter_counts_and_zero_bias() -> None:
    assert _num_params(CrossLayerV2(10)) == 10 * 10 + 10
    assert _num_params(CrossLayerV2(10, low_rank=3)) == 2 * 10 * 3 + 10
    assert _num_params(CrossNetwork(10, 3, "v2")) == 3 * (10 * 10 + 10)
    assert torch.count_nonzero(CrossLayerV2(10).project.bias) == 0  # type: ignore[arg-type]
    assert torch.count_nonzero(CrossLayerV1(10).bias) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((4, 0, "v2", None), "num_layers must be >= 1"),
        ((4, 2, "v1", 2), "low_rank applies to DCN-V2"),
        ((4, 2, "v3", None), "kind must be 'v1' or 'v2'"),
        ((4, 2, "v2", 0), "low_rank must be >= 1"),
    ],
)
def test_bad_arguments_raise(args: tuple, message: str) -> None:
    with pytest.raises(SlimctrError, match=message):
        CrossNetwork(*args)
