"""The planted-truth suite (issue 21) and the correlated noise fields of the generator."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from slimctr.data.planted import HELD_OUT, SUITE, TUNE, scored_pairs, triple_pairs
from slimctr.data.synthetic import GroundTruth, SyntheticConfig, generate


def test_the_suite_has_tuning_and_held_out_generators_that_each_change_something():
    assert TUNE and HELD_OUT and not set(TUNE) & set(HELD_OUT)
    assert set(TUNE) | set(HELD_OUT) == set(SUITE)
    configs = [dataclasses.asdict(g.config) for g in SUITE.values()]
    assert len({str(sorted(c.items())) for c in configs}) == len(configs)  # all different
    for generator in SUITE.values():
        config = generator.at(seed=2, rows=1000)
        assert (config.seed, config.rows) == (2, 1000) and generator.hard


@pytest.mark.parametrize("name", list(SUITE))
def test_every_generator_makes_rows_and_plants_what_it_says(name):
    truth, batches = generate(SUITE[name].at(seed=0, rows=500))
    rows = sum(b.num_rows for b in batches)
    config = SUITE[name].config
    assert rows == 500
    assert len(truth.important_fields) == config.num_important + config.num_important_numeric
    assert (len(truth.pairs), len(truth.triples)) == (config.num_pairs, config.num_triples)
    assert len(truth.correlated) == config.num_correlated
    assert 0.5 < truth.bayes_auc <= 1


def test_a_correlated_field_copies_its_source_in_the_stated_share_of_rows():
    config = SyntheticConfig(
        rows=20_000,
        num_numeric=0,
        num_categorical=8,
        cardinalities=(6, 8, 10, 12, 14, 16, 18, 20),
        num_important=3,
        num_pairs=1,
        num_triples=0,
        num_important_numeric=0,
        missing_rate=0.0,
        num_correlated=2,
        correlation=0.7,
    )
    truth, batches = generate(config)
    frame = pl.from_arrow(pa_table(batches))
    assert len(truth.correlated) == 2
    for copy, source in truth.correlated.items():
        assert copy in truth.unimportant_fields and source in truth.important_fields
        # given the source's value, the copy's most common value takes >= the copied share
        modal = frame.group_by(source, copy).len().group_by(source).agg(pl.col("len").max())
        share = modal["len"].sum() / len(frame)
        assert share > 0.7
    others = [f for f in truth.unimportant_fields if f not in truth.correlated]
    source = next(iter(truth.correlated.values()))
    independent = frame.group_by(source, others[0]).len().group_by(source).agg(pl.col("len").max())
    assert independent["len"].sum() / len(frame) < 0.5  # an uncorrelated field does not


def test_configs_without_copies_draw_what_they_drew_before_copies_existed():
    """The copies use a random stream of their own: the default's first rows are unchanged."""
    _, batches = generate(SyntheticConfig(rows=5))
    first = next(batches)
    expected = ["d3e18973", "e4842bfd", "af8d4148", "d3e18973", "d3e18973"]  # before copies
    assert first.column("C1").to_pylist() == expected


def test_correlated_fields_are_checked():
    with pytest.raises(ValueError, match="num_correlated must be <="):
        SyntheticConfig(num_categorical=4, num_important=2, num_pairs=1, num_triples=0,
                        cardinalities=(4, 5, 6, 7), num_correlated=3)  # fmt: skip
    with pytest.raises(ValueError, match="correlation must be in"):
        SyntheticConfig(num_correlated=1, correlation=0.0)
    with pytest.raises(ValueError, match="sized_for_rows"):
        dataclasses.replace(SyntheticConfig.criteo(rows=1000), num_correlated=1)


def test_a_triples_sub_pairs_are_left_out_of_a_scored_pair_ranking():
    truth, _ = generate(SUITE["issue"].at(seed=0, rows=10))
    (triple,) = truth.triples
    ignored = triple_pairs(truth)
    assert ignored <= {frozenset(p) for p in [triple[:2], triple[1:], (triple[0], triple[2])]}
    assert not ignored & {frozenset(p) for p in truth.pairs}
    ranked = [*sorted(ignored, key=sorted), *truth.pairs]
    kept = scored_pairs([tuple(sorted(p)) for p in ranked], truth)
    assert [frozenset(p) for p in kept] == [frozenset(p) for p in truth.pairs]


def pa_table(batches):
    import pyarrow as pa

    return pa.Table.from_batches(list(batches))


def test_generators_are_deterministic():
    config = SUITE["correlated"].at(seed=1, rows=300)
    first = pa_table(generate(config)[1])
    again = pa_table(generate(config)[1])
    assert first.equals(again)
    assert np.asarray(first.column("label")).mean() > 0


def test_synth_writes_a_planted_generator(cli, tmp_path):
    out = tmp_path / "c.csv"
    result = cli("synth", "--preset", "planted:correlated", "--rows", 800, "--seed", 3,
                 "--out", out, "--json")  # fmt: skip
    assert result.code == 0, result.err
    truth = GroundTruth.from_json(f"{out}.truth.json")
    assert truth.config == SUITE["correlated"].at(seed=3, rows=800)
    assert len(truth.correlated) == 4 and pl.read_csv(out).height == 800
