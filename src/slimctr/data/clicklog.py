"""Small recommendation click logs: users x items with side features, from a known label model.

Each row is one impression: a user, an item, the hour and weekday it was shown, and a click label.
Columns (all categorical, as strings, but ``label``, 0/1)::

    label  user_id item_id  age gender city device  category brand price  hour weekday

Population. U users (default rows / 15) and I items (default rows / 40). The user of a row is
drawn with a Zipf-Mandelbrot law over users, P(user of activity rank k) ∝ (k + ``RANK_OFFSET``)
^-``user_activity_exponent`` (10 and 1.0), the item likewise with ``item_popularity_exponent``
(1.1): heavy users and hit items, and a long tail seen once or twice. The offset keeps the heads
as real logs have them (the top user about 1.4% of the rows at 100k rows, the top item about
2%); a plain Zipf law (offset 0) gave the top user 11% and the top item 17%. User and item are
drawn independently (no exposure bias), the hour from a typical daily traffic curve
(``HOUR_TRAFFIC``), the weekday with busier weekends. Printed ids are a random permutation of
the ranks, as hashed ids are.

Side features are fixed per user and per item, as in a real log: a user's ``age`` (7 buckets),
``gender`` (3, one "unknown") and ``device`` (4) follow fixed shares, ``city`` a Zipf(1.0) law
over 100 cities. An item belongs to a ``brand`` (I / 8 brands, Zipf(1.0) over items per brand),
a brand to a ``category`` (20, Zipf(1.0)); the ``price`` bucket (10) is the rounded sum of a
category level (uniform in [1.5, 7.5]), a brand offset (sd 1) and an item offset (sd 1.5),
clipped to 0..9.

Label model, with u the user, i the item, h the hour and c(i), a(u) the item's category and the
user's age::

    logit = b + beta_u + gamma_i + <p_u, q_i> + A[a(u), c(i)] + H[h, c(i)] + eps
    label ~ Bernoulli(sigmoid(logit))

    beta_u   ~ N(0, 0.5²)                                 user bias
    gamma_i  = 0.5 (0.5 z_i + sqrt(1 - 0.5²) n_i)         item bias, n_i ~ N(0, 1), z_i the
                                                          item's log popularity standardised over
                                                          impressions: hits are clicked more
    p_u, q_i ~ N(0, s² I_4), s = (0.5² / 4)^(1/4)         latent taste: <p_u, q_i> has sd 0.5
    A        ~ N(0, 0.4²), a 7 x 20 table                 age x category
    H        ~ N(0, 0.3²), a 24 x 20 table                hour x category
    eps      ~ N(0, 0.1²), per row                        what no feature explains

The first-order part (beta + gamma) and the interaction part (latent + the two tables) each
have a standard deviation of about 0.7 (sqrt(0.5² + 0.5²) and sqrt(0.5² + 0.4² + 0.3²)), so
a model needs both. The bias b is bisected so that the mean of sigmoid(logit) over the rows is
``positive_rate`` (0.15). These values were set once, from what public click logs look like, and
are not tuned to favour any model.

The Bayes AUC is the AUC of the true logit without eps (given the features, the click
probability rises with it): no model of these columns can expect more. Everything is drawn
from one ``numpy.random.default_rng(seed)`` in a fixed order: the same config writes the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slimctr.files import atomic_path
from slimctr.metrics import auc_or_nan

ROWS_PER_USER, ROWS_PER_ITEM, ITEMS_PER_BRAND = 15, 40, 8
AGES = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARES = (0.06, 0.20, 0.28, 0.20, 0.13, 0.08, 0.05)
GENDERS, GENDER_SHARES = ("f", "m", "unknown"), (0.48, 0.46, 0.06)
DEVICES, DEVICE_SHARES = ("android", "ios", "desktop", "tablet"), (0.50, 0.30, 0.15, 0.05)
NUM_CITIES, NUM_CATEGORIES, NUM_PRICES = 100, 20, 10
SIDE_EXPONENT = 1.0  # cities, categories, items per brand
RANK_OFFSET = 10.0  # users and items: Zipf-Mandelbrot, so no single user or item dominates
# relative impressions per hour 00..23: night trough, morning rise, evening peak
HOUR_TRAFFIC = (3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 6.5, 7, 6.5, 6, 6, 6.5, 7, 8, 9, 9.5, 9, 7, 5)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_TRAFFIC = (1.0, 1.0, 1.0, 1.0, 1.05, 1.15, 1.15)
USER_BIAS_STD, ITEM_BIAS_STD, POPULARITY_CORRELATION = 0.5, 0.5, 0.5
LATENT_STD, AGE_CATEGORY_STD, HOUR_CATEGORY_STD, NOISE_STD = 0.5, 0.4, 0.3, 0.1
SUFFIXES = (".parquet", ".csv")
COLUMNS = (
    *("label", "user_id", "item_id", "age", "gender", "city", "device"),
    *("category", "brand", "price", "hour", "weekday"),
)


@dataclass(frozen=True, kw_only=True)
class ClickLogConfig:
    """Size and structure of a click log (see the module docstring). ``users`` and ``items``
    default to rows / 15 and rows / 40 (at least 2 each)."""

    rows: int = 100_000
    seed: int = 0
    users: int | None = None
    items: int | None = None
    user_activity_exponent: float = 1.0
    item_popularity_exponent: float = 1.1
    positive_rate: float = 0.15
    latent_dim: int = 4

    def __post_init__(self) -> None:
        for name, ok, rule in (
            ("rows", self.rows >= 1, ">= 1"),
            ("seed", self.seed >= 0, ">= 0"),
            ("users", self.users is None or self.users >= 2, ">= 2 (or None)"),
            ("items", self.items is None or self.items >= 2, ">= 2 (or None)"),
            ("user_activity_exponent", self.user_activity_exponent >= 0, ">= 0"),
            ("item_popularity_exponent", self.item_popularity_exponent >= 0, ">= 0"),
            ("positive_rate", 0 < self.positive_rate < 1, "in (0, 1)"),
            ("latent_dim", self.latent_dim >= 1, ">= 1"),
        ):
            if not ok:
                raise ValueError(f"ClickLogConfig.{name} must be {rule}, got {getattr(self, name)}")

    @property
    def num_users(self) -> int:
        return self.users if self.users is not None else max(2, round(self.rows / ROWS_PER_USER))

    @property
    def num_items(self) -> int:
        return self.items if self.items is not None else max(2, round(self.rows / ROWS_PER_ITEM))


def write_clicklog(config: ClickLogConfig, path: str | Path) -> dict[str, Any]:
    """Write the log to ``path`` (.parquet or .csv, atomically) and return its summary: rows,
    positive_rate (of the labels), users and items (of the population; ``*_seen`` occur in the
    rows), bias, the measured sd of the first-order and interaction parts, the Bayes AUC and the
    AUC of the first-order part alone."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported suffix (use one of {', '.join(SUFFIXES)})")
    table, summary = _generate(config)
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="none"))
    return summary


def _generate(config: ClickLogConfig) -> tuple[pa.Table, dict[str, Any]]:
    rng = np.random.default_rng(config.seed)
    users, items = _users(rng, config), _items(rng, config)
    rows = _impressions(rng, config, items["popularity"])
    tables = _label_tables(rng, config, items["popularity"])
    user, item, category = rows["user"], rows["item"], items["category"][rows["item"]]
    first_order = tables["user_bias"][user] + tables["item_bias"][item]  # (R,)
    interaction = (
        np.einsum("rd,rd->r", tables["user_latent"][user], tables["item_latent"][item])
        + tables["age_category"][users["age"][user], category]
        + tables["hour_category"][rows["hour"], category]
    )
    logit = first_order + interaction
    noisy = logit + rng.normal(0.0, NOISE_STD, config.rows)
    bias = _bisect_bias(noisy, config.positive_rate)
    label = rng.random(config.rows) < _sigmoid(bias + noisy)
    summary = {
        "rows": config.rows,
        "positive_rate": float(label.mean()),
        "users": config.num_users,
        "items": config.num_items,
        "users_seen": int(np.unique(user).size),
        "items_seen": int(np.unique(item).size),
        "bias": bias,
        "first_order_std": float(first_order.std()),
        "interaction_std": float(interaction.std()),
        "bayes_auc": auc_or_nan(label, logit),
        "first_order_auc": auc_or_nan(label, first_order),
    }
    return _table(rng, label, rows, users, items), summary


def _impressions(
    rng: np.random.Generator, config: ClickLogConfig, popularity: np.ndarray
) -> dict[str, np.ndarray]:
    """The user, item (by rank), hour and weekday of each row, drawn independently."""
    activity = _zipf(config.num_users, config.user_activity_exponent, RANK_OFFSET)
    return {
        "user": rng.choice(config.num_users, config.rows, p=activity),
        "item": rng.choice(config.num_items, config.rows, p=popularity),
        "hour": rng.choice(24, config.rows, p=_shares(HOUR_TRAFFIC)),
        "weekday": rng.choice(7, config.rows, p=_shares(WEEKDAY_TRAFFIC)),
    }


def _table(
    rng: np.random.Generator,
    label: np.ndarray,
    rows: dict[str, np.ndarray],
    users: dict[str, np.ndarray],
    items: dict[str, np.ndarray],
) -> pa.Table:
    user, item = rows["user"], rows["item"]
    user_names = rng.permutation(len(users["age"]))  # printed ids hide the activity rank
    item_names = rng.permutation(len(items["category"]))
    columns = {
        "label": pa.array(label.astype(np.int8)),
        "user_id": _strings([f"u{k}" for k in user_names], user),
        "item_id": _strings([f"i{k}" for k in item_names], item),
        "age": _strings(AGES, users["age"][user]),
        "gender": _strings(GENDERS, users["gender"][user]),
        "city": _strings(_names("city", NUM_CITIES), users["city"][user]),
        "device": _strings(DEVICES, users["device"][user]),
        "category": _strings(_names("cat", NUM_CATEGORIES), items["category"][item]),
        "brand": _strings(_names("b", len(items["brand_offset"])), items["brand"][item]),
        "price": _strings(_names("p", NUM_PRICES), items["price"][item]),
        "hour": _strings([f"{h:02d}" for h in range(24)], rows["hour"]),
        "weekday": _strings(WEEKDAYS, rows["weekday"]),
    }
    return pa.table({name: columns[name] for name in COLUMNS})


def _users(rng: np.random.Generator, config: ClickLogConfig) -> dict[str, np.ndarray]:
    """Age, gender, city and device of each user (by activity rank)."""
    n = config.num_users
    return {
        "age": rng.choice(len(AGES), n, p=AGE_SHARES),
        "gender": rng.choice(len(GENDERS), n, p=GENDER_SHARES),
        "city": rng.choice(NUM_CITIES, n, p=_zipf(NUM_CITIES, SIDE_EXPONENT)),
        "device": rng.choice(len(DEVICES), n, p=DEVICE_SHARES),
    }


def _items(rng: np.random.Generator, config: ClickLogConfig) -> dict[str, np.ndarray]:
    """Brand, category and price bucket of each item (by popularity rank), and its popularity."""
    n = config.num_items
    brands = max(1, round(n / ITEMS_PER_BRAND))
    brand_category = rng.choice(NUM_CATEGORIES, brands, p=_zipf(NUM_CATEGORIES, SIDE_EXPONENT))
    brand = rng.choice(brands, n, p=_zipf(brands, SIDE_EXPONENT))
    category = brand_category[brand]
    category_level = rng.uniform(1.5, 7.5, NUM_CATEGORIES)
    brand_offset = rng.normal(0.0, 1.0, brands)
    level = category_level[category] + brand_offset[brand] + rng.normal(0.0, 1.5, n)
    return {
        "popularity": _zipf(n, config.item_popularity_exponent, RANK_OFFSET),
        "brand": brand,
        "brand_offset": brand_offset,
        "category": category,
        "price": np.clip(np.round(level), 0, NUM_PRICES - 1).astype(np.int64),
    }


def _label_tables(
    rng: np.random.Generator, config: ClickLogConfig, popularity: np.ndarray
) -> dict[str, np.ndarray]:
    """The label model's tables, each with the standard deviation of the module docstring."""
    # standardised over impressions, not items: gamma then has sd 0.5 over rows at any size
    log_popularity = np.log(popularity)
    mean = popularity @ log_popularity
    spread = np.sqrt(popularity @ (log_popularity - mean) ** 2)
    z = (log_popularity - mean) / spread if spread > 0 else 0 * log_popularity
    own = rng.normal(0.0, 1.0, config.num_items)
    rho = POPULARITY_CORRELATION
    entry_std = (LATENT_STD**2 / config.latent_dim) ** 0.25  # <p, q> of latent_dim products
    return {
        "user_bias": rng.normal(0.0, USER_BIAS_STD, config.num_users),
        "item_bias": ITEM_BIAS_STD * (rho * z + np.sqrt(1 - rho**2) * own),
        "user_latent": rng.normal(0.0, entry_std, (config.num_users, config.latent_dim)),
        "item_latent": rng.normal(0.0, entry_std, (config.num_items, config.latent_dim)),
        "age_category": rng.normal(0.0, AGE_CATEGORY_STD, (len(AGES), NUM_CATEGORIES)),
        "hour_category": rng.normal(0.0, HOUR_CATEGORY_STD, (24, NUM_CATEGORIES)),
    }


def _bisect_bias(logit: np.ndarray, positive_rate: float) -> float:
    """The b with mean(sigmoid(b + logit)) = positive_rate (the mean rises with b)."""
    low, high = -30.0, 30.0
    for _ in range(80):
        middle = (low + high) / 2
        if _sigmoid(middle + logit).mean() < positive_rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _zipf(n: int, exponent: float, offset: float = 0.0) -> np.ndarray:
    """P(rank k) ∝ (k + offset)^-exponent for k = 1..n."""
    weights = (np.arange(1, n + 1, dtype=np.float64) + offset) ** -exponent
    return weights / weights.sum()


def _shares(weights: tuple[float, ...]) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    return array / array.sum()


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(count)]


def _strings(values: list[str] | tuple[str, ...], ids: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(ids))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
