"""Model-agnostic attributions and planted-truth scores (issue 21): a model whose logit is known
gets the importance and interactions it should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimctr.attribution import (
    ablation_importance,
    pair_interactions,
    permutation_importance,
    precision_at_k,
    rank_correlation,
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


def test_ablation_importance_is_the_mean_logit_change_when_a_field_becomes_oov():
    """Ablating a to OOV (id 1) moves the logit by 2 where a == 2; b by 3 where b == c == 3."""
    pytest.importorskip("captum", reason="the captum method needs slimctr[explain]")
    batch = _batch()
    ids = batch.categorical
    found = ablation_importance(Known(), batch, SCHEMA, batch_size=1500)
    assert found["a"] == pytest.approx(2 * float((ids[:, 0] == 2).float().mean()), rel=1e-6)
    both = float(((ids[:, 1] == 3) & (ids[:, 2] == 3)).float().mean())
    assert found["b"] == pytest.approx(3 * both, rel=1e-6)
    assert found["c"] == pytest.approx(3 * both, rel=1e-6)
    assert found["x"] == 0.0


def test_rank_correlation_is_spearmans_rho():
    a = {"p": 3.0, "q": 2.0, "r": 1.0, "s": 0.0}
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, {k: -v for k, v in a.items()}) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (3, 1.5, 1.5, 0) against (3, 2, 1, 0)
    assert rank_correlation(a, {"p": 5.0, "q": 1.0, "r": 1.0, "s": 0.0}) == pytest.approx(
        0.9486832980505138
    )
    assert rank_correlation(a, {"p": 1.0, "q": 1.0, "r": 1.0}) is None  # constant
    assert rank_correlation(a, {"p": 1.0, "zz": 2.0}) is None  # one item in common


def test_pair_interactions_average_over_shuffles():
    """Several shuffles average one-shuffle estimates: additive pairs stay exactly 0, and the
    planted pair's value moves by less than the shuffles' noise (20%)."""
    batch = _batch()
    one = pair_interactions(Known(), batch, SCHEMA, seed=4)
    three = pair_interactions(Known(), batch, SCHEMA, repeats=3, seed=4)
    assert three[("a", "b")] == 0.0 and three[("b", "c")] > 0.1
    assert three[("b", "c")] == pytest.approx(one[("b", "c")], rel=0.2)
    assert three[("b", "c")] != one[("b", "c")]
