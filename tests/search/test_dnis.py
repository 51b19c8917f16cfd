"""DNIS end to end on a tiny store: dimension-search spec 8, properties 16-18, and the derived
table (alpha folded in, a global magnitude cut)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.search import Start
from slimctr.search.dnis import (
    DNIS,
    AlphaSearch,
    DNISConfig,
    SelectedRows,
    frequency_blocks,
    normalised,
    training_counts,
)
from slimctr.search.stages import supernet
from slimctr.training.trainer import Trainer

FAST = DNISConfig(keep=0.3, warm_epochs=2, search_epochs=2, alpha_lr=0.1, l1=1e-3)


@pytest.fixture(scope="module")
def found(runs, tmp_path_factory):
    start = Start.from_run(runs / "dcnv2")
    start = Start(start.config, start.store)
    work = tmp_path_factory.mktemp("dnis")
    return start, DNIS(FAST).fit(start, work), work


def test_blocks_follow_descending_frequency_with_the_configured_sizes():
    counts = np.array([5, 50, 0, 7, 7, 100, 1, 3, 2, 9])
    blocks = frequency_blocks(counts, (0.2, 0.3, 0.5)).numpy()
    assert np.bincount(blocks).tolist() == [2, 3, 5]
    assert set(np.flatnonzero(blocks == 0)) == {1, 5}  # the two most frequent rows
    for k in range(2):  # every row of a block is at least as frequent as any of the next
        assert counts[blocks == k].min() >= counts[blocks == k + 1].max()
    assert np.bincount(frequency_blocks(np.arange(3), (0.01, 0.01, 0.98)).numpy()).tolist() == [
        1, 1, 1
    ]  # fmt: skip


def test_training_counts_are_the_training_splits_id_counts(found):
    start, _, _ = found
    _, embedding = supernet(start, "dnis")
    counts = training_counts(start, embedding)
    train = start.store.split("train")
    c2 = np.asarray(start.store.column("C2")[train.start : train.stop])
    offset = int(embedding.offsets[1])
    assert counts.sum() == 4 * len(train)
    assert counts[offset + 3] == (c2 == 3).sum()


def test_alpha_stays_in_the_unit_interval_and_its_gradient_is_normalised_per_block(found):
    start, _, _ = found
    model, embedding = supernet(start, "dnis")
    hook = SelectedRows(embedding, frequency_blocks(training_counts(start, embedding), FAST.blocks))
    embedding.row_hook = hook
    grad = torch.tensor([[1.0, -3.0, 2.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(normalised(grad)[0].abs().mean(), torch.tensor(1.0))
    assert torch.equal(normalised(grad)[1], torch.zeros(3))
    valid = iter(BatchLoader(start.store, "valid", batch_size=64))
    search = AlphaSearch(hook, dataclasses.replace(FAST, alpha_lr=5.0), valid)
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    moved = False
    for _ in range(4):
        before = hook.alpha.detach().clone()
        search.on_step_end(trainer, None, 0.0)
        assert hook.alpha.min() >= 0 and hook.alpha.max() <= 1
        moved |= not torch.equal(before, hook.alpha)
    assert moved


def test_the_search_changes_only_the_embeddings_and_the_derived_table_keeps_the_largest(found):
    _, searcher, work = found
    warm = torch.load(work / "warm.pt", weights_only=True)["value"]["state"]
    searched = searcher.initial_
    assert searched is not None
    embedding_keys = {k for k in warm if k.startswith("embedding.")}
    for key, value in warm.items():
        if key not in embedding_keys and "running" not in key and "num_batches" not in key:
            assert torch.equal(searched[key], value), key  # frozen after the warm start
    assert not torch.equal(searched["embedding.fused_table.weight"],
                           warm["embedding.fused_table.weight"])  # fmt: skip
    plan = searcher.plan_
    mask = np.concatenate([plan.masks[n] for n in ("C1", "C2", "C3", "C4")])
    table = searched["embedding.fused_table.weight"].abs().numpy()
    assert mask.sum() <= FAST.keep * mask.size
    assert table[mask].min() >= table[~mask].max()  # a global magnitude cut


def test_alpha_is_folded_into_the_table_unless_asked_not_to(found):
    start, folded, work = found
    plain = DNIS(dataclasses.replace(FAST, fold_alpha=False)).fit(start, work)  # reuses stages
    assert folded.initial_ is not None and plain.initial_ is not None
    _, embedding = supernet(start, "dnis")
    blocks = frequency_blocks(training_counts(start, embedding), FAST.blocks)
    alpha = torch.load(work / "search.pt", weights_only=True)["value"]["alpha"]
    key = "embedding.fused_table.weight"
    assert torch.allclose(folded.initial_[key], plain.initial_[key] * alpha[blocks])


def test_bad_settings_are_one_line_errors():
    bad_settings = [
        ({"blocks": (0.5, 0.4)}, "sum to 1"),
        ({"keep": 0.0}, "keep"),
        ({"warm_epochs": 0}, "warm_epochs"),
        ({"alpha_lr": 0}, "alpha_lr"),
    ]
    for bad, message in bad_settings:
        with pytest.raises(SlimctrError, match=message):
            DNISConfig(**bad)
