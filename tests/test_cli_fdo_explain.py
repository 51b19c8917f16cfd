"""`slimctr fdo` and `slimctr explain` from the command line: the JSON contracts (cli.md) and
user errors."""

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


def test_fdo_retraining_progress_names_the_plan(cli, finished, tmp_path):
    result = cli("fdo", finished, "--uniform", "2", "--out", tmp_path / "fdo", "--retrain")
    assert result.code == 0, result.err
    assert "plan uniform-2: epoch 1 [" in result.err


def test_fdo_user_errors(cli, finished, tmp_path):
    _one_line_error(cli("fdo", finished, "--ratio", "0", "--out", tmp_path / "o"), "(0, 1]")
    _one_line_error(cli("fdo", finished, "--out", tmp_path / "o"), "--ratio")
    _one_line_error(
        cli("fdo", finished.parent, "--ratio", "0.9", "--out", tmp_path / "o"),
        "not a slimctr run folder",
    )
    _one_line_error(
        cli("fdo", finished / "bundle", "--ratio", "0.9", "--out", tmp_path / "o"),
        "is a model bundle; this needs the finished run it came from",
    )


def test_explain_json_contract_and_report(cli, finished, tmp_path):
    result = cli("explain", finished, "--out", tmp_path / "report", "--instances", "300", "--json")
    assert result.code == 0, result.err
    data = result.json()
    fields = [f["name"] for f in json.loads((finished / "schema.json").read_text())["fields"]]
    assert list(data["field_importance"]) == fields
    assert all(0 < gate < 1 for gate in data["field_importance"].values())
    scores = [score for _, _, score in data["interactions"]]
    assert (
        scores == sorted(scores, reverse=True)
        and len(scores) == len(fields) * (len(fields) - 1) // 2
    )
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "gcn" in page
    assert "divided by sqrt(d_i d_j)" in page  # the normalisation is stated
    raw = cli("explain", finished, "--out", tmp_path / "raw", "--instances", "300", "--raw-norms",
              "--split", "valid")  # fmt: skip
    summary = (tmp_path / "raw" / "summary.txt").read_text()
    assert raw.code == 0 and "raw block norms" in summary and "of the valid split" in summary


def test_explain_all_methods_on_a_bundle_and_a_labelled_file(cli, finished, tmp_path):
    """--method all on the exported bundle (no store) with the raw labelled file: every method
    scores every field, the pairs come from the heatmap and the permutation statistic, the
    report shows them side by side, and the agreement covers every two methods."""
    pytest.importorskip("captum", reason="the captum method needs slimctr[explain]")
    assert cli("export", finished, "--out", tmp_path / "bundle").code == 0
    result = cli(
        "explain", tmp_path / "bundle", "--input", finished.parent / "s.csv",
        "--method", "all", "--instances", "400", "--out", tmp_path / "report", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = result.json()
    fields = [f["name"] for f in json.loads((finished / "schema.json").read_text())["fields"]]
    assert set(data["methods"]) == {"gates", "captum", "permutation"}
    assert all(list(scores) == fields for scores in data["methods"].values())
    assert set(data["method_pairs"]) == {"heatmap", "permutation"}
    assert len(data["agreement"]) == 3 + 1  # three field pairs of methods, one of pair sources
    assert all(rho is None or -1 <= rho <= 1 for *_, rho in data["agreement"])
    report = tmp_path / "report"
    assert {"methods.csv", "method_pairs.csv", "agreement.csv", "methods.png"} <= {
        p.name for p in report.iterdir()
    }
    summary = (report / "summary.txt").read_text()
    assert "file s.csv" in (report / "report.html").read_text()
    assert "Top fields by captum" in summary and "Rank agreement" in summary


def test_explain_a_model_without_cross_layers_with_model_agnostic_methods(
    cli, prepared_lr, tmp_path
):
    result = cli(
        "explain", prepared_lr, "--method", "permutation", "--instances", "300",
        "--out", tmp_path / "lr", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = result.json()
    assert data["field_importance"] is None and data["interactions"] == []
    assert set(data["methods"]) == {"permutation"} and data["method_pairs"]["permutation"]


def test_explain_user_errors(cli, finished, tmp_path, prepared_lr):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    _one_line_error(cli("explain", finished, "--out", tmp_path / "full"), "not empty")
    _one_line_error(cli("explain", finished, "--out", tmp_path / "r", "--ratio", "2"), "(0, 1]")
    _one_line_error(
        cli("explain", finished.parent, "--out", tmp_path / "r"),
        "not a slimctr model bundle or finished run",
    )
    _one_line_error(
        cli("explain", prepared_lr, "--out", tmp_path / "r"), "nothing to explain", "gdcn_p"
    )
    _one_line_error(
        cli("explain", finished, "--data", tmp_path, "--input", tmp_path / "x.csv",
            "--out", tmp_path / "r"),
        "not both",
    )  # fmt: skip
    assert cli("export", finished, "--out", tmp_path / "b").code == 0
    _one_line_error(cli("explain", tmp_path / "b", "--out", tmp_path / "r"), "is a bundle")
    _one_line_error(
        cli("explain", tmp_path / "b", "--input", tmp_path / "none.csv", "--out", tmp_path / "r"),
        "none.csv",
    )
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def prepared_lr(finished):
    """A finished LR run on the same store: a model with nothing to explain."""
    from slimctr.cli import main

    out = finished.parent / "lr"
    assert (
        main(["train", str(finished.parent / "d"), "--model", "lr", "--out", str(out), *LR_FAST])
        == 0
    )
    return out
