"""MLP: layer order, widths, hand-computed output, init and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from slimctr.errors import SlimctrError
from slimctr.nn.mlp import MLP, Dropout


def test_layer_order_and_output_dim() -> None:
    mlp = MLP(6, [5, 4], dropout=0.5, batch_norm=True, output_dim=1)
    kinds = [type(m) for m in mlp.layers]
    hidden = [nn.Linear, nn.BatchNorm1d, nn.ReLU, Dropout]
    assert kinds == [*hidden, *hidden, nn.Linear]
    assert mlp.output_dim == 1 and mlp(torch.randn(3, 6)).shape == (3, 1)
    assert MLP(6, [5, 4]).output_dim == 4
    assert MLP(6, []).output_dim == 6 and len(MLP(6, []).layers) == 0
    assert [type(m) for m in MLP(6, [5], activation="tanh").layers] == [nn.Linear, nn.Tanh]


def test_hand_computed_forward() -> None:
    mlp = MLP(2, [2], output_dim=1)
    with torch.no_grad():
        first, last = mlp.layers[0], mlp.layers[2]
        first.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        first.bias.copy_(torch.tensor([0.0, -1.0]))
        last.weight.copy_(torch.tensor([[3.0, -2.0]]))
        last.bias.copy_(torch.tensor([0.25]))
    x = torch.tensor([[1.0, 2.0]])
    # hidden = relu([1 - 2 + 0, 2 + 1 - 1]) = [0, 2]; out = 0 * 3 + 2 * (-2) + 0.25
    assert mlp(x).item() == pytest.approx(-3.75)


def test_batch_norm_in_eval_uses_running_statistics() -> None:
    mlp = MLP(2, [2], batch_norm=True)
    with torch.no_grad():
        mlp.layers[0].weight.copy_(torch.eye(2))
        mlp.layers[0].bias.zero_()
        bn = mlp.layers[1]
        bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.5]))
    mlp.eval()
    out = mlp(torch.tensor([[3.0, -2.0]]))
    # ((3 - 1) / 2) * 2 + 0 = 2;  ((-2 + 1) / 0.5) * 1 + 0.5 = -1.5 -> relu 0
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.0]]), atol=1e-4, rtol=0)


def test_xavier_uniform_weights() -> None:
    torch.manual_seed(0)
    mlp = MLP(300, [200], output_dim=1)
    for layer, (fan_in, fan_out) in zip(
        (mlp.layers[0], mlp.layers[2]), ((300, 200), (200, 1)), strict=True
    ):
        assert layer.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    bound = math.sqrt(6 / 500)
    assert abs(mlp.layers[0].weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "swish"}, "activation must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"hidden_dims": [4, 0]}, "MLP widths must be >= 1"),
        ({"output_dim": 0}, "MLP widths must be >= 1"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    arguments = {"input_dim": 3, "hidden_dims": [4], **kwargs}
    with pytest.raises(SlimctrError, match=message):
        MLP(**arguments)


def test_dropout_zeroes_a_share_p_and_rescales_the_rest():

    torch.manual_seed(0)
    layer = Dropout(0.3)
    x = torch.ones(1000, 500, requires_grad=True)
    y = layer(x)
    zeros = (y == 0).float().mean().item()
    assert abs(zeros - 0.3) < 0.005
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x = mask / (1 - p)
    layer.eval()
    assert layer(x) is x
    assert Dropout(0.0)(x) is x
