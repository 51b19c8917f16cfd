"""Criteo-like synthetic click logs with a planted, known ground truth.

Columns: ``label``, ``I1..In`` (non-negative integer counts) and ``C1..Cm`` (8-hex-char tokens,
like Criteo's hashed ids). Values of the fields that do not drive the label are missing
(null / empty) at ``missing_rate``; the planted fields are never missing.

Sampling. Categorical field f has cardinality K_f and a truncated Zipf law over its ids,
P(id = k) ∝ (k + 1)^-s for k < K_f (s = ``zipf_exponent``), sampled with Walker's alias method.
Id k prints as an 8-hex-digit token, unique within the field. Numeric field j is a discretised
Lomax (Pareto II) count, c = floor(scale_j * ((1 - u)^(-1 / shape_j) - 1)): many zeros, heavy tail.

Planted model. With important categorical fields F, pairs P, triples T, numeric fields N and the
id x_f of field f in the row::

    logit = bias + Σ_{f∈F} w_f[x_f]                                      first order
                 + Σ_{(f,g)∈P} alpha_fg * <u_fg[x_f], v_fg[x_g]>         rank-r bilinear
                 + Σ_{(f,g,h)∈T} beta_fgh * Σ_k a[x_f,k] b[x_g,k] c[x_h,k]  rank-r trilinear
                 + Σ_{j∈N} gamma_j * log1p(c_j)
    label ~ Bernoulli(sigmoid(logit))

Every table is standard normal, then centred under its field's id law, so an interaction has zero
mean given any proper subset of its fields: it carries no first-order signal. On a calibration
sample, the scale of w, alpha, beta and |gamma| are set so that the first-order, pair, triple and
numeric parts have standard deviations ``FIRST_ORDER_STD``, ``PAIR_STD``, ``TRIPLE_STD`` and
``NUMERIC_STD`` (split evenly over their terms), then ``bias`` is bisected so that the mean of
sigmoid(logit) is ``positive_rate``. The other fields have no effect on the label. By default only
fields of at most ``MAX_IMPORTANT_CARDINALITY`` ids are planted, one per cardinality stratum: at
500k rows larger fields are too sparse to learn.

Sized laws (``sized_for_rows`` = R): the laws are shaped so that, at R rows, `prepare --min-count
10` keeps a known number of values, a value being kept when it occurs ``MIN_COUNT`` = 10 times in
the training share (``TRAIN_SHARE`` = 0.8) of the rows.

- Categorical field f: its K_f ids are exactly its kept values. Its Zipf exponent is the steepest,
  at most ``zipf_exponent``, under which its rarest id still expects ``KEPT_MIN_EXPECTED`` = 30
  occurrences in 0.8 R rows: each id is kept but for a chance of P(Poisson(30) < 10) = 7e-6.
- Rare ids: fields of at least ``RARE_FROM`` ids give ``RARE_SHARE`` of their rows to rare ids,
  drawn uniformly from so many that each expects ``RARE_MAX_EXPECTED`` = 0.5 occurrences; none
  reaches 10 (P = 2e-10), so they become the OOV id, as Criteo's long tail does.
- Numeric field j: the Lomax count above, capped at the first count of bucket
  B_j = ``numeric_buckets[j]`` - 3 of Criteo's floor(ln(c)^2) for c > 2 (else c - 2), so that
  exactly the buckets -2..B_j occur. Its scale makes its rarest bucket as frequent as it can be.

A sample of fewer rows keeps fewer values, as a sample of Criteo would; ``expected_kept_values``
gives the expectation at any row count.

Signal in large fields (``signal_in_large_fields``): any field may be planted, and each planted
field above ``MAX_IMPORTANT_CARDINALITY`` ids also joins a pair. Its tables hold one entry per
kept id plus one shared by all its rare ids (as a model's OOV row is), so an id carries signal in
proportion to its rows: a model learns the field from its frequent ids, and its rare ids' shared
value in the OOV row.
``SyntheticConfig.criteo()`` is the preset built from these: Criteo's 39 table sizes.

Correlated noise (``num_correlated``): so many unplanted categorical fields copy a planted one.
In each row, with probability ``correlation``, the copy's id is its source's id modulo the copy's
cardinality, else a draw of its own law. A copy predicts the label only through its source, so a
ranking that puts it above the planted fields mistakes correlation for importance. The sources
are the planted categorical fields in turn; the truth names each copy's source.

Determinism: each column owns a PCG64 stream keyed by (seed, role, column) and advanced to the
chunk's first row, so the rows depend on the seed alone, never on the chunk size. Memory: tables
of a few numbers per kept id (56 MiB for the Criteo preset), none for rare ids or rows; rows are
made and written one chunk at a time.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slimctr.files import atomic_path
from slimctr.metrics import auc_or_nan

MAX_IMPORTANT_CARDINALITY = 5_000  # by default larger fields stay unimportant
CALIBRATION_ROWS = 200_000
FIRST_ORDER_STD, PAIR_STD, TRIPLE_STD, NUMERIC_STD = 1.4, 0.9, 0.6, 0.3
GZIP_LEVEL = 1  # level 6 takes ~3x the time for a ~15% smaller file
SUFFIXES = (".parquet", ".csv", ".tsv", ".csv.gz", ".tsv.gz")
# the protocol sized laws target: Criteo's min count over prepare's default training share
TRAIN_SHARE, MIN_COUNT = 0.8, 10
KEPT_MIN_EXPECTED, RARE_MAX_EXPECTED = 30.0, 0.5  # far enough either side of MIN_COUNT
RARE_SHARE, RARE_FROM = 0.05, 1_000  # a choice: small Criteo fields have no long tail
# gdcn.md section 4.7: Criteo's table sizes after min count 10, OOV row included, I1..I13, C1..C26
CRITEO_TABLE_SIZES = (
    *(49, 101, 126, 45, 223, 118, 84, 76, 95, 9, 30, 40, 75),
    *(1458, 555, 193949, 138801, 306, 19, 11970, 634, 4, 42646, 5178, 192773, 3175, 27),
    *(11422, 181075, 11, 4654, 2032, 5, 189657, 18, 16, 59697, 86, 45571),
)
CRITEO_ROWS = 45_000_000
_PARAMS, _CALIBRATION, _CAT_IDS, _CAT_MISSING, _NUM_VALUES, _NUM_MISSING, _LABELS = range(7)
_CAT_RARE, _COPIES, _CAT_COPY = 7, 8, 9
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# the 4 hex digits of each 16-bit value as one uint32: a token is two lookups
_QUADS = _HEX[(np.arange(2**16)[:, None] >> np.arange(12, -1, -4)) & 15].view(np.uint32).ravel()


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Shape of the table and of its planted model (see the module docstring).

    ``cardinalities`` defaults to ``num_categorical`` log-spaced values from 4 to 100,000; with
    ``sized_for_rows`` they count the ids kept at that many rows (rare ids come on top), and
    ``numeric_buckets`` (optional) the Criteo buckets of each numeric field.
    ``num_important`` counts categorical fields, ``num_important_numeric`` numeric ones.
    """

    rows: int = 500_000
    num_numeric: int = 13
    num_categorical: int = 26
    cardinalities: tuple[int, ...] | None = None
    zipf_exponent: float = 1.1
    missing_rate: float = 0.05
    num_important: int = 8
    num_pairs: int = 4
    num_triples: int = 2
    num_important_numeric: int = 1
    interaction_rank: int = 4
    positive_rate: float = 0.25
    seed: int = 0
    sized_for_rows: int | None = None
    numeric_buckets: tuple[int, ...] | None = None
    signal_in_large_fields: bool = False
    num_correlated: int = 0
    correlation: float = 0.8

    @classmethod
    def criteo(cls, rows: int = CRITEO_ROWS, seed: int = 0) -> SyntheticConfig:
        """Criteo's shape: at 45M rows, `prepare --min-count 10` gives the 39 tables of
        ``CRITEO_TABLE_SIZES`` (kept values + 1 OOV row); fewer rows keep fewer values. Large
        fields carry signal. No missing values: a missing token would add a value to a table."""
        kept = [size - 1 for size in CRITEO_TABLE_SIZES]
        return cls(
            rows=rows,
            seed=seed,
            cardinalities=tuple(kept[13:]),
            numeric_buckets=tuple(kept[:13]),
            missing_rate=0.0,
            sized_for_rows=CRITEO_ROWS,
            signal_in_large_fields=True,
        )

    def __post_init__(self) -> None:
        for name in (
            "num_numeric",
            "num_categorical",
            "num_important",
            "num_pairs",
            "num_triples",
            "num_important_numeric",
            "num_correlated",
            "seed",
        ):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name, ok, rule in (
            ("rows", self.rows >= 1, ">= 1"),
            ("interaction_rank", self.interaction_rank >= 1, ">= 1"),
            ("zipf_exponent", self.zipf_exponent >= 0, ">= 0"),
            ("missing_rate", 0 <= self.missing_rate < 1, "in [0, 1)"),
            ("positive_rate", 0 < self.positive_rate < 1, "in (0, 1)"),
            ("correlation", 0 < self.correlation <= 1, "in (0, 1]"),
        ):
            _check(ok, f"{name} must be {rule}, got {getattr(self, name)}")
        for name, most, meaning in (
            ("num_important", self.num_categorical, "num_categorical"),
            ("num_important_numeric", self.num_numeric, "num_numeric"),
            ("num_pairs", math.comb(self.num_important, 2), "C(num_important, 2)"),
            ("num_triples", math.comb(self.num_important, 3), "C(num_important, 3)"),
            (
                "num_correlated",
                self.num_categorical - self.num_important if self.num_important else 0,
                "the unplanted categorical fields (0 without planted ones)",
            ),
        ):
            _check(
                getattr(self, name) <= most,
                f"{name} must be <= {meaning} = {most}, got {getattr(self, name)}",
            )
        if self.cardinalities is None:
            default = np.geomspace(4, 100_000, self.num_categorical).round()
            object.__setattr__(self, "cardinalities", default)
        cards = tuple(int(c) for c in self.cardinalities)  # type: ignore[union-attr]
        object.__setattr__(self, "cardinalities", cards)
        _check(
            len(cards) == self.num_categorical and all(2 <= c <= 10**8 for c in cards),
            f"cardinalities must hold num_categorical={self.num_categorical} values in "
            f"[2, 1e8], got {cards}",
        )
        self._check_sizing(cards)
        _check(
            not (self.num_correlated and self.sized_for_rows is not None),
            "num_correlated cannot be combined with sized_for_rows (a copy's law is a mixture)",
        )

    def _check_sizing(self, cards: tuple[int, ...]) -> None:
        if self.numeric_buckets is not None:
            buckets = tuple(int(b) for b in self.numeric_buckets)
            object.__setattr__(self, "numeric_buckets", buckets)
            _check(
                self.sized_for_rows is not None,
                "numeric_buckets needs sized_for_rows (the rows the buckets are sized for)",
            )
            _check(
                len(buckets) == self.num_numeric and all(4 <= b <= 400 for b in buckets),
                f"numeric_buckets must hold num_numeric={self.num_numeric} values in "
                f"[4, 400], got {buckets}",
            )
        if self.sized_for_rows is None:
            return
        _check(
            1 <= self.sized_for_rows <= 10**10,
            f"sized_for_rows must be in [1, 1e10], got {self.sized_for_rows}",
        )
        largest = max(cards, default=2)
        limit = _head_rows(self.sized_for_rows, largest) / KEPT_MIN_EXPECTED
        _check(
            largest <= limit,
            f"cardinalities must be <= {limit:,.0f} for sized_for_rows={self.sized_for_rows} "
            f"(each id is to occur {KEPT_MIN_EXPECTED:.0f} times), got {largest}",
        )

    @property
    def numeric_columns(self) -> list[str]:
        return [f"I{j + 1}" for j in range(self.num_numeric)]

    @property
    def categorical_columns(self) -> list[str]:
        return [f"C{j + 1}" for j in range(self.num_categorical)]


@dataclass(frozen=True)
class GroundTruth:
    """What was planted. ``important_fields`` lists every column that moves the label
    (categorical and numeric), ``numeric_effects`` maps a column to gamma, its weight on
    log1p(count), ``correlated`` maps a correlated noise column to the column it copies.
    ``positive_rate`` (mean of sigmoid(logit)), ``bayes_auc`` (AUC of the true logit) and
    ``first_order_auc`` (true logit without pair and triple terms) are measured on the
    calibration sample."""

    config: SyntheticConfig
    important_fields: tuple[str, ...]
    unimportant_fields: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    triples: tuple[tuple[str, str, str], ...]
    numeric_effects: dict[str, float]
    bias: float
    positive_rate: float
    bayes_auc: float
    first_order_auc: float
    correlated: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def rows(self) -> int:
        return self.config.rows

    def to_json(self, path: str | Path | None = None) -> str:
        """The truth as JSON text, also written atomically to ``path`` when one is given."""
        text = json.dumps(asdict(self), indent=2) + "\n"
        if path is not None:
            with atomic_path(Path(path)) as tmp:
                tmp.write_text(text)
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> GroundTruth:
        data = json.loads(Path(path).read_text())
        for keys, known in ((data, cls), (data.get("config", {}), SyntheticConfig)):
            unknown = set(keys) - {f.name for f in fields(known)}
            _check(not unknown, f"{path}: unknown {known.__name__} keys {sorted(unknown)}")
        return cls(
            **{
                **data,
                "config": SyntheticConfig(**data["config"]),
                "important_fields": tuple(data["important_fields"]),
                "unimportant_fields": tuple(data["unimportant_fields"]),
                "pairs": tuple(tuple(p) for p in data["pairs"]),
                "triples": tuple(tuple(t) for t in data["triples"]),
            }
        )


def generate(
    config: SyntheticConfig, chunk_rows: int = 65_536, *, include_logits: bool = False
) -> tuple[GroundTruth, Iterator[pa.RecordBatch]]:
    """The ground truth and the rows, as record batches of at most ``chunk_rows`` rows.

    Columns: ``label`` (int8), ``I*`` (int64), ``C*`` (string), nulls where missing; with
    ``include_logits`` also ``true_logit`` and ``first_order_logit`` (float64, the true logit
    without its pair and triple terms). The rows do not depend on ``chunk_rows``; memory is
    bounded by one chunk.
    """
    _check(chunk_rows >= 1, f"chunk_rows must be >= 1, got {chunk_rows}")
    plan, truth = _make_plan(config)
    starts = range(0, config.rows, chunk_rows)
    batches = (_batch(plan, s, min(s + chunk_rows, config.rows), include_logits) for s in starts)
    return truth, batches


def write_synthetic(
    config: SyntheticConfig, path: str | Path, *, chunk_rows: int = 65_536
) -> GroundTruth:
    """Write the rows to ``path`` (format from the suffix: one of ``SUFFIXES``; CSV/TSV with a
    header, empty fields for missing values) and the ground truth to ``<path>.truth.json``, each
    atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    suffix = next((s for s in SUFFIXES if path.name.lower().endswith(s)), "")
    _check(bool(suffix), f"{path}: unsupported suffix (use one of {', '.join(SUFFIXES)})")
    truth, batches = generate(config, chunk_rows)
    schema = _schema(config, include_logits=False)
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            with pq.ParquetWriter(str(tmp), schema) as writer:
                for batch in _prefetch(batches):
                    writer.write_batch(batch)
        else:
            options = pacsv.WriteOptions(
                delimiter="\t" if suffix.startswith(".tsv") else ",",
                quoting_style="none",
                quoting_header="none",
            )
            with (
                _binary_sink(tmp, gzipped=suffix.endswith(".gz")) as sink,
                pacsv.CSVWriter(sink, schema, write_options=options) as writer,
            ):
                for batch in _prefetch(batches):
                    writer.write_batch(batch)
    truth.to_json(path.with_name(path.name + ".truth.json"))
    return truth


def expected_kept_values(
    config: SyntheticConfig, rows: int | None = None, *, min_count: int = MIN_COUNT
) -> dict[str, float]:
    """Expected number of values of each column that occur at least ``min_count`` times in the
    training share (``TRAIN_SHARE``) of ``rows`` rows (default ``config.rows``): what `prepare
    --min-count` keeps, numeric columns as Criteo buckets, a missing token included. A table then
    has one more row (OOV) in gdcn.md's count, two (PAD, OOV) in slimctr's ``vocab_size``."""
    plan, _ = _draw_plan(config)
    train_rows = TRAIN_SHARE * (config.rows if rows is None else rows)

    def kept(probabilities: np.ndarray, values: np.ndarray, planted: bool) -> float:
        """Expected kept values, ``values[i]`` of them with probability ``probabilities[i]``."""
        present = 1.0 if planted else 1 - config.missing_rate
        missing = _poisson_at_least(np.array([train_rows * (1 - present)]), min_count)
        each = _poisson_at_least(train_rows * present * probabilities, min_count)
        return float(each @ values + missing.sum())

    result = {}
    for j, name in enumerate(config.numeric_columns):
        starts = _bucket_starts(int(_bucket(plan.caps[j])) + 3)
        law = _bucket_law(starts, plan.shapes[j], plan.scales[j])
        result[name] = kept(law, np.ones(len(law)), j in plan.effects)
    for f, name in enumerate(config.categorical_columns):
        law, values = plan.laws[f].copy(), np.ones(len(plan.laws[f]))
        if plan.rare_ids[f]:  # the last entry is shared evenly by the rare ids
            law[-1] /= plan.rare_ids[f]
            values[-1] = plan.rare_ids[f]
        result[name] = kept(law, values, f in plan.important)
    return result


def _poisson_at_least(means: np.ndarray, count: int) -> np.ndarray:
    """P(X >= count) for X ~ Poisson(mean): how often a value of small probability occurs in many
    rows (binomial, and close to Poisson)."""
    term = np.exp(-means)
    below = term.copy()
    for k in range(1, count):
        term = term * means / k
        below += term
    return np.clip(1 - below, 0.0, 1.0)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _prefetch(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Make the next batch in a thread while the caller writes this one (pyarrow's writers and
    zlib release the GIL, so generating and writing overlap)."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = worker.submit(next, batches, None)
            yield batch


@contextmanager
def _binary_sink(path: Path, gzipped: bool) -> Iterator[pa.NativeFile]:
    """An output stream on ``path``. The gzip header gets no name and mtime 0, so that equal
    rows give equal bytes (pyarrow's own gzip stream is fixed at the slow level 9)."""
    if not gzipped:
        with pa.OSFile(str(path), "wb") as sink:
            yield sink
        return
    with (
        open(path, "wb") as raw,
        gzip.GzipFile("", "wb", GZIP_LEVEL, fileobj=raw, mtime=0) as packed,
    ):
        yield pa.PythonFile(packed, mode="w")


def _schema(config: SyntheticConfig, include_logits: bool) -> pa.Schema:
    logits = [("true_logit", pa.float64()), ("first_order_logit", pa.float64())]
    return pa.schema(
        [("label", pa.int8())]
        + [(name, pa.int64()) for name in config.numeric_columns]
        + [(name, pa.string()) for name in config.categorical_columns]
        + (logits if include_logits else [])
    )


@dataclass
class _Plan:
    """What is drawn once per config: id laws, token salts and the planted model."""

    config: SyntheticConfig
    laws: list[np.ndarray]  # per categorical field: P(id) per id, then P(a rare id) if it has any
    rare_ids: list[int]  # per categorical field: how many rare ids share its law's last entry
    alias_tables: list[tuple[np.ndarray, np.ndarray]]  # per categorical field, of its law
    salts: np.ndarray  # per categorical field: salt of the token hash
    shapes: np.ndarray  # per numeric field: Lomax tail index
    scales: np.ndarray
    caps: np.ndarray  # per numeric field: largest count
    important: list[int]  # categorical field indices
    terms: list[tuple[int, ...]]  # categorical fields of each term: first order, pairs, triples
    tables: list[list[np.ndarray]]  # per term, per field: (E,) first order, else (r, E): E entries
    effects: list[int]  # numeric field indices
    coefs: np.ndarray  # per term, then per numeric effect
    copies: dict[int, int]  # correlated noise field -> the planted field it copies
    bias: float = 0.0


def _make_plan(config: SyntheticConfig) -> tuple[_Plan, GroundTruth]:
    plan, effect_signs = _draw_plan(config)
    return plan, _describe(plan, *_calibrate(plan, effect_signs))


def _draw_plan(config: SyntheticConfig) -> tuple[_Plan, np.ndarray]:
    """The plan before calibration, and the signs of the numeric effects."""
    rng = np.random.default_rng([config.seed, _PARAMS])
    cards = config.cardinalities or ()
    important, terms = _draw_planted(config, rng)
    effects = sorted(rng.choice(config.num_numeric, config.num_important_numeric, replace=False))
    laws, rare_ids = [], []
    for k in cards:
        law, rare = _id_law(config, k)
        laws.append(law)
        rare_ids.append(rare)

    def table(f: int, rank: int | None) -> np.ndarray:
        values = rng.standard_normal(len(laws[f]) if rank is None else (rank, len(laws[f])))
        return values - (values @ laws[f])[..., None]  # centred under the id law

    rank = config.interaction_rank
    tables = [[table(f, None if len(term) == 1 else rank) for f in term] for term in terms]
    salts = rng.integers(0, 2**32, len(cards))
    shapes = rng.uniform(1.2, 3.0, config.num_numeric)
    scales = 10 ** rng.uniform(-0.5, 2.5, config.num_numeric)
    caps = np.full(config.num_numeric, 1e9)
    for j, count in enumerate(config.numeric_buckets or ()):
        starts = _bucket_starts(count)
        caps[j], scales[j] = starts[-1], _balanced_scale(starts, shapes[j])
    plan = _Plan(
        config=config,
        laws=laws,
        rare_ids=rare_ids,
        alias_tables=[_alias_table(p) for p in laws],
        salts=salts,
        shapes=shapes,
        scales=scales,
        caps=caps,
        important=important,
        terms=terms,
        tables=tables,
        effects=[int(j) for j in effects],
        coefs=np.ones(len(terms) + len(effects)),
        copies=_draw_copies(config, important),
    )
    return plan, rng.choice([-1.0, 1.0], len(effects))


def _draw_planted(
    config: SyntheticConfig, rng: np.random.Generator
) -> tuple[list[int], list[tuple[int, ...]]]:
    """The planted categorical fields and the terms they form: first order, pairs, triples."""
    cards = config.cardinalities or ()
    by_size = sorted(range(config.num_categorical), key=lambda f: (cards[f], f))
    eligible = sum(c <= MAX_IMPORTANT_CARDINALITY or config.signal_in_large_fields for c in cards)
    # one field per cardinality stratum, so important fields span small and large cardinalities
    strata = np.array_split(
        by_size[: max(eligible, config.num_important)], max(config.num_important, 1)
    )
    important = sorted(int(rng.choice(s)) for s in strata[: config.num_important])
    large = [f for f in important if cards[f] > MAX_IMPORTANT_CARDINALITY]
    cover = sorted(large, key=lambda f: -cards[f]) if config.signal_in_large_fields else []
    terms: list[tuple[int, ...]] = [(f,) for f in important]
    terms += _draw_terms(rng, important, 2, config.num_pairs, cover)
    terms += _draw_terms(rng, important, 3, config.num_triples, [])
    return important, terms


def _draw_copies(config: SyntheticConfig, important: list[int]) -> dict[int, int]:
    """Which unplanted fields copy which planted ones (a stream of its own, so that configs
    without copies draw exactly what they did before copies existed)."""
    if not config.num_correlated:
        return {}
    rng = np.random.default_rng([config.seed, _COPIES])
    others = [f for f in range(config.num_categorical) if f not in important]
    chosen = sorted(int(f) for f in rng.choice(others, config.num_correlated, replace=False))
    return {f: important[k % len(important)] for k, f in enumerate(chosen)}


def _draw_terms(
    rng: np.random.Generator, fields: list[int], order: int, count: int, cover: list[int]
) -> list[tuple[int, ...]]:
    """``count`` distinct terms of ``order`` fields, in order: first, while terms are left, one
    with each field of ``cover`` that no term has yet (its partners at random), then any."""
    options = list(combinations(fields, order))
    chosen: list[tuple[int, ...]] = []
    for f in cover:
        if len(chosen) < count and not any(f in term for term in chosen):
            with_f = [term for term in options if f in term and term not in chosen]
            chosen.append(with_f[rng.integers(len(with_f))])
    rest = [term for term in options if term not in chosen]
    chosen += [rest[i] for i in rng.choice(len(rest), count - len(chosen), replace=False)]
    return sorted(chosen)


def _calibrate(plan: _Plan, effect_signs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Scale each term to its target std, then bisect the bias, on fresh calibration rows.

    Returns the calibration rows' labels, true logits and first-order logits."""
    cfg, n = plan.config, CALIBRATION_ROWS
    ids = {
        f: _sample_ids(plan, f, _uniforms(cfg.seed, _CALIBRATION, f, 0, n)) for f in plan.important
    }
    counts = {
        j: _counts(plan, j, _uniforms(cfg.seed, _CALIBRATION, cfg.num_categorical + j, 0, n))
        for j in plan.effects
    }
    terms = _terms(plan, ids, counts, n)
    orders = [len(t) for t in plan.terms] + [0] * len(plan.effects)  # 0: numeric
    stds = {1: FIRST_ORDER_STD, 2: PAIR_STD, 3: TRIPLE_STD, 0: NUMERIC_STD}
    targets = np.array([stds[k] / math.sqrt(orders.count(k)) for k in orders])
    plan.coefs = targets / np.maximum(terms.std(axis=1), 1e-12)
    plan.coefs[len(plan.terms) :] *= effect_signs
    first_order, interactions = _logits(plan, terms)
    low, high = -30.0, 30.0
    for _ in range(60):
        plan.bias = (low + high) / 2
        too_high = _sigmoid(plan.bias + first_order + interactions).mean() > cfg.positive_rate
        low, high = (low, plan.bias) if too_high else (plan.bias, high)
    first_order += plan.bias
    logit = first_order + interactions
    labels = _uniforms(
        cfg.seed, _CALIBRATION, cfg.num_categorical + cfg.num_numeric, 0, n
    ) < _sigmoid(logit)
    return labels, logit, first_order


def _describe(
    plan: _Plan, labels: np.ndarray, logit: np.ndarray, first_order: np.ndarray
) -> GroundTruth:
    cfg = plan.config
    cat, num = cfg.categorical_columns, cfg.numeric_columns
    important = {cat[f] for f in plan.important} | {num[j] for j in plan.effects}
    return GroundTruth(
        config=cfg,
        important_fields=tuple(c for c in num + cat if c in important),
        unimportant_fields=tuple(c for c in num + cat if c not in important),
        pairs=tuple((cat[f], cat[g]) for f, g in (t for t in plan.terms if len(t) == 2)),
        triples=tuple(
            (cat[f], cat[g], cat[h]) for f, g, h in (t for t in plan.terms if len(t) == 3)
        ),
        numeric_effects={
            num[j]: float(c)
            for j, c in zip(plan.effects, plan.coefs[len(plan.terms) :], strict=True)
        },
        correlated={cat[f]: cat[source] for f, source in plan.copies.items()},
        bias=plan.bias,
        positive_rate=float(_sigmoid(logit).mean()),
        bayes_auc=auc_or_nan(labels, logit),
        first_order_auc=auc_or_nan(labels, first_order),
    )


def _batch(plan: _Plan, start: int, stop: int, include_logits: bool) -> pa.RecordBatch:
    cfg, n = plan.config, stop - start
    columns: dict[str, pa.Array] = {}
    counts = {}

    def missing(role: int, index: int, planted: bool) -> np.ndarray | None:
        if planted or cfg.missing_rate == 0:
            return None
        return _uniforms(cfg.seed, role, index, start, n) < cfg.missing_rate

    for j, name in enumerate(cfg.numeric_columns):
        counts[j] = _counts(plan, j, _uniforms(cfg.seed, _NUM_VALUES, j, start, n))
        columns[name] = pa.array(counts[j], mask=missing(_NUM_MISSING, j, j in plan.effects))

    def drawn(f: int) -> np.ndarray:
        return _sample_ids(plan, f, _uniforms(cfg.seed, _CAT_IDS, f, start, n))

    ids = {f: drawn(f) for f in plan.important}  # only what the logit and the copies need
    for f, name in enumerate(cfg.categorical_columns):
        entries = ids[f] if f in ids else drawn(f)
        if f in plan.copies:
            copied = ids[plan.copies[f]] % len(plan.laws[f])
            copying = _uniforms(cfg.seed, _CAT_COPY, f, start, n) < cfg.correlation
            entries = np.where(copying, copied, entries)
        columns[name] = _hex_tokens(
            int(plan.salts[f]),
            _with_rare_ids(plan, f, entries, start),
            missing(_CAT_MISSING, f, f in plan.important),
        )
    first_order, interactions = _logits(plan, _terms(plan, ids, counts, n))
    logit = plan.bias + first_order + interactions
    labels = _uniforms(cfg.seed, _LABELS, 0, start, n) < _sigmoid(logit)
    columns = {"label": pa.array(labels.astype(np.int8)), **columns}
    if include_logits:
        columns |= {
            "true_logit": pa.array(logit),
            "first_order_logit": pa.array(plan.bias + first_order),
        }
    return pa.RecordBatch.from_pydict(columns, schema=_schema(cfg, include_logits))


def _terms(
    plan: _Plan, ids: dict[int, np.ndarray], counts: dict[int, np.ndarray], n: int
) -> np.ndarray:
    """Unscaled terms of ``n`` rows, in the order of ``plan.coefs``: (terms, n)."""
    values = np.empty((len(plan.coefs), n))
    for t, (term, tables) in enumerate(zip(plan.terms, plan.tables, strict=True)):
        factors = [np.take(table, ids[f], axis=-1) for f, table in zip(term, tables, strict=True)]
        if len(factors) == 1:
            values[t] = factors[0]  # (n,)
        else:  # Σ_k Π_f factor_f[k, :], each factor (r, n)
            values[t] = np.einsum(",".join(["kn"] * len(factors)) + "->n", *factors)
    for t, j in enumerate(plan.effects, start=len(plan.terms)):
        values[t] = np.log1p(counts[j])
    return values


def _logits(plan: _Plan, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first-order + numeric, pair + triple) parts of the logit, without the bias."""
    scaled = plan.coefs[:, None] * terms
    interaction = np.array([len(t) > 1 for t in plan.terms] + [False] * len(plan.effects), bool)
    return scaled[~interaction].sum(axis=0), scaled[interaction].sum(axis=0)


def _uniforms(seed: int, role: int, index: int, start: int, n: int) -> np.ndarray:
    """Rows ``start`` to ``start + n`` of the uniform stream (seed, role, index)."""
    bits = np.random.PCG64(np.random.SeedSequence([seed, role, index]))
    bits.advance(start)  # one 64-bit draw per float64
    return np.random.Generator(bits).random(n)


def _zipf(cardinality: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, cardinality + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def _id_law(config: SyntheticConfig, size: int) -> tuple[np.ndarray, int]:
    """The law of a field of ``size`` ids and how many rare ids share its last entry (0: none);
    with ``sized_for_rows``, see "Sized laws" in the module docstring."""
    if config.sized_for_rows is None:
        return _zipf(size, config.zipf_exponent), 0
    rarest = KEPT_MIN_EXPECTED / _head_rows(config.sized_for_rows, size)
    law = _zipf(size, _steepest_exponent(size, rarest, config.zipf_exponent))
    share = _rare_share(size)
    if not share:
        return law, 0
    rare_ids = math.ceil(share * TRAIN_SHARE * config.sized_for_rows / RARE_MAX_EXPECTED)
    return np.append((1 - share) * law, share), rare_ids


def _rare_share(size: int) -> float:
    return RARE_SHARE if size >= RARE_FROM else 0.0


def _head_rows(rows: int, size: int) -> float:
    """The training rows, of ``rows``, that hold a kept id of a field of ``size``, not a rare id."""
    return (1 - _rare_share(size)) * TRAIN_SHARE * rows


def _steepest_exponent(size: int, rarest: float, steepest: float) -> float:
    """The largest Zipf exponent, at most ``steepest``, under which the last of ``size`` ids has
    probability ``rarest`` or more (bisection: that probability falls as the exponent grows)."""
    log_ids = np.log(np.arange(1, size + 1, dtype=np.float64))

    def rarest_probability(exponent: float) -> float:
        weights = np.exp(-exponent * log_ids)
        return float(weights[-1] / weights.sum())

    if rarest_probability(steepest) >= rarest:
        return steepest
    low, high = 0.0, steepest
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if rarest_probability(middle) >= rarest else (low, middle)
    return low


def _bucket(counts: np.ndarray) -> np.ndarray:
    """Criteo's bucket of a count, as ``slimctr.data.encode.criteo_bucket``: floor(ln(c)^2) for
    c > 2, else c - 2."""
    return np.where(counts > 2, np.floor(np.log(np.maximum(counts, 1.0)) ** 2), counts - 2)


def _bucket_starts(count: int) -> np.ndarray:
    """The first count of each of the buckets -2, -1, 0, 1, ..., count - 3."""
    buckets = np.arange(1, count - 2, dtype=np.float64)
    starts = np.ceil(np.exp(np.sqrt(buckets)))
    starts -= _bucket(starts - 1) >= buckets  # exp and sqrt may round across a boundary
    starts += _bucket(starts) < buckets
    return np.concatenate([[0.0, 1.0, 2.0], starts])


def _bucket_law(starts: np.ndarray, shape: float, scale: float | np.ndarray) -> np.ndarray:
    """P(bucket) of a Lomax count capped at ``starts[-1]`` (the last bucket takes the tail), from
    P(count >= c) = (1 + c / scale)^-shape; a column of scales gives a row per scale."""
    survival = (1 + starts / scale) ** -shape
    return np.concatenate([survival[..., :-1] - survival[..., 1:], survival[..., -1:]], axis=-1)


def _balanced_scale(starts: np.ndarray, shape: float) -> float:
    """The scale, on a fine log grid, that makes the rarest bucket most likely: a small scale
    starves the top buckets, a large one the single counts 0, 1 and 2."""
    scales = np.geomspace(1e-2, 1e9, 2_201)
    return float(scales[_bucket_law(starts, shape, scales[:, None]).min(axis=1).argmax()])


def _alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (keep, alias): with i = floor(u K), id = i if frac(u K) < keep[i],
    else alias[i]. Built in vectorised rounds of Vose's method: each under-full column
    (q = K p < 1) takes its whole deficit 1 - q from the over-full column whose running excess
    covers the start of its running deficit; donors pushed below 1 join the next round."""
    keep = probabilities * len(probabilities)
    alias = np.arange(len(probabilities), dtype=np.int32)
    small, large = np.flatnonzero(keep < 1), np.flatnonzero(keep >= 1)
    while small.size and large.size:
        deficit = 1 - keep[small]
        donor = np.searchsorted(np.cumsum(keep[large] - 1), np.cumsum(deficit) - deficit, "right")
        donor = np.minimum(donor, large.size - 1)  # rounding may overshoot the last donor
        alias[small] = large[donor]
        keep[large] -= np.bincount(donor, weights=deficit, minlength=large.size)
        small, large = large[keep[large] < 1], large[keep[large] >= 1]
    keep[small] = keep[large] = 1.0  # what is left is 1 up to rounding
    return keep, alias


def _sample_ids(plan: _Plan, f: int, u: np.ndarray) -> np.ndarray:
    keep, alias = plan.alias_tables[f]
    scaled = u * len(keep)
    column = scaled.astype(np.int32)
    return np.where(scaled - column < keep[column], column, alias[column])


def _with_rare_ids(plan: _Plan, f: int, entries: np.ndarray, start: int) -> np.ndarray:
    """The ids of rows drawn as law entries: the last entry of a field with rare ids stands for
    one of them, drawn uniformly (no table: there are millions)."""
    if not plan.rare_ids[f]:
        return entries
    kept = len(plan.laws[f]) - 1
    u = _uniforms(plan.config.seed, _CAT_RARE, f, start, len(entries))
    return np.where(entries == kept, kept + (u * plan.rare_ids[f]).astype(np.int64), entries)


def _hex_tokens(salt: int, ids: np.ndarray, missing: np.ndarray | None) -> pa.Array:
    """Tokens of ids, null where ``missing``: 8 hex digits of a bijective 32-bit hash (lowbias32)
    of id+salt. Hashing each row is faster than taking from a table of tokens, and needs none."""
    mask = np.uint64(0xFFFFFFFF)
    x = (ids.astype(np.uint64) + np.uint64(salt)) & mask
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(multiplier)) & mask
    x ^= x >> np.uint64(16)
    digits = _QUADS[x.astype(">u4").view(">u2")]  # (2n,): 4 characters of each 16-bit half
    offsets = np.arange(0, 8 * len(ids) + 1, 8, dtype=np.int32)
    if missing is None:
        return pa.StringArray.from_buffers(len(ids), pa.py_buffer(offsets), pa.py_buffer(digits))
    valid = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    return pa.StringArray.from_buffers(
        len(ids), pa.py_buffer(offsets), pa.py_buffer(digits), valid, int(missing.sum())
    )


def _counts(plan: _Plan, j: int, u: np.ndarray) -> np.ndarray:
    value = plan.scales[j] * ((1.0 - u) ** (-1.0 / plan.shapes[j]) - 1.0)
    return np.minimum(np.floor(value), plan.caps[j]).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
