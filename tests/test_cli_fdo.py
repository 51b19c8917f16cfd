"""`slimctr fdo` from the command line: the JSON contract (cli.md) and its user errors."""

from __future__ import annotations

import json

import pytest

from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from tests.test_cli_train import LR_FAST, _one_line_error


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished GCN run (width 6) on a small synthetic store."""
    from slimctr.cli import main

    tmp = tmp_path_factory.mktemp("fdo")
    write_synthetic(SyntheticConfig(rows=4_000, seed=5), tmp / "s.csv")
    assert (
        main(["prepare", str(tmp / "s.csv"), "--dataset", "synthetic", "--out", str(tmp / "d")])
        == 0
    )
    args = ["train", str(tmp / "d"), "--model", "gcn", "--out", str(tmp / "run"), *LR_FAST]
    assert main([*args, "--set", "model.embedding_dim=6"]) == 0
    return tmp / "run"


def test_fdo_json_contract_and_retraining(cli, finished, tmp_path):
    result = cli(
        "fdo",
        finished,
        "--ratio",
        "0.8",
        "--ratio",
        "0.95",
        "--uniform",
        "3",
        "--out",
        tmp_path / "fdo",
        "--retrain",
        "--json",
    )
    assert result.code == 0, result.err
    plans = result.json()["plans"]
    assert [p["ratio"] for p in plans] == [0.8, 0.95, None]
    fields = [f["name"] for f in json.loads((finished / "schema.json").read_text())["fields"]]
    for plan in plans:
        assert list(plan["dims"]) == fields
        assert plan["embedding_params"] >= 1 and plan["run"] and 0 <= plan["test"]["auc"] <= 1
        metrics = json.loads(
            (tmp_path / "fdo" / f"run-{plan['name']}" / "metrics.json").read_text()
        )
        assert (
            metrics["test"] == plan["test"]
            and metrics["embedding_params"] == plan["embedding_params"]
        )
    assert all(plans[0]["dims"][f] <= plans[1]["dims"][f] <= 6 for f in plans[0]["dims"])
    assert set(plans[2]["dims"].values()) == {3}


def test_fdo_user_errors(cli, finished, tmp_path):
    _one_line_error(cli("fdo", finished, "--ratio", "0", "--out", tmp_path / "o"), "(0, 1]")
    _one_line_error(cli("fdo", finished, "--out", tmp_path / "o"), "--ratio")
    _one_line_error(
        cli("fdo", finished.parent, "--ratio", "0.9", "--out", tmp_path / "o"),
        "not a finished run",
    )
