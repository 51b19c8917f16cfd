"""A finished run the compression tests start from."""

from __future__ import annotations

import pytest

from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.runconfig import resolve_config
from slimctr.training import run


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A finished DeepFM run (width 8, so a first-order term too) on a tiny store."""
    tmp = tmp_path_factory.mktemp("compress")
    synthetic = SyntheticConfig(
        rows=3_000, num_numeric=2, num_categorical=4, cardinalities=(3, 12, 40, 150),
        num_important=3, num_pairs=1, num_triples=0, seed=7,
    )  # fmt: skip
    write_synthetic(synthetic, tmp / "raw.csv")
    options = PrepareOptions(numeric=("I1", "I2"), numeric_encoding="standardize")
    store, _ = prepare(Sources(train=(tmp / "raw.csv",)), tmp / "data", options)
    overrides = ["train.batch_size=256", "train.epochs=2", "model.embedding_dim=8"]
    run.train(store.path, tmp / "deepfm", resolve_config("deepfm", overrides=overrides, threads=1))
    return tmp
