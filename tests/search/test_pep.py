"""PEP end to end on a tiny store: dimension-search spec 8, property 20, and the masked tables
it leaves (stored as kept values and a bit per entry)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.nn.masked import pack_state, stored_bytes, unpack_state
from slimctr.runconfig import build_model
from slimctr.search import Start, train_plan
from slimctr.search.pep import PEP, PEPConfig, SoftThreshold, ThresholdSearch
from slimctr.search.plan import model_schema
from slimctr.search.runner import StartFrom, field_embedding
from slimctr.search.stages import supernet
from slimctr.training import run
from slimctr.training.trainer import Trainer

# Thresholds that start near the entries' size and move fast reach the target within an epoch.
PRUNING = PEPConfig(keep=0.3, threshold_init=-6.0, threshold_lr=0.5, search_epochs=2)


@pytest.fixture(scope="module")
def found(runs, tmp_path_factory):
    start = Start.from_run(runs / "dcnv2")
    start = Start(start.config, start.store)
    return start, PEP(PRUNING).fit(start, tmp_path_factory.mktemp("pep"))


def _batch(start: Start):
    return next(iter(BatchLoader(start.store, "train", batch_size=64)))


def test_at_the_reference_init_the_soft_threshold_is_exactly_zero(found):
    start, _ = found
    _model, embedding = supernet(start, "pep")
    hook = SoftThreshold(embedding, PEPConfig())  # s0 = -150
    assert torch.sigmoid(torch.tensor(-150.0)) == 0  # underflows in float32
    batch = _batch(start)
    plain = embedding(batch).detach()
    embedding.row_hook = hook
    assert torch.equal(embedding(batch).detach(), plain)
    assert hook.mask().all()


def test_the_l2_on_the_thresholds_raises_them_by_about_the_learning_rate_a_step(found):
    start, _ = found
    model, embedding = supernet(start, "pep")
    hook = SoftThreshold(embedding, PEPConfig())
    embedding.row_hook = hook
    search = ThresholdSearch(hook, PEPConfig(), lr=1e-3, target=0)
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    for _ in range(3):
        model(_batch(start)).sum().backward()  # sigma'(-150) = 0: no task gradient reaches s
        search.on_before_optimizer_step(trainer, _batch(start))
    assert torch.allclose(hook.s, torch.full_like(hook.s, -150 + 3e-3), atol=1e-5)


def test_the_search_stops_at_the_target_and_the_plan_masks_every_categorical_field(found):
    _start, searcher = found
    plan = searcher.plan_
    assert plan.settings["reached"] is True and not plan.kept
    assert set(plan.masks) == {"C1", "C2", "C3", "C4"} and set(plan.widths.values()) == {8}
    entries = sum(mask.size for mask in plan.masks.values())
    assert sum(plan.kept_entries.values()) <= PRUNING.keep * entries
    assert plan.embedding_params == sum(plan.kept_entries.values()) + 2 * 8  # numeric vectors
    assert plan.embedding_bytes == 4 * plan.embedding_params + math.ceil(entries / 8)


def test_retraining_starts_from_the_initial_weights_with_the_mask_applied(found):
    start, searcher = found
    plan, initial = searcher.plan_, searcher.initial_
    fresh, _ = supernet(start, "pep")  # the seed's initial weights
    assert initial is not None
    assert all(torch.equal(v, initial[k]) for k, v in fresh.state_dict().items())
    model = build_model(start.config, model_schema(plan, start.store.schema))
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    StartFrom(plan, fresh).on_fit_start(trainer)
    embedding = field_embedding(model, "pep")
    for key, value in model.state_dict().items():
        if key not in ("embedding.fused_table.weight", "embedding.entry_mask"):
            assert torch.equal(value, initial[key]), key
    for name, mask in plan.masks.items():
        table = field_embedding(fresh, "pep").table(name).detach()
        assert torch.equal(embedding.table(name).detach(), table * torch.from_numpy(mask))


def test_the_retrained_model_keeps_its_mask_and_its_bundle_stores_only_the_kept_values(
    found, tmp_path
):
    start, searcher = found
    plan = searcher.plan_
    metrics = train_plan(plan, start, tmp_path / "run", initial=searcher.initial_)
    assert metrics["embedding_bytes"] == plan.embedding_bytes
    bundle = run.load_model(tmp_path / "run")
    embedding = field_embedding(bundle.module, "pep")
    for name, mask in plan.masks.items():
        assert torch.equal(embedding.mask(name), torch.from_numpy(mask))
        assert torch.all(embedding.table(name)[~embedding.mask(name)] == 0)
    stored = load_file(tmp_path / "run" / "bundle" / "weights.safetensors")
    kept = sum(plan.kept_entries.values())
    assert stored["embedding.fused_table.weight"].shape == (kept,)
    assert stored["embedding.entry_mask"].dtype == torch.uint8
    assert stored_bytes(embedding.entry_mask) == 4 * kept + stored["embedding.entry_mask"].numel()


def test_a_packed_state_unpacks_to_the_same_model_and_damage_is_an_error(found):
    start, searcher = found
    plan = searcher.plan_
    model = build_model(start.config, model_schema(plan, start.store.schema))
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    StartFrom(plan, None).on_fit_start(trainer)
    state = model.state_dict()
    packed = pack_state(model, state)
    unpacked = unpack_state(model, packed)
    assert all(torch.equal(unpacked[k], v) for k, v in state.items())
    short = dict(
        packed, **{"embedding.fused_table.weight": packed["embedding.fused_table.weight"][1:]}
    )
    with pytest.raises(SlimctrError, match="values for a mask"):
        unpack_state(model, short)


def test_a_search_that_runs_out_of_epochs_says_so(found, tmp_path, capsys):
    start, _ = found
    slow = PEP(PEPConfig(keep=0.3, search_epochs=1)).fit(start, tmp_path)  # s0 = -150
    assert slow.plan_.settings["reached"] is False
    assert all(mask.all() for mask in slow.plan_.masks.values())
    assert "ended before the tables kept 30%" in capsys.readouterr().err


def test_a_search_that_cuts_far_past_its_target_says_so(found, tmp_path, capsys):
    start, _ = found
    steep = PEP(PEPConfig(keep=0.3, threshold_init=2.0, search_epochs=1)).fit(start, tmp_path)
    assert steep.plan_.settings["search_steps"] == 1  # sigma(2) = 0.88 is above every entry
    assert "step 1 of the search left 0.0% of the entries against a target of 30%" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("threshold", ["feature", "field_dim", "field", "dimension", "global"])
def test_every_threshold_shape_thresholds_each_entry_by_its_own_s(found, threshold):
    start, _ = found
    _model, embedding = supernet(start, "pep")
    hook = SoftThreshold(embedding, PEPConfig(threshold=threshold, threshold_init=-5.0))
    with torch.no_grad():
        hook.s.uniform_(-6, -4)
    batch = _batch(start)
    plain = embedding(batch).detach()
    embedding.row_hook = hook
    got = embedding(batch).detach()
    rows = batch.categorical.long() + hook.offsets
    size = torch.sigmoid(hook.s.detach())
    sizes = {
        "feature": lambda: size[rows],
        "field_dim": lambda: size[hook.field_of_row[rows]],
        "field": lambda: size[hook.field_of_row[rows]],
        "dimension": lambda: size.expand(*rows.shape, -1),
        "global": lambda: size.expand(*rows.shape, -1),
    }
    values = plain[:, hook.categorical]
    expected = torch.sign(values) * torch.relu(values.abs() - sizes[threshold]())
    assert torch.allclose(got[:, hook.categorical], expected)
    assert hook.mask().shape == embedding.fused_table.weight.shape


def test_bad_settings_are_one_line_errors():
    for bad, message in (({"keep": 1.0}, "keep"), ({"threshold": "row"}, "threshold must"),
                         ({"threshold_lr": 0.0}, "threshold_lr")):  # fmt: skip
        with pytest.raises(SlimctrError, match=message):
            PEPConfig(**bad)
