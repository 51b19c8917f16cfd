"""Baselines DCN, Wide & Deep, FwFM and xDeepFM: formulas, parameter counts and bad configs."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.models.dcn import DCN, DCNConfig
from slimctr.models.fwfm import FwFM, FwFMConfig, field_weighted_interactions
from slimctr.models.wide_deep import WideDeep, WideDeepConfig
from slimctr.models.xdeepfm import XDeepFM, XDeepFMConfig
from slimctr.nn.fm import fm_second_order
from tests.models.formulas import count_params, mlp_params
from tests.models.make_golden import VOCAB_SIZES, tiny_batch, tiny_schema

NUM_NUMERIC = 2
NUM_FIELDS = len(VOCAB_SIZES) + NUM_NUMERIC  # 5
ROWS = sum(VOCAB_SIZES) + NUM_NUMERIC  # embedding rows: table rows plus one vector per numeric


# -- FwFM ------------------------------------------------------------------------------------


def test_fwfm_interactions_by_hand() -> None:
    e = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])  # one sample, F = 3, d = 2
    r = torch.tensor([0.5, 3.0, 0.25])  # pairs (0, 1), (0, 2), (1, 2)
    # <e0, e1> = 0, <e0, e2> = 1, <e1, e2> = 2:  0 * 0.5 + 1 * 3 + 2 * 0.25 = 3.5
    torch.testing.assert_close(field_weighted_interactions(e, r), torch.tensor([3.5]))


def test_fwfm_interactions_equal_a_double_loop_over_pairs() -> None:
    torch.manual_seed(0)
    e = torch.randn(4, 6, 3, dtype=torch.float64)
    r = torch.randn(15, dtype=torch.float64)
    expected = torch.zeros(4, dtype=torch.float64)
    pair = 0
    for i in range(6):
        for j in range(i + 1, 6):
            expected += (e[:, i] * e[:, j]).sum(dim=1) * r[pair]
            pair += 1
    torch.testing.assert_close(field_weighted_interactions(e, r), expected)


def test_fwfm_model_is_linear_plus_weighted_pairs() -> None:
    torch.manual_seed(0)
    model = FwFM(tiny_schema(), FwFMConfig(embedding_init_std=0.3))
    batch = tiny_batch()
    embeddings = model.embedding(batch)
    # untrained, every r = 1: exactly the FM on the same embeddings
    torch.testing.assert_close(model(batch), model.linear(batch) + fm_second_order(embeddings))
    with torch.no_grad():
        model.pair_weights.copy_(torch.arange(10.0) - 4.5)
    matrix = model.pair_weight_matrix()
    expected = model.linear(batch)
    for i, j in itertools.combinations(range(NUM_FIELDS), 2):
        expected = expected + (embeddings[:, i] * embeddings[:, j]).sum(dim=1) * matrix[i, j]
    torch.testing.assert_close(model(batch), expected)
    assert torch.equal(matrix, matrix.T) and not matrix.diagonal().any()


def test_fwfm_parametercount_params() -> None:
    d = 16
    model = FwFM(tiny_schema(), FwFMConfig())
    linear = ROWS + 1  # w_f per id or numeric field, and w_0
    pairs = NUM_FIELDS * (NUM_FIELDS - 1) // 2
    assert count_params(model) == linear + d * ROWS + pairs
    assert model(tiny_batch()).shape == (8,)


def test_fwfm_felv_adds_inner_products_with_a_vector_per_id() -> None:
    torch.manual_seed(0)
    model = FwFM(tiny_schema(), FwFMConfig(embedding_init_std=0.3, linear_type="felv"))
    batch = tiny_batch()
    embeddings, vectors = model.embedding(batch), model.linear_vectors(batch)
    with torch.no_grad():
        model.linear_bias.fill_(0.7)
    first = sum((embeddings[:, i] * vectors[:, i]).sum(dim=1) for i in range(NUM_FIELDS)) + 0.7
    pairs = field_weighted_interactions(embeddings, model.pair_weights)
    torch.testing.assert_close(model(batch), first + pairs)
    assert model.linear is None and model.field_vectors is None
    d = 16  # a second table as wide as the first, one bias, and r
    assert count_params(model) == 2 * d * ROWS + 1 + NUM_FIELDS * (NUM_FIELDS - 1) // 2


def test_fwfm_filv_adds_inner_products_with_a_vector_per_field() -> None:
    torch.manual_seed(0)
    model = FwFM(tiny_schema(), FwFMConfig(embedding_init_std=0.3, linear_type="filv"))
    batch = tiny_batch()
    embeddings = model.embedding(batch)
    field_vectors = model.field_vectors
    first = sum(embeddings[:, i] @ field_vectors[i] for i in range(NUM_FIELDS))
    pairs = field_weighted_interactions(embeddings, model.pair_weights)
    torch.testing.assert_close(model(batch), first + model.linear_bias + pairs)
    assert model.linear is None and model.linear_vectors is None
    d = 16
    assert count_params(model) == d * ROWS + NUM_FIELDS * d + 1 + NUM_FIELDS * (NUM_FIELDS - 1) // 2


@pytest.mark.parametrize("linear_type", ["felv", "filv"])
def test_fwfm_linear_vectors_all_learn(linear_type: str) -> None:
    torch.manual_seed(0)
    model = FwFM(tiny_schema(), FwFMConfig(embedding_init_std=0.3, linear_type=linear_type))
    batch = tiny_batch()
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# -- DCN -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(400, 400, 400), ()])
def test_dcn_parametercount_params(hidden: tuple[int, ...]) -> None:
    d, layers = 16, 3
    model = DCN(tiny_schema(), DCNConfig(hidden_dims=hidden))
    width = d * NUM_FIELDS  # D = 80
    output = width + (hidden[-1] if hidden else 0) + 1
    expected = d * ROWS + layers * 2 * width + mlp_params(width, hidden, False) + output
    assert count_params(model) == expected
    assert model(tiny_batch()).shape == (8,)


def test_dcn_computes_cross_and_mlp_in_parallel() -> None:
    torch.manual_seed(0)
    model = DCN(tiny_schema(), DCNConfig(hidden_dims=(8,))).eval()
    batch = tiny_batch()
    x0 = model.embedding.flat(batch)
    x = x0
    for layer in model.cross.layers:
        x = x0 * (x @ layer.weight).unsqueeze(1) + layer.bias + x  # Eq. 3
    hidden = torch.cat([x, model.mlp(x0)], dim=1)
    torch.testing.assert_close(model(batch), model.output(hidden).squeeze(1))


def test_dcn_and_wide_deep_take_per_field_widths() -> None:
    widths = {"c0": 2, "n0": 1, "c1": 4, "c2": 3, "n1": 5}
    dcn = DCN(tiny_schema(), DCNConfig(embedding_dim=widths, hidden_dims=(8,)))
    assert dcn.embedding.output_dim == 15 and dcn(tiny_batch()).shape == (8,)
    wide_deep = WideDeep(tiny_schema(), WideDeepConfig(embedding_dim=widths, hidden_dims=(8,)))
    assert wide_deep(tiny_batch()).shape == (8,)


# -- Wide & Deep -----------------------------------------------------------------------------


def test_wide_deep_parameter_count_and_sum_of_parts() -> None:
    d, hidden = 16, (400, 400, 400)
    model = WideDeep(tiny_schema(), WideDeepConfig()).eval()
    expected = (ROWS + 1) + d * ROWS + mlp_params(d * NUM_FIELDS, hidden, True)
    assert count_params(model) == expected
    batch = tiny_batch()
    deep = model.deep(model.embedding.flat(batch)).squeeze(1)
    torch.testing.assert_close(model(batch), model.wide(batch) + deep)


# -- xDeepFM ---------------------------------------------------------------------------------


def test_xdeepfm_parameter_count_and_sum_of_parts() -> None:
    d, cin_sizes, hidden = 16, (16, 16, 16), (400, 400, 400)
    model = XDeepFM(tiny_schema(), XDeepFMConfig()).eval()
    inputs = (NUM_FIELDS, *cin_sizes[:-1])
    cin = sum(h_out * h_in * NUM_FIELDS for h_in, h_out in zip(inputs, cin_sizes, strict=True))
    expected = (
        (ROWS + 1)  # linear
        + d * ROWS  # embeddings
        + cin
        + sum(cin_sizes)  # w_cin, no bias
        + mlp_params(d * NUM_FIELDS, hidden, True)
    )
    assert count_params(model) == expected
    batch = tiny_batch()
    embeddings = model.embedding(batch)
    cin_logit = model.cin_output(model.cin(embeddings)).squeeze(1)
    deep = model.mlp(embeddings.flatten(1)).squeeze(1)
    torch.testing.assert_close(model(batch), model.linear(batch) + cin_logit + deep)


# -- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, key, value",
    [
        (DCNConfig, "num_cross_layers", 0),
        (DCNConfig, "hidden_dims", (400, -1)),
        (WideDeepConfig, "hidden_dims", ()),
        (WideDeepConfig, "dropout", 1.0),
        (FwFMConfig, "embedding_dim", {"c0": 4, "c1": 8}),  # stacked: one width for all fields
        (FwFMConfig, "embedding_init_std", 0.0),
        (FwFMConfig, "linear_type", "FeLV"),  # BARS's spelling: ours is lower case
        (XDeepFMConfig, "cin_layer_sizes", ()),
        (XDeepFMConfig, "cin_layer_sizes", (16, 0)),
        (XDeepFMConfig, "embedding_dim", {"c0": 4, "c1": 8}),
        (XDeepFMConfig, "batch_norm", 1),
    ],
)
def test_bad_config_raises(config_class: type, key: str, value: Any) -> None:
    with pytest.raises(SlimctrError, match=rf"^model\.{key} "):
        config_class(**{key: value})
