"""train / evaluate / predict / models from the command line, and their user errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from tests.conftest import write_text

LR_FAST = ["--set", "train.batch_size=256", "--set", "train.epochs=2", "--threads", "1"]
FAST = ["--set", "model.hidden_dims=[16]", "--set", "model.embedding_dim=4", *LR_FAST]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    source = tmp / "s.csv"
    write_synthetic(SyntheticConfig(rows=6_000, seed=3), source)
    from slimctr.cli import main

    assert main(["prepare", str(source), "--dataset", "synthetic", "--out", str(tmp / "d")]) == 0
    return tmp, source


def test_models_lists_the_registry(cli):
    result = cli("models", "--json")
    assert result.code == 0 and {"lr", "fm", "dnn", "dcnv2", "deepfm"} <= set(result.json())


def test_train_evaluate_predict(cli, prepared, tmp_path):
    data, source = prepared[0] / "d", prepared[1]
    trained = cli("train", data, "--model", "dcnv2", "--out", tmp_path / "r", "--json", *FAST)
    assert trained.code == 0, trained.err
    metrics = trained.json()
    assert metrics["model"] == "dcnv2" and 0.5 < metrics["test"]["auc"] <= 1
    evaluated = cli("evaluate", tmp_path / "r", "--json")
    assert evaluated.json() == pytest.approx(metrics["test"])
    predicted = cli("predict", tmp_path / "r", source, "--out", tmp_path / "p.csv")
    assert predicted.code == 0, predicted.err
    probabilities = pl.read_csv(tmp_path / "p.csv")["probability"].to_numpy()
    assert len(probabilities) == 6_000 and np.all((probabilities > 0) & (probabilities < 1))


def test_predict_keeps_input_order(cli, prepared, tmp_path):
    data, source = prepared[0] / "d", prepared[1]
    assert cli("train", data, "--model", "lr", "--out", tmp_path / "r", *LR_FAST).code == 0
    frame = pl.read_csv(source, infer_schema=False)
    head, reversed_rows = frame.head(50), frame.head(50).reverse()
    head.write_csv(tmp_path / "a.csv")
    reversed_rows.write_csv(tmp_path / "b.csv")
    cli("predict", tmp_path / "r", tmp_path / "a.csv", "--out", tmp_path / "a.parquet")
    cli("predict", tmp_path / "r", tmp_path / "b.csv", "--out", tmp_path / "b.parquet")
    forward = pl.read_parquet(tmp_path / "a.parquet")["probability"].to_numpy()
    backward = pl.read_parquet(tmp_path / "b.parquet")["probability"].to_numpy()
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-6)


def _one_line_error(result, *fragments):
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimctr: error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_user_errors(cli, prepared, tmp_path):
    data = prepared[0] / "d"
    _one_line_error(
        cli("train", tmp_path, "--model", "lr", "--out", tmp_path / "r"),
        "not a slimctr data directory",
    )
    _one_line_error(
        cli("train", data, "--model", "dcnv", "--out", tmp_path / "r"),
        "unknown model 'dcnv'",
        "dcnv2",
    )
    _one_line_error(
        cli(
            "train",
            data,
            "--model",
            "dcnv2",
            "--out",
            tmp_path / "r",
            "--set",
            "model.num_cros_layers=4",
        ),
        "num_cross_layers",
    )
    _one_line_error(
        cli(
            "train", data, "--model", "dcnv2", "--out", tmp_path / "r", "--set", "train.epochs=zero"
        ),
        "train.epochs",
    )
    _one_line_error(cli("evaluate", tmp_path / "nothing"), "no such run or bundle")


def test_predict_with_missing_columns(cli, prepared, tmp_path):
    data = prepared[0] / "d"
    assert cli("train", data, "--model", "lr", "--out", tmp_path / "r", *LR_FAST).code == 0
    bad = write_text(tmp_path / "bad.csv", ["label,C1", "1,abc"])
    _one_line_error(
        cli("predict", tmp_path / "r", bad, "--out", tmp_path / "p.csv"), "lacks the columns"
    )
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("model", "setting", "fragment"),
    [
        ("gdcn_p", "model.num_cross_layers=0", "model.num_cross_layers"),
        ("gcn", "model.num_cross_layers=-2", "model.num_cross_layers"),
        ("gdcn_p", "model.hidden_dims=[]", "model.hidden_dims"),
        ("deepfm", "model.embedding_dim={C1: 4, C2: 8}", "width 4: C1; width 8: C2"),
    ],
)
def test_bad_model_settings_fail_before_any_data_is_read(cli, tmp_path, model, setting, fragment):
    # the data directory does not exist: the config error must come first
    result = cli(
        "train", tmp_path / "no-data", "--model", model, "--out", tmp_path / "r", "--set", setting
    )
    _one_line_error(result, fragment)
    assert "no-data" not in result.err
