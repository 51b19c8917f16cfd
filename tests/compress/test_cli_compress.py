"""`slimctr compress`: one codec to a bundle, the sweep's table and plot, and bad input."""

from __future__ import annotations

import json


def test_compress_writes_a_bundle_that_evaluate_reads(cli, trained, tmp_path):
    out = tmp_path / "int8"
    result = cli("compress", trained / "deepfm", "--codec", "int8", "--out", out,
                 "--threads", "1", "--json")  # fmt: skip
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["embedding_bytes"] < summary["float32"]["embedding_bytes"]
    evaluated = cli("evaluate", out, "--data", trained / "data", "--json")
    assert evaluated.code == 0 and json.loads(evaluated.out)["auc"] == summary["test"]["auc"]
    again = cli("compress", trained / "deepfm", "--codec", "int8", "--out", out)
    assert again.code != 0 and "not empty" in again.err


def test_the_sweep_writes_a_table_and_a_plot(cli, trained, tmp_path):
    result = cli("compress", trained / "deepfm", "--sweep", "--out", tmp_path / "sweep",
                 "--threads", "1")  # fmt: skip
    assert result.code == 0, result.err
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| fp8-e4m3@field |" in table and "| pca:0.5+int8 |" in table
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000


def test_compress_takes_a_codec_or_the_sweep_and_dense_only_with_a_codec(cli, trained, tmp_path):
    neither = cli("compress", trained / "deepfm", "--out", tmp_path / "x")
    both = cli(
        "compress", trained / "deepfm", "--codec", "int8", "--sweep", "--out", tmp_path / "x"
    )
    unknown = cli("compress", trained / "deepfm", "--codec", "int3", "--out", tmp_path / "x")
    dense = cli(
        "compress", trained / "deepfm", "--sweep", "--dense", "int8", "--out", tmp_path / "x"
    )
    for result in (neither, both, unknown, dense):
        assert result.code != 0 and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
