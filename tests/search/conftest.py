"""Finished runs the search tests start from."""

from __future__ import annotations

import pytest

from slimctr.runconfig import resolve_config
from slimctr.training import run

FAST = ["train.batch_size=256", "train.epochs=2"]


@pytest.fixture(scope="session")
def runs(tiny):
    """``tiny`` with finished DCNv2 (width 8) and LR runs, ``dcnv2`` and ``lr``."""
    dcnv2 = resolve_config("dcnv2", overrides=[*FAST, "model.embedding_dim=8"], threads=1)
    run.train(tiny / "data", tiny / "dcnv2", dcnv2)
    run.train(tiny / "data", tiny / "lr", resolve_config("lr", overrides=FAST, threads=1))
    return tiny
