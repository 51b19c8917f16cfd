"""Seeded mini-batches straight from the memory-mapped columns of a store.

Shuffling is two-level, so that reads stay sequential while batches stay well mixed: the split is
cut into blocks of ``block_rows`` contiguous rows, the blocks are visited in a random order, and the
rows of each window of ``window_blocks`` consecutive blocks are shuffled together before being cut
into batches. Each batch is gathered with one fancy-index per field over sorted row numbers: no
per-row Python, no collate.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from slimctr.data.batch import Batch
from slimctr.data.store import Store


class BatchLoader:
    """Iterate ``Batch`` objects over one split of a store.

    With ``shuffle``, epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e])``, so a run is
    reproducible and can resume at any epoch; call ``set_epoch`` before iterating (it advances by
    itself after each full pass).

    ``shard=(index, count)`` (data parallelism): every global batch of ``batch_size`` rows is cut
    into ``count`` parts (``np.array_split``) and only part ``index`` is yielded. When shuffling
    (training), a global batch of fewer than ``count`` rows is skipped, so no part is empty;
    otherwise parts may be empty, and ``rows_of`` says which rows each part holds.
    """

    def __init__(
        self,
        store: Store,
        split: str,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        block_rows: int = 256,
        window_blocks: int = 64,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
        self.shard = shard
        self.range = store.split(split)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.block_rows = block_rows
        self.window_rows = max(block_rows * window_blocks, batch_size)
        self.epoch = 0
        self._labels = store.labels()
        self._categorical = [store.column(f.name) for f in store.schema.categorical]
        self._numeric = [store.column(f.name) for f in store.schema.numeric]

    def __len__(self) -> int:
        rows = len(self.range)
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        for rows in self._parts(self._row_order(), self.shard[0]):
            yield self.gather(np.sort(rows))
        self.epoch += 1

    def rows_of(self, index: int) -> np.ndarray:
        """The rows that shard part ``index`` yields in one pass, in order (unshuffled loaders)."""
        return np.concatenate([np.sort(rows) for rows in self._parts(self._row_order(), index)])

    def _parts(self, order: np.ndarray, index: int) -> Iterator[np.ndarray]:
        """Part ``index`` of every global batch of ``order``."""
        count = self.shard[1]
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            rows = order[start : start + self.batch_size]
            if count > 1 and self.shuffle and len(rows) < count:
                continue
            yield rows if count == 1 else np.array_split(rows, count)[index]

    def _row_order(self) -> np.ndarray:
        """Row numbers of the whole epoch, in visiting order."""
        first, rows = self.range.start, len(self.range)
        if not self.shuffle:
            return np.arange(first, first + rows)
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = rng.permutation(-(-rows // self.block_rows))
        order = (blocks[:, None] * self.block_rows + np.arange(self.block_rows)).ravel()
        order = order[order < rows] + first
        for window in range(0, rows, self.window_rows):
            rng.shuffle(order[window : window + self.window_rows])
        return order

    def gather(self, rows: np.ndarray) -> Batch:
        """The ``Batch`` of these rows of the store (absolute row numbers, any order)."""
        categorical = np.empty((len(rows), len(self._categorical)), dtype=np.int32)
        for j, column in enumerate(self._categorical):
            categorical[:, j] = column[rows]
        numeric = np.empty((len(rows), len(self._numeric)), dtype=np.float32)
        for j, column in enumerate(self._numeric):
            numeric[:, j] = column[rows]
        return Batch(
            categorical=torch.from_numpy(categorical),
            numeric=torch.from_numpy(numeric),
            labels=torch.from_numpy(self._labels[rows].astype(np.float32)),
        )
