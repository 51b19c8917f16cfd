"""Model-agnostic attributions, and how well a ranking recovers planted truth (issue 21).

``permutation_importance``: a field's importance is the AUC lost when its column is shuffled
across the scored rows (the field's values kept, their link to the rest broken), averaged over
``repeats`` shuffles. ``pair_interactions``: a pair's interaction is the mean squared second
difference of the logits when both fields take another row's values, against each alone:
exactly zero for a model additive in the two fields (a permutation estimate of Friedman's H^2,
with no partial-dependence grid). Both read the model through its logits only, so every
registered model has them.

``precision_at_k`` and ``ranks`` score a ranking against what a generator planted
(``truth.json`` of ``slimctr synth``): the share of the k planted items in the top k (k = how
many were planted), and each planted item's rank.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from slimctr.data.batch import Batch
from slimctr.metrics import auc
from slimctr.schema import Schema


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
    seed: int = 0,
) -> dict[tuple[str, str], float]:
    """For each pair (every pair of fields by default): the mean squared second difference of
    the logits, f(a', b') - f(a', b) - f(a, b') + f(a, b), where a' and b' come from another
    row (one permutation for both), over the variance of f. It is exactly 0 for a model additive
    in a and b, and grows with their interaction (a permutation estimate of Friedman's H^2)."""
    model.eval()
    names = [f.name for f in schema.fields]
    chosen = list(pairs) if pairs is not None else [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :]
    ]  # fmt: skip
    order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        base = model(batch).double()
        moved = {
            name: model(_shuffled(batch, schema, [name], order)).double()
            for name in {n for pair in chosen for n in pair}
        }
        variance = float(base.var()) or 1.0
        found = {}
        for a, b in chosen:
            both = model(_shuffled(batch, schema, [a, b], order)).double()
            second = both - moved[a] - moved[b] + base
            found[(a, b)] = float((second**2).mean()) / variance
    return found


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
