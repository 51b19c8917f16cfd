"""Finished runs the search tests start from."""

from __future__ import annotations

import pytest

from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.runconfig import resolve_config
from slimctr.training import run

FAST = ["train.batch_size=256", "train.epochs=2"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Finished DCNv2 (width 8) and LR runs on a tiny store with numeric and categorical fields."""
    tmp = tmp_path_factory.mktemp("conformance")
    synthetic = SyntheticConfig(
        rows=3_000, num_numeric=2, num_categorical=4, cardinalities=(3, 12, 40, 150),
        num_important=3, num_pairs=1, num_triples=0, seed=7,
    )  # fmt: skip
    write_synthetic(synthetic, tmp / "raw.csv")
    options = PrepareOptions(numeric=("I1", "I2"), numeric_encoding="standardize")
    store, _ = prepare(Sources(train=(tmp / "raw.csv",)), tmp / "data", options)
    dcnv2 = resolve_config("dcnv2", overrides=[*FAST, "model.embedding_dim=8"], threads=1)
    run.train(store.path, tmp / "dcnv2", dcnv2)
    run.train(store.path, tmp / "lr", resolve_config("lr", overrides=FAST, threads=1))
    return tmp
