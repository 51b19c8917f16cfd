"""Explanations of gated cross models: the formulas, the report folder, and the planted truth."""

from __future__ import annotations

import dataclasses
import html
import itertools
import re

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from slimctr import explain, report
from slimctr.data.datasets import locate
from slimctr.data.prepare import prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.errors import SlimctrError
from slimctr.explain import Explanation
from slimctr.models import MODELS
from slimctr.models.dcnv2 import DCNv2, DCNv2Config
from slimctr.models.gdcn import GCN, GDCNP, GCNConfig, GDCNConfig
from slimctr.runconfig import build_model, resolve_config
from slimctr.training import run
from tests.models.make_golden import tiny_batch, tiny_schema

WIDTHS = {"c0": 2, "n0": 1, "c1": 4, "c2": 3, "n1": 5}  # tiny_schema order; D = 15


def gcn(seed: int = 0, layers: int = 3) -> GCN:
    torch.manual_seed(seed)
    return GCN(tiny_schema(), GCNConfig(embedding_dim=WIDTHS, num_cross_layers=layers))


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    config = SyntheticConfig(
        rows=3_000,
        num_numeric=2,
        num_categorical=4,
        num_important=2,
        num_pairs=1,
        num_triples=0,
        seed=5,
    )
    write_synthetic(config, tmp / "s.parquet")
    located = locate("synthetic", [tmp / "s.parquet"])
    store, _ = prepare(located.sources, tmp / "data", located.options, attach=located.attach)
    return store


# -- interaction strengths (GDCN spec 5.1) -----------------------------------------------------


@pytest.mark.parametrize("layers", [1, 3])
def test_squared_block_norms_sum_to_the_squared_frobenius_norm(layers):
    """Spec 10 item 15, with unequal field widths."""
    model = gcn(layers=layers)
    strengths = explain.interaction_strengths(model)
    assert strengths.shape == (layers, 5, 5)
    for layer, matrix in enumerate(model.cross_matrices()):
        total = float(matrix.double().pow(2).sum())
        assert (strengths[layer] ** 2).sum() == pytest.approx(total, rel=1e-12)
        symmetric = explain.pair_strengths(strengths)[layer]
        upper = symmetric[np.triu_indices(5, k=1)]
        assert (upper**2).sum() + (np.diag(symmetric) ** 2).sum() == pytest.approx(total)


def test_a_block_is_rows_of_field_i_and_columns_of_field_j():
    model = gcn()
    matrix = model.cross_matrices()[0].double()
    # c1 occupies entries 3..6 (after c0: 2, n0: 1), c2 entries 7..9
    expected = float(matrix[3:7, 7:10].norm())
    raw = explain.interaction_strengths(model)
    assert raw[0, 2, 3] == pytest.approx(expected)
    assert raw[0, 3, 2] == pytest.approx(float(matrix[7:10, 3:7].norm()))
    scaled = explain.interaction_strengths(model, normalise=True)
    assert scaled[0, 2, 3] == pytest.approx(expected / np.sqrt(4 * 3))


@pytest.mark.parametrize("low_rank", [None, 3])
def test_dcnv2_cross_matrices_are_what_its_layers_compute(low_rank):
    torch.manual_seed(0)
    config = DCNv2Config(embedding_dim=WIDTHS, low_rank=low_rank, num_cross_layers=2)
    model = DCNv2(tiny_schema(), config).eval()
    x0 = model.embedding.flat(tiny_batch())
    for layer, matrix in zip(model.cross.layers, model.cross_matrices(), strict=True):
        bias = (layer.project[-1] if low_rank else layer.project).bias
        torch.nn.init.uniform_(bias)  # it starts at zero
        assert matrix.shape == (15, 15)
        expected = x0 * (x0 @ matrix.T + bias) + x0
        torch.testing.assert_close(layer(x0, x0), expected, rtol=1e-5, atol=1e-6)
    assert explain.supported(model) == (explain.HEATMAP,)
    assert explain.interaction_strengths(model).shape == (2, 5, 5)


# -- gates (spec 5.2, 5.3) ---------------------------------------------------------------------


def test_field_wise_gates_are_slice_means_and_bitwise_have_length_d():
    """Spec 10 item 16."""
    model = gcn()
    bitwise, fieldwise = explain.instance_gates(model, tiny_batch())
    assert bitwise.shape == (3, 8, 15) and fieldwise.shape == (3, 8, 5)
    assert ((fieldwise > 0) & (fieldwise < 1)).all()
    np.testing.assert_allclose(fieldwise[:, :, 2], bitwise[:, :, 3:7].mean(axis=-1))
    reference = torch.stack(model.gates(tiny_batch())).detach().double().numpy()
    np.testing.assert_allclose(bitwise, reference)


def test_gate_importance_is_the_mean_of_per_instance_field_wise_gates(small_store):
    """Spec 10 item 17: batching and sampling do not change the mean."""
    torch.manual_seed(0)
    model = GDCNP(small_store.schema, GDCNConfig(embedding_dim=4, hidden_dims=(8,)))
    importance = explain.gate_importance(
        model, small_store, instances=250, split="valid", seed=3, batch_size=37
    )
    rows = explain.sample_rows(small_store, "valid", 250, seed=3)
    assert len(set(rows.tolist())) == 250
    _, fieldwise = explain.instance_gates(model, explain.gather(small_store, "valid", rows))
    np.testing.assert_allclose(importance, fieldwise.mean(axis=1), rtol=1e-6)  # float32 forward
    assert importance.shape == (3, small_store.schema.num_fields)
    everything = explain.gate_importance(model, small_store, instances=10**6, split="valid")
    assert everything.shape == importance.shape  # capped at the split's rows


def test_sampling_is_seeded_and_gather_reads_the_split(small_store):
    first = explain.sample_rows(small_store, "test", 50, seed=1)
    np.testing.assert_array_equal(first, explain.sample_rows(small_store, "test", 50, seed=1))
    assert not np.array_equal(first, explain.sample_rows(small_store, "test", 50, seed=2))
    batch = explain.gather(small_store, "test", first[:4])
    start = small_store.split("test").start
    name = small_store.schema.categorical[0].name
    expected = np.asarray(small_store.column(name)[start + first[:4]])
    np.testing.assert_array_equal(batch.categorical[:, 0].numpy(), expected)
    with pytest.raises(SlimctrError, match="instances must be >= 1"):
        explain.sample_rows(small_store, "test", 0, seed=0)


def test_pearson_is_none_without_variance():
    x, y = np.array([1.0, 2.0, 4.0]), np.array([2.0, 1.0, 7.0])
    assert explain.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert explain.pearson(x, np.full(3, 5.0)) is None
    found = explain.width_correlations(np.array([3, 3, 3]), np.array([[0.1, 0.5, 0.9]]))
    assert found == {"layer 1": None, "layer mean": None}


@pytest.mark.parametrize("name", ["lr", "deepfm", "dcn"])
def test_models_without_cross_matrices_say_what_is_supported(name, small_store):
    torch.manual_seed(0)
    entry = MODELS[name]
    model = entry.model(small_store.schema, entry.config())
    with pytest.raises(SlimctrError) as error:
        explain.explain_model(model, small_store, model_name=name)
    message = str(error.value)
    assert "\n" not in message and f"{name!r} has nothing to explain" in message
    assert "dcnv2" in message and "gcn" in message and "gdcn_p" in message
    assert "--method permutation or captum" in message  # what does explain any model


def test_dcnv2_explains_the_heatmap_only(small_store):
    torch.manual_seed(0)
    model = DCNv2(small_store.schema, DCNv2Config(embedding_dim=4, hidden_dims=(8,)))
    with pytest.raises(
        SlimctrError, match="'dcnv2' supports the interaction heatmap only, not the gates"
    ):
        explain.gate_importance(model, small_store, instances=10)
    found = explain.explain_model(model, small_store, model_name="dcnv2", instances=10)
    assert found.importance is None and found.example_bitwise is None
    assert "no gates" in found.summary
    assert set(found.to_frames()) == {"fields", "interactions", "pairs"}
    side = explain.explain_model(
        model, small_store, model_name="dcnv2", instances=50, methods=("gates", "permutation")
    )
    assert side.rankings is not None
    assert set(side.rankings.fields) == {"permutation"}  # no gates to rank fields by
    assert set(side.rankings.pairs) == {"heatmap", "permutation"}
    assert "no gates" in side.rankings.skipped["gates"]
    assert "Not computed: gates" in side.summary
    frames = side.to_frames()
    assert {"methods", "method_pairs", "agreement"} <= set(frames)
    assert frames["agreement"].height == 1  # the two pair sources; one field method


# -- the report folder ---------------------------------------------------------------------------


def fake_explanation(
    num_fields: int, name: str = "gcn", dims: tuple[int, ...] | None = None
) -> Explanation:
    """Random numbers in the shapes of a 3-layer model with Criteo-like field names."""
    rng = np.random.default_rng(0)
    names = tuple(f"I{k + 1}" for k in range(13)) + tuple(f"C{k + 1}" for k in range(26))
    names = names[:num_fields]
    dims = dims or tuple(int(d) for d in rng.integers(2, 9, num_fields))
    importance = rng.uniform(0.3, 0.8, (3, num_fields))
    widths = rng.integers(1, 16, num_fields)
    return Explanation(
        model_name=name,
        run_dir="runs/<b>x</b>",
        field_names=names,
        field_dims=dims,
        interactions=rng.uniform(0, 2, (3, num_fields, num_fields)),
        importance=importance,
        num_instances=1000,
        examples=(4, 17),
        example_bitwise=rng.uniform(0, 1, (3, 2, sum(dims))),
        example_fieldwise=rng.uniform(0, 1, (3, 2, num_fields)),
        variance_ratio=0.95,
        fdo_widths=widths,
        correlations=explain.width_correlations(widths, importance),
    )


def test_report_page_is_self_contained_and_escaped(tmp_path):
    e = fake_explanation(7, name="<script>alert(1)</script>")
    page = report.write_report(e, tmp_path).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x" in page
    images = re.findall(r'src="([^"]+)"', page)
    assert len(images) == 3 + 1 + 2 + 1 and all(
        i.startswith("data:image/png;base64,") for i in images
    )
    assert "http" not in page.replace("http-equiv", "")
    files = {p.name for p in tmp_path.iterdir()}
    expected = {f"interactions_layer{n}.png" for n in (1, 2, 3)} | {
        "importance.png",
        "instance_1.png",
        "instance_2.png",
        "fdo_widths.png",
        "report.html",
        "summary.txt",
        "fields.csv",
        "interactions.csv",
        "pairs.csv",
        "examples.csv",
        "example_bits.csv",
        "correlations.csv",
    }
    assert files == expected


def _overlaps(labels) -> int:
    boxes = [label.get_window_extent() for label in labels if label.get_text()]
    return sum(a.overlaps(b) for a, b in itertools.pairwise(boxes))


CRITEO_95 = (5, 13, 7, 4, 13, 9, 8, 5, 9, 4, 3, 4, 4, 12, 12, 4, 8, 10, 6, 14, 11, 2, 15, 14, 2)
CRITEO_95 += (13, 4, 13, 5, 5, 12, 11, 3, 5, 5, 7, 11, 5, 10)  # GDCN spec 4.7, D = 307


def test_criteo_sized_figures_keep_39_field_names_apart():
    e = fake_explanation(39, dims=CRITEO_95)
    for figure in (
        report.interaction_figure(e, 0),
        report.importance_figure(e),
        report.instance_figure(e, 0),
    ):
        FigureCanvasAgg(figure).draw()
        for axes in figure.axes:
            if axes.get_label() == "<colorbar>":
                continue
            assert _overlaps(axes.get_xticklabels()) == 0
            assert _overlaps(axes.get_yticklabels()) == 0


def test_frames_have_field_names_and_one_row_per_entry():
    e = fake_explanation(6)
    frames = e.to_frames()
    assert frames["fields"].columns == [
        "field",
        "width",
        "fdo_width",
        "importance_layer_1",
        "importance_layer_2",
        "importance_layer_3",
        "importance_mean",
    ]
    assert frames["interactions"].height == 3 * 6 * 6
    assert frames["pairs"].height == 3 * 15
    assert frames["example_bits"].height == 3 * 2 * sum(e.field_dims)
    assert frames["correlations"]["layer"].to_list() == [
        "layer 1",
        "layer 2",
        "layer 3",
        "layer mean",
    ]


# -- the planted truth ---------------------------------------------------------------------------

# Cardinalities stay small next to the rows (>= 480 training rows per value of the largest field),
# so a brief run learns the planted model rather than memorising ids. Weight decay matters: it
# pulls the gate weights of fields the model does not use back to zero, i.e. their gates to
# sigmoid(0) = 0.5; without it those gates drift upwards as training goes on, most for the
# largest fields (see the experiment in the docstrings below).
PLANTED = SyntheticConfig(
    rows=60_000,
    num_numeric=3,
    num_categorical=9,
    cardinalities=(4, 6, 9, 13, 20, 30, 45, 70, 100),
    num_important=4,
    num_pairs=3,
    num_triples=0,
    num_important_numeric=1,
    seed=0,
)
BRIEF_TRAINING = [
    # the protocol the experiments below were run under; with the auto preset (embedding L2
    # 0.01, BARS's schedule) the third planted pair ranked 14th of 66 (seed 0): issue 21's
    "train.preset=paper",
    "model.embedding_dim=8",
    "train.batch_size=256",
    "train.epochs=6",
    "train.weight_decay=1e-4",
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    truth = write_synthetic(PLANTED, tmp / "s.parquet")
    located = locate("synthetic", [tmp / "s.parquet"])
    store, _ = prepare(located.sources, tmp / "data", located.options, attach=located.attach)
    config = resolve_config("gcn", overrides=BRIEF_TRAINING, threads=1, seed=0)
    run.train(store.path, tmp / "run", config)
    explanation = report.explain_run(tmp / "run", tmp / "report", instances=4_000)
    return tmp, truth, explanation


def field_scores(e: Explanation, truth) -> tuple[float, float, str]:
    """Recall at k = number planted among the k fields of highest importance (mean gate over
    layers), the AUC of importance for planted against unplanted fields, and the ranking."""
    mean = e.importance.mean(axis=0)
    planted = np.array([name in truth.important_fields for name in e.field_names])
    k = int(planted.sum())
    recall = planted[np.argsort(-mean)[:k]].mean()
    above = mean[planted][:, None] - mean[~planted][None, :]
    auc = ((above > 0).sum() + 0.5 * (above == 0).sum()) / above.size
    shown = ", ".join(f"{e.field_names[i]} {mean[i]:.3f}" for i in np.argsort(-mean))
    return float(recall), float(auc), f"planted {truth.important_fields}; importance {shown}"


def pair_ranks(e: Explanation, truth) -> list[int]:
    """Ranks (1 = strongest) of the planted pairs among all pairs, by layer 1's pair strength."""
    symmetric = explain.pair_strengths(e.interactions)[0]
    upper = np.triu_indices(len(e.field_names), k=1)
    order = np.argsort(-symmetric[upper])
    ranked = [frozenset((e.field_names[upper[0][o]], e.field_names[upper[1][o]])) for o in order]
    return sorted(ranked.index(frozenset(pair)) + 1 for pair in truth.pairs)


def pairs_found(ranks: list[int]) -> bool:
    """Recall at k (k = planted pairs) >= 2/3, and no planted pair below rank 2k."""
    k = len(ranks)
    return sum(rank <= k for rank in ranks) / k >= 2 / 3 and max(ranks) <= 2 * k


def test_gate_importance_puts_the_planted_fields_on_top(planted):
    """Recall at k >= 0.8 (k = 5 planted fields: 4 categorical, 1 numeric; 12 fields) and AUC of
    importance, planted against unplanted, >= 0.9. By chance: 4.5% and 0.9% of rankings.

    Experiment (this configuration, seeds 0-4): recall 1, 1, 0.8, 1, 1; AUC 1, 1, 0.97, 1, 1.
    The 4 categorical fields (first-order terms, and in the planted pairs) always come first;
    the numeric one, the weakest planted effect (first order only, std 0.3), 5th, or 6th behind
    the largest unplanted field (seed 2)."""
    _, truth, e = planted
    recall, auc, shown = field_scores(e, truth)
    assert recall >= 0.8 and auc >= 0.9, shown


def test_interaction_heatmap_puts_the_planted_pairs_on_top(planted):
    """Pairs ranked by sqrt(S_ij^2 + S_ji^2) of layer 1's block norms (66 pairs of 12 fields):
    ``pairs_found``. Experiment (seeds 0-4, with or without weight decay): ranks 1, 2 and 3,
    the weakest planted pair 1.1 to 1.6 times the strongest other one."""
    _, truth, e = planted
    ranks = pair_ranks(e, truth)
    assert pairs_found(ranks), f"planted pairs ranked {ranks} of 66"


def test_the_criteria_fail_for_the_same_model_before_training(planted):
    """A control: the explanations of the run's initial weights (same seed) do not pass."""
    tmp, truth, _ = planted
    config, _, store = run.load_run(tmp / "run")
    untrained = build_model(config, store.schema).eval()
    e = explain.explain_model(untrained, store, model_name="gcn", instances=4_000)
    recall, auc, shown = field_scores(e, truth)
    assert not (recall >= 0.8 and auc >= 0.9), shown
    assert not pairs_found(pair_ranks(e, truth))


def test_explain_run_writes_one_complete_folder(planted):
    tmp, _, e = planted
    files = {p.name for p in (tmp / "report").iterdir()}
    assert {"report.html", "summary.txt", "fields.csv", "importance.png", "fdo_widths.png"} <= files
    assert not [p for p in tmp.iterdir() if p.name.startswith(".report")]  # no staging left
    page = (tmp / "report" / "report.html").read_text()
    assert "4,000 instances" in page and html.escape(str(tmp / "run")) in page
    assert e.fdo_widths is not None and set(e.correlations) == {
        "layer 1",
        "layer 2",
        "layer 3",
        "layer mean",
    }
    assert (tmp / "report" / "summary.txt").read_text().strip() == e.summary


def test_explain_run_refuses_a_used_folder_and_an_unfinished_run(planted, tmp_path):
    tmp, _, _ = planted
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("keep me")
    with pytest.raises(SlimctrError, match="not empty"):
        report.explain_run(tmp / "run", tmp_path / "used")
    assert (tmp_path / "used" / "x").read_text() == "keep me"
    with pytest.raises(SlimctrError, match="not a slimctr model bundle or finished run"):
        report.explain_run(tmp_path, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_summary_warns_when_the_gates_barely_differ():
    spread = fake_explanation(6)
    assert "Caution" not in spread.summary
    flat = dataclasses.replace(spread, importance=0.5 + 1e-4 * spread.importance)
    assert "Caution: the mean gates differ by less than" in flat.summary


def test_nearly_flat_gates_get_a_stretched_colour_scale_and_say_so():
    spread = fake_explanation(6)
    flat = dataclasses.replace(spread, importance=0.5 + 1e-3 * (spread.importance - 0.5))
    wide, narrow = report.importance_figure(spread), report.importance_figure(flat)
    assert "nearly flat" not in wide.axes[0].get_title()
    assert "nearly flat" in narrow.axes[0].get_title()
    reach = np.abs(flat.importance - 0.5).max()  # the layer rows reach furthest from 0.5
    assert narrow.axes[0].images[0].norm.vmax == pytest.approx(0.5 + reach)
    assert wide.axes[0].images[0].norm.vmax >= 0.55  # never narrower than +-0.05 otherwise


def test_gate_scores_mean_is_the_gate_importance_and_term_is_what_each_layer_adds():
    model, batch = gcn().eval(), tiny_batch()
    scores = explain.gate_scores(model, batch)
    _, fieldwise = explain.instance_gates(model, batch)
    np.testing.assert_allclose(scores["mean"], fieldwise.mean(axis=1))
    np.testing.assert_allclose(scores["spread"], fieldwise.std(axis=1))
    assert set(scores) == set(explain.GATE_SCORES)
    with torch.no_grad():  # c_{l+1} - c_l is the gated term, layer by layer
        x0 = model.embedding.flat(batch)
        x, terms = x0, model.gated_terms(batch)
        for layer, term in zip(model.cross.layers, terms, strict=True):
            following = layer(x0, x)
            torch.testing.assert_close(following - x, term, rtol=0, atol=1e-6)
            x = following
    dims = np.array(model.field_dims)
    rms = np.sqrt(explain.field_means(torch.stack(terms).double().numpy() ** 2, tuple(dims)))
    np.testing.assert_allclose(scores["term"], rms.mean(axis=1))
    assert explain.over_layers(scores["term"], "first").shape == (len(dims),)
    np.testing.assert_allclose(explain.over_layers(scores["term"], "max"), scores["term"].max(0))
    with pytest.raises(SlimctrError, match="unknown layer aggregate"):
        explain.over_layers(scores["term"], "median")


def test_every_method_recovers_the_planted_fields_and_pairs(planted):
    """issue 21's suite in miniature: gates, captum and permutation each put the planted fields
    on top (precision@5 >= 0.8, as the gate test above); the heatmap and the permutation pair
    statistic find the planted pairs (``pairs_found``); the methods agree (rho > 0.5)."""
    pytest.importorskip("captum", reason="the captum method needs slimctr[explain]")
    from slimctr.attribution import precision_at_k, ranking, ranks
    from slimctr.compare import compare

    tmp, truth, _ = planted
    _, model, store = run.load_run(tmp / "run")
    batch = explain.gather(store, "test", np.arange(4_000))
    found = compare(model, batch, store.schema)
    assert set(found.fields) == {"gates", "captum", "permutation"}
    assert set(found.pairs) == {"heatmap", "permutation"}
    for method, scores in found.fields.items():
        ranked = ranking(scores)
        shown = f"{method}: {ranked} against {truth.important_fields}"
        assert precision_at_k(ranked, truth.important_fields) >= 0.8, shown
    for method, scores in found.pairs.items():
        assert pairs_found(sorted(ranks(ranking(scores), truth.pairs))), method
    rhos = [rho for what, _, _, rho in found.agreement() if what == "fields"]
    assert len(rhos) == 3 and all(rho is not None and rho > 0.5 for rho in rhos), rhos
    assert set(found.seconds) == {"gates", "captum", "permutation"}
