"""Frappe_x1 accuracy of the first models (slow: minutes; run with `pytest -m slow`).

Settings follow BARS/FuxiCTR for Frappe_x1: embedding width 10, embedding L2 0.05 (FuxiCTR's
`embedding_regularizer`), MLP 400-400-400 with batch norm, Adam 1e-3, batch 4096, the paper's
early stopping and plateau. Our train split is reconstructed (see the data's SOURCE.md), so
compare with BARS (DCN-V2 0.9845, DeepFM 0.9842) to about +-0.003.
"""

from __future__ import annotations

import pytest

from slimctr.data.datasets import locate
from slimctr.data.prepare import prepare
from slimctr.runconfig import resolve_config
from slimctr.training import run
from tests.conftest import shared_data

SETTINGS = ["model.embedding_dim=10", "train.embedding_l2=0.05", "train.epochs=30"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dcnv2", "deepfm"])
def test_frappe_x1_test_auc(model, tmp_path):
    located = locate("frappe", [shared_data("frappe")])
    store, _ = prepare(located.sources, tmp_path / "frappe", located.options)
    config = resolve_config(model, overrides=SETTINGS, seed=0)
    metrics = run.train(store.path, tmp_path / model, config)
    print(model, metrics["best_epoch"], metrics["test"])
    assert metrics["test"]["auc"] >= 0.980
