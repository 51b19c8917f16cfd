"""Bad input: one line `slimctr: error:` naming the file and line or column, exit 1, no store."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from tests.conftest import write_text

HEADER = "label,a,b,n"


def _assert_clean_failure(result, out_dir, *fragments: str) -> None:
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("slimctr: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.err
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}")]


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        ([HEADER, "1,x,y,1.0", "0,x,y", "1,x,y,2.0"], ["ragged row", "line 3"]),
        ([HEADER, "1,x,y,1.0", "0,x,y,2.0,9"], ["ragged row", "line 3"]),
        ([HEADER, "1,x,y,1.0", "2,x,y,1.0"], ["label 2", "line 3"]),
        ([HEADER, "1,x,y,1.0", "yes,x,y,1.0"], ["'yes'", "column 'label'", "line 3"]),
        ([HEADER, "1,x,y,1.0", ",x,y,1.0"], ["empty label", "line 3"]),
        ([HEADER, "1,x,y,1.0", "0,x,y,abc"], ["'abc'", "column 'n'", "line 3"]),
        ([HEADER, "1,x,y,1.0", "-1,x,y,1.0", "0,x,y,1.0"], ["mix 0 and -1"]),
        ([HEADER], ["no data rows"]),
    ],
)
def test_malformed_csv(cli, tmp_path, lines, fragments):
    source = write_text(tmp_path / "bad.csv", lines)
    out = tmp_path / "store"
    result = cli("prepare", source, "--out", out, "--numeric", "n")
    _assert_clean_failure(result, out, "bad.csv", *fragments)


def test_missing_label_column(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["click,a", "1,x"])
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "'label'", "--label", "x.csv", "click")


def test_unknown_column_in_an_option(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,a", "1,x"])
    result = cli("prepare", source, "--out", tmp_path / "store", "--drop", "zzz")
    _assert_clean_failure(result, tmp_path / "store", "'zzz'", "--drop")


def test_empty_file(cli, tmp_path):
    source = tmp_path / "empty.csv"
    source.write_bytes(b"")
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "empty.csv", "empty")


def test_truncated_gzip(cli, tmp_path):
    data = gzip.compress(("label,a\n" + "".join(f"{i % 2},v{i}\n" for i in range(50_000))).encode())
    source = tmp_path / "cut.csv.gz"
    source.write_bytes(data[: len(data) // 2])
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "cut.csv.gz")


def test_libfm_token_that_is_not_idx_val(cli, tmp_path):
    source = write_text(tmp_path / "x.libfm", ["1 3:1 5:1", "0 3:1 oops", "1 4:1 5:1"])
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "'oops'", "x.libfm", "line 2")


def test_libfm_ragged_row(cli, tmp_path):
    source = write_text(tmp_path / "x.libfm", ["1 3:1 5:1", "0 3:1", "1 4:1 5:1"])
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "ragged row", "line 2")


def test_unknown_option(cli, tmp_path):
    result = cli("prepare", "x.csv", "--out", tmp_path / "store", "--bogus")
    _assert_clean_failure(result, tmp_path / "store", "--bogus")


def test_unknown_dataset(cli, tmp_path):
    result = cli("prepare", "--dataset", "nope", "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "'nope'", "frappe")


def test_missing_path(cli, tmp_path):
    result = cli("prepare", tmp_path / "absent.csv", "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "absent.csv")


def test_output_holding_a_different_store(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,a"] + [f"{i % 2},v{i % 3}" for i in range(30)])
    out = tmp_path / "store"
    assert cli("prepare", source, "--out", out).code == 0
    before = sorted(p.name for p in out.rglob("*"))
    result = cli("prepare", source, "--out", out, "--min-count", "2")
    assert result.code == 1 and "already holds a different store" in result.err
    assert "--overwrite" in result.err and len(result.err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.rglob("*")) == before
    assert cli("prepare", source, "--out", out, "--min-count", "2", "--overwrite").code == 0


def test_output_holding_other_files(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,a", "1,x", "0,y"])
    out = tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = cli("prepare", source, "--out", out)
    assert result.code == 1 and "other files" in result.err
    assert (out / "notes.txt").read_text() == "mine"


def test_console_script_prints_no_traceback(tmp_path):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "slimctr.cli",
            "prepare",
            str(tmp_path / "nothing.csv"),
            "--out",
            str(tmp_path / "store"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 1
    assert process.stderr.startswith("slimctr: error: no such file")
    assert "Traceback" not in process.stderr


def test_order_by_with_given_files_is_refused(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,a,t", "1,x,3", "0,y,4"])
    result = cli(
        "prepare",
        source,
        "--valid",
        source,
        "--test",
        source,
        "--order-by",
        "t",
        "--out",
        tmp_path / "store",
    )
    _assert_clean_failure(result, tmp_path / "store", "--order-by")


def test_text_that_is_not_utf8(cli, tmp_path):
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"label,c\n1,ok\n0,caf\xe9\n")
    result = cli("prepare", source, "--categorical", "c", "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "latin1.csv", "line 3", "not UTF-8", "'c'")


def test_output_that_is_a_file(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,a", "1,x", "0,y"])
    (tmp_path / "taken").write_text("mine")
    result = cli("prepare", source, "--out", tmp_path / "taken")
    assert result.code == 1 and "is a file" in result.err
    assert (tmp_path / "taken").read_text() == "mine"
