"""prepare: every row lands in the right split with the right id, reproducibly."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.data.store import FORMAT_VERSION, open_store
from slimctr.errors import SlimctrError
from slimctr.schema import OOV_ID
from tests.conftest import write_text


def _decode(store, field: str, split: str) -> list[str | None]:
    """Stored ids of one split mapped back to values (None for OOV)."""
    vocab = dict(store.vocabulary(field).select("id", "value").iter_rows())
    r = store.split(split)
    return [vocab.get(int(i)) for i in store.column(field)[r.start : r.stop]]


@pytest.fixture
def files(tmp_path):
    train = write_text(
        tmp_path / "train.csv",
        [
            "label,color,size,price",
            "1,red,3,1.5",
            "0,red,1,2.5",
            "1,blue,3,",
            "0,red,2,4.0",
            "0,green,3,0.5",
            "1,blue,1,3.5",
        ],
    )
    valid = write_text(tmp_path / "valid.csv", ["label,color,size,price", "1,red,9,1.0"])
    test = write_text(tmp_path / "test.csv", ["label,color,size,price", "0,purple,3,2.0"])
    return train, valid, test


def test_file_split_round_trips_values_and_orders_vocabulary(files, tmp_path):
    train, valid, test = files
    store, built = prepare(Sources(train=(train,), valid=(valid,), test=(test,)), tmp_path / "d")
    assert built
    assert store.manifest["rows"] == {"train": 6, "valid": 1, "test": 1}
    assert [(f.name, f.kind) for f in store.schema.fields] == [
        ("color", "categorical"),
        ("size", "categorical"),
        ("price", "numeric"),
    ]
    assert _decode(store, "color", "train") == ["red", "red", "blue", "red", "green", "blue"]
    # count descending, then value: red(3) blue(2) green(1); ids start after PAD and OOV
    assert store.vocabulary("color")["value"].to_list() == ["red", "blue", "green"]
    assert store.vocabulary("color")["id"].to_list() == [2, 3, 4]
    assert store.schema.field("color").vocab_size == 5
    # values never seen in training are OOV: size 9 (valid) and purple (test)
    assert _decode(store, "size", "valid") == [None]
    assert _decode(store, "color", "test") == [None]
    assert store.labels()[:].tolist() == [1, 0, 1, 0, 0, 1, 1, 0]


def test_numeric_is_standardised_with_training_statistics(files, tmp_path):
    train, valid, test = files
    store, _ = prepare(Sources(train=(train,), valid=(valid,), test=(test,)), tmp_path / "d")
    present = np.array([1.5, 2.5, 4.0, 0.5, 3.5])
    mean, std = present.mean(), present.std()
    expected = [
        (1.5 - mean) / std,
        (2.5 - mean) / std,
        0.0,
        (4.0 - mean) / std,
        (0.5 - mean) / std,
        (3.5 - mean) / std,
        (1.0 - mean) / std,
        (2.0 - mean) / std,
    ]
    np.testing.assert_allclose(store.column("price")[:], expected, rtol=1e-6)
    spec = next(f for f in store.manifest["fields"] if f["name"] == "price")
    assert spec["mean"] == pytest.approx(mean) and spec["std"] == pytest.approx(std)


def test_min_count_sends_rare_values_to_oov(files, tmp_path):
    train, valid, test = files
    store, _ = prepare(
        Sources(train=(train,), valid=(valid,), test=(test,)),
        tmp_path / "d",
        PrepareOptions(min_count=2),
    )
    assert store.vocabulary("color")["value"].to_list() == ["red", "blue"]
    assert _decode(store, "color", "train") == ["red", "red", "blue", "red", None, "blue"]
    assert store.column("color")[4] == OOV_ID


def test_vocabulary_from_all_rows_keeps_values_only_seen_outside_train(files, tmp_path):
    train, valid, test = files
    store, _ = prepare(
        Sources(train=(train,), valid=(valid,), test=(test,)),
        tmp_path / "d",
        PrepareOptions(vocabulary_from="all"),
    )
    assert _decode(store, "color", "test") == ["purple"]


def _numbered(tmp_path, n: int):
    lines = ["label,row,hour"] + [f"{i % 2},r{i},{(i * 7919) % n}" for i in range(n)]
    return write_text(tmp_path / "rows.csv", lines)


def test_random_split_is_exact_seeded_and_a_partition(tmp_path):
    source = _numbered(tmp_path, 1000)
    options = PrepareOptions(categorical=("row", "hour"), seed=3)
    store, _ = prepare(Sources(train=(source,)), tmp_path / "a", options)
    assert store.manifest["rows"] == {"train": 800, "valid": 100, "test": 100}
    rows = {s: _decode(store, "row", s) for s in ("train", "valid", "test")}
    # with min_count 1 and train-only vocabularies, valid/test rows are OOV: compare via hours
    hours = [h for s in ("train", "valid", "test") for h in _decode_all(store, "hour", s)]
    assert len(hours) == 1000
    assert sorted(r for r in rows["train"]) == sorted(set(rows["train"]))  # no duplicates
    again, _ = prepare(Sources(train=(source,)), tmp_path / "b", options)
    other, _ = prepare(
        Sources(train=(source,)),
        tmp_path / "c",
        PrepareOptions(categorical=("row", "hour"), seed=4),
    )
    assert again.manifest["split"] == store.manifest["split"]
    assert (
        other.manifest["split"]["assignment_sha256"] != store.manifest["split"]["assignment_sha256"]
    )
    assert np.array_equal(again.column("row")[:], store.column("row")[:])


def _decode_all(store, field, split):
    r = store.split(split)
    return store.column(field)[r.start : r.stop].tolist()


def test_random_split_partitions_the_rows(tmp_path):
    source = _numbered(tmp_path, 500)
    store, _ = prepare(
        Sources(train=(source,)),
        tmp_path / "d",
        PrepareOptions(categorical=("row", "hour"), vocabulary_from="all"),
    )
    seen = [v for s in ("train", "valid", "test") for v in _decode(store, "row", s)]
    assert sorted(seen) == sorted(f"r{i}" for i in range(500))


def test_ordered_split_puts_the_earliest_rows_in_train(tmp_path):
    source = _numbered(tmp_path, 200)
    store, _ = prepare(
        Sources(train=(source,)),
        tmp_path / "d",
        PrepareOptions(
            categorical=("row",), drop=("hour",), order_by="hour", vocabulary_from="all"
        ),
    )
    hour_of = {f"r{i}": (i * 7919) % 200 for i in range(200)}
    train = [hour_of[v] for v in _decode(store, "row", "train")]
    valid = [hour_of[v] for v in _decode(store, "row", "valid")]
    test = [hour_of[v] for v in _decode(store, "row", "test")]
    assert len(train) == 160 and len(valid) == 20 and len(test) == 20
    assert max(train) < min(valid) and max(valid) < min(test)


def test_ordering_column_can_also_be_a_field(tmp_path):
    source = _numbered(tmp_path, 100)
    store, _ = prepare(
        Sources(train=(source,)),
        tmp_path / "d",
        PrepareOptions(categorical=("row", "hour"), order_by="hour", vocabulary_from="all"),
    )
    hours = [int(v) for v in _decode(store, "hour", "train")]
    assert sorted(hours) == list(range(80))


def test_inference_makes_floats_numeric_and_integers_and_strings_categorical(tmp_path):
    source = write_text(tmp_path / "x.csv", ["label,f,i,s", "1,0.5,3,a", "0,1,4,b", "1,,5,c"])
    store, _ = prepare(Sources(train=(source,)), tmp_path / "d")
    kinds = {f.name: f.kind for f in store.schema.fields}
    assert kinds == {"f": "numeric", "i": "categorical", "s": "categorical"}


def test_criteo_bucketing_matches_the_reference_rule(tmp_path):
    values = ["3", "10", "100", "2", "0", "", "-1", "260.0"]
    source = write_text(
        tmp_path / "x.csv", ["label,n"] + [f"{i % 2},{v}" for i, v in enumerate(values)]
    )
    store, _ = prepare(
        Sources(train=(source,)),
        tmp_path / "d",
        PrepareOptions(numeric=("n",), numeric_encoding="bucket", split=(1.0, 0.0, 0.0)),
    )
    assert _decode(store, "n", "train") == ["1", "5", "21", "0", "-2", "", "-3", "30"]


def test_identical_rebuild_is_reused_and_a_different_one_needs_overwrite(files, tmp_path):
    train, valid, test = files
    sources = Sources(train=(train,), valid=(valid,), test=(test,))
    _first, built = prepare(sources, tmp_path / "d")
    assert built
    _, built_again = prepare(sources, tmp_path / "d")
    assert not built_again

    with pytest.raises(SlimctrError, match="already holds a different store"):
        prepare(sources, tmp_path / "d", PrepareOptions(min_count=2))
    store, built = prepare(sources, tmp_path / "d", PrepareOptions(min_count=2), overwrite=True)
    assert built and store.manifest["options"]["min_count"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_touched_source_is_the_same_source_but_an_edited_one_is_not(files, tmp_path):
    train, valid, test = files
    sources = Sources(train=(train,), valid=(valid,), test=(test,))
    prepare(sources, tmp_path / "d")
    os.utime(train, ns=(0, 0))  # provisioned again: same bytes, another mtime
    _, built = prepare(sources, tmp_path / "d")
    assert not built
    rows = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(rows) + rows[-1])  # one more (repeated) row
    with pytest.raises(SlimctrError, match="already holds a different store"):
        prepare(sources, tmp_path / "d")


def test_manifest_records_schema_sources_split_and_checksums(files, tmp_path):
    train, valid, test = files
    _store, _ = prepare(Sources(train=(train,), valid=(valid,), test=(test,)), tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["oov_id"] == 1 and manifest["pad_id"] == 0
    assert [s["split"] for s in manifest["sources"]] == ["train", "valid", "test"]
    # files are named by position, never by column name
    assert [(f["name"], f["file"]) for f in manifest["fields"]] == [
        ("color", "columns/field-0000.npy"),
        ("size", "columns/field-0001.npy"),
        ("price", "columns/field-0002.npy"),
    ]
    assert manifest["label_file"] == "columns/label.npy"
    assert set(manifest["checksums"]) == {
        "columns/label.npy",
        "columns/field-0000.npy",
        "columns/field-0001.npy",
        "columns/field-0002.npy",
        "vocabulary.parquet",
    }
    assert manifest["split"]["method"] == "files"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".parquet"])
def test_formats_give_the_same_store(tmp_path, suffix):
    frame = pl.DataFrame(
        {"label": [1, 0, 1, 0], "c": ["x", "y", "x", "z"], "n": [0.5, 1.5, 2.5, 3]}
    )
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        frame.write_parquet(path)
    else:
        text = frame.write_csv(separator="\t" if suffix == ".tsv" else ",")
        write_text(path, text.strip().split("\n"), gzip_it=suffix.endswith(".gz"))
    store, _ = prepare(
        Sources(train=(path,)), tmp_path / "d", PrepareOptions(split=(1.0, 0.0, 0.0))
    )
    assert [(f.name, f.kind) for f in store.schema.fields] == [
        ("c", "categorical"),
        ("n", "numeric"),
    ]
    assert _decode(store, "c", "train") == ["x", "y", "x", "z"]


def test_headerless_text_gets_numbered_columns(tmp_path):
    path = write_text(tmp_path / "x.txt", ["1\ta\tb", "0\tc\td"])
    store, _ = prepare(
        Sources(train=(path,)),
        tmp_path / "d",
        PrepareOptions(header=False, label="c0", split=(1.0, 0.0, 0.0)),
    )
    assert [f.name for f in store.schema.fields] == ["c1", "c2"]


def test_libfm_with_minus_one_labels(tmp_path):
    path = write_text(tmp_path / "x.libfm", ["-1 3:1 10:1", "1 4:1 10:1", "1 3:1 11:1"])
    store, _ = prepare(
        Sources(train=(path,)), tmp_path / "d", PrepareOptions(split=(1.0, 0.0, 0.0))
    )
    assert [f.name for f in store.schema.fields] == ["f1", "f2"]
    assert store.labels()[:].tolist() == [0, 1, 1]
    assert _decode(store, "f1", "train") == ["3", "4", "3"]


def test_open_store_refuses_corruption_and_other_versions(files, tmp_path):
    train, valid, test = files
    prepare(Sources(train=(train,), valid=(valid,), test=(test,)), tmp_path / "d")

    column = tmp_path / "d" / "columns" / "field-0000.npy"  # color
    data = bytearray(column.read_bytes())
    data[-1] ^= 1
    column.write_bytes(bytes(data))
    with pytest.raises(SlimctrError, match="checksum mismatch"):
        open_store(tmp_path / "d")
    manifest_path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for version in (1, 99):  # 1 named column files after the columns
        manifest["format_version"] = version
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(SlimctrError, match=f"store format {version}.*--overwrite"):
            open_store(tmp_path / "d")


@pytest.mark.parametrize("gzip_it", [False, True])
def test_small_pieces_give_the_same_store_and_exact_line_numbers(tmp_path, monkeypatch, gzip_it):
    from slimctr.data import formats

    lines = ["label,row,x"] + [f"{i % 2},r{i},{i / 7:.3f}" for i in range(3000)]
    suffix = ".csv.gz" if gzip_it else ".csv"
    whole, _ = prepare(
        Sources(train=(write_text(tmp_path / f"a{suffix}", lines, gzip_it=gzip_it),)),
        tmp_path / "whole",
        PrepareOptions(categorical=("row",)),
    )
    monkeypatch.setattr(formats, "PIECE_BYTES", 1000)
    monkeypatch.setattr(formats, "BLOCK_BYTES", 300)
    pieces, _ = prepare(
        Sources(train=(write_text(tmp_path / f"b{suffix}", lines, gzip_it=gzip_it),)),
        tmp_path / "pieces",
        PrepareOptions(categorical=("row",)),
    )
    for name in ("row", "x"):
        assert np.array_equal(whole.column(name)[:], pieces.column(name)[:])
    assert np.array_equal(whole.labels()[:], pieces.labels()[:])
    broken = [*lines[:2500], "1,r,not-a-number", *lines[2500:]]
    with pytest.raises(SlimctrError, match=r"'not-a-number'.*line 2501$"):
        prepare(
            Sources(train=(write_text(tmp_path / f"c{suffix}", broken, gzip_it=gzip_it),)),
            tmp_path / "broken",
            PrepareOptions(categorical=("row",), numeric=("x",)),
        )
    ragged = [*lines[:2700], "1,r", *lines[2700:]]
    with pytest.raises(SlimctrError, match=r"ragged row.*line 2701$"):
        prepare(
            Sources(train=(write_text(tmp_path / f"d{suffix}", ragged, gzip_it=gzip_it),)),
            tmp_path / "ragged",
            PrepareOptions(categorical=("row",), numeric=("x",)),
        )


def test_std_keeps_its_digits_when_the_mean_is_large(tmp_path, monkeypatch):
    from slimctr.data import finalize, formats

    monkeypatch.setattr(formats, "BLOCK_BYTES", 2000)  # many scan batches ...
    monkeypatch.setattr(finalize, "SPAN_ROWS", 300)  # ... merged over several spans
    seconds = 1.7e9 + np.arange(3000) % 7 + np.arange(3000) / 4096  # timestamps
    source = write_text(
        tmp_path / "t.csv", ["label,t"] + [f"{i % 2},{float(v)!r}" for i, v in enumerate(seconds)]
    )
    store, _ = prepare(
        Sources(train=(source,)),
        tmp_path / "d",
        PrepareOptions(numeric=("t",), split=(1.0, 0.0, 0.0)),
    )
    spec = store.manifest["fields"][0]
    assert spec["mean"] == pytest.approx(seconds.mean(), rel=1e-12)
    assert spec["std"] == pytest.approx(seconds.std(), rel=1e-9)
    np.testing.assert_allclose(
        store.column("t")[:], (seconds - seconds.mean()) / seconds.std(), atol=1e-6
    )
