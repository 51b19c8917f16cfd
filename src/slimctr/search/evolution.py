"""OptEmbed's evolutionary search over per-field widths (dimension-search spec 2.3).

A candidate gives each of F fields a width in 1..D. Each generation evaluates every candidate
(``fitness``: the frozen supernet's validation AUC with those prefix widths; it trains nothing),
records the best so far, and breeds the next population: the best ``keep`` (0 in the reference
command), ``mutants`` copies of the top candidates with each width redrawn with probability
``mutation_prob``, and ``children`` crossovers of two distinct parents from the top
``parent_pool`` cut at a point in [1, F - 1].

The reference code's two defects are not reproduced: it mutated candidates in place, so the
recorded best could change after it was evaluated (here every mutant is a copy), and it cut in
[1, 64] whatever F, so that most children copied one parent. It also redraws a mutated width
from 2..D only; here from 1..D (slimctr decision).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from slimctr.errors import SlimctrError


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvolutionConfig:
    """The reference settings (T = 30, n_m = n_c = 10, p = 0.1, keep 0); the first population's
    size is not published (slimctr default 20)."""

    generations: int = 30
    population: int = 20
    mutants: int = 10
    children: int = 10
    parent_pool: int = 11
    mutation_prob: float = 0.1
    keep: int = 0

    def __post_init__(self) -> None:
        for name in ("generations", "population", "parent_pool"):
            if getattr(self, name) < 1:
                raise SlimctrError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mutants", "children", "keep"):
            if getattr(self, name) < 0:
                raise SlimctrError(f"search.{name} must be >= 0, got {getattr(self, name)}")
        if self.mutants + self.children + self.keep < 1:
            raise SlimctrError("search.mutants, search.children or search.keep must be >= 1")
        if not 0 <= self.mutation_prob <= 1:
            raise SlimctrError(f"search.mutation_prob must be in [0, 1], got {self.mutation_prob}")


@dataclasses.dataclass(frozen=True)
class Evolved:
    """The best widths found, their fitness, and the best fitness after each generation."""

    widths: np.ndarray
    fitness: float
    history: list[float]


def evolve(
    fitness: Callable[[np.ndarray], float],
    num_fields: int,
    max_width: int,
    config: EvolutionConfig,
    seed: int,
    feasible: Callable[[np.ndarray], bool] | None = None,
) -> Evolved:
    """The widths (F,) in 1..``max_width`` that maximise ``fitness``; deterministic in ``seed``.

    ``fitness`` receives a read-only copy of each candidate and is called once per distinct one.
    With ``feasible`` (a size budget, say), the first population is drawn among feasible
    candidates and an infeasible offspring scores -inf without being evaluated (slimctr's
    addition: the reference searches for accuracy alone).
    """
    if num_fields < 1 or max_width < 1:
        raise SlimctrError("evolution needs at least one field and a width >= 1")
    rng = np.random.default_rng(seed)
    scores: dict[bytes, float] = {}

    def score(candidate: np.ndarray) -> float:
        key = candidate.tobytes()
        if key not in scores:
            view = candidate.copy()
            view.flags.writeable = False
            allowed = feasible is None or feasible(view)
            scores[key] = float(fitness(view)) if allowed else -np.inf
        return scores[key]

    population = [_draw(num_fields, max_width, rng, feasible) for _ in range(config.population)]
    best, best_score, history = population[0].copy(), -np.inf, []
    for _ in range(config.generations):
        ranked = sorted(population, key=score, reverse=True)  # stable: ties keep their order
        if score(ranked[0]) > best_score:
            best, best_score = ranked[0].copy(), score(ranked[0])
        history.append(best_score)
        population = [c.copy() for c in ranked[: config.keep]]
        population += [
            _mutant(c, max_width, config.mutation_prob, rng) for c in ranked[: config.mutants]
        ]
        pool = ranked[: config.parent_pool]
        population += [_child(pool, rng) for _ in range(config.children) if len(pool) > 1]
        if not population:
            break
    return Evolved(widths=best, fitness=best_score, history=history)


def _draw(
    fields: int,
    max_width: int,
    rng: np.random.Generator,
    feasible: Callable[[np.ndarray], bool] | None,
    tries: int = 10_000,
) -> np.ndarray:
    """Widths drawn uniformly from 1..max_width, redrawn until ``feasible`` accepts them."""
    for _ in range(tries):
        candidate = rng.integers(1, max_width + 1, fields)
        if feasible is None or feasible(candidate):
            return candidate
    raise SlimctrError(
        f"no uniformly drawn widths fit the budget in {tries:,} draws; give a larger budget "
        "or a smaller supernet width"
    )


def _mutant(
    candidate: np.ndarray, max_width: int, prob: float, rng: np.random.Generator
) -> np.ndarray:
    """A copy of ``candidate`` with each width redrawn from 1..max_width with probability prob."""
    mutant = candidate.copy()
    redraw = rng.random(len(mutant)) < prob
    mutant[redraw] = rng.integers(1, max_width + 1, int(redraw.sum()))
    return mutant


def _child(pool: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Two distinct parents from ``pool``, cut at a point in [1, F - 1] (a copy of the first when
    F = 1)."""
    first, second = rng.choice(len(pool), size=2, replace=False)
    fields = len(pool[first])
    cut = int(rng.integers(1, fields)) if fields > 1 else fields
    return np.concatenate([pool[first][:cut], pool[second][cut:]])
