"""GCN, GDCN-S and GDCN-P: structure, parameter counts (GDCN spec 2.7, 4.7), explanations."""

from __future__ import annotations

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.models.gdcn import GCN, GDCNP, GDCNS, GCNConfig, GDCNConfig
from slimctr.nn.cross import GatedCrossLayer
from slimctr.nn.mlp import Dropout
from slimctr.schema import FieldSpec, Schema
from tests.models.formulas import count_params, mlp_params
from tests.models.make_golden import VOCAB_SIZES, tiny_batch, tiny_schema

NUM_NUMERIC = 2

# Criteo field sizes (min count 10, one OOV row per field; I1..I13, C1..C26), GDCN spec 4.7.
CRITEO_SIZES = (
    *(49, 101, 126, 45, 223, 118, 84, 76, 95, 9, 30, 40, 75),
    *(1458, 555, 193949, 138801, 306, 19, 11970, 634, 4, 42646, 5178, 192773, 3175, 27),
    *(11422, 181075, 11, 4654, 2032, 5, 189657, 18, 16, 59697, 86, 45571),
)
# The reference code's 95% FDO widths, same field order (spec 4.7).
CRITEO_WIDTHS_95 = (
    *(5, 13, 7, 4, 13, 9, 8, 5, 9, 4, 3, 4, 4),
    *(12, 12, 4, 8, 10, 6, 14, 11, 2, 15, 14, 2, 13, 4),
    *(13, 5, 5, 12, 11, 3, 5, 5, 7, 11, 5, 10),
)


def _criteo_schema() -> Schema:
    """All 39 Criteo fields as categorical, with the table sizes n_f of spec 4.7 as vocab sizes."""
    fields = tuple(
        FieldSpec(name=f"f{i}", kind="categorical", vocab_size=n)
        for i, n in enumerate(CRITEO_SIZES)
    )
    return Schema(label="y", fields=fields)


def test_criteo_field_sizes_are_the_specs() -> None:
    assert len(CRITEO_SIZES) == len(CRITEO_WIDTHS_95) == 39
    assert sum(CRITEO_SIZES) == 1_086_810 and sum(CRITEO_WIDTHS_95) == 307


@pytest.mark.parametrize(
    ("widths", "expected"),
    [(16, 19_727_713), (8, 9_279_793), (CRITEO_WIDTHS_95, 6_996_429)],
    ids=["all-16", "all-8", "fdo-95"],
)
def test_gcn3_parameter_count_on_criteo_is_the_specs(
    widths: int | tuple[int, ...], expected: int
) -> None:
    """Spec 10.7: GCN-3 = sum_f d_f n_f + 3 (2 D^2 + D) + D + 1, to the last parameter."""
    schema = _criteo_schema()
    names = [f.name for f in schema.fields]
    embedding_dim = widths if isinstance(widths, int) else dict(zip(names, widths, strict=True))
    model = GCN(schema, GCNConfig(embedding_dim=embedding_dim))
    assert count_params(model) == expected


@pytest.mark.parametrize("name", ["gdcn_s", "gdcn_p"])
def test_gdcn_parameter_count_matches_the_formula(name: str) -> None:
    """Spec 2.7 on the tiny schema, D = 16 * 5 = 80."""
    d, layers, hidden = 16, 3, (400, 400, 400)
    model = MODELS[name].model(tiny_schema(), GDCNConfig())
    width = d * (len(VOCAB_SIZES) + NUM_NUMERIC)
    embeddings = d * sum(VOCAB_SIZES) + d * NUM_NUMERIC
    output = (width + hidden[-1] + 1) if name == "gdcn_p" else hidden[-1] + 1
    expected = embeddings + layers * (2 * width * width + width) + mlp_params(width, hidden)
    assert count_params(model) == expected + output


def test_output_layer_widths() -> None:
    """Spec 10.8: GDCN-P's output takes D + 400 inputs, GDCN-S's 400, GCN's D."""
    schema = tiny_schema()
    width = 80
    assert GCN(schema, GCNConfig()).output.in_features == width
    assert GDCNS(schema, GDCNConfig()).output.in_features == 400
    assert GDCNP(schema, GDCNConfig()).output.in_features == width + 400


def test_variants_compute_what_they_say() -> None:
    batch = tiny_batch()
    for model_class in (GCN, GDCNS, GDCNP):
        torch.manual_seed(0)
        config = GCNConfig() if model_class is GCN else GDCNConfig()
        model = model_class(tiny_schema(), config).eval()  # type: ignore[arg-type]
        x0 = model.embedding.flat(batch)
        x = x0
        for layer in model.cross.layers:
            w_c, w_g, b = layer.cross.weight, layer.gate.weight, layer.bias
            x = x0 * (x @ w_c.T + b) * torch.sigmoid(x @ w_g.T) + x  # spec 2.2
        if isinstance(model, GDCNP):
            x = torch.cat([x, model.mlp(x0)], dim=1)
        elif isinstance(model, GDCNS):
            x = model.mlp(x)
        logits = model(batch)
        assert logits.shape == (8,)
        torch.testing.assert_close(logits, model.output(x).squeeze(1))


@pytest.mark.parametrize("name", ["gcn", "gdcn_s", "gdcn_p"])
def test_gates_and_cross_matrices_for_explanations(name: str) -> None:
    """Spec 10.16: one (B, D) gate tensor per layer, values in (0, 1); W_c per layer, (D, D)."""
    torch.manual_seed(0)
    model = MODELS[name].model(tiny_schema(), MODELS[name].config(num_cross_layers=2))
    gates = model.gates(tiny_batch())
    assert [g.shape for g in gates] == [(8, 80)] * 2
    assert all(((g > 0) & (g < 1)).all() for g in gates)
    matrices = model.cross_matrices()
    assert [m.shape for m in matrices] == [(80, 80)] * 2
    assert torch.equal(matrices[1], model.cross.layers[1].cross.weight)


def test_per_field_widths() -> None:
    """Spec 10.6: D = sum_f d_f; the slices of c0 have lengths d_f in field order."""
    widths = {"c0": 2, "n0": 1, "c1": 4, "c2": 3, "n1": 5}
    model = GDCNP(tiny_schema(), GDCNConfig(embedding_dim=widths, hidden_dims=(8,)))
    assert model.field_dims == (2, 1, 4, 3, 5)
    assert model.embedding.output_dim == 15
    layer = model.cross.layers[0]
    assert isinstance(layer, GatedCrossLayer) and layer.cross.weight.shape == (15, 15)
    assert model.output.in_features == 15 + 8
    assert model(tiny_batch()).shape == (8,)
    assert [g.shape for g in model.gates(tiny_batch())] == [(8, 15)] * 3


def test_defaults_are_the_papers() -> None:
    """Spec 3: width 16, 3 cross layers, 400-400-400 with dropout 0.5 and BatchNorm."""
    config = GDCNConfig()
    assert (config.embedding_dim, config.num_cross_layers) == (16, 3)
    assert (config.hidden_dims, config.dropout, config.batch_norm) == ((400, 400, 400), 0.5, True)
    assert config.embedding_init_std is None and GCNConfig().embedding_init_std is None
    assert sum(isinstance(m, Dropout) for m in GDCNS(tiny_schema(), config).modules()) == 3


def test_xavier_embeddings_and_gdcn_s_output() -> None:
    """Spec 2.6: tables U(+-sqrt(6 / (n_f + d_f))) per field by default; GDCN-S output."""
    torch.manual_seed(0)
    model = GDCNS(tiny_schema(), GDCNConfig())
    for spec in tiny_schema().categorical:
        table = model.embedding.table(spec.name)
        assert table.abs().max() <= (6 / (spec.vocab_size + 16)) ** 0.5
    # xavier-uniform, as the reference DNN's own output layer, not PyTorch's U(+-1/sqrt(400))
    assert 1 / 400**0.5 < model.output.weight.abs().max() <= (6 / (400 + 1)) ** 0.5


def test_gcn_config_has_no_mlp_keys() -> None:
    with pytest.raises(TypeError):
        GCNConfig(hidden_dims=(400,))  # type: ignore[call-arg]
    with pytest.raises(SlimctrError, match=r"^model\.hidden_dims "):
        GDCNConfig(hidden_dims=())
