"""AUC and log loss: hand-computed cases, a brute-force pairwise reference, sklearn if present."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from slimctr.metrics import Evaluation, auc, auc_or_nan, logloss, logloss_from_logits


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The definition, over every positive-negative pair: a win counts 1, a tie 1/2."""
    positive = scores[labels == 1][:, None]
    negative = scores[labels == 0][None, :]
    wins = (positive > negative).sum() + 0.5 * (positive == negative).sum()
    return float(wins / (positive.size * negative.size))


def direct_logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float) -> float:
    total = 0.0
    for y, p in zip(labels.tolist(), probabilities.tolist(), strict=True):
        p = min(max(p, eps), 1 - eps)
        total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / len(labels)


def random_case(seed: int, rows: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Scores rounded to one decimal, so most of them are tied with others."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.3).astype(np.int64)
    scores = np.round(rng.random(rows) + 0.3 * labels, 1)
    return labels, scores


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),  # perfect
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),  # inverted
        ([0, 1, 0, 1, 1], [0.5] * 5, 0.5),  # all tied
        # pairs (pos, neg): (.9,.1) win, (.9,.5) win, (.5,.1) win, (.5,.5) tie -> 3.5 / 4
        ([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5], 0.875),
        # 2 positives x 3 negatives; pos .3 beats .2, ties .3, loses to .7: 1.5; pos .7: 2.5 -> 4/6
        ([1, 0, 0, 1, 0], [0.3, 0.2, 0.3, 0.7, 0.7], 4 / 6),
    ],
)
def test_auc_hand_computed(labels, scores, expected):
    assert auc(np.array(labels), np.array(scores)) == pytest.approx(expected, abs=1e-15)


def test_auc_accepts_bool_labels_and_tensors():
    labels = torch.tensor([True, False, True, False])
    scores = torch.tensor([0.9, 0.1, 0.5, 0.5], dtype=torch.bfloat16)
    assert auc(labels, scores) == 0.875


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_with_many_ties(seed):
    labels, scores = random_case(seed)
    assert len(np.unique(scores)) <= 14
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    labels, scores = random_case(seed, rows=20_000)
    assert auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    smooth = scores + np.random.default_rng(seed).normal(size=len(scores))
    assert auc(labels, smooth) == pytest.approx(metrics.roc_auc_score(labels, smooth), abs=1e-12)


def test_auc_is_invariant_to_monotone_transforms():
    labels, scores = random_case(7)
    assert auc(labels, scores) == auc(labels, np.exp(3 * scores) - 10)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_needs_both_classes(labels):
    with pytest.raises(ValueError, match="AUC needs both classes"):
        auc(np.array(labels), np.linspace(0, 1, len(labels)))


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "labels must be 0 or 1"),
        ([0, 1], [0.1, 0.2, 0.3], "2 labels for 3 predictions"),
        ([0, 1], [0.1, float("nan")], "NaN"),
    ],
)
def test_auc_rejects_bad_input(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        auc(np.array(labels), np.array(scores))


def test_auc_large_input_is_fast_and_exact():
    rng = np.random.default_rng(0)
    rows = 1_000_000
    labels = (rng.random(rows) < 0.25).astype(np.float32)
    scores = np.round(rng.random(rows) + 0.2 * labels, 3).astype(np.float32)
    started = time.perf_counter()
    value = auc(labels, scores)
    assert time.perf_counter() - started < 5.0
    # the U statistic counted per distinct score, as an independent check
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    positives = np.bincount(group, weights=labels, minlength=len(counts))
    negatives = counts - positives
    below = np.cumsum(negatives) - negatives
    wins = float(np.sum(positives * below) + 0.5 * np.sum(positives * negatives))
    assert value == pytest.approx(wins / (labels.sum() * (rows - labels.sum())), abs=1e-12)


def test_logloss_hand_computed():
    value = logloss(np.array([1, 0]), np.array([0.9, 0.2]))
    assert value == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2, abs=1e-15)


def test_logloss_matches_direct_formula_and_clips():
    rng = np.random.default_rng(3)
    labels = (rng.random(500) < 0.4).astype(np.int64)
    probabilities = rng.random(500)
    probabilities[:5] = [0.0, 1.0, 1e-12, 1 - 1e-12, 0.5]
    for eps in (1e-7, 1e-3):
        expected = direct_logloss(labels, probabilities, eps)
        assert logloss(labels, probabilities, eps) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))
    assert logloss(np.array([1, 0]), np.array([0.0, 1.0])) == pytest.approx(-math.log(1e-7))


def test_logloss_matches_sklearn_away_from_the_clip():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    labels = (rng.random(1000) < 0.4).astype(np.int64)
    probabilities = rng.uniform(1e-4, 1 - 1e-4, 1000)
    expected = metrics.log_loss(labels, probabilities)
    assert logloss(labels, probabilities) == pytest.approx(expected, abs=1e-12)


def test_logloss_from_logits_equals_logloss_of_sigmoid():
    rng = np.random.default_rng(5)
    labels = (rng.random(1000) < 0.4).astype(np.int64)
    logits = rng.normal(scale=8.0, size=1000)
    logits[:4] = [40.0, -40.0, 1e4, -1e4]  # far past the clip, both ways
    small = np.exp(-np.abs(logits))  # a sigmoid that cannot overflow
    probabilities = np.where(logits >= 0, 1.0 / (1.0 + small), small / (1.0 + small))
    expected = logloss(labels, probabilities)
    assert logloss_from_logits(labels, logits) == pytest.approx(expected, rel=1e-9)
    assert logloss_from_logits(labels, logits, eps=0.0) > expected  # unclipped losses are larger


def test_logloss_rejects_bad_eps_and_empty_input():
    with pytest.raises(ValueError, match="eps"):
        logloss(np.array([1]), np.array([0.5]), eps=0.5)
    with pytest.raises(ValueError, match="empty"):
        logloss(np.array([]), np.array([]))


def test_evaluation_over_batches_equals_whole_arrays():
    rng = np.random.default_rng(6)
    labels = (rng.random(1000) < 0.3).astype(np.float32)
    logits = rng.normal(size=1000).astype(np.float32) + labels
    evaluation = Evaluation()
    for start in range(0, 1000, 128):
        evaluation.update(
            torch.from_numpy(logits[start : start + 128]),
            torch.from_numpy(labels[start : start + 128]),
        )
    assert len(evaluation) == 1000
    result = evaluation.compute()
    assert set(result) == {"auc", "logloss"}
    assert result["auc"] == auc(labels, logits)
    sigmoid = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    assert result["logloss"] == pytest.approx(logloss(labels, sigmoid), rel=1e-12)
    evaluation.reset()
    with pytest.raises(ValueError, match="no batches"):
        evaluation.compute()


def test_evaluation_accepts_bf16_and_2d_logits():
    evaluation = Evaluation()
    logits = torch.tensor([[2.0], [-1.0], [0.5], [0.5]], dtype=torch.bfloat16)
    evaluation.update(logits, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    result = evaluation.compute()
    assert result["auc"] == pytest.approx(
        pairwise_auc(np.array([1, 0, 0, 1]), logits.float().numpy().ravel())
    )
    with pytest.raises(ValueError, match="3 logits and 2 labels"):
        evaluation.update(torch.zeros(3), torch.zeros(2))


def test_auc_or_nan_is_auc_with_both_classes_and_nan_with_one():
    scores = np.array([0.1, 0.4, 0.4, 0.8])
    both = np.array([0, 1, 0, 1])
    assert auc_or_nan(both.astype(bool), scores) == auc(both, scores) == 3.5 / 4
    assert np.isnan(auc_or_nan(np.zeros(4, dtype=bool), scores))
    assert np.isnan(auc_or_nan(np.ones(4), scores))
