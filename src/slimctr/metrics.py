"""Evaluation metrics for click-through-rate models: ROC AUC and log loss.

Both work on whole splits at once (tens of millions of rows) in float64. Log loss clips
probabilities to ``[eps, 1 - eps]`` with ``eps = 1e-7`` by default, so a prediction of exactly
0 or 1 costs at most -log(1e-7) = 16.1 instead of infinity. It
equals scikit-learn's ``log_loss`` whenever no probability lies within ``eps`` of 0 or 1;
scikit-learn clips at the machine epsilon of the input's dtype instead (1.2e-7 for float32).

``Evaluation`` gathers logits batch by batch and computes the log loss from the logits with a
log-sigmoid, after clamping them to ``±log((1 - eps) / eps)``: the same clipping expressed on the
logit scale, so ``Evaluation`` and ``logloss(labels, sigmoid(logits))`` agree, and no probability
that rounds to 1.0 turns into an infinite loss.

>>> import numpy as np
>>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
>>> round(logloss(np.array([1, 0]), np.array([0.9, 0.2])), 6)
0.164252
"""

from __future__ import annotations

import math

import numpy as np
import torch

DEFAULT_EPS = 1e-7


def _binary_labels(labels: np.ndarray | torch.Tensor, length: int | None = None) -> np.ndarray:
    """``labels`` as a flat bool array, after checking that every value is 0 or 1."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().to("cpu", torch.float64).numpy()
    values = np.asarray(labels).reshape(-1)
    if values.dtype != np.bool_:
        if not np.all((values == 0) | (values == 1)):
            bad = values[(values != 0) & (values != 1)][0]
            raise ValueError(f"labels must be 0 or 1, found {bad!r}")
        values = values == 1
    if length is not None and len(values) != length:
        raise ValueError(f"got {len(values)} labels for {length} predictions")
    return values


def _float64(values: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{what} contain NaN")
    return array


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative.

    Computed exactly from ranks (the Mann-Whitney U statistic) in O(n log n): with 1-based ranks
    ``r`` of the scores, tied scores sharing their average rank,

        AUC = (sum of r over positives - P (P + 1) / 2) / (P N)

    for P positives and N negatives, so a tied positive-negative pair counts 1/2. Doubled ranks are
    whole numbers, so the sums are exact in int64 (up to about 3e9 rows) and the one division is
    correctly rounded. Raises ValueError unless both classes are present.

    >>> auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.5, 0.5]))
    0.875
    >>> auc(np.array([1, 0]), np.array([0.3, 0.3]))
    0.5
    """
    values = _float64(scores, "scores")
    positive = _binary_labels(labels, len(values))
    num_positive = int(positive.sum())
    num_negative = len(positive) - num_positive
    if num_positive == 0 or num_negative == 0:
        raise ValueError(
            "AUC needs both classes, "
            f"got {num_positive} positive and {num_negative} negative labels"
        )
    order = np.argsort(values)  # tie order is irrelevant: tied scores share one rank
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]  # each tie group is sorted_values[start:end]
    positives_per_group = np.add.reduceat(positive[order].astype(np.int64), starts)
    doubled_rank = starts + ends + 1  # twice the average 1-based rank: (start + 1 + end) / 2 * 2
    doubled_rank_sum = int(np.dot(doubled_rank.astype(np.int64), positives_per_group))
    doubled_u = doubled_rank_sum - num_positive * (num_positive + 1)
    return doubled_u / (2 * num_positive * num_negative)


def auc_or_nan(labels: np.ndarray, scores: np.ndarray) -> float:
    """``auc``, or nan where only one class occurs: for describing generated data, whose smallest
    samples may hold no click, not for scoring a model."""
    positives = int(np.count_nonzero(_binary_labels(labels)))
    if positives in (0, len(labels)):
        return math.nan
    return auc(labels, scores)


def logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """Mean binary cross-entropy ``-mean(y log p + (1 - y) log(1 - p))``, p clipped to [eps, 1-eps].

    >>> round(logloss(np.array([1, 1, 0]), np.array([1.0, 0.5, 0.0])), 6)
    0.231049
    """
    _check_eps(eps)
    p = np.clip(_float64(probabilities, "probabilities"), eps, 1.0 - eps)
    positive = _binary_labels(labels, len(p))
    if len(p) == 0:
        raise ValueError("log loss of an empty set")
    losses = np.where(positive, -np.log(p), -np.log1p(-p))
    return float(losses.mean())


def logloss_from_logits(labels: np.ndarray, logits: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """``logloss(labels, sigmoid(logits), eps)``, computed stably on the logit scale.

    -log sigmoid(z) = softplus(-z) and -log(1 - sigmoid(z)) = softplus(z); clamping z to
    ``±log((1 - eps) / eps)`` is the same as clipping sigmoid(z) to [eps, 1 - eps].

    >>> round(logloss_from_logits(np.array([1, 0]), np.array([0.0, 100.0])), 4)
    8.4056
    """
    _check_eps(eps)
    z = _float64(logits, "logits")
    if eps > 0:
        bound = math.log((1.0 - eps) / eps)
        z = np.clip(z, -bound, bound)
    positive = _binary_labels(labels, len(z))
    if len(z) == 0:
        raise ValueError("log loss of an empty set")
    losses = np.logaddexp(0.0, np.where(positive, -z, z))
    return float(losses.mean())


def _check_eps(eps: float) -> None:
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5), got {eps}")


class Evaluation:
    """Gathers logits and labels over batches; ``compute()`` gives ``{"auc": ..., "logloss": ...}``.

    Tensors are kept as given (device and dtype, e.g. bf16 on a GPU) and converted to float64 on
    the CPU once, in ``compute``, so evaluating adds no host sync per batch.

    >>> evaluation = Evaluation()
    >>> evaluation.update(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    >>> evaluation.update(torch.tensor([0.5]), torch.tensor([0.0]))
    >>> {k: round(v, 4) for k, v in evaluation.compute().items()}
    {'auc': 1.0, 'logloss': 0.4714}
    """

    def __init__(self, eps: float = DEFAULT_EPS) -> None:
        _check_eps(eps)
        self.eps = eps
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def __len__(self) -> int:
        return sum(t.numel() for t in self._labels)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: logits of shape (B,) (no sigmoid) and 0/1 labels of shape (B,)."""
        if logits.numel() != labels.numel():
            raise ValueError(f"got {logits.numel()} logits and {labels.numel()} labels")
        self._logits.append(logits.detach().reshape(-1))
        self._labels.append(labels.detach().reshape(-1))

    def reset(self) -> None:
        self._logits.clear()
        self._labels.clear()

    def compute(self) -> dict[str, float]:
        """AUC and log loss over everything added since the last ``reset``."""
        if not self._labels:
            raise ValueError("nothing to evaluate: no batches were added")
        logits = torch.cat([t.to("cpu", torch.float64) for t in self._logits]).numpy()
        labels = torch.cat([t.to("cpu", torch.float64) for t in self._labels]).numpy()
        return {
            "auc": auc(labels, logits),
            "logloss": logloss_from_logits(labels, logits, self.eps),
        }
