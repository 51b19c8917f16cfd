"""`slimctr searchers` and `slimctr search`: from a run, a plan file and its retrained run, with
one-line errors for what does not fit."""

from __future__ import annotations

import json
import re

import pytest

from slimctr.rundir import RunDir
from slimctr.search import Plan, Start
from slimctr.search.fdo import FDO, FDOConfig


def test_searchers_lists_each_method_and_what_it_starts_from(cli):
    listed = cli("searchers", "--json")
    assert listed.code == 0 and json.loads(listed.out)["fdo"]["starts_from"] == "a finished run"
    text = cli("searchers")
    assert text.code == 0 and text.out.strip().startswith("fdo ") and "finished run" in text.out


def test_search_from_a_run_writes_the_plan_and_retrains_it(cli, runs, tmp_path):
    out = tmp_path / "search"
    args = ("search", "fdo", runs / "dcnv2", "--out", out, "--set", "search.variance_ratio=0.9")
    result = cli(*args, "--retrain", "--threads", "1", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    plan = Plan.load(out / "plan.json")
    expected = FDO(FDOConfig(variance_ratio=0.9)).fit(Start.from_run(runs / "dcnv2")).plan_
    assert plan.same_as(expected) and summary["embedding_params"] == plan.embedding_params
    assert summary["metrics"]["embedding_params"] == plan.embedding_params
    assert RunDir(out / "run").plan() == plan.to_dict()
    again = cli(*args, "--retrain", "--threads", "1", "--json")  # the finished run is reused
    assert again.code == 0 and json.loads(again.out)["metrics"] == summary["metrics"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--method-typo",), "unrecognized arguments"),
        (("--model", "gcn"), "--model: a search from a run keeps the run's model"),
        (("--set", "train.epochs=3"), "--set train.epochs=3: a search from a run keeps"),
        (("--set", "search.variance_ratoi=0.9"), "unknown config key 'search.variance_ratoi'"),
        (("--set", "search.variance_ratio=nan"), "'search.variance_ratio' expects float"),
        (("--set", "search.variance_ratio=1.5"), r"variance_ratio must be in \(0, 1\]"),
    ],
)
def test_search_refuses_what_does_not_fit_in_one_line(cli, runs, tmp_path, extra, fragment):
    result = cli("search", "fdo", runs / "dcnv2", "--out", tmp_path / "s", *extra)
    assert result.code != 0 and not (tmp_path / "s" / "plan.json").exists()
    assert re.search(fragment, result.err.strip().splitlines()[-1]), result.err


def test_a_setting_out_of_range_is_named_as_it_is_set(cli, runs, tmp_path):
    result = cli("search", "optfs", runs / "dcnv2", "--out", tmp_path / "s",
                 "--set", "search.search_epochs=2", "--set", "search.rewind_epoch=2")  # fmt: skip
    assert result.code == 1 and not (tmp_path / "s").exists()
    assert "search.rewind_epoch must be in [0, search.search_epochs), got 2" in result.err


def test_search_names_the_unknown_method_and_a_source_that_is_not_a_run(cli, runs, tmp_path):
    unknown = cli("search", "optembedd", runs / "dcnv2", "--out", tmp_path / "s")
    known = "known: fdo, dnis, ihas, optembed, optfs, pep"
    assert unknown.code == 1 and f"unknown search method 'optembedd'; {known}" in unknown.err
    data = json.loads((runs / "dcnv2" / "data.json").read_text())["path"]
    not_run = cli("search", "fdo", data, "--out", tmp_path / "s")
    assert not_run.code == 1 and "fdo starts from a finished run" in not_run.err
    bundle = cli("search", "optfs", runs / "dcnv2" / "bundle", "--out", tmp_path / "s")
    assert bundle.code == 1 and "is a model bundle; a search starts from" in bundle.err


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("optfs", ["search.m0=0.01", "search.strength=1e-3", "search.search_epochs=2",
                   "search.rewind_epoch=0"]),
        ("optembed", ["search.alpha=1", "search.threshold_lr=1", "search.generations=2"]),
        ("pep", ["search.keep=0.3", "search.threshold_init=-6", "search.threshold_lr=0.5"]),
        ("dnis", ["search.keep=0.3", "search.warm_epochs=1", "search.search_epochs=1"]),
    ],
)  # fmt: skip
def test_a_search_that_prunes_runs_from_data_to_a_retrained_bundle(cli, runs, tmp_path, method,
                                                                   settings):  # fmt: skip
    data = json.loads((runs / "dcnv2" / "data.json").read_text())["path"]
    out = tmp_path / method
    sets = [a for s in ["train.batch_size=256", "train.epochs=2", "model.embedding_dim=8",
                        *settings] for a in ("--set", s)]  # fmt: skip
    result = cli("search", method, data, "--model", "dcnv2", "--out", out, *sets, "--retrain",
                 "--threads", "1", "--json")  # fmt: skip
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    plan = Plan.load(out / "plan.json")
    assert (plan.kept or plan.masks) and summary["metrics"][
        "embedding_bytes"
    ] == plan.embedding_bytes
    assert f"{method} search" in result.err or f"{method} supernet" in result.err  # progress
    predicted = cli("evaluate", out / "run", "--json")
    assert predicted.code == 0 and json.loads(predicted.out)["auc"] == pytest.approx(
        summary["metrics"]["test"]["auc"]
    )


def test_an_ihas_style_search_runs_from_data_to_a_routed_bundle(cli, runs, tmp_path):
    data = json.loads((runs / "dcnv2" / "data.json").read_text())["path"]
    out = tmp_path / "ihas"
    settings = ["train.batch_size=256", "train.epochs=2", "model.embedding_dim=8",
                "search.groups=2", "search.search_epochs=1"]  # fmt: skip
    sets = [a for s in settings for a in ("--set", s)]
    result = cli("search", "ihas", data, "--model", "dcnv2", "--out", out, *sets, "--retrain",
                 "--threads", "1", "--json")  # fmt: skip
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    plan = Plan.load(out / "plan.json")
    assert plan.groups and summary["metrics"]["embedding_params"] == plan.embedding_params
    evaluated = cli("evaluate", out / "run", "--json")
    assert evaluated.code == 0 and json.loads(evaluated.out)["auc"] == pytest.approx(
        summary["metrics"]["test"]["auc"]
    )
