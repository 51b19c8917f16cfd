"""Registered datasets prepare with their published schemas (real data skips when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from slimctr.data.datasets import CRITEO_CATEGORICAL, CRITEO_NUMERIC, FRAPPE_FIELDS
from tests.conftest import shared_data, write_text

FRAPPE_FEATURES = 5_382  # distinct libfm indices over the three Frappe_x1 files
FRAPPE_ROWS = {"train": 202_027, "valid": 57_722, "test": 28_860}


@pytest.mark.parametrize("layout", ["Frappe_x1_csv", "libfm"])
def test_frappe_x1_file_split_and_vocabulary(cli, tmp_path, layout):
    folder = shared_data("frappe", layout)
    result = cli(
        "prepare",
        folder,
        "--dataset",
        "frappe",
        "--vocab-from",
        "all",
        "--out",
        tmp_path / "frappe",
        "--json",
    )
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["rows"] == FRAPPE_ROWS
    assert [f["name"] for f in summary["fields"]] == list(FRAPPE_FIELDS)
    assert all(f["kind"] == "categorical" for f in summary["fields"])
    # every field adds PAD and OOV to its kept values
    assert sum(f["vocab_size"] - 2 for f in summary["fields"]) == FRAPPE_FEATURES


def test_frappe_train_only_vocabulary_misses_values_seen_only_outside_train(cli, tmp_path):
    folder = shared_data("frappe", "Frappe_x1_csv")
    result = cli("prepare", folder, "--dataset", "frappe", "--out", tmp_path / "f", "--json")
    kept = {f["name"]: f["vocab_size"] - 2 for f in result.json()["fields"]}
    # three users appear only in valid/test; with the default train-only vocabulary they are OOV
    assert sum(kept.values()) == FRAPPE_FEATURES - 3 and kept["user"] == 954


def test_frappe_resplit_follows_the_paper(cli, tmp_path):
    folder = shared_data("frappe")
    result = cli(
        "prepare",
        folder,
        "--dataset",
        "frappe",
        "--split",
        "0.8,0.1,0.1",
        "--out",
        tmp_path / "f",
        "--json",
    )
    total = sum(FRAPPE_ROWS.values())
    assert result.json()["rows"] == {"train": total - 2 * 28_860, "valid": 28_860, "test": 28_860}


def test_criteo_sample_prepares_with_the_criteo_schema(cli, tmp_path):
    folder = shared_data("criteo_sample")
    result = cli(
        "prepare",
        folder,
        "--dataset",
        "criteo",
        "--min-count",
        "1",
        "--out",
        tmp_path / "c",
        "--json",
    )
    assert result.code == 0, result.err
    summary = result.json()
    assert [f["name"] for f in summary["fields"]] == [*CRITEO_NUMERIC, *CRITEO_CATEGORICAL]
    assert {f["transform"] for f in summary["fields"][:13]} == {"bucket"}
    assert summary["rows"] == {"train": 160, "valid": 20, "test": 20}


def test_criteo_headerless_tab_separated(cli, tmp_path):
    row = "\t".join(["1", *["3"] * 13, *["68fd1e64"] * 26])
    empty = "\t".join(["0", *[""] * 13, *[""] * 26])
    folder = tmp_path / "criteo"
    folder.mkdir()
    write_text(folder / "train.txt", [row, empty] * 10)
    result = cli("prepare", folder, "--dataset", "criteo", "--out", tmp_path / "c", "--json")
    assert result.code == 0, result.err
    assert len(result.json()["fields"]) == 39


def test_avazu_layout(cli, tmp_path):
    folder = tmp_path / "avazu"
    folder.mkdir()
    header = "id,click,hour,C1,banner_pos,site_id"
    rows = [f"{i},{i % 2},14102100,1005,{i % 2},s{i % 4}" for i in range(60)]
    write_text(folder / "train.csv", [header, *rows])
    result = cli("prepare", folder, "--dataset", "avazu", "--out", tmp_path / "a", "--json")
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["label"] == "click"
    assert [f["name"] for f in summary["fields"]] == ["hour", "C1", "banner_pos", "site_id"]
    assert sum(summary["rows"].values()) == 60


def test_synthetic_file_prepares_and_carries_its_truth(cli, tmp_path):
    source = tmp_path / "synthetic.parquet"
    assert cli("synth", "--rows", 20_000, "--out", source).code == 0
    result = cli("prepare", source, "--dataset", "synthetic", "--out", tmp_path / "s", "--json")
    assert result.code == 0, result.err
    assert (tmp_path / "s" / "truth.json").read_bytes() == (
        tmp_path / "synthetic.parquet.truth.json"
    ).read_bytes()
    assert sum(result.json()["rows"].values()) == 20_000
    assert {f["transform"] for f in result.json()["fields"]} == {"token", "bucket"}
    labels = np.load(tmp_path / "s" / "columns" / "label.npy")
    assert 0.1 < labels.mean() < 0.5
