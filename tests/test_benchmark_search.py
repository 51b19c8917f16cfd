"""The search study's cells resume from their log, and a logged cell whose run this machine lacks
(runs are not committed) is trained again only where a run is needed, repeating itself."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compression
import search

from slimctr.runconfig import resolve_config
from slimctr.rundir import RunDir

TINY = ["train.batch_size=256", "train.epochs=1", "train.precision=fp32", "model.hidden_dims=[16]"]


def tiny_config(dataset, model, seed, threads, extra=None):
    """``search.config_for`` for the tiny store: one short epoch on one thread."""
    return resolve_config(model, overrides=[*TINY, *(extra or [])], seed=seed, threads=1)


def test_a_lost_run_is_trained_again_when_needed_and_scores_as_logged(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(search, "LOG", tmp_path / "runs.jsonl")
    monkeypatch.setattr(search, "config_for", tiny_config)
    args = argparse.Namespace(work=tmp_path / "work", threads=1)
    full = ("tiny", "dcnv2", 0, "full")
    logged = search.train_cell(args, tiny / "data", full)
    shutil.rmtree(search.run_of(args, full))

    assert search.train_cell(args, tiny / "data", full) == logged  # from the log, no run
    assert not search.run_of(args, full).exists()
    search.train_cell(args, tiny / "data", ("tiny", "dcnv2", 0, "uniform-2"))
    assert not search.run_of(args, full).exists()  # a uniform cell reads the log only

    fdo = search.train_cell(args, tiny / "data", ("tiny", "dcnv2", 0, "fdo-0.8"))
    again = RunDir(search.run_of(args, full)).metrics()  # FDO reads the full run: trained again
    assert again["valid"]["auc"] == logged["valid"]["auc"]
    assert again["test"]["logloss"] == logged["test"]["logloss"]
    assert [r["cell"] for r in search.records().values()] == ["full", "uniform-2", "fdo-0.8"]
    assert fdo["embedding_params"] < logged["embedding_params"]


def test_compressing_searched_cells_rebuilds_only_the_named_lost_runs(
    tiny, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(search, "LOG", tmp_path / "runs.jsonl")
    monkeypatch.setattr(search, "config_for", tiny_config)
    monkeypatch.setattr(search, "store_of", lambda dataset, frappe: tiny / "data")
    monkeypatch.setattr(compression, "LOG", tmp_path / "compressed.jsonl")
    monkeypatch.setattr(compression, "SEARCHED_CODECS", ("int8",))
    args = argparse.Namespace(
        work=tmp_path / "work", threads=1, datasets=["tiny"], models=["dcnv2"], seeds=1,
        data=None, rebuild=False, cells=None,
    )  # fmt: skip
    for cell in ("full", "uniform-2", "uniform-4"):
        search.train_cell(args, tiny / "data", ("tiny", "dcnv2", 0, cell))
    for cell in ("uniform-2", "uniform-4"):
        shutil.rmtree(search.run_of(args, ("tiny", "dcnv2", 0, cell)))

    compression.searched(args)  # both runs lost, no --rebuild: nothing compressed, both named
    assert not compression.records(compression.LOG)
    assert capsys.readouterr().out.count("its run is not here") == 2

    args.rebuild, args.cells = True, ["uniform-4"]
    compression.searched(args)
    assert list(compression.records(compression.LOG)) == ["tiny dcnv2 seed=0 uniform-4+int8"]
    assert search.run_of(args, ("tiny", "dcnv2", 0, "uniform-4")).is_dir()
    assert not search.run_of(args, ("tiny", "dcnv2", 0, "uniform-2")).exists()
    assert len(search.records()) == 3  # the rebuilt cell is not logged twice
