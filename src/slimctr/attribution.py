"""Model-agnostic attributions, and how well a ranking recovers planted truth (issue 21).

``permutation_importance``: a field's importance is the AUC lost when its column is shuffled
across the scored rows (the field's values kept, their link to the rest broken), averaged over
``repeats`` shuffles. ``pair_interactions``: a pair's interaction is the mean squared second
difference of the logits when both fields take another row's values, against each alone:
exactly zero for a model additive in the two fields (a permutation estimate of Friedman's H^2,
with no partial-dependence grid). Both read the model through its logits only, so every
registered model has them.

``ablation_importance``: Captum's ``FeatureAblation`` with each field as one feature: a
field's importance is the mean absolute change of the logit when its value is replaced by a
baseline, the OOV id for a categorical field (an unknown value: its embedding becomes the OOV
row) and 0 for a numeric one. It reads the model through its logits too.

``precision_at_k`` and ``ranks`` score a ranking against what a generator planted
(``truth.json`` of ``slimctr synth``): the share of the k planted items in the top k (k = how
many were planted), and each planted item's rank. ``rank_correlation`` is Spearman's rho of two
scorings of the same items.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.metrics import auc
from slimctr.schema import OOV_ID, Schema


def _column(schema: Schema, name: str) -> tuple[str, int]:
    """Where field ``name`` lives in a batch: ("categorical" | "numeric", its column)."""
    for kind, fields in (("categorical", schema.categorical), ("numeric", schema.numeric)):
        names = [f.name for f in fields]
        if name in names:
            return kind, names.index(name)
    raise KeyError(name)


def _shuffled(batch: Batch, schema: Schema, names: Sequence[str], order: torch.Tensor) -> Batch:
    """``batch`` with the columns of ``names`` permuted by ``order`` (the same for all)."""
    categorical, numeric = batch.categorical.clone(), batch.numeric.clone()
    for name in names:
        kind, column = _column(schema, name)
        target = categorical if kind == "categorical" else numeric
        target[:, column] = target[order, column]
    return Batch(categorical=categorical, numeric=numeric, labels=batch.labels)


@torch.no_grad()
def _auc(model: nn.Module, batch: Batch) -> float:
    return float(auc(batch.labels.numpy(), model(batch).double().numpy()))


def permutation_importance(
    model: nn.Module, batch: Batch, schema: Schema, *, repeats: int = 1, seed: int = 0
) -> dict[str, float]:
    """Each field's AUC drop on ``batch`` when its column is shuffled (mean of ``repeats``)."""
    model.eval()
    base = _auc(model, batch)
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(batch), generator=generator) for _ in range(repeats)]
    return {
        f.name: float(
            np.mean([base - _auc(model, _shuffled(batch, schema, [f.name], o)) for o in orders])
        )
        for f in schema.fields
    }


def pair_interactions(
    model: nn.Module,
    batch: Batch,
    schema: Schema,
    pairs: Iterable[tuple[str, str]] | None = None,
    *,
    repeats: int = 1,
    seed: int = 0,
) -> dict[tuple[str, str], float]:
    """For each pair (every pair of fields by default): the mean squared second difference of
    the logits, f(a', b') - f(a', b) - f(a, b') + f(a, b), where a' and b' come from another
    row (one permutation for both), over the variance of f, averaged over ``repeats``
    permutations. It is exactly 0 for a model additive in a and b, and grows with their
    interaction (a permutation estimate of Friedman's H^2)."""
    model.eval()
    names = [f.name for f in schema.fields]
    chosen = list(pairs) if pairs is not None else [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :]
    ]  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    found = dict.fromkeys(chosen, 0.0)
    with torch.no_grad():
        base = model(batch).double()
        variance = float(base.var()) or 1.0
        for _ in range(repeats):
            order = torch.randperm(len(batch), generator=generator)
            moved = {
                name: model(_shuffled(batch, schema, [name], order)).double()
                for name in {n for pair in chosen for n in pair}
            }
            for a, b in chosen:
                both = model(_shuffled(batch, schema, [a, b], order)).double()
                second = both - moved[a] - moved[b] + base
                found[(a, b)] += float((second**2).mean()) / variance / repeats
    return found


def ablation_importance(
    model: nn.Module, batch: Batch, schema: Schema, *, batch_size: int = 4096
) -> dict[str, float]:
    """Each field's mean absolute logit change on ``batch`` when Captum's ``FeatureAblation``
    replaces it by its baseline (OOV id, or 0 for a numeric field), one field at a time."""
    try:
        from captum.attr import FeatureAblation
    except ImportError:
        raise SlimctrError(
            "the captum method needs Captum: pip install 'slimctr[explain]'"
        ) from None
    model.eval()
    names = [f.name for f in schema.fields]
    categorical = [names.index(f.name) for f in schema.categorical]
    numeric = [names.index(f.name) for f in schema.numeric]

    def logits(ids: Tensor, values: Tensor) -> Tensor:
        kind = batch.categorical.dtype
        return model(
            Batch(
                categorical=ids.round().to(kind),
                numeric=values,
                labels=values.new_zeros(len(values)),
            )
        )

    # ids travel as float64 (exact below 2^53): Captum mixes inputs and baselines arithmetically;
    # standardised numeric values have mean 0
    ids, values = batch.categorical.double(), batch.numeric.float()
    masks = (torch.tensor([categorical]), torch.tensor([numeric]))
    baselines = (float(OOV_ID), 0.0)
    totals = np.zeros(len(names))
    ablation = FeatureAblation(logits)
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            stop = min(start + batch_size, len(batch))
            found = ablation.attribute(
                (ids[start:stop], values[start:stop]),
                baselines=baselines,
                feature_mask=masks,
                perturbations_per_eval=1,
            )
            for columns, attributions in zip((categorical, numeric), found, strict=True):
                if columns:
                    totals[columns] += attributions.abs().sum(dim=0).double().numpy()
    return {name: float(total / len(batch)) for name, total in zip(names, totals, strict=True)}


def rank_correlation(a: dict[Hashable, float], b: dict[Hashable, float]) -> float | None:
    """Spearman's rho of two scorings over the items both score (ties share their mean rank);
    ``None`` when either is constant there."""
    keys = [key for key in a if key in b]
    x, y = (_ranks(np.array([scores[key] for key in keys])) for scores in (a, b))
    if len(keys) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of ``values``, tied values sharing their mean rank."""
    order = np.empty(len(values))
    order[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, group = np.unique(values, return_inverse=True)
    return (np.bincount(group, order) / np.bincount(group))[group]


def ranking(scores: dict[Hashable, float]) -> list[Hashable]:
    """The keys of ``scores``, highest first (ties by key order)."""
    return sorted(scores, key=lambda key: -scores[key])


def _same(item: Hashable) -> Hashable:
    """Pairs match in either order."""
    return frozenset(item) if isinstance(item, tuple) else item


def ranks(ranked: Sequence[Hashable], planted: Iterable[Hashable]) -> list[int]:
    """The 1-based rank of each planted item in ``ranked`` (in the order planted)."""
    order = [_same(item) for item in ranked]
    return [order.index(_same(item)) + 1 for item in planted]


def precision_at_k(ranked: Sequence[Hashable], planted: Iterable[Hashable]) -> float:
    """The share of the k planted items among the top k of ``ranked`` (k = how many)."""
    truth = {_same(item) for item in planted}
    top = {_same(item) for item in ranked[: len(truth)]}
    return len(top & truth) / len(truth) if truth else float("nan")
