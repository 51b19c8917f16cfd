"""The click-log generator: reproducible, shaped as documented, and preparable."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq
import pytest

from slimctr import api
from slimctr.data.clicklog import COLUMNS, ClickLogConfig, write_clicklog


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("clicklog") / "log.parquet"
    summary = write_clicklog(ClickLogConfig(rows=20_000, seed=3), path)
    return path, summary


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    paths = [tmp_path / f"{name}.parquet" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (0, 0, 1), strict=True):
        write_clicklog(ClickLogConfig(rows=2_000, seed=seed), path)
    a, b, c = (pq.read_table(path) for path in paths)
    assert a.equals(b)
    assert not a.equals(c)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]


def test_rows_columns_and_summary(log):
    path, summary = log
    frame = pl.read_parquet(path)
    assert frame.columns == list(COLUMNS)
    assert frame.height == summary["rows"] == 20_000
    assert set(frame["label"].unique()) == {0, 1}
    assert all(frame[c].dtype == pl.String for c in COLUMNS[1:])
    assert summary["users"] == round(20_000 / 15) and summary["items"] == 20_000 // 40
    assert frame["user_id"].n_unique() == summary["users_seen"] <= summary["users"]
    assert frame["item_id"].n_unique() == summary["items_seen"] <= summary["items"]
    cardinalities = {c: frame[c].n_unique() for c in ("age", "gender", "device", "hour", "weekday")}
    assert cardinalities == {"age": 7, "gender": 3, "device": 4, "hour": 24, "weekday": 7}
    assert 50 <= frame["city"].n_unique() <= 100 and frame["category"].n_unique() <= 20


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_positive_rate_is_the_configured_one(tmp_path, rate):
    summary = write_clicklog(ClickLogConfig(rows=20_000, positive_rate=rate), tmp_path / "l.csv")
    assert summary["positive_rate"] == pytest.approx(rate, abs=0.012)  # ~5 binomial sd


def test_side_features_are_fixed_per_user_and_item(log):
    frame = pl.read_parquet(log[0])
    for key, features in (
        ("user_id", ["age", "gender", "city", "device"]),
        ("item_id", ["category", "brand", "price"]),
        ("brand", ["category"]),
    ):
        distinct = frame.group_by(key).agg(pl.col(features).n_unique())
        assert all((distinct[f] == 1).all() for f in features), (key, features)


def test_bayes_auc_is_an_informative_upper_bound(log):
    _, summary = log
    assert 0.65 < summary["bayes_auc"] < 0.9
    assert 0.55 < summary["first_order_auc"] < summary["bayes_auc"] - 0.02  # interactions matter
    for part in ("first_order_std", "interaction_std"):
        assert 0.4 < summary[part] < 1.0, part


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": 0}, "rows must be >= 1"),
        ({"users": 1}, "users must be >= 2"),
        ({"items": 0}, "items must be >= 2"),
        ({"positive_rate": 1.0}, "positive_rate must be in"),
        ({"item_popularity_exponent": -0.5}, "item_popularity_exponent must be >= 0"),
        ({"latent_dim": 0}, "latent_dim must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_config_raises(change, message):
    with pytest.raises(ValueError, match=message):
        ClickLogConfig(**change)


def test_unsupported_suffix_raises(tmp_path):
    with pytest.raises(ValueError, match="unsupported suffix"):
        write_clicklog(ClickLogConfig(rows=10), tmp_path / "log.json")
    assert list(tmp_path.iterdir()) == []


def test_prepares_into_a_store_of_categorical_fields(log, tmp_path):
    path, summary = log
    store = api.prepare(path, tmp_path / "store")
    assert store.schema.label == "label"
    assert [(f.name, f.kind) for f in store.schema.fields] == [
        (name, "categorical") for name in COLUMNS[1:]
    ]
    assert sum(store.manifest["rows"].values()) == summary["rows"]
    assert store.labels().mean() == pytest.approx(summary["positive_rate"])
    assert store.schema.field("age").vocab_size == 2 + 7  # PAD and OOV, then the values


def test_csv_and_parquet_prepare_alike(tmp_path):
    config = ClickLogConfig(rows=3_000, seed=1)
    schemas = []
    for suffix in (".csv", ".parquet"):
        write_clicklog(config, tmp_path / f"log{suffix}")
        schemas.append(api.prepare(tmp_path / f"log{suffix}", tmp_path / suffix[1:]).schema)
    assert schemas[0] == schemas[1]
