"""Bad input: one line `slimctr: error:` naming the file and line or column, exit 1, no store."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys

import polars as pl
import pytest

from slimctr.files import exclusive
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


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan", "NaN", "1e400"])
@pytest.mark.parametrize(
    "options",
    [
        ["--numeric", "n"],
        ["--numeric", "n", "--numeric-encoding", "bucket"],
        ["--order-by", "n", "--categorical", "n"],  # text keys of a categorical field
        ["--order-by", "n", "--drop", "n"],
    ],
)
def test_non_finite_numbers_are_refused(cli, tmp_path, value, options):
    source = write_text(tmp_path / "bad.csv", [HEADER, "1,x,y,1.0", f"0,x,y,{value}", "1,x,y,2"])
    out = tmp_path / "store"
    result = cli("prepare", source, "--out", out, *options)
    _assert_clean_failure(result, out, "bad.csv", "line 3", "non-finite", "column 'n'")


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_non_finite_labels_are_refused(cli, tmp_path, value):
    source = write_text(tmp_path / "bad.csv", [HEADER, "1,x,y,1.0", f"{value},x,y,2"])
    out = tmp_path / "store"
    result = cli("prepare", source, "--out", out)
    _assert_clean_failure(result, out, "bad.csv", "line 3", "non-finite", "column 'label'")


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("n", [1.0, float("nan"), 2.0]),
        ("n", [1.0, 2.0, float("-inf")]),
        ("label", [1.0, float("inf"), 0.0]),
    ],
)
def test_non_finite_parquet_floats_are_refused(cli, tmp_path, column, values):
    frame = pl.DataFrame({"label": [1.0, 0.0, 1.0], "a": ["x", "y", "x"], "n": [0.5, 1.5, 2.5]})
    source = tmp_path / "bad.parquet"
    frame.with_columns(pl.Series(column, values)).write_parquet(source)
    out = tmp_path / "store"
    row = 1 + next(i for i, v in enumerate(values) if not math.isfinite(v))
    result = cli("prepare", source, "--out", out, "--numeric", "n")
    _assert_clean_failure(result, out, "bad.parquet", f"row {row}", "non-finite", f"'{column}'")


def test_null_and_empty_numbers_stay_missing(cli, tmp_path):
    frame = pl.DataFrame({"label": [1, 0, 1], "n": [0.5, None, 2.5]})
    frame.write_parquet(tmp_path / "x.parquet")
    write_text(tmp_path / "x.csv", ["label,n", "1,0.5", "0,", "1,2.5"])
    write_text(tmp_path / "quoted.csv", ['"label","n"', '"1","0.5"', '"0",""', '"1","2.5"'])
    for source in ("x.parquet", "x.csv", "quoted.csv"):
        out = tmp_path / f"store-{source}"
        result = cli("prepare", tmp_path / source, "--out", out, "--split", "1,0,0")
        assert result.code == 0, result.err
        assert "mean 1.5, std 1" in result.out


@pytest.mark.parametrize(
    "data",
    [
        b"label,a\r,b\n1,x,y\n0,z,w\n",  # a stray carriage return inside the header
        b"label,a,b\r1,x,y\n0,z,w\n",  # the header ends in a lone carriage return
    ],
)
def test_carriage_return_inside_the_first_line(cli, tmp_path, data):
    source = tmp_path / "cr.csv"
    source.write_bytes(data)
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "cr.csv", "line 1", "carriage return")


def test_quoted_header_name_with_a_line_break(cli, tmp_path):
    source = tmp_path / "q.csv"
    source.write_bytes(b'label,"two\nlines",b\n1,x,y\n')
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "q.csv", "line 1", "quoted value")


@pytest.mark.parametrize("gzip_it", [False, True])
@pytest.mark.parametrize("piece_bytes", [None, *range(990, 1020, 3)])
def test_quoted_value_with_a_line_break_is_refused(
    cli, tmp_path, monkeypatch, gzip_it, piece_bytes
):
    """Refused with its line wherever the piece boundaries fall, never read as two rows."""
    from slimctr.data import formats

    if piece_bytes:
        monkeypatch.setattr(formats, "PIECE_BYTES", piece_bytes)
    lines = ["label,a,b"] + [f"{i % 2},v{i:04d},w" for i in range(200)]
    lines[101] = '1,"x\ny",z'  # its line break is at byte 1004
    source = write_text(tmp_path / "q.csv", lines, gzip_it=gzip_it)
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "q.csv", "line 102", "quoted value")


def test_header_without_line_end_in_gzip(cli, tmp_path):
    source = tmp_path / "h.csv.gz"
    source.write_bytes(gzip.compress(b"label,a"))
    result = cli("prepare", source, "--out", tmp_path / "store")
    _assert_clean_failure(result, tmp_path / "store", "h.csv.gz", "no data rows")


LONG = "n" * 100_000


@pytest.mark.parametrize(
    ("lines", "options"),
    [
        ([f"click,{LONG}", "1,2"], []),  # --label not found: the message lists the columns
        ([f"label,{LONG}", "1,2", "0,inf"], ["--numeric", LONG]),
        ([f"label,{LONG}", "1,2", "0,inf"], ["--order-by", LONG]),
        (["label,n", "1,2", f"0,{LONG}"], ["--numeric", "n"]),  # a long cell value
        (["label,n", f"{LONG},2"], []),
        ([f"label,{LONG},{LONG}", "1,2,3"], []),  # duplicate names
    ],
)
def test_long_names_and_values_are_cut_in_messages(cli, tmp_path, lines, options):
    source = write_text(tmp_path / "long.csv", lines)
    result = cli("prepare", source, "--out", tmp_path / "store", *options)
    _assert_clean_failure(result, tmp_path / "store", "long.csv", "characters)")
    assert len(result.err) < 400, result.err[:400]


def test_a_second_prepare_into_the_same_store_is_refused(cli, tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,a", "1,x", "0,y"])
    out = tmp_path / "store"
    with exclusive(out, "the store"):  # another prepare is building it
        result = cli("prepare", source, "--out", out, "--min-count", "2")
    _assert_clean_failure(result, out, "another slimctr process", str(out))


@pytest.mark.parametrize("out", [".", "sub/.."])
def test_output_that_is_the_current_folder(cli, tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    write_text(tmp_path / "x.csv", ["label,a", "1,x", "0,y"])
    result = cli("prepare", "x.csv", "--out", out)
    assert result.code == 1 and "already holds other files" in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "x.csv"]
