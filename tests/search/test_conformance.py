"""What every registered searcher must show (issue 17): with one seed it is deterministic, its
plan round-trips through its files, the plan's size is what the retrained model stores, and a
model it cannot handle is refused in one line."""

from __future__ import annotations

import dataclasses

import pytest

from slimctr.errors import SlimctrError
from slimctr.search import SEARCHERS, Plan, Searcher, Start, train_plan


def _start(name: str, run_dir) -> Start:
    start = Start.from_run(run_dir)
    if SEARCHERS[name].starts_from == "store":
        return Start(start.config, start.store)
    return start


# Settings under which each method does its whole job on the tiny store in seconds: rows are
# pruned where a method prunes them. A method not named here runs with its defaults.
SETTINGS = {
    "optembed": {"alpha": 1.0, "threshold_lr": 1.0, "generations": 3},
    "optfs": {"m0": 0.01, "strength": 1e-3, "search_epochs": 3, "rewind_epoch": 1},
    "dnis": {"keep": 0.3, "warm_epochs": 2, "search_epochs": 2, "alpha_lr": 0.1, "l1": 1e-3},
    "ihas": {"groups": 2, "blocks": 2, "search_epochs": 2, "cluster_rows": 1000},
    "pep": {"keep": 0.3, "threshold_init": -6.0, "threshold_lr": 0.5, "search_epochs": 2},
}
PRUNES = {"dnis", "optembed", "optfs", "pep"}


def _searcher(name: str) -> Searcher:
    entry = SEARCHERS[name]
    return entry.searcher(entry.config(**SETTINGS.get(name, {})))


def _plan(name: str, start: Start, work) -> Plan:
    return _searcher(name).fit(start, work).plan_


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_the_registry_entry_is_complete(name):
    entry = SEARCHERS[name]
    assert dataclasses.is_dataclass(entry.config) and entry.config.__dataclass_params__.frozen
    assert entry.searcher.name == name and entry.starts_from in ("run", "store")
    assert entry.summary and "\n" not in entry.summary


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_the_same_start_gives_the_same_plan(name, runs, tmp_path):
    first = _plan(name, _start(name, runs / "dcnv2"), tmp_path / "a")
    second = _plan(name, _start(name, runs / "dcnv2"), tmp_path / "b")
    assert first.same_as(second) and first.method == name


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_the_plan_round_trips_through_its_files(name, runs, tmp_path):
    plan = _plan(name, _start(name, runs / "dcnv2"), tmp_path / "work")
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json").same_as(plan)
    assert Plan.from_dict(plan.to_dict(), plan.kept, plan.masks).same_as(plan)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_the_plans_size_is_what_the_retrained_model_stores(name, runs, tmp_path):
    start = _start(name, runs / "dcnv2")
    searcher = _searcher(name).fit(start, tmp_path / "work")
    plan = searcher.plan_
    assert bool(plan.kept or plan.masks) == (name in PRUNES)
    metrics = train_plan(plan, start, tmp_path / "retrained", initial=searcher.initial_)
    assert metrics["embedding_params"] == plan.embedding_params
    assert metrics["embedding_bytes"] == plan.embedding_bytes
    if plan.model_params is not None:
        assert metrics["num_params"] == plan.model_params


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_a_model_without_field_tables_is_refused_in_one_line(name, runs, tmp_path):
    with pytest.raises(SlimctrError) as caught:
        _plan(name, _start(name, runs / "lr"), tmp_path / "work")
    assert "LR" in str(caught.value) and "\n" not in str(caught.value)
