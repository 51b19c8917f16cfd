"""prepare on awkward but valid input: hostile column names, spreadsheet CSV, leftovers of killed
runs. Each test runs the CLI in-process and reads the store back."""

from __future__ import annotations

import csv
import gzip
import io
import re

import numpy as np
import pytest

from slimctr.data.store import open_store

BOM = b"\xef\xbb\xbf"


def _csv_bytes(rows: list[list[str]], *, line_end: str = "\n") -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator=line_end).writerows(rows)
    return text.getvalue().encode()


def _decoded(store, name: str) -> list[str | None]:
    """Every row's value of a categorical field, back through the vocabulary (None: OOV)."""
    vocabulary = dict(store.vocabulary(name).select("id", "value").iter_rows())
    return [vocabulary.get(int(i)) for i in store.column(name)]


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_column_names_never_become_paths(cli, tmp_path):
    work = tmp_path / "a" / "b" / "c"  # room for `..` to climb, all inside tmp_path
    work.mkdir(parents=True)
    names = [
        "../../../ESCAPED",
        str(tmp_path / "ABS_COL"),
        "<script>alert(1)</script>",
        "a/b",
        "..",
        ".",
        "tab\there\x01bell",
        "ünïcødé 名前 🙂",
        "x" * 1000,  # longer than any file name may be
        "y" * 70_000,  # a header longer than 64 KiB
        "",
        " label ",
        "order",  # the scratch name of the --order-by keys
    ]
    rows = [[str(i % 2), *(f"v{i % 3}-{j}" for j in range(len(names)))] for i in range(20)]
    source = work / "in.csv"
    source.write_bytes(_csv_bytes([["label", *names], *rows]))
    out = work / "store"
    before = _tree(tmp_path)

    result = cli("prepare", source, "--out", out, "--vocab-from", "all", "--split", "1,0,0")

    assert result.code == 0, result.err
    created = _tree(tmp_path) - before
    assert created == {str(p.relative_to(tmp_path)) for p in [out, *out.rglob("*")]}
    store = open_store(out)
    assert [f.name for f in store.schema.fields] == names
    for position, (spec, name) in enumerate(zip(store.manifest["fields"], names, strict=True)):
        assert spec["file"] == f"columns/field-{position:04d}.npy"
        assert _decoded(store, name) == [row[1 + position] for row in rows]
    assert all(re.fullmatch(r"[a-z0-9.-]+", p.name) for p in (out / "columns").iterdir())


@pytest.mark.parametrize("gzip_it", [False, True])
def test_a_spreadsheet_saved_csv_reads_as_written(cli, tmp_path, gzip_it):
    """Excel / LibreOffice: byte-order mark, CRLF, quotes where needed, empty cells."""
    rows = [
        ["label", "city", "note, quoted", "price"],
        ["1", "Paris, FR", "", "1.5"],
        ["0", "Berlin", 'say "hi"', ""],
        ["1", "", "x", "2.5"],
        ["0", "Paris, FR", "", "3.5"],
    ]
    data = BOM + _csv_bytes(rows, line_end="\r\n")
    source = tmp_path / ("sheet.csv.gz" if gzip_it else "sheet.csv")
    source.write_bytes(gzip.compress(data) if gzip_it else data)
    out = tmp_path / "store"

    result = cli("prepare", source, "--out", out, "--split", "1,0,0")

    assert result.code == 0, result.err
    store = open_store(out)
    assert store.schema.label == "label"
    kinds = [(f.name, f.kind) for f in store.schema.fields]
    assert kinds == [("city", "categorical"), ("note, quoted", "categorical"), ("price", "numeric")]
    assert store.labels()[:].tolist() == [1, 0, 1, 0]
    assert _decoded(store, "city") == ["Paris, FR", "Berlin", "", "Paris, FR"]
    assert _decoded(store, "note, quoted") == ["", 'say "hi"', "x", ""]
    present = np.array([1.5, 2.5, 3.5])
    expected = [(v - present.mean()) / present.std() for v in (1.5, 0, 2.5, 3.5)]
    expected[1] = 0.0  # missing: the mean
    np.testing.assert_allclose(store.column("price")[:], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "data",
    [
        BOM + b"1,a,x\r\n0,b,y\r\n1,a,x\r\n",  # headerless, byte-order mark
        b"1,a,x\r\n0,b,y\n1,a,x\n",  # the only CRLF on the first line
        BOM + b"1,a,x\n0,b,y\n1,a,x",  # no line end at the end
    ],
)
def test_headerless_text_with_bom_or_crlf(cli, tmp_path, data):
    source = tmp_path / "x.csv"
    source.write_bytes(data)
    out = tmp_path / "store"
    result = cli(
        "prepare", source, "--no-header", "--label", "c0", "--out", out, "--split", "1,0,0"
    )
    assert result.code == 0, result.err
    store = open_store(out)
    assert store.labels()[:].tolist() == [1, 0, 1]
    assert _decoded(store, "c1") == ["a", "b", "a"]
    assert _decoded(store, "c2") == ["x", "y", "x"]


def test_crlf_only_on_the_header_line_and_a_quoted_header_name(cli, tmp_path):
    source = tmp_path / "x.csv"
    source.write_bytes(b'label,"a,b",n\r\n1,x,1.5\n0,y,2.5\n')
    out = tmp_path / "store"
    assert cli("prepare", source, "--out", out, "--split", "1,0,0").code == 0
    store = open_store(out)
    assert [f.name for f in store.schema.fields] == ["a,b", "n"]
    assert store.manifest["fields"][1]["mean"] == pytest.approx(2.0)


def test_leftovers_of_killed_runs_are_removed(cli, tmp_path):
    source = tmp_path / "x.csv"
    source.write_bytes(_csv_bytes([["label", "a"], *([str(i % 2), f"v{i}"] for i in range(10))]))
    out = tmp_path / "store"
    stale = [tmp_path / ".store.tmp-99999999", tmp_path / ".store.old-4242"]
    for folder in stale:  # a killed build, and a store killed while being replaced
        (folder / "columns").mkdir(parents=True)
        (folder / "columns" / "field-0000.npy").write_bytes(b"\0" * 1000)
    others = [tmp_path / ".store.tmp-1.tmp-2", tmp_path / ".other.tmp-7", tmp_path / "store2"]
    for folder in others:  # another store's staging, another store
        folder.mkdir()

    assert cli("prepare", source, "--out", out).code == 0

    assert not any(folder.exists() for folder in stale)
    assert all(folder.exists() for folder in others)
    assert {p.name for p in tmp_path.iterdir()} == {"x.csv", "store", *(p.name for p in others)}


def test_publish_keeps_the_old_store_when_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    from slimctr import files

    out, staging = tmp_path / "store", tmp_path / ".store.tmp-1"
    for folder, content in ((out, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "manifest.json").write_text(content)
    replace = files.os.replace

    def failing(source, destination):
        if source == staging:
            raise OSError("no space left")
        replace(source, destination)

    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(OSError):
        files.publish(staging, out)
    assert (out / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.tmp-1", "store"]
