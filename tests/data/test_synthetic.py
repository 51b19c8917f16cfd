"""The synthetic default: deterministic, Criteo-shaped, and its planted truth really holds."""

import gzip
import hashlib
import itertools
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from slimctr.data import synthetic
from slimctr.data.encode import criteo_bucket
from slimctr.data.synthetic import (
    SUFFIXES,
    GroundTruth,
    SyntheticConfig,
    expected_kept_values,
    generate,
    write_synthetic,
)

SMALL = SyntheticConfig(rows=3_000, seed=7)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact AUC: mean over (positive, negative) pairs of [s+ > s-] + [s+ == s-] / 2."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    start = 0
    for end in np.append(np.flatnonzero(np.diff(sorted_scores)) + 1, len(scores)):
        ranks[order[start:end]] = (start + 1 + end) / 2  # average 1-based rank of a tie run
        start = end
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def independence_z(values: pa.ChunkedArray, labels: np.ndarray, top: int = 30) -> float:
    """Chi-square test of value (top values, the rest, null) vs label, as a z-score."""
    text = pc.fill_null(values.cast(pa.string()), "<null>").to_numpy(zero_copy_only=False)
    _, inverse, counts = np.unique(text, return_inverse=True, return_counts=True)
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    category = np.minimum(rank[inverse], top)
    observed = np.zeros((category.max() + 1, 2))
    np.add.at(observed, (category, labels), 1)
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = observed.shape[0] - 1
    return float((statistic - dof) / np.sqrt(2 * dof))


@pytest.fixture(scope="module")
def sample() -> tuple[GroundTruth, pa.Table]:
    truth, batches = generate(SyntheticConfig(rows=40_000, seed=3), include_logits=True)
    return truth, pa.Table.from_batches(list(batches))


def read_text(path: Path, delimiter: str, config: SyntheticConfig) -> pa.Table:
    types = {name: pa.string() for name in config.categorical_columns}
    types |= {name: pa.int64() for name in config.numeric_columns} | {"label": pa.int8()}
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )


def test_same_seed_gives_identical_bytes_whatever_the_chunk_size(tmp_path):
    first = write_synthetic(SMALL, tmp_path / "a.csv")
    second = write_synthetic(SMALL, tmp_path / "b.csv", chunk_rows=701)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert first == second
    write_synthetic(SMALL, tmp_path / "a.csv.gz")
    write_synthetic(SMALL, tmp_path / "b.csv.gz", chunk_rows=1000)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


def test_different_seed_gives_different_rows_and_truth(tmp_path):
    first = write_synthetic(SMALL, tmp_path / "a.csv")
    other = SyntheticConfig(rows=SMALL.rows, seed=SMALL.seed + 1)
    second = write_synthetic(other, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "b.csv").read_bytes()
    assert first.bias != second.bias


def test_batches_have_the_configured_rows_columns_and_types():
    config = SyntheticConfig(
        rows=2_500,
        num_numeric=3,
        num_categorical=5,
        num_important=3,
        num_pairs=2,
        num_triples=1,
        seed=1,
    )
    _, batches = generate(config, chunk_rows=1_000)
    batches = list(batches)
    assert [b.num_rows for b in batches] == [1_000, 1_000, 500]
    table = pa.Table.from_batches(batches)
    assert table.column_names == ["label", "I1", "I2", "I3", "C1", "C2", "C3", "C4", "C5"]
    assert table.schema.field("label").type == pa.int8()
    assert all(table.schema.field(f"I{j}").type == pa.int64() for j in (1, 2, 3))
    assert all(table.schema.field(f"C{j}").type == pa.string() for j in range(1, 6))
    assert set(table["label"].to_pylist()) == {0, 1}


def test_values_look_like_criteo(sample):
    truth, table = sample
    for name in truth.config.categorical_columns:
        tokens = table[name].drop_null().unique().to_pylist()
        assert all(re.fullmatch(r"[0-9a-f]{8}", t) for t in tokens)
        assert len(tokens) <= truth.config.cardinalities[int(name[1:]) - 1]
    for name in truth.config.numeric_columns:
        assert pc.min(table[name]).as_py() >= 0


def test_ids_follow_the_truncated_zipf_law(sample):
    truth, table = sample
    config = truth.config
    for f in np.argsort(config.cardinalities)[:3]:  # every id of these fields occurs
        column = table[f"C{f + 1}"].drop_null()
        counts = np.sort(column.value_counts().field("counts").to_numpy())[::-1]
        law = synthetic._zipf(config.cardinalities[f], config.zipf_exponent)
        np.testing.assert_allclose(counts / len(column), law, atol=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alias_table_reproduces_the_law_exactly(seed):
    probabilities = np.random.default_rng(seed).dirichlet(np.full(500, 0.2))
    keep, alias = synthetic._alias_table(probabilities)
    implied = keep / len(keep) + np.bincount(alias, weights=(1 - keep) / len(keep), minlength=500)
    np.testing.assert_allclose(implied, probabilities, atol=1e-12)


def test_positive_rate_is_near_the_target(sample):
    truth, table = sample
    assert truth.positive_rate == pytest.approx(0.25, abs=0.005)
    assert pc.mean(table["label"]).as_py() == pytest.approx(0.25, abs=0.015)
    rare, batches = generate(SyntheticConfig(rows=20_000, positive_rate=0.05, seed=2))
    labels = pa.Table.from_batches(list(batches))["label"]
    assert rare.positive_rate == pytest.approx(0.05, abs=0.003)
    assert pc.mean(labels).as_py() == pytest.approx(0.05, abs=0.01)


def test_only_unplanted_fields_have_missing_values(sample):
    truth, table = sample
    for name in truth.important_fields:
        assert table[name].null_count == 0, name
    for name in truth.unimportant_fields:
        assert table[name].null_count / table.num_rows == pytest.approx(0.05, abs=0.01), name
    _, batches = generate(SyntheticConfig(rows=2_000, missing_rate=0.0))
    assert all(column.null_count == 0 for column in pa.Table.from_batches(list(batches)).columns)


def test_truth_round_trips_and_names_only_real_columns(tmp_path):
    truth = write_synthetic(SMALL, tmp_path / "data.parquet")
    loaded = GroundTruth.from_json(tmp_path / "data.parquet.truth.json")
    assert loaded == truth
    assert loaded.seed == SMALL.seed and loaded.rows == SMALL.rows and loaded.config == SMALL
    columns = set(pq.read_schema(tmp_path / "data.parquet").names) - {"label"}
    important, unimportant = set(truth.important_fields), set(truth.unimportant_fields)
    assert important | unimportant == columns and not important & unimportant
    assert len(important) == SMALL.num_important + SMALL.num_important_numeric
    assert len(truth.pairs) == SMALL.num_pairs and len(truth.triples) == SMALL.num_triples
    assert len(set(truth.pairs)) == len(truth.pairs)
    assert all(set(term) <= important for term in truth.pairs + truth.triples)
    assert set(truth.numeric_effects) <= important
    assert all(name.startswith("I") for name in truth.numeric_effects)


def test_important_fields_span_cardinalities_yet_stay_learnable(sample):
    truth, _ = sample
    cards = truth.config.cardinalities
    chosen = [cards[int(name[1:]) - 1] for name in truth.important_fields if name[0] == "C"]
    assert max(chosen) <= synthetic.MAX_IMPORTANT_CARDINALITY
    assert max(chosen) > 1_000 and min(chosen) < 50


def test_label_depends_on_planted_fields_only(sample):
    truth, table = sample
    labels = table["label"].to_numpy()
    for name in truth.important_fields:
        assert independence_z(table[name], labels) > 10, name
    for name in truth.unimportant_fields:
        assert independence_z(table[name], labels) < 4.5, name


def test_interactions_carry_signal_beyond_first_order(sample):
    truth, table = sample
    labels = table["label"].to_numpy()
    bayes = auc(labels, table["true_logit"].to_numpy())
    first_order = auc(labels, table["first_order_logit"].to_numpy())
    assert 0.80 <= bayes <= 0.90
    assert bayes - first_order >= 0.03
    assert bayes == pytest.approx(truth.bayes_auc, abs=0.01)
    assert first_order == pytest.approx(truth.first_order_auc, abs=0.01)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_each_suffix_writes_a_readable_file_with_the_generated_rows(tmp_path, suffix):
    path = tmp_path / f"synthetic{suffix}"
    write_synthetic(SMALL, path)
    _, batches = generate(SMALL)
    expected = pa.Table.from_batches(list(batches))
    if suffix == ".parquet":
        table = pq.read_table(path)
    else:
        delimiter = "\t" if suffix.startswith(".tsv") else ","
        table = read_text(path, delimiter, SMALL)
        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(path, "rt") as text:
            header, first = text.readline(), text.readline()
        assert header.rstrip("\n").split(delimiter) == expected.column_names
        assert '"' not in first and len(first.split(delimiter)) == len(expected.column_names)
    assert table.equals(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".truth.json"]


def test_unsupported_suffix_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"data\.json.*\.parquet.*\.csv\.gz"):
        write_synthetic(SMALL, tmp_path / "data.json")
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_file_behind(tmp_path, monkeypatch):
    real_batch = synthetic._batch

    def failing_batch(plan, start, stop, include_logits):
        if start > 0:
            raise RuntimeError("disk full")
        return real_batch(plan, start, stop, include_logits)

    monkeypatch.setattr(synthetic, "_batch", failing_batch)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic(SMALL, tmp_path / "data.csv", chunk_rows=1_000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rows": 0}, "rows"),
        ({"seed": -1}, "seed"),
        ({"num_important": 27}, "num_important"),
        ({"num_important": 2, "num_pairs": 2, "num_triples": 0}, "num_pairs"),
        ({"num_important": 3, "num_pairs": 1, "num_triples": 2}, "num_triples"),
        ({"num_numeric": 0}, "num_important_numeric"),
        ({"missing_rate": 1.0}, "missing_rate"),
        ({"positive_rate": 0.0}, "positive_rate"),
        ({"zipf_exponent": -0.5}, "zipf_exponent"),
        ({"interaction_rank": 0}, "interaction_rank"),
        ({"cardinalities": (10,) * 25}, "cardinalities"),
        ({"cardinalities": (1,) + (10,) * 25}, "cardinalities"),
        ({"numeric_buckets": (10,) * 13}, "numeric_buckets needs sized_for_rows"),
        ({"numeric_buckets": (10,) * 12, "sized_for_rows": 10**6}, "numeric_buckets"),
        ({"numeric_buckets": (3,) * 13, "sized_for_rows": 10**6}, "numeric_buckets"),
        ({"sized_for_rows": 0}, "sized_for_rows"),
        ({"sized_for_rows": 1_000_000}, "cardinalities must be <= 25,333"),
    ],
)
def test_bad_config_raises_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**overrides)


def test_bad_chunk_rows_raises():
    with pytest.raises(ValueError, match="chunk_rows"):
        generate(SMALL, chunk_rows=0)


def test_degenerate_config_without_planted_terms_still_generates():
    config = SyntheticConfig(
        rows=100,
        num_numeric=0,
        num_categorical=2,
        num_important=0,
        num_pairs=0,
        num_triples=0,
        num_important_numeric=0,
    )
    truth, batches = generate(config)
    assert truth.important_fields == () and truth.pairs == () and truth.triples == ()
    assert pa.Table.from_batches(list(batches)).num_rows == 100


def test_default_output_is_unchanged(tmp_path):
    """The demo, the tests and the committed studies rest on these exact rows."""
    write_synthetic(SyntheticConfig(rows=5_000), tmp_path / "default.csv")
    digest = hashlib.sha256((tmp_path / "default.csv").read_bytes()).hexdigest()
    assert digest == "b975b18dddb9c65978cc91f3638171b06496e2b60b6d868a081834fa3a3514b2"


CRITEO_SMALL = SyntheticConfig.criteo(rows=100_000)


@pytest.fixture(scope="module")
def criteo_sample() -> tuple[GroundTruth, pa.Table]:
    truth, batches = generate(CRITEO_SMALL)
    return truth, pa.Table.from_batches(list(batches))


def test_criteo_preset_gives_criteo_tables_at_45m_rows():
    config = SyntheticConfig.criteo()
    assert config.rows == 45_000_000 and config.sized_for_rows == 45_000_000
    expected = expected_kept_values(config)  # fast: no row is drawn
    tables = np.array([expected[name] + 1 for name in config.numeric_columns])  # + OOV row
    tables = np.append(tables, [expected[name] + 1 for name in config.categorical_columns])
    np.testing.assert_allclose(tables, synthetic.CRITEO_TABLE_SIZES, atol=0.1)
    assert abs(tables.sum() - 1_086_810) < 1


def test_criteo_preset_keeps_the_expected_values_at_fewer_rows(criteo_sample):
    """Counting values seen MIN_COUNT times in 80% of the rows, as prepare does."""
    truth, table = criteo_sample
    train = table.slice(0, int(synthetic.TRAIN_SHARE * table.num_rows))
    expected = expected_kept_values(truth.config)
    for name in truth.config.numeric_columns + truth.config.categorical_columns:
        values = train[name].combine_chunks()
        if name.startswith("I"):
            values = criteo_bucket(np.asarray(values, dtype=np.float64))
        counts = values.value_counts().field("counts").to_numpy()
        kept = int((counts >= synthetic.MIN_COUNT).sum())
        assert abs(kept - expected[name]) <= 4 * np.sqrt(expected[name]) + 1, name
    assert expected["C3"] < CRITEO_SMALL.cardinalities[2] / 50  # a sample keeps far fewer


@pytest.mark.parametrize("buckets", [4, 8, 49, 223, 400])
def test_bucket_starts_agree_with_prepares_bucketing(buckets):
    starts = synthetic._bucket_starts(buckets)
    assert len(starts) == buckets
    got = pa.chunked_array([criteo_bucket(starts), criteo_bucket(starts[1:] - 1)])
    assert got.to_pylist() == list(range(-2, buckets - 2)) + list(range(-2, buckets - 3))


def test_criteo_preset_caps_numeric_fields_at_their_last_bucket(criteo_sample):
    truth, table = criteo_sample
    for name, count in zip(truth.config.numeric_columns, CRITEO_SMALL.numeric_buckets, strict=True):
        top = synthetic._bucket_starts(count)[-1]
        assert pc.max(table[name]).as_py() <= top, name


def per_id_rate_auc(values: pa.ChunkedArray, labels: np.ndarray, train_rows: int) -> float:
    """Held-out AUC of each id's click rate in the first ``train_rows`` rows (shrunk to the
    mean by 20 pseudo-rows; unseen ids get the mean)."""
    ids = pc.dictionary_encode(values).combine_chunks().indices.to_numpy()
    seen = np.bincount(ids[:train_rows], minlength=ids.max() + 1)
    clicks = np.bincount(ids[:train_rows], weights=labels[:train_rows], minlength=ids.max() + 1)
    mean = labels[:train_rows].mean()
    rate = (clicks + 20 * mean) / (seen + 20)
    return auc(labels[train_rows:], rate[ids[train_rows:]])


def test_criteo_preset_plants_learnable_signal_in_a_large_field(criteo_sample):
    truth, table = criteo_sample
    cards = dict(zip(CRITEO_SMALL.categorical_columns, CRITEO_SMALL.cardinalities, strict=True))
    planted = [name for name in truth.important_fields if name in cards]
    unplanted = [name for name in truth.unimportant_fields if name in cards]
    large = max(planted, key=cards.__getitem__)
    assert cards[large] > 100_000
    assert any(large in pair for pair in truth.pairs)
    assert all(
        any(name in pair for pair in truth.pairs)
        for name in planted
        if cards[name] > synthetic.MAX_IMPORTANT_CARDINALITY
    )
    labels = table["label"].to_numpy().astype(np.int64)
    train_rows = int(0.8 * table.num_rows)
    assert per_id_rate_auc(table[large], labels, train_rows) > 0.525
    control = max(unplanted, key=cards.__getitem__)  # as large, no signal
    assert abs(per_id_rate_auc(table[control], labels, train_rows) - 0.5) < 0.015


def test_criteo_preset_is_deterministic_whatever_the_chunk_size(tmp_path):
    config = SyntheticConfig.criteo(rows=3_000, seed=4)
    first = write_synthetic(config, tmp_path / "a.csv")
    second = write_synthetic(config, tmp_path / "b.csv", chunk_rows=701)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert first == second == GroundTruth.from_json(tmp_path / "a.csv.truth.json")
    write_synthetic(SyntheticConfig.criteo(rows=3_000, seed=5), tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_memory_is_bounded_by_the_fields_not_the_rows():
    """The plan holds a few numbers per kept id, whatever the rows; rare ids have no table; and
    drawing more chunks allocates nothing that stays."""
    plan, _ = synthetic._draw_plan(SyntheticConfig.criteo())
    arrays = [*plan.laws, *(a for pair in plan.alias_tables for a in pair)]
    arrays += [table for term in plan.tables for table in term]
    per_id = sum(a.nbytes for a in arrays) / (sum(CRITEO_SMALL.cardinalities) + 26)
    assert per_id < 128
    assert max(len(law) for law in plan.laws) == max(CRITEO_SMALL.cardinalities) + 1
    _, batches = generate(SyntheticConfig.criteo(), chunk_rows=20_000)  # 45M rows, lazily
    tracemalloc.start()
    try:
        for _ in itertools.islice(batches, 2):
            pass
        _, early = tracemalloc.get_traced_memory()
        for _ in itertools.islice(batches, 6):
            pass
        _, late = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert early < 100 * 2**20 and late < 1.1 * early


def test_synth_cli_writes_the_criteo_preset_and_refuses_conflicting_flags(cli, tmp_path):
    out = tmp_path / "criteo.parquet"
    result = cli("synth", "--preset", "criteo", "--rows", 2_000, "--out", out, "--json")
    assert result.code == 0, result.err
    truth = GroundTruth.from_json(tmp_path / "criteo.parquet.truth.json")
    assert truth.config == SyntheticConfig.criteo(rows=2_000)
    assert pq.read_metadata(out).num_rows == 2_000
    for flag in ("--numeric", "--categorical"):
        result = cli("synth", "--preset", "criteo", flag, 3, "--out", tmp_path / "x.csv")
        assert result.code == 1
        assert (
            result.err == f"slimctr: error: {flag} conflicts with --preset criteo, which sets it\n"
        )
    assert not (tmp_path / "x.csv").exists()
    assert cli("synth", "--numeric", 3, "--rows", 100, "--out", tmp_path / "d.csv").code == 0
