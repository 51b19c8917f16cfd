"""The loader: every row of a split exactly once per epoch, seeded shuffles, typed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimctr.data.batch import Batch
from slimctr.data.loader import BatchLoader
from slimctr.data.prepare import PrepareOptions, Sources, prepare
from tests.conftest import write_text


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loader")
    lines = ["label,row,group,x"] + [f"{i % 3 == 0:d},{i},{i % 7},{i / 10}" for i in range(2000)]
    source = write_text(tmp / "rows.csv", lines)
    built, _ = prepare(
        Sources(train=(source,)),
        tmp / "d",
        PrepareOptions(categorical=("row", "group"), vocabulary_from="all", seed=1),
    )
    return built


def _rows(batch: Batch, store) -> list[int]:
    """Recover each batch row's original row number from its 'row' id."""
    vocab = dict(store.vocabulary("row").select("id", "value").iter_rows())
    return [int(vocab[int(i)]) for i in batch.categorical[:, 0]]


def test_batches_are_typed_and_shaped(store):
    batch = next(iter(BatchLoader(store, "train", batch_size=64)))
    assert batch.categorical.dtype == torch.int32 and batch.categorical.shape == (64, 2)
    assert batch.numeric.dtype == torch.float32 and batch.numeric.shape == (64, 1)
    assert batch.labels.dtype == torch.float32 and batch.labels.shape == (64,)
    assert len(batch.to("cpu")) == 64


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_row_once_per_epoch_with_consistent_columns(store, shuffle):
    loader = BatchLoader(
        store, "train", batch_size=100, shuffle=shuffle, block_rows=16, window_blocks=4
    )
    seen = []
    for batch in loader:
        rows = _rows(batch, store)
        seen += rows
        # label and numeric value travel with their row: label = (row % 3 == 0), x = row / 10
        assert batch.labels.tolist() == [float(r % 3 == 0) for r in rows]
    assert len(seen) == 1600 == len(set(seen))
    assert len(loader) == 16


def test_unshuffled_order_is_the_stored_order(store):
    loader = BatchLoader(store, "test", batch_size=64)
    rows = [r for batch in loader for r in _rows(batch, store)]
    r = store.split("test")
    vocab = dict(store.vocabulary("row").select("id", "value").iter_rows())
    assert rows == [int(vocab[int(i)]) for i in store.column("row")[r.start : r.stop]]


def test_shuffle_is_seeded_per_epoch(store):
    def epoch_order(seed: int, epoch: int) -> list[int]:
        loader = BatchLoader(
            store, "train", batch_size=128, shuffle=True, seed=seed, block_rows=16, window_blocks=4
        )
        loader.set_epoch(epoch)
        return [r for batch in loader for r in _rows(batch, store)]

    assert epoch_order(0, 0) == epoch_order(0, 0)
    assert epoch_order(0, 0) != epoch_order(0, 1)
    assert epoch_order(0, 0) != epoch_order(1, 0)


def test_shuffle_mixes_rows_beyond_one_block(store):
    loader = BatchLoader(
        store, "train", batch_size=64, shuffle=True, block_rows=16, window_blocks=8
    )
    batch = next(iter(loader))
    r = store.split("train")
    position = {int(v): i for i, v in enumerate(store.column("row")[r.start : r.stop])}
    ids = batch.categorical[:, 0].numpy()
    blocks = {position[int(i)] // 16 for i in ids}
    assert len(blocks) > 4  # a batch draws from several blocks, not one contiguous run


def test_drop_last_and_the_epoch_counter(store):
    loader = BatchLoader(store, "valid", batch_size=64, shuffle=True, drop_last=True)
    sizes = [len(b) for b in loader]
    assert sizes == [64, 64, 64] and len(loader) == 3  # 200 rows
    assert loader.epoch == 1
    assert np.sum([len(b) for b in BatchLoader(store, "valid", batch_size=64)]) == 200


@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_split_every_global_batch(store, shuffle):
    """Data parallelism: the parts of each global batch are that batch; when shuffling, a tail
    batch smaller than the number of parts is skipped, so no part is empty."""
    kwargs = {"batch_size": 9, "shuffle": shuffle, "seed": 3}
    whole = [_rows(b, store) for b in BatchLoader(store, "train", **kwargs)]
    parts = [
        [_rows(b, store) for b in BatchLoader(store, "train", shard=(i, 3), **kwargs)]
        for i in range(3)
    ]
    rows = len(store.split("train"))
    assert rows % 9 == 7 and rows == 1600  # a tail batch of 7 rows
    kept = whole
    assert all(len(p) == len(kept) for p in parts)
    for b, batch in enumerate(kept):
        assert sorted(r for part in parts for r in part[b]) == sorted(batch)
        assert [len(part[b]) for part in parts] == [len(x) for x in np.array_split(batch, 3)]
    if not shuffle:  # which store rows each part holds, to put gathered scores back in order
        loader = BatchLoader(store, "train", shard=(1, 3), **kwargs)
        every = np.concatenate([loader.rows_of(i) for i in range(3)])
        assert len(loader.rows_of(1)) == sum(map(len, parts[1]))
        assert np.array_equal(np.sort(every), np.arange(rows))


def test_a_tail_smaller_than_the_parts_is_skipped_only_when_shuffling(store):
    for shuffle, sizes in ((True, [533]), (False, [533, 0])):
        loader = BatchLoader(store, "train", batch_size=1599, shuffle=shuffle, shard=(2, 3))
        assert [len(b) for b in loader] == sizes  # the tail of 1 row: parts of 1, 0 and 0
