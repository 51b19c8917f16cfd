"""Explanation methods side by side: each ranks the fields, some also the pairs (issue 21).

=============  ==========================================  =====================================
method         fields                                      pairs
=============  ==========================================  =====================================
gates          ``explain.gate_scores`` (GDCN, GCN)          the interaction heatmap (GDCN, GCN,
                                                           DCNv2): pair strengths of normalised
                                                           block norms
captum         Captum's feature ablation to OOV            none
permutation    AUC drop with the field shuffled            second differences under shuffles
                                                           (``attribution.pair_interactions``)
=============  ==========================================  =====================================

The gates read the model's own weights and activations; captum and permutation read only its
logits, so they explain any registered model. How the gates and the heatmap are scored and
aggregated over layers (``GATE_SCORE``, ``GATE_LAYERS``, ``PAIR_LAYERS``) was chosen on the
suite's tuning generators and scored on its held-out ones (``benchmarks/explain_suite.py``,
docs/results/explain.md). The heatmap's block norms are divided by sqrt(d_i d_j), so fields of
different widths are on one scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import polars as pl
from torch import nn

from slimctr.attribution import (
    ablation_importance,
    pair_interactions,
    permutation_importance,
    rank_correlation,
)
from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.explain import (
    GATES,
    HEATMAP,
    gate_scores,
    interaction_strengths,
    over_layers,
    pair_strengths,
    supported,
)
from slimctr.schema import Schema

METHODS = ("gates", "captum", "permutation")
# chosen on the suite's tuning generators (docs/results/explain.md): the highest mean precision@k
GATE_SCORE, GATE_LAYERS, PAIR_LAYERS = "centred", "first", "max"
LAYERS_MEANING = {"mean": "mean over layers", "first": "first layer", "max": "max over layers"}
# the permutation pair statistic: rows and shuffles (a forward per pair, field and shuffle);
# 3 shuffles of 5,000 rows took 4.5x the time and found the suite's pairs no better (0.78 against
# 0.76, docs/results/explain.md)
PAIR_ROWS, PAIR_REPEATS = 2_000, 1
AGREE = 0.5  # two rankings with Spearman's rho below this are said to disagree
Pair = tuple[str, str]
FIELD_MEANINGS = {
    "gates": f"{GATE_SCORE} gate score, {LAYERS_MEANING[GATE_LAYERS]}",
    "captum": "mean |logit change| when the field is set to OOV",
    "permutation": "AUC lost when the field is shuffled",
}
PAIR_MEANINGS = {
    "heatmap": f"normalised block norms, {LAYERS_MEANING[PAIR_LAYERS]}",
    "permutation": "mean squared second difference of the logit under shuffles, over its variance",
}


@dataclass(frozen=True)
class Rankings:
    """Scores per method, higher = more important: ``fields[method][name]`` and
    ``pairs[source][(a, b)]`` (sources: ``heatmap``, ``permutation``), with the seconds each
    method took and a line per method the model could not give."""

    fields: dict[str, dict[str, float]] = field(default_factory=dict)
    pairs: dict[str, dict[Pair, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def agreement(self) -> list[tuple[str, str, str, float | None]]:
        """Spearman's rho of every two methods: (``fields`` | ``pairs``, method, method, rho)."""
        found = []
        for what, scores in (("fields", self.fields), ("pairs", self.pairs)):
            for a, b in combinations(scores, 2):
                found.append((what, a, b, rank_correlation(scores[a], scores[b])))  # type: ignore[arg-type]
        return found

    def summary(self, top: int = 5) -> list[str]:
        """Lines of text: each method's top fields and pairs, the agreement, and a plain
        sentence where two methods disagree (rho below ``AGREE``)."""
        lines = [
            f"Top fields by {method} ({FIELD_MEANINGS[method]}): "
            + ", ".join(f"{name} {scores[name]:.3g}" for name in _top(scores, top))
            for method, scores in self.fields.items()
        ]
        lines += [
            f"Top pairs by {source} ({PAIR_MEANINGS[source]}): "
            + ", ".join(f"{a} x {b} {scores[(a, b)]:.3g}" for a, b in _top(scores, top))
            for source, scores in self.pairs.items()
        ]
        lines += [f"Not computed: {method} ({why})" for method, why in self.skipped.items()]
        agreement = self.agreement()
        if agreement:
            lines.append(
                "Rank agreement (Spearman's rho): "
                + ", ".join(f"{what} {a} vs {b} {_rho(rho)}" for what, a, b, rho in agreement)
            )
        for what, a, b, rho in agreement:
            if rho is None or rho < AGREE:
                lines.append(
                    f"{a} and {b} disagree on the {what}: rho {_rho(rho)}; read neither ranking "
                    "alone."
                )
        return lines

    def to_frames(self) -> dict[str, pl.DataFrame]:
        """``methods`` (method, field, score, rank), ``method_pairs`` (source, field_a, field_b,
        score, rank) and ``agreement`` (what, method_a, method_b, spearman_rho)."""
        fields = [
            (method, name, scores[name], rank)
            for method, scores in self.fields.items()
            for rank, name in enumerate(_top(scores, len(scores)), start=1)
        ]
        pairs = [
            (source, a, b, scores[(a, b)], rank)
            for source, scores in self.pairs.items()
            for rank, (a, b) in enumerate(_top(scores, len(scores)), start=1)
        ]
        return {
            "methods": pl.DataFrame(
                fields, schema=["method", "field", "score", "rank"], orient="row"
            ),
            "method_pairs": pl.DataFrame(
                pairs, schema=["source", "field_a", "field_b", "score", "rank"], orient="row"
            ),
            "agreement": pl.DataFrame(
                self.agreement(),
                schema={
                    "what": pl.String,
                    "method_a": pl.String,
                    "method_b": pl.String,
                    "spearman_rho": pl.Float64,
                },
                orient="row",
            ),
        }


def heatmap_pairs(model: nn.Module, schema: Schema, layers: str = PAIR_LAYERS) -> dict[Pair, float]:
    """Every pair's heatmap strength from normalised block norms, aggregated over layers."""
    strengths = over_layers(pair_strengths(interaction_strengths(model, normalise=True)), layers)
    names = [f.name for f in schema.fields]
    return {
        (names[i], names[j]): float(strengths[i, j]) for i, j in combinations(range(len(names)), 2)
    }


def gate_fields(
    model: nn.Module,
    batch: Batch,
    schema: Schema,
    score: str = GATE_SCORE,
    layers: str = GATE_LAYERS,
) -> dict[str, float]:
    """Each field's gate score (``explain.GATE_SCORES``) over ``batch``, aggregated over layers."""
    scores = gate_scores(model, batch)
    if score not in scores:
        raise SlimctrError(f"unknown gate score {score!r}: use one of {sorted(scores)}")
    values = over_layers(scores[score], layers)
    return {f.name: float(v) for f, v in zip(schema.fields, values, strict=True)}


def compare(
    model: nn.Module,
    batch: Batch,
    schema: Schema,
    methods: tuple[str, ...] = METHODS,
    *,
    seed: int = 0,
    repeats: int = 3,
) -> Rankings:
    """Run ``methods`` on the labelled rows of ``batch`` (``repeats``: shuffles per field of
    the permutation importance; ``seed`` draws them). The gates of a model without gates, or a
    heatmap without cross matrices, are skipped with a reason, as long as another method is
    asked for; asked alone, they raise."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SlimctrError(f"unknown explanation method {unknown[0]!r}: use one of {METHODS}")
    rankings = Rankings()
    for method in methods:
        started = time.perf_counter()
        if method == "gates":
            kinds = supported(model)
            if not kinds:
                if len(methods) == 1:
                    raise SlimctrError(
                        f"{type(model).__name__} has neither gates nor cross matrices: "
                        "use --method captum or permutation"
                    )
                rankings.skipped["gates"] = "the model has neither gates nor cross matrices"
                continue
            if GATES in kinds:
                rankings.fields["gates"] = gate_fields(model, batch, schema)
            else:
                rankings.skipped["gates"] = "the model has cross matrices but no gates"
            if HEATMAP in kinds:
                rankings.pairs["heatmap"] = heatmap_pairs(model, schema)
        elif method == "captum":
            rankings.fields["captum"] = ablation_importance(model, batch, schema)
        else:
            rankings.fields["permutation"] = permutation_importance(
                model, batch, schema, repeats=repeats, seed=seed
            )
            sample = batch.rows(slice(0, PAIR_ROWS))
            rankings.pairs["permutation"] = pair_interactions(
                model, sample, schema, repeats=PAIR_REPEATS, seed=seed
            )
        rankings.seconds[method] = time.perf_counter() - started
    return rankings


def _top(scores: dict[Any, float], count: int) -> list[Any]:
    return sorted(scores, key=lambda key: -scores[key])[:count]


def _rho(rho: float | None) -> str:
    return "undefined" if rho is None else f"{rho:.2f}"
