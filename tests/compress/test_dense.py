"""int8 dense layers: each weight within half a step of its float32 value, the layer computes
with exactly its dequantised weight, every linear layer outside the tables is replaced, sizes are
honest, and a bundle with them round-trips and is smaller."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimctr.compress.dense import Int8Linear, int8_dense
from slimctr.compress.model import compress
from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.nn.embedding import FieldEmbedding
from slimctr.training import run
from tests.models.make_golden import tiny_batch, tiny_schema


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 12),
    columns=st.integers(1, 12),
    spread=st.floats(1e-6, 1e3),
    seed=st.integers(0, 2**16),
)
def test_each_weight_is_within_half_a_step_of_its_row_scale(rows, columns, spread, seed):
    torch.manual_seed(seed)
    linear = nn.Linear(columns, rows)
    with torch.no_grad():
        linear.weight.mul_(spread)
        linear.weight[0].zero_()  # a row of zeros keeps a positive scale
    layer = Int8Linear(columns, rows, bias=True).fill(linear)
    assert layer.codes.dtype == torch.int8 and int(layer.codes.abs().max()) <= 127
    step = layer.scale.unsqueeze(1)
    error = (layer.weight - linear.weight).abs()
    assert torch.all(error <= step / 2 * (1 + 1e-5) + 1e-30)
    assert torch.all(layer.scale > 0) and torch.equal(layer.bias, linear.bias.detach())
    x = torch.randn(5, columns)
    expected = nn.functional.linear(x, layer.weight, linear.bias)
    assert torch.equal(layer(x), expected)


def test_every_linear_layer_outside_the_field_embeddings_becomes_int8(trained):
    _, model, store = run.load_run(trained / "deepfm")
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    before = run.model_size(model)
    assert int8_dense(model) == len(linear) > 0
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    embeddings = [m for m in model.modules() if isinstance(m, FieldEmbedding)]
    assert not any(isinstance(m, Int8Linear) for e in embeddings for m in e.modules())
    assert run.model_size(model) == before  # the same entries, and the same table bytes
    batch = next(iter(BatchLoader(store, "test", batch_size=256)))
    assert model.eval()(batch).shape == (len(batch),)


# The cross layers that take their weight apart: D = 5 x 27 = 135 computes padded to 144
# (``padded_width``), and a low-rank W = U V^T is a product of two linear layers.
CROSS_PATHS = [
    ("dcnv2", {"embedding_dim": 27}),
    ("dcnv2", {"low_rank": 4}),
    ("gdcn_p", {"embedding_dim": 27}),
    ("gdcn_s", {"embedding_dim": 27}),
]


def _case_id(value: str | dict[str, int]) -> str:
    return value if isinstance(value, str) else ",".join(f"{k}={v}" for k, v in value.items())


@pytest.mark.parametrize(
    ("name", "settings"), [(name, {}) for name in sorted(MODELS)] + CROSS_PATHS, ids=_case_id
)
def test_a_model_with_int8_dense_layers_is_the_model_on_their_dequantised_weights(name, settings):
    torch.manual_seed(0)
    entry = MODELS[name]
    model = entry.model(tiny_schema(), entry.config(**settings)).eval()
    quantised = copy.deepcopy(model)
    int8_dense(quantised)
    layers = dict(quantised.named_modules())
    with torch.no_grad():  # the float model with every dequantised weight put in
        for name_, module in model.named_modules():
            if isinstance(module, nn.Linear) and isinstance(layers[name_], Int8Linear):
                module.weight.copy_(layers[name_].weight)
    batch = tiny_batch()
    assert torch.allclose(quantised(batch), model(batch), atol=1e-6)
    if hasattr(model, "cross_matrices"):  # what the interaction heatmap reads
        for float_, int8 in zip(model.cross_matrices(), quantised.cross_matrices(), strict=True):
            assert torch.allclose(int8, float_, atol=1e-6)


def test_a_bundle_with_int8_dense_layers_is_smaller_and_scores_what_it_stores(trained, tmp_path):
    tables = compress(trained / "deepfm", "int8", tmp_path / "tables")
    both = compress(trained / "deepfm", "int8", tmp_path / "both", dense="int8")
    assert both["dense"] == "int8" and tables["dense"] == "float32"
    assert both["bundle_bytes"] < tables["bundle_bytes"]
    assert both["embedding_bytes"] == tables["embedding_bytes"]
    manifest = json.loads((tmp_path / "both" / "manifest.json").read_text())
    assert manifest["models"][0]["storage"] == "compressed-int8"
    loaded = run.load_model(tmp_path / "both").module
    assert any(isinstance(m, Int8Linear) for m in loaded.modules())
    evaluated = run.evaluate(tmp_path / "both", data_dir=trained / "data")
    assert evaluated["auc"] == pytest.approx(both["test"]["auc"])
    assert abs(both["test"]["auc"] - tables["test"]["auc"]) < 0.01


def test_only_int8_is_offered_for_dense_layers(trained, tmp_path):
    with pytest.raises(SlimctrError, match="int8 only"):
        compress(trained / "deepfm", "int8", tmp_path / "x", dense="int4")
    assert not (tmp_path / "x").exists()


def test_an_int8_dense_bundle_exports_to_onnx_and_runtime_agrees(cli, trained, tmp_path):
    compress(trained / "deepfm", "int8", tmp_path / "bundle", dense="int8")
    result = cli("export", tmp_path / "bundle", "--format", "onnx", "--out", tmp_path / "onnx",
                 "--data", trained / "data", "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["check"]["max_abs_difference"] <= 1e-5
