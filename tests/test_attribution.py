"""Model-agnostic attributions and planted-truth scores (issue 21): a model whose logit is known
gets the importance and interactions it should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimctr.attribution import (
    pair_interactions,
    permutation_importance,
    precision_at_k,
    ranking,
    ranks,
)
from slimctr.data.batch import Batch
from slimctr.schema import FieldSpec, Schema

SCHEMA = Schema(
    label="y",
    fields=(
        FieldSpec(name="a", kind="categorical", vocab_size=4),
        FieldSpec(name="b", kind="categorical", vocab_size=4),
        FieldSpec(name="c", kind="categorical", vocab_size=4),
        FieldSpec(name="x", kind="numeric"),
    ),
)


class Known(nn.Module):
    """logit = 2 [a == 2] + 3 [b == 3] [c == 3] + 0 x: a matters alone, b and c together."""

    def forward(self, batch: Batch) -> torch.Tensor:
        ids = batch.categorical
        return (
            2.0 * (ids[:, 0] == 2)
            + 3.0 * ((ids[:, 1] == 3) & (ids[:, 2] == 3))
            + 0 * batch.numeric[:, 0]
        )


def _batch(rows: int = 4000) -> Batch:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (rows, 3), generator=generator, dtype=torch.int32)
    numeric = torch.randn(rows, 1, generator=generator)
    logit = Known()(Batch(ids, numeric, torch.zeros(rows)))
    labels = (torch.rand(rows, generator=generator) < torch.sigmoid(logit - 1.5)).float()
    return Batch(categorical=ids, numeric=numeric, labels=labels)


def test_permutation_importance_finds_the_fields_the_logit_reads():
    importance = permutation_importance(Known(), _batch(), SCHEMA, repeats=2)
    assert importance["x"] == 0.0 and min(importance["a"], importance["b"], importance["c"]) > 0.01
    assert ranking(importance)[-1] == "x"


def test_pair_interactions_are_zero_for_additive_pairs_and_large_for_the_planted_one():
    found = pair_interactions(Known(), _batch(), SCHEMA)
    assert len(found) == 6 and ranking(found)[0] == ("b", "c")
    for pair in (("a", "b"), ("a", "c"), ("a", "x"), ("b", "x"), ("c", "x")):
        assert found[pair] == pytest.approx(0.0, abs=1e-12), pair
    assert found[("b", "c")] > 0.1


def test_precision_at_k_and_ranks_treat_pairs_in_either_order():
    ranked = [("c", "b"), ("a", "b"), ("a", "c")]
    assert precision_at_k(ranked, [("b", "c")]) == 1.0
    assert ranks(ranked, [("b", "c"), ("c", "a")]) == [1, 3]
    assert precision_at_k(["x", "a", "b"], ["a", "b"]) == 0.5
