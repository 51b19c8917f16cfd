"""OptEmbed end to end on a tiny store: dimension-search spec 8, properties 1-4, 8 and 10 (the
primitives' properties 5-7 and 9 are in test_gates and test_evolution)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.runconfig import build_model
from slimctr.search import Start, train_plan
from slimctr.search.optembed import OptEmbed, OptEmbedConfig, SupernetMasks
from slimctr.search.runner import StartFrom, config_for_plan, field_embedding
from slimctr.search.stages import supernet
from slimctr.training import run
from slimctr.training.run import model_size
from slimctr.training.trainer import Trainer

# Thresholds that move within a two-epoch supernet, so that rows are pruned; a short evolution.
PRUNING = OptEmbedConfig(alpha=1.0, threshold_lr=1.0, generations=3)


@pytest.fixture(scope="module")
def found(runs, tmp_path_factory):
    start = Start.from_run(runs / "dcnv2")
    start = Start(start.config, start.store)
    searcher = OptEmbed(PRUNING).fit(start, tmp_path_factory.mktemp("optembed"))
    return start, searcher


def test_the_plan_prunes_rows_and_sizes_them_as_kept_rows_times_widths(found):
    _start, searcher = found
    plan = searcher.plan_
    assert plan.kept, "these settings must prune rows, or the sizes below test nothing"
    full = sum(plan.field_sizes.values()) * 8  # N D, every field at the source width 8
    expected = sum(plan.kept_rows[n] * plan.widths[n] for n in plan.widths)
    assert plan.embedding_params == expected < full
    maps = sum(math.ceil(plan.field_sizes[n] / 8) for n in plan.kept)  # a bit per id
    assert plan.embedding_bytes == 4 * expected + maps
    assert set(plan.seconds) == {"supernet", "evolution"}
    # numeric fields are never pruned
    assert not {"I1", "I2"} & set(plan.kept)


def test_the_retrained_tables_are_physically_sliced(found, tmp_path):
    start, searcher = found
    plan = searcher.plan_
    metrics = train_plan(plan, start, tmp_path / "run", initial=searcher.initial_)
    model = run.load_model(tmp_path / "run").module
    embedding = field_embedding(model, "test")
    for name, width in plan.widths.items():
        assert embedding.table(name).shape == (plan.kept_rows[name], width)
    for name, ids in plan.kept.items():
        assert embedding.kept_ids(name).tolist() == ids.tolist()
    assert metrics["embedding_params"] == plan.embedding_params
    assert metrics["embedding_bytes"] == plan.embedding_bytes


def test_a_masked_supernet_counts_its_full_table(found):
    start, _ = found
    model, embedding = supernet(start, "optembed")
    masks = SupernetMasks(embedding, PRUNING, seed=0)
    with torch.no_grad():
        masks.row_mask.thresholds.fill_(1e9)  # every row masked
    embedding.row_hook = masks
    sizes = sum(start.store.schema.field(n).vocab_size or 1 for n in embedding.field_names)
    assert model_size(model)["embedding_params"] == sizes * 8


def test_evaluation_applies_the_row_mask_but_no_width_mask(found):
    start, _ = found
    _model, embedding = supernet(start, "optembed")
    batch = next(iter(BatchLoader(start.store, "valid", batch_size=64)))
    plain = embedding(batch)
    masks = SupernetMasks(embedding, PRUNING, seed=0)
    embedding.row_hook = masks
    with torch.no_grad():
        masks.row_mask.thresholds.fill_(-1e9)  # every row kept
    embedding.eval()
    assert torch.equal(embedding(batch), plain)
    embedding.train()
    sampled = embedding(batch)
    assert (sampled == 0).any() and not torch.equal(sampled, plain)
    with torch.no_grad():
        masks.row_mask.thresholds.fill_(1e9)  # every categorical row pruned
    embedding.eval()
    categorical = [embedding.field_names.index(n) for n in ("C1", "C2", "C3", "C4")]
    out = embedding(batch)
    assert torch.all(out[:, categorical] == 0) and torch.equal(out[:, :2], plain[:, :2])


def test_retraining_starts_from_the_initial_weights_with_the_maps_frozen(found):
    start, searcher = found
    plan = searcher.plan_
    initial = searcher.initial_
    assert initial is not None
    source, source_embedding = supernet(start, "optembed")
    # the kept initial state is the fresh model's: the seed drew it before any training
    assert all(torch.equal(v, initial[k]) for k, v in source.state_dict().items())
    source.load_state_dict(initial)
    schema = start.store.schema.with_kept_rows({n: len(i) for n, i in plan.kept.items()})
    model = build_model(config_for_plan(start.config, plan.widths), schema)
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    StartFrom(plan, source).on_fit_start(trainer)
    embedding = field_embedding(model, "test")
    for name, width in plan.widths.items():
        rows = source_embedding.table(name).detach()
        if name in plan.kept:
            rows = rows[torch.from_numpy(plan.kept[name])]
        assert torch.equal(embedding.table(name).detach(), rows[:, :width])
    # the maps are buffers, not parameters: no optimiser moves them
    maps = {id(embedding.row_index)}
    assert not maps & {id(p) for p in model.parameters()}
    before = embedding.row_index.clone()
    trainer.fit()
    assert torch.equal(embedding.row_index, before)


def test_seeds_drive_the_search(found, tmp_path):
    start, searcher = found
    other = OptEmbed(OptEmbedConfig(alpha=1.0, threshold_lr=1.0, generations=3, seed=99))
    plan = other.fit(start, tmp_path).plan_
    assert plan.settings["seed"] == 99
    assert not plan.same_as(searcher.plan_)


def test_the_work_folder_resumes_and_refuses_other_settings(found, tmp_path, capsys):
    start, _ = found
    fast = OptEmbedConfig(alpha=1.0, threshold_lr=1.0, generations=1)
    first = OptEmbed(fast).fit(start, tmp_path).plan_
    again = OptEmbed(fast).fit(start, tmp_path).plan_
    assert first.same_as(again) and "reusing" in capsys.readouterr().err
    with pytest.raises(SlimctrError, match="another search"):
        OptEmbed(OptEmbedConfig(alpha=0.5, generations=1)).fit(start, tmp_path)
    assert np.isfinite(first.settings["supernet_valid_auc"])


def test_a_budget_bounds_the_searched_tables(found, tmp_path):
    start, searcher = found
    unbounded = searcher.plan_.embedding_params
    budget = unbounded // 2
    config = OptEmbedConfig(alpha=1.0, threshold_lr=1.0, generations=3, max_embedding_params=budget)
    plan = OptEmbed(config).fit(start, tmp_path).plan_
    assert plan.embedding_params <= budget and plan.settings["max_embedding_params"] == budget
    with pytest.raises(SlimctrError, match=r"keep search\.search_widths"):
        OptEmbedConfig(search_widths=False, max_embedding_params=10)
