"""OptEmbed's evolutionary search: dimension-search spec 8, property 9."""

from __future__ import annotations

import numpy as np
import pytest

from slimctr.errors import SlimctrError
from slimctr.search.evolution import EvolutionConfig, _child, _mutant, evolve

TARGET = np.array([3, 7, 1, 5, 8, 2])


def _closeness(widths: np.ndarray) -> float:
    return -float(np.abs(widths - TARGET).sum())


def test_the_search_is_deterministic_in_its_seed_and_its_best_never_falls():
    config = EvolutionConfig(generations=15)
    first = evolve(_closeness, len(TARGET), 8, config, seed=3)
    again = evolve(_closeness, len(TARGET), 8, config, seed=3)
    assert np.array_equal(first.widths, again.widths) and first.history == again.history
    assert first.history == sorted(first.history) and first.fitness == first.history[-1]
    assert first.fitness == _closeness(first.widths)  # the recorded best is what was scored
    assert first.fitness > evolve(_closeness, 6, 8, EvolutionConfig(generations=1), 3).fitness
    assert np.all((first.widths >= 1) & (first.widths <= 8))


def test_mutation_copies_and_never_alters_its_parent():
    rng = np.random.default_rng(0)
    parent = np.array([4, 4, 4, 4])
    mutants = [_mutant(parent, 8, 1.0, rng) for _ in range(50)]
    assert np.array_equal(parent, [4, 4, 4, 4])
    drawn = np.concatenate(mutants)
    assert drawn.min() == 1 and drawn.max() == 8  # every width can be drawn, 1 included


@pytest.mark.parametrize("fields", [2, 3, 6])
def test_the_crossover_cut_lies_in_one_to_f_minus_one(fields):
    rng = np.random.default_rng(fields)
    pool = [np.ones(fields, dtype=np.int64), np.full(fields, 2)]
    cuts = set()
    for _ in range(300):
        child = _child(pool, rng)
        first = child[0]
        cut = int(np.argmax(child != first)) if np.any(child != first) else fields
        assert 1 <= cut <= fields - 1, child  # both parents always contribute
        assert np.all(child[:cut] == first) and np.all(child[cut:] == 3 - first)
        cuts.add(cut)
    assert cuts == set(range(1, fields))


def test_fitness_sees_a_read_only_copy_and_each_candidate_once():
    seen: list[bytes] = []

    def fitness(widths: np.ndarray) -> float:
        with pytest.raises(ValueError, match="read-only"):
            widths[0] = 99
        seen.append(widths.tobytes())
        return _closeness(widths)

    evolve(fitness, len(TARGET), 8, EvolutionConfig(generations=5), seed=0)
    assert len(seen) == len(set(seen))


def test_bad_settings_are_errors():
    with pytest.raises(SlimctrError, match="generations must be >= 1"):
        EvolutionConfig(generations=0)
    with pytest.raises(SlimctrError, match="mutation_prob must be in"):
        EvolutionConfig(mutation_prob=1.5)


def test_a_budget_keeps_every_scored_candidate_and_the_best_feasible():
    scored = []

    def fitness(widths):
        scored.append(widths.copy())
        return float(widths.sum())  # wider is better, so the budget binds

    def feasible(widths):
        return int(widths.sum()) <= 12

    found = evolve(fitness, 5, 8, EvolutionConfig(generations=6), seed=3, feasible=feasible)
    assert all(w.sum() <= 12 for w in scored) and found.widths.sum() <= 12
    assert found.fitness == found.widths.sum() >= 10  # the search still climbs to the budget
    with pytest.raises(SlimctrError, match="budget"):
        evolve(fitness, 5, 8, EvolutionConfig(), seed=0, feasible=lambda w: False)
