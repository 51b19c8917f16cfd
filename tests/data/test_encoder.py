"""New raw rows are encoded exactly as prepare encoded the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimctr.data.encoder import Encoder
from slimctr.data.loader import BatchLoader
from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.errors import SlimctrError
from tests.conftest import write_text


@pytest.fixture
def store_and_files(tmp_path):
    lines = ["label,c,n,k"] + [f"{i % 2},v{i % 13},{i % 7},{i * 3 % 50}" for i in range(400)]
    train = write_text(tmp_path / "train.csv", lines)
    other = write_text(tmp_path / "other.csv", ["label,c,n,k", "1,zzz,3,999", "0,v1,,4"])
    store, _ = prepare(
        Sources(train=(train,), valid=(other,), test=(other,)),
        tmp_path / "d",
        PrepareOptions(
            categorical=("c",), numeric=("n", "k"), numeric_encoding="standardize", min_count=20
        ),
    )
    return store, train, other


def _encode(store, path, columns=None, labels=False):
    encoder = Encoder.from_store(store)
    return encoder.batches(encoder.open(path, columns), labels=labels)


def test_encoding_the_training_file_reproduces_the_store(store_and_files):
    store, train, _ = store_and_files
    encoded = list(_encode(store, train, labels=True))
    stored = list(BatchLoader(store, "train", batch_size=10_000))
    assert torch.equal(torch.cat([b.categorical for b in encoded]), stored[0].categorical)
    assert torch.allclose(torch.cat([b.numeric for b in encoded]), stored[0].numeric)
    assert torch.equal(torch.cat([b.labels for b in encoded]), stored[0].labels)


def test_unseen_values_are_oov_and_missing_numbers_are_the_mean(store_and_files):
    store, _, other = store_and_files
    (batch,) = _encode(store, other)
    assert batch.categorical[0, 0] == 1  # 'zzz' never seen: OOV
    assert batch.numeric[1, 0] == 0.0  # empty 'n' -> the training mean -> 0


def test_input_without_the_label_column(store_and_files, tmp_path):
    store, _, _ = store_and_files
    path = write_text(tmp_path / "x.csv", ["c,n,k", "v1,3,4"])
    (batch,) = _encode(store, path)
    assert batch.categorical.shape == (1, 1) and batch.numeric.shape == (1, 2)


def test_input_missing_a_field_is_an_error(store_and_files, tmp_path):
    store, _, _ = store_and_files
    path = write_text(tmp_path / "x.csv", ["label,c", "1,v1"])
    with pytest.raises(SlimctrError, match="lacks the columns 'n', 'k'"):
        list(_encode(store, path))


def test_criteo_layout_with_buckets(tmp_path):
    row = "\t".join(["1", *["3"] * 13, *["68fd1e64"] * 26])
    other = "\t".join(["0", *["100"] * 13, *["aaaa"] * 26])
    folder = tmp_path / "criteo"
    folder.mkdir()
    write_text(folder / "train.txt", [row, other] * 30)
    from slimctr.data.datasets import locate

    located = locate("criteo", [folder])
    store, _ = prepare(located.sources, tmp_path / "s", located.options)
    unlabelled = write_text(tmp_path / "new.txt", ["\t".join(["3"] * 13 + ["68fd1e64"] * 26)])
    (batch,) = _encode(store, unlabelled)
    ids = batch.categorical[0].numpy()
    vocab = store.vocabulary("I1")
    assert ids[0] == vocab.filter(vocab["value"] == "1")["id"][0]  # 3 -> floor(ln(3)^2) = 1
    assert np.all(ids > 1)


def test_columns_are_matched_by_name_in_any_order(store_and_files, tmp_path):
    store, _, other = store_and_files
    (expected,) = _encode(store, other)
    reordered = write_text(tmp_path / "r.csv", ["k,extra,n,c", "999,x,3,zzz", "4,y,,v1"])
    encoder = Encoder.from_store(store)
    source = encoder.open(reordered)
    (batch,) = encoder.batches(source)
    assert torch.equal(batch.categorical, expected.categorical)
    assert torch.equal(batch.numeric, expected.numeric)
    assert encoder.unused(source.columns) == ["extra"]


def test_headerless_input_needs_its_column_names(store_and_files, tmp_path):
    store, _, other = store_and_files
    (expected,) = _encode(store, other)
    bare = write_text(tmp_path / "bare.csv", ["3,999,zzz", ",4,v1"])
    with pytest.raises(SlimctrError, match="name its columns with --columns"):
        list(_encode(store, bare))
    (batch,) = _encode(store, bare, columns=("n", "k", "c"))
    assert torch.equal(batch.categorical, expected.categorical)
    assert torch.equal(batch.numeric, expected.numeric)


def test_labels_are_only_read_when_asked(store_and_files, tmp_path):
    store, _, _ = store_and_files
    path = write_text(tmp_path / "x.csv", ["label,c,n,k", ",v1,3,4", "7,v2,1,1"])
    assert len(next(iter(_encode(store, path)))) == 2  # predict needs no label
    with pytest.raises(SlimctrError, match="empty label"):
        list(_encode(store, path, labels=True))


@pytest.mark.parametrize("value", ["1e400", "inf", "-inf", "nan"])
def test_non_finite_numbers_to_predict_are_an_error(store_and_files, tmp_path, value):
    store, _, _ = store_and_files
    path = write_text(tmp_path / "x.csv", ["c,n,k", "v1,3,4", f"v1,{value},4"])
    with pytest.raises(SlimctrError, match=r"non-finite value .* column 'n'.*x\.csv, line 3"):
        list(_encode(store, path))


def test_few_values_looked_up_in_a_dict_get_the_ids_a_join_gives(store_and_files, monkeypatch):
    """The dict lookup (few distinct values, a served request) and the join (many) agree,
    unseen and missing values included."""
    from slimctr.data import encoder as module

    store, train, other = store_and_files
    frame = {"c": ["v1", None, "never", "v12"], "n": [1.0, 2.0, 3.0, 4.0], "k": [1, 2, 3, 4]}

    def encoded(most: int) -> list[torch.Tensor]:
        monkeypatch.setattr(module, "_DICT_LOOKUP_MAX", most)
        found = [torch.cat([b.categorical for b in _encode(store, p)]) for p in (train, other)]
        return [*found, next(Encoder.from_store(store).frame_batches(frame)).categorical]

    joined, looked_up = encoded(0), encoded(10**6)
    for a, b in zip(joined, looked_up, strict=True):
        assert torch.equal(a, b)
    assert looked_up[-1][2, 0] == 1  # unseen: OOV
