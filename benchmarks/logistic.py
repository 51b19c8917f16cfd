"""One-hot logistic regression on a prepared store: the linear baseline of the defaults study.

Every categorical field's ids become one-hot columns (one block of vocab_size columns per field,
PAD and OOV rows included), numeric fields are standardised dense columns. An L2-regularised
LogisticRegression is fitted on the train split for each C of a log grid; C is chosen by
validation AUC, and the valid and test AUC and log loss are reported at that C.

    OMP_NUM_THREADS=1 python benchmarks/logistic.py STORE [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from slimctr.data.store import Store, open_store
from slimctr.metrics import auc, logloss

GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))  # 1e-3 .. 1e2, half a decade apart
# liblinear, not saga: on a sparse L2 problem of this size its trust-region Newton method
# converges in a few dozen iterations at every C, while saga, a stochastic first-order method,
# needs hundreds of epochs to reach the same optimum (clicklog, 100k rows, 8.9k columns: 0.7-4 s
# against 7-45 s per C, equal objective). liblinear penalises the intercept as the weight of a
# constant column of value intercept_scaling; a large value makes that penalty negligible, so a
# strong L2 shrinks the field weights, not the base rate.
SOLVER, INTERCEPT_SCALING, TOL, MAX_ITER = "liblinear", 100.0, 1e-6, 1_000


def design(store: Store, split: str, train_stats: dict[str, tuple[float, float]]) -> sp.csr_matrix:
    """The rows of ``split`` as a CSR matrix: one-hot categorical blocks, then numeric columns
    standardised with ``train_stats`` (field -> (mean, std) over the train split)."""
    rows = store.split(split)
    categorical = store.schema.categorical
    offsets = np.cumsum([0] + [f.vocab_size for f in categorical])  # (F + 1,)
    ids = np.stack(
        [np.asarray(store.column(f.name)[rows.start : rows.stop]) for f in categorical], axis=1
    )  # (N, F)
    indices = (ids.astype(np.int64) + offsets[:-1]).ravel()  # row-major: F entries per row
    one_hot = sp.csr_matrix(
        (np.ones(indices.size), indices, np.arange(0, indices.size + 1, len(categorical))),
        shape=(len(rows), int(offsets[-1])),
    )
    if not store.schema.numeric:
        return one_hot
    dense = [
        (np.asarray(store.column(f.name)[rows.start : rows.stop], dtype=np.float64) - mean) / std
        for f in store.schema.numeric
        for mean, std in [train_stats[f.name]]
    ]
    return sp.hstack([one_hot, sp.csr_matrix(np.nan_to_num(np.stack(dense, axis=1)))], "csr")


def numeric_stats(store: Store) -> dict[str, tuple[float, float]]:
    rows = store.split("train")
    stats = {}
    for field in store.schema.numeric:
        values = np.asarray(store.column(field.name)[rows.start : rows.stop], dtype=np.float64)
        std = float(np.nanstd(values))
        stats[field.name] = (float(np.nanmean(values)), std if std > 0 else 1.0)
    return stats


def fit_logistic(store_path: str | Path, *, grid: Sequence[float] = GRID) -> dict[str, Any]:
    """Fit one model per C in ``grid``; return the chosen C, its valid and test metrics, the
    whole grid's validation metrics and the seconds taken."""
    started = time.perf_counter()
    store = open_store(store_path)
    stats = numeric_stats(store)
    x = {split: design(store, split, stats) for split in ("train", "valid", "test")}
    y = {split: _labels(store, split) for split in x}
    scores, models = [], []
    for c in grid:
        fit_started = time.perf_counter()
        model = _fit(x["train"], y["train"], c)
        models.append(model)
        probability = model.predict_proba(x["valid"])[:, 1]
        scores.append(
            {
                "C": float(c),
                "valid_auc": auc(y["valid"], probability),
                "valid_logloss": logloss(y["valid"], probability),
                "seconds": time.perf_counter() - fit_started,
            }
        )
    chosen = max(range(len(scores)), key=lambda i: scores[i]["valid_auc"])  # first of ties
    best = scores[chosen]
    probability = models[chosen].predict_proba(x["test"])[:, 1]
    return {
        "store": str(store_path),
        "solver": SOLVER,
        "features": x["train"].shape[1],
        "rows": {split: len(labels) for split, labels in y.items()},
        "C": best["C"],
        "valid_auc": best["valid_auc"],
        "valid_logloss": best["valid_logloss"],
        "test_auc": auc(y["test"], probability),
        "test_logloss": logloss(y["test"], probability),
        "grid": scores,
        "seconds": time.perf_counter() - started,
    }


def _fit(x: sp.csr_matrix, y: np.ndarray, c: float) -> LogisticRegression:
    model = LogisticRegression(
        C=c, solver=SOLVER, intercept_scaling=INTERCEPT_SCALING, tol=TOL, max_iter=MAX_ITER
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an unconverged fit is no baseline
        return model.fit(x, y)


def _labels(store: Store, split: str) -> np.ndarray:
    rows = store.split(split)
    return np.asarray(store.labels()[rows.start : rows.stop], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a store written by `slimctr prepare`")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args()
    result = fit_logistic(args.store)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for score in result["grid"]:
        print(
            f"C={score['C']:<9.3g} valid AUC {score['valid_auc']:.4f} "
            f"logloss {score['valid_logloss']:.4f}  {score['seconds']:.1f}s"
        )
    print(
        f"chosen C={result['C']:.3g}: valid AUC {result['valid_auc']:.4f} logloss "
        f"{result['valid_logloss']:.4f}, test AUC {result['test_auc']:.4f} logloss "
        f"{result['test_logloss']:.4f} ({result['features']} features, {result['seconds']:.1f}s)"
    )


if __name__ == "__main__":
    main()
