"""The logistic-regression baseline picks C by validation AUC and learns a small click log."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import logistic

from slimctr import api
from slimctr.data.clicklog import ClickLogConfig, write_clicklog


def test_chosen_c_is_the_best_of_the_grid_and_generalises(tmp_path):
    write_clicklog(ClickLogConfig(rows=20_000, seed=0), tmp_path / "log.parquet")
    api.prepare(tmp_path / "log.parquet", tmp_path / "store")
    grid = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    result = logistic.fit_logistic(tmp_path / "store", grid=grid)
    assert result["C"] in grid
    assert [s["C"] for s in result["grid"]] == list(grid)
    assert result["valid_auc"] == max(s["valid_auc"] for s in result["grid"])
    assert result["test_auc"] > 0.55
    assert 0 < result["test_logloss"] < 0.7
    assert result["rows"] == {"train": 16_000, "valid": 2_000, "test": 2_000}


def test_design_is_one_hot_blocks_then_standardised_numeric_columns(tmp_path):
    lines = ["label,color,price", *(f"{i % 2},{'abc'[i % 3]},{i * 0.5}" for i in range(40))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    store = api.prepare(tmp_path / "t.csv", tmp_path / "store")
    x = logistic.design(store, "train", logistic.numeric_stats(store))
    vocab = store.schema.field("color").vocab_size
    assert x.shape == (store.manifest["rows"]["train"], vocab + 1)
    assert (x[:, :vocab].sum(axis=1) == 1).all()
    assert abs(x[:, vocab].mean()) < 1e-6 and abs(x[:, vocab].toarray().std() - 1) < 1e-6
