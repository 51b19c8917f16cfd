"""The iHAS-style search on a tiny store: dimension-search spec 8, property 19, and the parts
it is made of (temperature, regulariser, k-means, routing of the retrained model)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.models.routed import RoutedConfig, Router
from slimctr.schema import NUM_RESERVED_IDS
from slimctr.search import SEARCHERS, Start, train_plan
from slimctr.search import ihas as ihas_module
from slimctr.search.ihas import (
    IHAS,
    BlockGates,
    GateTraining,
    IHASConfig,
    frequent_rows,
    kmeans,
)
from slimctr.search.stages import supernet
from slimctr.training import run
from slimctr.training.trainer import Trainer

FAST = IHASConfig(groups=3, blocks=4, search_epochs=2, sparsity=0.1, controller_lr=0.01)


@pytest.fixture(scope="module")
def found(runs, tmp_path_factory):
    start = Start.from_run(runs / "dcnv2")
    start = Start(start.config, start.store)
    return start, IHAS(FAST).fit(start, tmp_path_factory.mktemp("ihas"))


def test_it_is_named_and_documented_as_ihas_style():
    assert "iHAS-style" in SEARCHERS["ihas"].summary
    assert "iHAS-style, not iHAS" in (ihas_module.__doc__ or "")


def test_the_retrained_model_routes_every_sample_to_one_group_with_its_widths(found, tmp_path):
    start, searcher = found
    plan = searcher.plan_
    assert 1 <= len(plan.groups) <= FAST.groups and plan.router is not None
    metrics = train_plan(plan, start, tmp_path / "run", initial=searcher.initial_)
    assert metrics["embedding_params"] == plan.embedding_params
    assert metrics["num_params"] == plan.model_params
    model = run.load_model(tmp_path / "run").module
    for expert, widths in zip(model.experts, plan.groups, strict=True):
        assert expert.embedding.field_dims == tuple(widths.values())
    assert searcher.initial_ is not None
    assert torch.equal(model.router.centroids, searcher.initial_["router.centroids"])
    batch = next(iter(BatchLoader(start.store, "test", batch_size=256)))
    groups = model.router.route(batch)
    assert groups.shape == (len(batch),) and groups.min() >= 0 and groups.max() < len(plan.groups)
    assert torch.equal(groups, model.router.route(batch))  # deterministic


def test_groups_differ_only_by_their_widths_and_count_every_table(found):
    _, searcher = found
    plan = searcher.plan_
    router = sum(plan.router_rows.get(n, rows) for n, rows in plan.field_sizes.items())
    assert router < sum(plan.field_sizes.values())  # the tiny store has values rarer than 100
    tables = sum(w * plan.field_sizes[n] for group in plan.groups for n, w in group.items())
    assert plan.embedding_params == tables + FAST.router_dim * router
    width = 8 // FAST.blocks
    assert all(w % width == 0 and w >= width for group in plan.groups for w in group.values())


def test_the_router_keeps_the_values_seen_router_min_count_times_in_training(found):
    start, searcher = found
    train = start.store.split("train")
    for spec in start.store.schema.categorical:
        ids = np.asarray(start.store.column(spec.name)[train.start : train.stop])
        counts = np.bincount(ids, minlength=spec.vocab_size)
        frequent = np.flatnonzero(counts[NUM_RESERVED_IDS:] >= FAST.router_min_count)
        rows = searcher.plan_.router_rows[spec.name]
        assert frequent.tolist() == list(range(rows - NUM_RESERVED_IDS))  # the first ids
        assert (
            frequent_rows(start.store, 1)[spec.name]
            == np.count_nonzero(counts[NUM_RESERVED_IDS:]) + NUM_RESERVED_IDS
        )


def test_blocks_of_a_width_that_is_not_a_multiple_differ_by_at_most_one(found):
    start, _ = found
    _, embedding = supernet(start, "ihas")  # width 8
    router = Router(start.store.schema, RoutedConfig(backbone="dcnv2", router_blocks=3), 1)
    hook = BlockGates(embedding, router, 3, seed=0)
    assert hook.sizes.tolist() == [3, 3, 2]
    assert [hook.width(n) for n in (0.2, 1.4, 2.4, 2.6)] == [3, 3, 6, 8]
    with pytest.raises(SlimctrError, match="cannot cut width 8 into 9 blocks"):
        BlockGates(embedding, router, 9, seed=0)


def test_the_temperature_falls_from_start_to_end():
    config = dataclasses.replace(FAST, search_epochs=4, temperature_start=2.0, temperature_end=0.02)
    temperatures = [config.temperature(e) for e in range(4)]
    assert temperatures[0] == 2.0 and temperatures[-1] == pytest.approx(0.02)
    assert all(a > b for a, b in itertools.pairwise(temperatures))


def test_gates_are_sampled_in_training_and_deterministic_in_evaluation(found):
    start, _ = found
    model, embedding = supernet(start, "ihas")
    routing = RoutedConfig(backbone="dcnv2", router_blocks=4)
    router = Router(start.store.schema, routing, groups=1)
    hook = BlockGates(embedding, router, 4, seed=0)
    batch = next(iter(BatchLoader(start.store, "train", batch_size=64)))
    plain = embedding(batch).detach()
    embedding.row_hook = hook
    model.eval()
    gated = embedding(batch).detach()
    gates = (router.logits(batch) > 0).float().repeat_interleave(2, dim=-1)
    assert torch.equal(gated, plain * gates)
    model.train()
    assert not torch.equal(embedding(batch).detach(), embedding(batch).detach())  # sampled


def test_the_sparsity_term_closes_gates(found):
    start, _ = found
    model, embedding = supernet(start, "ihas")
    router = Router(start.store.schema, RoutedConfig(backbone="dcnv2", router_blocks=4), 1)
    hook = BlockGates(embedding, router, 4, seed=0)
    config = dataclasses.replace(FAST, sparsity=1.0, polarisation=0.0, controller_lr=0.05)
    training = GateTraining(hook, config)
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    batch = next(iter(BatchLoader(start.store, "train", batch_size=64)))
    before = torch.sigmoid(router.logits(batch)).mean()
    for _ in range(20):
        training.on_before_optimizer_step(trainer, batch)
    assert torch.sigmoid(router.logits(batch)).mean() < before


def test_kmeans_is_seeded_and_never_makes_more_groups_than_patterns():
    points = torch.tensor([[0.0, 0], [0, 0], [1, 1], [1, 1], [1, 0]])
    first = kmeans(points, 5, 20, seed=3)
    assert len(first) == 3 and torch.equal(first, kmeans(points, 5, 20, seed=3))
    two = kmeans(torch.tensor([[0.0], [0.1], [5.0], [5.2]]), 2, 20, seed=0)
    assert sorted(two.flatten().tolist()) == pytest.approx([0.05, 5.1])


def test_bad_settings_are_one_line_errors():
    for bad, message in (({"groups": 0}, "groups"), ({"temperature_end": 2.0}, "temperature"),
                         ({"controller_lr": 0}, "controller_lr"),
                         ({"router_min_count": 0}, "router_min_count")):  # fmt: skip
        with pytest.raises(SlimctrError, match=message):
            IHASConfig(**bad)
