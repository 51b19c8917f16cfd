"""The planted-truth suite: synthetic generators whose important fields, pairs and triples are
known, each varying one thing that makes an explanation hard (issue 21).

Every generator is a ``SyntheticConfig`` of 16 categorical fields (log-spaced cardinalities) and a
few numeric ones at 50,000 rows; what it varies is in ``Generator.hard``. At 200,000 rows every
method ranked every planted item on top of nearly every generator, which chooses nothing; at
50,000 a model learns the planted structure less well, as models of real logs do, and the
methods come apart. Generators are either
``tune`` (explanation settings are chosen on them) or ``held-out`` (settings are only scored on
them), so a choice is never scored on the data that made it.

The truth of a generator: its important fields (categorical and numeric) and its planted pairs.
A triple (f, g, h) also makes its three sub-pairs interact, so those pairs are neither right nor
wrong: ``scored_pairs`` leaves them out of a pair ranking before it is scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np

from slimctr.data.synthetic import GroundTruth, SyntheticConfig

ROWS = 50_000
NUM_CATEGORICAL = 16


def _cards(largest: int) -> tuple[int, ...]:
    return tuple(int(c) for c in np.geomspace(5, largest, NUM_CATEGORICAL).round())


_BASE = SyntheticConfig(
    rows=ROWS,
    num_categorical=NUM_CATEGORICAL,
    cardinalities=_cards(5_000),
    num_numeric=2,
    num_important=4,
    num_pairs=3,
    num_triples=0,
    num_important_numeric=0,
    missing_rate=0.05,
)


@dataclass(frozen=True)
class Generator:
    """One generator of the suite: its config at seed 0, its role and what makes it hard."""

    name: str
    config: SyntheticConfig
    role: Literal["tune", "held-out"]
    hard: str

    def at(self, seed: int, rows: int | None = None) -> SyntheticConfig:
        """The generator's config drawn with ``seed`` (and ``rows`` rows, default its own)."""
        return dataclasses.replace(self.config, seed=seed, rows=rows or self.config.rows)


def _generator(
    name: str, role: Literal["tune", "held-out"], hard: str, **changes: object
) -> Generator:
    return Generator(name, dataclasses.replace(_BASE, **changes), role, hard)  # type: ignore[arg-type]


SUITE: dict[str, Generator] = {
    g.name: g
    for g in (
        _generator("pairs", "tune", "order-2 interactions only: 4 planted fields, 3 pairs"),
        _generator(
            "triples",
            "tune",
            "order 3: 6 planted fields, 2 pairs and 2 triples",
            num_important=6,
            num_pairs=2,
            num_triples=2,
        ),
        _generator(
            "numeric",
            "tune",
            "numeric fields: 3 of the 6 planted fields are counts",
            num_numeric=6,
            num_important=3,
            num_important_numeric=3,
        ),
        _generator(
            "long-tail",
            "held-out",
            "cardinality and Zipf tails: up to 50,000 ids, exponent 1.4, large fields planted",
            cardinalities=_cards(50_000),
            zipf_exponent=1.4,
            signal_in_large_fields=True,
        ),
        _generator(
            "correlated",
            "held-out",
            "4 noise fields that copy a planted field's id in 80% of the rows",
            num_correlated=4,
            correlation=0.8,
        ),
        _generator(
            "rare-clicks",
            "held-out",
            "label rate: 3% positives instead of 25%",
            positive_rate=0.03,
        ),
        _generator(
            "issue",
            "held-out",
            "like issue 21's outside data: 16 fields, 4 planted, 3 pairs and 1 triple",
            num_numeric=0,
            num_triples=1,
        ),
    )
}
TUNE = tuple(name for name, g in SUITE.items() if g.role == "tune")
HELD_OUT = tuple(name for name, g in SUITE.items() if g.role == "held-out")


def triple_pairs(truth: GroundTruth) -> set[frozenset[str]]:
    """The sub-pairs of the planted triples that are not planted pairs themselves."""
    planted = {frozenset(p) for p in truth.pairs}
    return {frozenset(p) for t in truth.triples for p in combinations(t, 2)} - planted


def scored_pairs(ranked: Sequence[tuple[str, str]], truth: GroundTruth) -> list[tuple[str, str]]:
    """A pair ranking without the triples' sub-pairs (see the module docstring)."""
    ignored = triple_pairs(truth)
    return [p for p in ranked if frozenset(p) not in ignored]
