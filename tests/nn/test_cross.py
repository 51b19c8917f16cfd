"""Cross layers of DCN, DCN-V2 and GDCN, checked against the formulas by hand (GDCN spec 10)."""

from __future__ import annotations

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.nn.cross import (
    CrossLayerV1,
    CrossLayerV2,
    CrossNetwork,
    GatedCrossLayer,
    GatedCrossNetwork,
    padded_width,
)

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


# -- GDCN gated cross layer -------------------------------------------------------------------


def _gated(cross: list[list[float]], gate: list[list[float]], bias: list[float]) -> GatedCrossLayer:
    layer = GatedCrossLayer(2)
    with torch.no_grad():
        layer.cross.weight.copy_(torch.tensor(cross))
        layer.gate.weight.copy_(torch.tensor(gate))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def test_gated_layer_by_hand() -> None:
    layer = _gated([[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, -0.5]], [0.5, -0.5])
    # W_c x0 + b = [5.5, 10.5];  W_g x0 = [0, 0]: gate = [0.5, 0.5];  x0 ⊙ [5.5, 10.5] ⊙ gate
    # = [2.75, 10.5];  + x0 = [3.75, 12.5]
    output, gate = layer.forward_with_gate(X0, X0)
    torch.testing.assert_close(output, torch.tensor([[3.75, 12.5]]))
    torch.testing.assert_close(gate, torch.tensor([[0.5, 0.5]]))
    assert torch.equal(layer(X0, X0), output)


def test_gate_of_one_is_the_full_rank_dcnv2_layer_exactly() -> None:
    """Spec 10.1: same W_c and b, every gate value 1 -> CrossLayerV2's output bit for bit."""
    torch.manual_seed(0)
    dim = 6
    gated, plain = GatedCrossLayer(dim), CrossLayerV2(dim)
    with torch.no_grad():
        plain.project.weight.copy_(gated.cross.weight)  # type: ignore[union-attr]
        plain.project.bias.copy_(gated.bias)  # type: ignore[union-attr]
        gated.gate.weight.fill_(100.0)  # W_g c_l >= 100 for positive c_l: sigmoid is 1.0
    x0, x = torch.rand(5, dim) + 1.0, torch.rand(5, dim) + 1.0
    output, gate = gated.forward_with_gate(x0, x)
    assert torch.equal(gate, torch.ones_like(gate))
    assert torch.equal(output, plain(x0, x))


def test_gate_is_computed_from_the_layer_input_not_x0() -> None:
    """Spec 10.2: changing c0 while c_l is fixed leaves sigmoid(W_g c_l) unchanged; no gate bias."""
    torch.manual_seed(0)
    layer = GatedCrossLayer(4)
    x = torch.randn(3, 4)
    _, gate = layer.forward_with_gate(torch.randn(3, 4), x)
    _, same = layer.forward_with_gate(torch.randn(3, 4), x)
    assert torch.equal(gate, same)
    torch.testing.assert_close(gate, torch.sigmoid(x @ layer.gate.weight.T))
    _, moved = layer.forward_with_gate(torch.randn(3, 4), x + 1.0)
    assert not torch.equal(gate, moved)
    assert layer.gate.bias is None and layer.cross.bias is None


def test_gated_parameter_count_is_2d_squared_plus_d() -> None:
    """Spec 10.3: W_c, W_g and b; the network has one such set per layer."""
    assert _num_params(GatedCrossLayer(10)) == 2 * 10 * 10 + 10
    assert sorted(n for n, _ in GatedCrossLayer(3).named_parameters()) == [
        "bias",
        "cross.weight",
        "gate.weight",
    ]
    assert _num_params(GatedCrossNetwork(10, 3)) == 3 * (2 * 10 * 10 + 10)


def test_gated_network_reuses_x0_in_every_layer() -> None:
    """Spec 10.3: x2 = x0 ⊙ (W x1 + b) ⊙ gate + x1, with the network's own x0, not x1."""
    net = GatedCrossNetwork(2, 2)
    with torch.no_grad():
        for layer in net.layers:
            layer.cross.weight.copy_(torch.eye(2))
            layer.gate.weight.fill_(100.0)  # gates of 1 on positive inputs
            layer.bias.zero_()
    # x1 = x0 ⊙ x0 + x0 = [2, 6];  x2 = x0 ⊙ x1 + x1 = [2 + 2, 12 + 6]
    output, gates = net.forward_with_gates(X0)
    torch.testing.assert_close(output, torch.tensor([[4.0, 18.0]]))
    assert len(gates) == 2 and all(torch.equal(g, torch.ones(1, 2)) for g in gates)
    assert torch.equal(net(X0), output)


def test_gated_shapes_and_gates() -> None:
    """Spec 10.4 and 10.16: c_L and every layer's gate are (B, D), gates in (0, 1)."""
    torch.manual_seed(0)
    net = GatedCrossNetwork(7, 3)
    output, gates = net.forward_with_gates(torch.randn(5, 7))
    assert output.shape == (5, 7)
    assert [g.shape for g in gates] == [(5, 7)] * 3
    assert all(((g > 0) & (g < 1)).all() for g in gates)


def test_gated_default_initialisation() -> None:
    """Spec 10.5 (and 2.6): b in [0, 1) not all zero; W_c, W_g entries within +-1/sqrt(D)."""
    torch.manual_seed(0)
    dim = 50
    layer = GatedCrossLayer(dim)
    assert ((layer.bias >= 0) & (layer.bias < 1)).all() and layer.bias.count_nonzero() > 0
    assert layer.bias.std() > 0.2  # spread over [0, 1), not a constant (U(0, 1): 0.29)
    bound = 1 / dim**0.5
    for weight in (layer.cross.weight, layer.gate.weight):
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.9 * bound  # the full range is used, not a narrower one


def test_gated_matrix_accessors_are_detached_views() -> None:
    net = GatedCrossNetwork(4, 2)
    crosses, gates = net.cross_matrices(), net.gate_matrices()
    assert [m.shape for m in crosses + gates] == [(4, 4)] * 4
    for matrix, layer in zip(crosses, net.layers, strict=True):
        assert matrix.data_ptr() == layer.cross.weight.data_ptr() and not matrix.requires_grad
    for matrix, layer in zip(gates, net.layers, strict=True):
        assert torch.equal(matrix, layer.gate.weight)


def test_gated_network_needs_a_layer() -> None:
    with pytest.raises(SlimctrError, match="num_layers must be >= 1"):
        GatedCrossNetwork(4, 0)


@pytest.mark.parametrize(("dim", "width"), [(7, 7), (127, 127), (128, 128), (129, 144), (489, 496)])
def test_padded_width_rounds_up_to_16_from_128_on(dim: int, width: int) -> None:
    assert padded_width(dim) == width


def _by_hand(net: torch.nn.Module, x0: torch.Tensor, gated: bool) -> torch.Tensor:
    """The layers' formulas at width D, without any padding."""
    x = x0
    for layer in net.layers:
        if gated:
            gate = torch.sigmoid(x @ layer.gate.weight.T)
            x = x0 * (x @ layer.cross.weight.T + layer.bias) * gate + x
        else:
            x = x0 * (x @ layer.project.weight.T + layer.project.bias) + x
    return x


@pytest.mark.parametrize("gated", [True, False])
def test_padded_networks_compute_the_unpadded_formulas_and_gradients(gated: bool) -> None:
    """D = 150 computes in 160 columns; outputs, gates and gradients are those of width 150."""
    torch.manual_seed(0)
    net = GatedCrossNetwork(150, 3) if gated else CrossNetwork(150, 3, "v2")
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so a leak into the padding would show
            (layer.bias if gated else layer.project.bias).uniform_(0.5, 1.0)
    x0 = torch.randn(32, 150)
    output = net(x0)
    assert output.shape == (32, 150)
    output.square().sum().backward()
    padded_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    expected = _by_hand(net, x0, gated)
    expected.square().sum().backward()
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(padded_grads, [p.grad for p in net.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    if gated:
        _, gates = net.forward_with_gates(x0)
        assert [g.shape for g in gates] == [(32, 150)] * 3
        want_gate = torch.sigmoid(x0 @ net.layers[0].gate.weight.T)
        torch.testing.assert_close(gates[0], want_gate, rtol=1e-5, atol=1e-5)
    assert all(p.shape in {(150, 150), (150,)} for p in net.parameters())
