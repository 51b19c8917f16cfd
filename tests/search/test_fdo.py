"""FDO: the PCA width rule, its plans, and retraining a plan (GDCN spec 4, 10.9-10.14)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.pca import pca_width
from slimctr.runconfig import RunConfig, resolve_config
from slimctr.rundir import RunDir, RunState
from slimctr.schema import FieldSpec, Schema
from slimctr.search.fdo import FDO, FDOConfig, fdo, fdo_plan, formula_plan, uniform_plan
from slimctr.search.plan import Plan
from slimctr.search.runner import Start, config_for_plan, implied_params, train_plan
from slimctr.training import run
from slimctr.training.callbacks import ProgressBar
from tests.models.test_gdcn import CRITEO_SIZES, CRITEO_WIDTHS_95

RATIOS = (0.05, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999999, 1.0)


def _table(rows: int, width: int, seed: int) -> np.ndarray:
    """Random rows with decaying column scales, so that the ratios pick different widths."""
    rng = np.random.default_rng(seed)
    scales = 0.7 ** np.arange(width)
    return rng.normal(size=(rows, width)) @ rng.normal(size=(width, width)) * scales + 3.0


def _schema(*sizes: int, numeric: int = 0) -> Schema:
    categorical = [
        FieldSpec(name=f"C{i}", kind="categorical", vocab_size=n) for i, n in enumerate(sizes)
    ]
    numbers = [FieldSpec(name=f"I{i}", kind="numeric") for i in range(numeric)]
    return Schema(label="label", fields=(*numbers, *categorical))


# -- the width rule --------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "width"), [(200, 16), (40, 16), (5, 16), (300, 6)])
def test_width_matches_sklearn_pca(rows, width):
    """Spec 10.9: d_f = PCA(n_components=r).n_components_ (centred, variance, strictly >)."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    for seed in range(3):
        table = _table(rows, width, seed)
        for ratio in RATIOS[:-2]:
            fitted = decomposition.PCA(n_components=ratio, svd_solver="full").fit(table)
            assert pca_width(table, ratio) == fitted.n_components_, (seed, ratio)
            assert pca_width(torch.from_numpy(table).float(), ratio) == fitted.n_components_


@pytest.mark.parametrize(("rows", "width"), [(500, 16), (3, 16), (1, 8), (50, 4)])
def test_width_is_non_decreasing_in_the_ratio_and_capped(rows, width):
    """Spec 10.10: d_f(r) never shrinks as r grows, and 1 <= d_f <= min(n_f, d)."""
    table = _table(rows, width, seed=rows)
    widths = [pca_width(table, ratio) for ratio in RATIOS]
    assert widths == sorted(widths)
    assert all(1 <= w <= min(rows, width) for w in widths)
    assert widths[-1] == (min(rows, width) if rows > 1 else 1)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_rank_k_table_needs_at_most_k(rank):
    """Spec 10.11: exact rank k after centring gives <= k for every r < 1, k as r -> 1."""
    rng = np.random.default_rng(rank)
    table = rng.normal(size=(300, rank)) @ rng.normal(size=(rank, 16)) + rng.normal(size=16) * 5
    assert all(pca_width(table, r) <= rank for r in RATIOS[:-1])
    assert pca_width(table, 0.999999) == rank
    assert pca_width(table, 1.0) == 16  # every component, as the cap allows


def test_width_of_a_table_without_variance_is_one():
    assert pca_width(np.ones((1, 16)), 0.9) == 1
    assert pca_width(np.full((50, 8), 0.1), 1.0) == 1
    assert pca_width(np.zeros((4, 8)), 0.5) == 1


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, math.nan, True, "0.9"])
def test_ratio_outside_zero_one_is_an_error(ratio):
    with pytest.raises(SlimctrError, match=r"variance_ratio must be in \(0, 1\], got"):
        pca_width(np.eye(3), ratio)


def test_nan_table_is_an_error():
    table = np.eye(3)
    table[1, 1] = np.nan
    with pytest.raises(SlimctrError, match="NaN"):
        pca_width(table, 0.9)


# -- plans -----------------------------------------------------------------------------------


def test_formula_and_uniform_plans():
    schema = _schema(16, 81, 2, numeric=1)  # n_f: I0 1, C0 16, C1 81, C2 2
    plan = formula_plan(schema)
    assert plan.widths == {"I0": 6, "C0": 12, "C1": 18, "C2": math.ceil(6 * 2**0.25)}
    assert plan.field_sizes == {"I0": 1, "C0": 16, "C1": 81, "C2": 2}
    assert formula_plan(schema, 1.0, rounding="floor").widths == {
        "I0": 1,
        "C0": 2,
        "C1": 3,
        "C2": 1,
    }
    uniform = uniform_plan(schema, 8)
    assert set(uniform.widths.values()) == {8} and uniform.d_bar == uniform.k_bar == 8
    assert uniform.embedding_params == 8 * 100
    assert (uniform.method, uniform.settings, uniform.source_run) == ("uniform", {"width": 8}, None)
    with pytest.raises(SlimctrError, match="uniform width"):
        uniform_plan(schema, 0)
    with pytest.raises(SlimctrError, match="multiplier"):
        formula_plan(schema, -1.0)


def test_criteo_plans_give_the_specs_numbers():
    """Spec 4.5 and 4.7: D̄, K̄, embedding and GCN-3 parameter counts on Criteo's field sizes."""
    schema = _schema(*CRITEO_SIZES)
    gcn = resolve_config("gcn")
    reference = formula_plan(schema, 1.0, rounding="floor")
    assert sum(reference.widths.values()) == 255 and round(reference.d_bar, 2) == 18.66
    assert implied_params(gcn, schema, reference.widths) == 20_673_636
    widths = dict(zip(reference.widths, CRITEO_WIDTHS_95, strict=True))
    plan = Plan(method="fdo", widths=widths, field_sizes=reference.field_sizes)
    assert plan.embedding_params == 6_429_706 and round(plan.d_bar, 3) == 5.916
    assert round(plan.k_bar, 2) == 7.87
    assert implied_params(gcn, schema, widths) == 6_996_429
    assert implied_params(gcn, schema, uniform_plan(schema, 8).widths) == 9_279_793


def test_gcn_parameter_formula():
    """GCN params = Σ d_f n_f + L (2 D² + D) + D + 1 (spec 2.7), numeric fields as n_f = 1."""
    schema = _schema(7, 30, 4, numeric=2)
    widths = {"I0": 1, "I1": 3, "C0": 2, "C1": 5, "C2": 4}
    config = resolve_config("gcn", overrides=["model.num_cross_layers=2"])
    plan = Plan(
        method="formula", widths=widths, field_sizes={"I0": 1, "I1": 1, "C0": 7, "C1": 30, "C2": 4}
    )
    width = sum(widths.values())
    assert plan.embedding_params == 1 + 3 + 2 * 7 + 5 * 30 + 4 * 4
    expected = plan.embedding_params + 2 * (2 * width**2 + width) + width + 1
    state = torch.random.get_rng_state()
    assert implied_params(config, schema, widths) == expected
    assert torch.equal(torch.random.get_rng_state(), state)  # counting draws nothing


def test_plan_round_trip_and_strict_reading(tmp_path):
    schema = _schema(5, 9, numeric=1)
    plan = dataclasses.replace(formula_plan(schema), model_params=1234)
    plan.save(tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["d_bar"] == plan.d_bar and data["embedding_params"] == plan.embedding_params
    assert Plan.load(tmp_path / "p.json").same_as(plan)
    assert Plan.from_dict({k: v for k, v in data.items() if k != "k_bar"}).same_as(plan)
    with pytest.raises(SlimctrError, match="unknown config key 'widht'"):
        Plan.from_dict({**data, "widht": 3})
    with pytest.raises(SlimctrError, match="missing config key 'field_sizes'"):
        Plan.from_dict({k: v for k, v in data.items() if k != "field_sizes"})
    with pytest.raises(SlimctrError, match="d_bar 99 disagrees"):
        Plan.from_dict({**data, "d_bar": 99})
    with pytest.raises(SlimctrError, match="missing C1; unknown C7"):
        Plan.from_dict({**data, "widths": {"I0": 1, "C0": 2, "C7": 3}})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "not found"), ("{", "not valid JSON"), ("[1]", "must be a JSON object")],
)
def test_loading_a_bad_plan_is_a_one_line_error(tmp_path, content, fragment):
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SlimctrError, match=fragment) as caught:
        Plan.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_check_schema_names_missing_and_unknown_fields():
    plan = uniform_plan(_schema(5, 9, 3), 4)  # C0, C1, C2
    plan.check_schema(_schema(6, 2, 3))  # sizes may differ, names may not
    with pytest.raises(SlimctrError, match="missing I0; unknown C2"):
        plan.check_schema(_schema(5, 9, numeric=1))


def test_pca_plan_leaves_the_pad_row_out_and_gives_numeric_fields_width_one():
    schema = _schema(40, 3, numeric=1)
    model = MODELS["gcn"].model(schema, MODELS["gcn"].config(embedding_dim=8))
    with torch.no_grad():
        table = model.embedding.table("C0")  # rows 1.. on one line, PAD row 0 far off it
        table[1:] = torch.randn(39, 1) * torch.randn(1, 8)
        table[0] = 100 * torch.randn(8)
    plan = fdo_plan(model, schema, 0.99)
    assert plan.widths["C0"] == 1 and plan.widths["I0"] == 1 and plan.widths["C1"] <= 2
    assert plan.source_widths == {"I0": 8, "C0": 8, "C1": 8} and plan.source_run is None
    assert plan.field_sizes == {"I0": 1, "C0": 40, "C1": 3} and plan.model_params is None
    assert (plan.method, plan.settings) == ("fdo", {"variance_ratio": 0.99})


def test_a_pruned_table_is_read_by_its_kept_ids_and_a_field_that_keeps_none_gets_width_one():
    schema = _schema(40, 3, 6).with_kept_rows({"C0": 4, "C1": 1, "C2": 1})
    model = MODELS["gcn"].model(schema, MODELS["gcn"].config(embedding_dim=8))
    model.embedding.set_kept("C0", [3, 6, 9, 12])  # no PAD: all 4 rows are trained
    model.embedding.set_kept("C1", [0])  # only PAD, which no input reaches
    model.embedding.set_kept("C2", [5])
    with torch.no_grad():
        table = model.embedding.table("C0")
        table.zero_()
        table[0, 0] = 5.0  # off the line of the other three rows
        table[1:, 1] = torch.tensor([1.0, 2.0, 3.0])  # the first direction explains 93%
    plan = fdo_plan(model, schema, 0.99)
    assert plan.widths["C0"] == 2  # leaving out row 0 as if it were PAD's would give 1
    assert plan.widths["C1"] == 1 and plan.widths["C2"] == 1


def test_models_without_field_tables_are_refused():
    schema = _schema(5, 9)
    lr = resolve_config("lr")
    with pytest.raises(SlimctrError, match="LR has no per-field embedding tables"):
        fdo_plan(MODELS["lr"].model(schema, lr.model), schema, 0.9)
    with pytest.raises(SlimctrError, match="'lr' has no embedding_dim"):
        config_for_plan(lr, uniform_plan(schema, 4).widths)


def test_config_for_plan_sets_widths_and_alignment():
    schema = _schema(5, 9)
    unequal = {"C0": 2, "C1": 5}
    gcn = config_for_plan(resolve_config("gcn"), unequal)
    assert gcn.model.embedding_dim == unequal
    assert config_for_plan(gcn, uniform_plan(schema, 3).widths).model.embedding_dim == 3

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Aligned:
        embedding_dim: int | dict[str, int] = 16
        embedding_align_dim: int | None = None

    aligned = RunConfig(model_name="aligned", model=Aligned())
    assert config_for_plan(aligned, unequal).model.embedding_align_dim == 16
    source = dataclasses.replace(aligned, model=Aligned(embedding_dim={"C0": 4, "C1": 6}))
    assert config_for_plan(source, unequal).model.embedding_align_dim == 5
    kept = dataclasses.replace(aligned, model=Aligned(embedding_align_dim=7))
    assert config_for_plan(kept, unequal).model.embedding_align_dim == 7
    assert config_for_plan(aligned, {"C0": 3, "C1": 3}).model.embedding_align_dim is None


def test_implied_params_of_an_aligned_model_count_the_alignment():
    """Spec 10.13: FM with unequal widths gets an alignment layer to the source width, and the
    implied size includes it (a per-field map d_f -> K has at least d_f K parameters)."""
    fm = resolve_config("fm")
    if not hasattr(fm.model, "embedding_align_dim"):
        pytest.skip("the models have no embedding_align_dim yet")
    schema = _schema(10, 5, numeric=1)
    widths = {"I0": 1, "C0": 3, "C1": 2}
    assert config_for_plan(fm, widths).model.embedding_align_dim == 16
    linear = 10 + 5 + 1 + 1  # LR weights and bias
    embeddings = 1 + 3 * 10 + 2 * 5
    assert implied_params(fm, schema, widths) >= linear + embeddings + 16 * sum(widths.values())


# -- from a trained run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished GCN run (width 8) on a tiny store with numeric and categorical fields."""
    tmp = tmp_path_factory.mktemp("fdo")
    raw = tmp / "raw.csv"
    synthetic = SyntheticConfig(
        rows=3_000, num_numeric=2, num_categorical=4, cardinalities=(3, 12, 40, 150),
        num_important=3, num_pairs=1, num_triples=0, seed=5,
    )  # fmt: skip
    write_synthetic(synthetic, raw)
    options = PrepareOptions(numeric=("I1", "I2"), numeric_encoding="standardize")
    store, _ = prepare(Sources(train=(raw,)), tmp / "data", options)
    overrides = ["model.embedding_dim=8", "train.batch_size=256", "train.epochs=2"]
    run.train(store.path, tmp / "source", resolve_config("gcn", overrides=overrides, threads=1))
    return tmp / "source"


def test_fdo_plans_and_retrains_fresh_models(source, tmp_path):
    """Spec 10.12 and 10.14: fresh weights at the planned widths; the plan records its source."""
    summaries = fdo(source, [0.5, 0.95], tmp_path / "fdo", retrain=True)
    _, source_model, store = run.load_run(source)
    first, second = (Plan.load(tmp_path / "fdo" / f"plan-{r}.json") for r in (0.5, 0.95))
    assert all(first.widths[n] <= second.widths[n] <= 8 for n in first.widths)
    assert len(set(first.widths.values())) > 1  # per-field widths, not one shrunk width
    for summary, plan in zip(summaries, (first, second), strict=True):
        assert plan.method == "fdo" and plan.settings["variance_ratio"] == summary["variance_ratio"]
        assert plan.source_run == str(source.resolve()) and set(plan.source_widths.values()) == {8}
        assert summary["widths"] == plan.widths and summary["d_bar"] == plan.d_bar
        recorded = RunDir(summary["run"]).plan()
        assert Plan.from_dict(recorded).same_as(plan)
        config, model, _ = run.load_run(summary["run"])
        assert model.embedding.field_dims == tuple(plan.widths.values())
        assert config.seed == 0 and config.train.epochs == 2  # the source's settings
        retrained = list(model.state_dict().values())
        for old in source_model.state_dict().values():
            assert not any(old.shape == new.shape and torch.equal(old, new) for new in retrained)
        metrics = summary["metrics"]
        assert plan.embedding_params == sum(p.numel() for p in model.embedding.parameters())
        assert plan.embedding_params == metrics["embedding_params"]  # numeric vectors included
        assert plan.embedding_params == sum(
            plan.widths[f.name] * (f.vocab_size or 1) for f in store.schema.fields
        )
        assert plan.model_params == metrics["num_params"]
    # Retraining is training from scratch: the same run as a fresh one at the planned widths.
    config = config_for_plan(run.load_run(source)[0], second.widths)
    run.train(store.path, tmp_path / "scratch", config)
    _, scratch, _ = run.load_run(tmp_path / "scratch")
    retrained = run.load_run(tmp_path / "fdo" / "run-0.95")[1].state_dict()
    assert all(torch.equal(t, retrained[k]) for k, t in scratch.state_dict().items())
    # Run again: a finished run of the same plan is reused, an interrupted one resumed (to the
    # same result), and a folder of something else is refused.
    again = fdo(source, [0.5], tmp_path / "fdo", retrain=True)
    assert again[0]["metrics"] == summaries[0]["metrics"]
    with pytest.raises(KeyboardInterrupt):
        fdo(source, [0.5], tmp_path / "cut", retrain=True, progress=_StopInSecondEpoch())
    assert RunDir(tmp_path / "cut" / "run-0.5").state is RunState.STARTED
    resumed = fdo(source, [0.5], tmp_path / "cut", retrain=True)
    assert resumed[0]["metrics"]["test"] == summaries[0]["metrics"]["test"]
    (tmp_path / "fdo" / "run-0.7").mkdir()
    (tmp_path / "fdo" / "run-0.7" / "notes.txt").write_text("mine")
    with pytest.raises(SlimctrError, match="is not a slimctr run folder"):
        fdo(source, [0.7], tmp_path / "fdo", retrain=True)


class _StopInSecondEpoch(ProgressBar):
    def on_step_end(self, trainer, batch, loss):
        if trainer.epoch == 1:
            raise KeyboardInterrupt


def test_fdo_writes_the_baseline_plans(source, tmp_path):
    summaries = fdo(source, [], tmp_path / "fdo", formula=True, uniform=[4])
    assert [s["name"] for s in summaries] == ["formula", "uniform-4"]
    formula = Plan.load(tmp_path / "fdo" / "plan-formula.json")
    uniform = Plan.load(tmp_path / "fdo" / "plan-uniform-4.json")
    assert formula.method == "formula" and uniform.method == "uniform"
    assert set(uniform.widths.values()) == {4}
    assert formula.source_run == str(source.resolve())  # the run it is compared with
    config = run.load_run(source)[0]
    schema = run.load_run(source)[2].schema
    assert uniform.model_params == implied_params(config, schema, uniform.widths)
    assert summaries[0]["widths"] == formula.widths and "metrics" not in summaries[0]


def test_the_fdo_searcher_and_refusals(source, tmp_path):
    plan = FDO(FDOConfig(variance_ratio=0.9)).fit(Start.from_run(source)).plan_
    assert plan.source_run == str(source.resolve()) and plan.settings["variance_ratio"] == 0.9
    with pytest.raises(SlimctrError, match="variance_ratio must be in"):
        FDOConfig(variance_ratio=1.2)
    with pytest.raises(SlimctrError, match="more than once"):
        fdo(source, [0.9, 0.9], tmp_path / "o")
    config = RunDir(source).config()
    with pytest.raises(KeyboardInterrupt):
        run.train(RunDir(source).data()["path"], tmp_path / "unfinished", config,
                  progress=_StopInSecondEpoch())  # fmt: skip
    for call in (
        lambda: Start.from_run(tmp_path / "unfinished"),
        lambda: fdo(tmp_path / "unfinished", [0.9], tmp_path / "o"),
    ):
        with pytest.raises(SlimctrError, match=r"is not a finished run: its training never"):
            call()
    other = uniform_plan(_schema(5, numeric=1), 4)
    with pytest.raises(SlimctrError, match=r"missing I1, I2, C1, .*; unknown I0, C0$"):
        train_plan(other, Start.from_run(source), tmp_path / "r")
    assert not (tmp_path / "r").exists()
