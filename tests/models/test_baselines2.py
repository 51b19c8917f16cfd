"""Baselines AutoInt+, FinalMLP, FiBiNET and MaskNet: formulas, parameter counts and bad configs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.models.autoint import AutoInt, AutoIntConfig
from slimctr.models.fibinet import SENET, FiBiNET, FiBiNETConfig, bilinear_field_all
from slimctr.models.finalmlp import FinalMLP, FinalMLPConfig, bilinear_fusion
from slimctr.models.masknet import MaskBlock, MaskNet, MaskNetConfig
from tests.models.formulas import count_params, mlp_params
from tests.models.make_golden import VOCAB_SIZES, tiny_batch, tiny_schema

NUM_FIELDS = len(VOCAB_SIZES) + 2  # 5: three categorical, two numeric
ROWS = sum(VOCAB_SIZES) + 2  # embedding rows: table rows plus one vector per numeric field
D = 16 * NUM_FIELDS  # flat width at the default embedding_dim


# -- AutoInt+ --------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(400, 400, 400), ()])
def test_autoint_parametercount_params(hidden: tuple[int, ...]) -> None:
    model = AutoInt(tiny_schema(), AutoIntConfig(hidden_dims=hidden))
    attention = 4 * 16 * 64 + 2 * 4 * 64 * 64  # W_Q, W_K, W_V, W_Res per layer, 2 heads x 32
    expected = 16 * ROWS + attention + NUM_FIELDS * 64 + 1
    expected += mlp_params(D, hidden, True) if hidden else 0
    assert count_params(model) == expected
    assert model(tiny_batch()).shape == (8,)


def test_autoint_is_attention_logit_plus_mlp() -> None:
    torch.manual_seed(0)
    model = AutoInt(tiny_schema(), AutoIntConfig(hidden_dims=(8,), embedding_init_std=0.3)).eval()
    batch = tiny_batch()
    x = embeddings = model.embedding(batch)
    for layer in model.attention:
        x = layer(x)
    assert model.mlp is not None
    expected = model.attention_output(x.flatten(1)).squeeze(1)
    expected = expected + model.mlp(embeddings.flatten(1)).squeeze(1)
    torch.testing.assert_close(model(batch), expected)


# -- FinalMLP --------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_bilinear_fusion_equals_explicit_formula_per_head(heads: int) -> None:
    torch.manual_seed(0)
    o1, o2 = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    w3 = torch.randn(heads, 8 // heads, 12 // heads, dtype=torch.float64)
    expected = torch.zeros(3, dtype=torch.float64)
    for j in range(heads):
        x = o1[:, j * (8 // heads) : (j + 1) * (8 // heads)]
        y = o2[:, j * (12 // heads) : (j + 1) * (12 // heads)]
        for b in range(3):
            expected[b] += x[b] @ w3[j] @ y[b]
    torch.testing.assert_close(bilinear_fusion(o1, o2, w3), expected)


def test_finalmlp_logit_and_gates() -> None:
    torch.manual_seed(0)
    config = FinalMLPConfig(stream1_dims=(6,), stream2_dims=(4,), num_heads=2)
    model = FinalMLP(tiny_schema(), config).eval()
    with torch.no_grad():
        model.bilinear.normal_()
    batch = tiny_batch()
    e = model.embedding.flat(batch)
    gates = [2 * torch.sigmoid(g.linear.weight @ g.context + g.linear.bias) for g in model.gates]
    assert all(((g > 0) & (g < 2)).all() for g in gates)
    o1, o2 = model.streams[0](gates[0] * e), model.streams[1](gates[1] * e)
    expected = model.linear1(o1).squeeze(1) + model.linear2(o2).squeeze(1)
    for j in range(2):
        x, y = o1[:, 3 * j : 3 * j + 3], o2[:, 2 * j : 2 * j + 2]
        expected = expected + ((x @ model.bilinear[j]) * y).sum(1)
    torch.testing.assert_close(model(batch), expected)


def test_finalmlp_gates_conditioned_on_context_fields() -> None:
    torch.manual_seed(0)
    config = FinalMLPConfig(
        stream1_dims=(6,),
        stream2_dims=(4,),
        gate1_context=("c1",),
        gate2_context=("n0", "c0"),
        gate_hidden_dims=(5,),
    )
    model = FinalMLP(tiny_schema(), config).eval()
    batch = tiny_batch()
    e = model.embedding.flat(batch)  # fields c0, n0, c1, c2, n1, 16 wide each
    contexts = [e[:, 32:48], torch.cat([e[:, 16:32], e[:, 0:16]], dim=1)]
    for gate, context in zip(model.gates, contexts, strict=True):
        weights = 2 * torch.sigmoid(gate.linear(gate.hidden(context)))  # (B, D): one per sample
        torch.testing.assert_close(gate(e), weights * e)
        assert gate.context is None and not torch.allclose(weights[0], weights[1])
    gate_params = [16 * 5 + 5 + 5 * D + D, 32 * 5 + 5 + 5 * D + D]
    plain = FinalMLP(tiny_schema(), FinalMLPConfig(stream1_dims=(6,), stream2_dims=(4,)))
    plain_gates = 2 * (16 + 16 * D + D)
    assert count_params(model) - count_params(plain) == sum(gate_params) - plain_gates


def test_finalmlp_context_must_name_fields_of_the_data() -> None:
    config = FinalMLPConfig(gate2_context=("c0", "user"))
    with pytest.raises(SlimctrError, match=r"^model.gate2_context names user, not a field"):
        FinalMLP(tiny_schema(), config)


def test_finalmlp_gate_keys_need_the_gates() -> None:
    with pytest.raises(SlimctrError, match=r"^model.gate1_context conditions a gate"):
        FinalMLPConfig(feature_gating=False, gate1_context=("c0",))
    with pytest.raises(SlimctrError, match=r"^model.gate_hidden_dims shapes the gates"):
        FinalMLPConfig(feature_gating=False, gate_hidden_dims=(400,))


def test_autoint_identity_residual_needs_a_residual() -> None:
    with pytest.raises(SlimctrError, match=r"^model.identity_residual shapes the residual"):
        AutoIntConfig(use_residual=False, identity_residual=True)


@pytest.mark.parametrize("gating", [True, False])
def test_finalmlp_parametercount_params(gating: bool) -> None:
    hidden = (400, 400, 400)
    model = FinalMLP(tiny_schema(), FinalMLPConfig(feature_gating=gating))
    gates = 2 * (16 + 16 * D + D) if gating else 0
    fusion = 401 + 400 + 400 * 400
    expected = 16 * ROWS + gates + 2 * mlp_params(D, hidden, False) + fusion
    assert count_params(model) == expected
    assert model(tiny_batch()).shape == (8,)


# -- FiBiNET ---------------------------------------------------------------------------------


def test_senet_weights_shape_and_reweighting() -> None:
    torch.manual_seed(0)
    senet = SENET(num_fields=6, reduction_ratio=3)
    assert senet.excitation[0].weight.shape == (2, 6)  # W_1: F/r x F
    e = torch.randn(4, 6, 3)
    weights = senet.weights(e)
    assert weights.shape == (4, 6) and ((weights > 0) & (weights < 1)).all()
    hidden = torch.relu(e.mean(2) @ senet.excitation[0].weight.T)
    torch.testing.assert_close(weights, torch.sigmoid(hidden @ senet.excitation[2].weight.T))
    torch.testing.assert_close(senet(e), weights.unsqueeze(2) * e)
    assert (SENET(6, 3, "relu").weights(e) >= 0).all()


def test_bilinear_field_all_equals_a_loop_over_pairs() -> None:
    torch.manual_seed(0)
    e, w = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    pairs = [(e[:, i] @ w) * e[:, j] for i, j in itertools.combinations(range(4), 2)]
    torch.testing.assert_close(bilinear_field_all(e, w), torch.stack(pairs, dim=1))


def test_fibinet_parameter_count_and_sum_of_parts() -> None:
    hidden = (400, 400, 400)
    model = FiBiNET(tiny_schema(), FiBiNETConfig()).eval()
    senet = 2 * NUM_FIELDS * (NUM_FIELDS // 3)
    mlp_in = NUM_FIELDS * (NUM_FIELDS - 1) * 16
    expected = (ROWS + 1) + 16 * ROWS + senet + 16 * 16 + mlp_params(mlp_in, hidden, True)
    assert count_params(model) == expected
    batch = tiny_batch()
    e = model.embedding(batch)
    p = bilinear_field_all(e, model.bilinear).flatten(1)
    q = bilinear_field_all(model.senet(e), model.bilinear).flatten(1)
    expected_logit = model.linear(batch) + model.mlp(torch.cat([p, q], 1)).squeeze(1)
    torch.testing.assert_close(model(batch), expected_logit)


# -- MaskNet ---------------------------------------------------------------------------------


def test_mask_block_by_hand() -> None:
    block = MaskBlock(input_dim=2, mask_input_dim=1, output_dim=2, reduction_ratio=1)
    with torch.no_grad():
        block.mask[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        block.mask[0].bias.zero_()
        block.mask[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        block.mask[2].bias.copy_(torch.tensor([0.0, 1.0]))
        block.hidden.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    x, v_emb = torch.tensor([[2.0, 3.0]]), torch.tensor([[0.5]])
    # aggregation ReLU([0.5, -0.5]) = [0.5, 0]; mask = [0.5, 0 + 1] = [0.5, 1]
    # masked x = [1, 3]; W_i -> [4, -3]; LN -> [1, -1] (up to eps); ReLU -> [1, 0]
    expected = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(block(x, v_emb), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("structure", ["parallel", "serial"])
def test_masknet_parametercount_params(structure: str) -> None:
    hidden, blocks, width = (400, 400, 400), 3, 64
    model = MaskNet(tiny_schema(), MaskNetConfig(structure=structure))

    def block(n_in: int) -> int:
        return (D * n_in + n_in) + (n_in * n_in + n_in) + n_in * width + 2 * width

    if structure == "parallel":
        body, mlp_in = blocks * block(D), blocks * width
    else:
        body, mlp_in = block(D) + (blocks - 1) * block(width), width
    expected = 16 * ROWS + 2 * 16 + body + mlp_params(mlp_in, hidden, True)
    assert count_params(model) == expected
    assert model(tiny_batch()).shape == (8,)


def test_masknet_serial_feeds_each_block_the_previous_output() -> None:
    torch.manual_seed(0)
    config = MaskNetConfig(structure="serial", num_blocks=2, block_dim=4, hidden_dims=())
    model = MaskNet(tiny_schema(), config).eval()
    batch = tiny_batch()
    e = model.embedding(batch)
    v_emb = e.flatten(1)
    hidden = model.blocks[0](model.embedding_norm(e).flatten(1), v_emb)
    hidden = model.blocks[1](hidden, v_emb)
    torch.testing.assert_close(model(batch), model.mlp(hidden).squeeze(1))


def test_masknet_without_embedding_norm_feeds_the_blocks_raw_embeddings() -> None:
    torch.manual_seed(0)
    config = MaskNetConfig(num_blocks=2, block_dim=4, hidden_dims=(), embedding_norm=False)
    model = MaskNet(tiny_schema(), config).eval()
    batch = tiny_batch()
    v_emb = model.embedding(batch).flatten(1)
    hidden = torch.cat([block(v_emb, v_emb) for block in model.blocks], dim=1)
    torch.testing.assert_close(model(batch), model.mlp(hidden).squeeze(1))
    assert model.embedding_norm is None
    with_norm = MaskNet(tiny_schema(), MaskNetConfig(num_blocks=2, block_dim=4, hidden_dims=()))
    assert count_params(with_norm) - count_params(model) == 2 * 16  # LN_EMB's scale and shift


def test_masknet_block_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    plain = MaskNet(tiny_schema(), MaskNetConfig(num_blocks=2, block_dim=64))
    dropped = MaskNet(tiny_schema(), MaskNetConfig(num_blocks=2, block_dim=64, block_dropout=0.5))
    dropped.load_state_dict(plain.state_dict())  # dropout has no parameters: same weights
    batch = tiny_batch()
    plain.eval()
    dropped.eval()
    torch.testing.assert_close(dropped(batch), plain(batch))
    block = dropped.blocks[0].train()
    out = block(torch.ones(8, D), torch.ones(8, D))
    kept = block.eval()(torch.ones(8, D), torch.ones(8, D))
    # in training, dropout zeroes some positive outputs and doubles the rest (1 / (1 - 0.5))
    positive = kept > 0
    assert (out[positive] == 0).any()
    torch.testing.assert_close(out[out > 0], 2 * kept[out > 0])


# -- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, key, value",
    [
        (AutoIntConfig, "num_heads", 0),
        (AutoIntConfig, "use_residual", 1),
        (AutoIntConfig, "embedding_dim", {"c0": 4, "n0": 8}),
        (FinalMLPConfig, "num_heads", 3),  # does not divide 400
        (FinalMLPConfig, "stream1_dims", ()),
        (FinalMLPConfig, "feature_gating", "no"),
        (FinalMLPConfig, "gate1_context", "user"),  # a list of names, not one name
        (FinalMLPConfig, "gate2_context", ("item", "item")),
        (FinalMLPConfig, "gate_hidden_dims", (400, 0)),
        (FiBiNETConfig, "reduction_ratio", 0),
        (FiBiNETConfig, "excitation_activation", "tanh"),
        (MaskNetConfig, "structure", "stacked"),
        (MaskNetConfig, "block_dim", 0),
        (MaskNetConfig, "reduction_ratio", 1.5),
        (MaskNetConfig, "block_dropout", 1.0),
        (MaskNetConfig, "embedding_norm", "no"),
    ],
)
def test_bad_config_raises(config_class: type, key: str, value: Any) -> None:
    with pytest.raises(SlimctrError, match=rf"^model\.{key}"):
        config_class(**{key: value})
