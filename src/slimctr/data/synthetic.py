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
sigmoid(logit) is ``positive_rate``. The other fields have no effect on the label.

Determinism: each column owns a PCG64 stream keyed by (seed, role, column) and advanced to the
chunk's first row, so the rows depend on the seed alone, never on the chunk size.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from slimctr.files import atomic_path

MAX_IMPORTANT_CARDINALITY = 5_000  # larger fields stay unimportant: too sparse to learn
CALIBRATION_ROWS = 200_000
FIRST_ORDER_STD, PAIR_STD, TRIPLE_STD, NUMERIC_STD = 1.4, 0.9, 0.6, 0.3
GZIP_LEVEL = 1  # level 6 takes ~3x the time for a ~15% smaller file
SUFFIXES = (".parquet", ".csv", ".tsv", ".csv.gz", ".tsv.gz")
_PARAMS, _CALIBRATION, _CAT_IDS, _CAT_MISSING, _NUM_VALUES, _NUM_MISSING, _LABELS = range(7)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Shape of the table and of its planted model (see the module docstring).

    ``cardinalities`` defaults to ``num_categorical`` log-spaced values from 4 to 100,000.
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

    def __post_init__(self) -> None:
        for name in (
            "num_numeric",
            "num_categorical",
            "num_important",
            "num_pairs",
            "num_triples",
            "num_important_numeric",
            "seed",
        ):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name, ok, rule in (
            ("rows", self.rows >= 1, ">= 1"),
            ("interaction_rank", self.interaction_rank >= 1, ">= 1"),
            ("zipf_exponent", self.zipf_exponent >= 0, ">= 0"),
            ("missing_rate", 0 <= self.missing_rate < 1, "in [0, 1)"),
            ("positive_rate", 0 < self.positive_rate < 1, "in (0, 1)"),
        ):
            _check(ok, f"{name} must be {rule}, got {getattr(self, name)}")
        for name, most, meaning in (
            ("num_important", self.num_categorical, "num_categorical"),
            ("num_important_numeric", self.num_numeric, "num_numeric"),
            ("num_pairs", math.comb(self.num_important, 2), "C(num_important, 2)"),
            ("num_triples", math.comb(self.num_important, 3), "C(num_important, 3)"),
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
    log1p(count). ``positive_rate`` (mean of sigmoid(logit)), ``bayes_auc`` (AUC of the true
    logit) and ``first_order_auc`` (true logit without pair and triple terms) are measured on
    the calibration sample."""

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
    """What is drawn once per config: id laws, vocabularies and the planted model."""

    config: SyntheticConfig
    alias_tables: list[tuple[np.ndarray, np.ndarray]]  # per categorical field
    tokens: list[pa.Array]  # per categorical field, token of each id
    shapes: np.ndarray  # per numeric field: Lomax tail index
    scales: np.ndarray
    important: list[int]  # categorical field indices
    terms: list[tuple[int, ...]]  # categorical fields of each term: first order, pairs, triples
    tables: list[list[np.ndarray]]  # per term, per field: (K_f,) first order, else (r, K_f)
    effects: list[int]  # numeric field indices
    coefs: np.ndarray  # per term, then per numeric effect
    bias: float = 0.0


def _make_plan(config: SyntheticConfig) -> tuple[_Plan, GroundTruth]:
    rng = np.random.default_rng([config.seed, _PARAMS])
    cards = config.cardinalities or ()
    by_size = sorted(range(config.num_categorical), key=lambda f: (cards[f], f))
    eligible = sum(c <= MAX_IMPORTANT_CARDINALITY for c in cards)
    # one field per cardinality stratum, so important fields span small and large cardinalities
    strata = np.array_split(
        by_size[: max(eligible, config.num_important)], max(config.num_important, 1)
    )
    important = sorted(int(rng.choice(s)) for s in strata[: config.num_important])
    terms: list[tuple[int, ...]] = [(f,) for f in important]
    for order, count in ((2, config.num_pairs), (3, config.num_triples)):
        options = list(combinations(important, order))
        terms += [options[i] for i in sorted(rng.choice(len(options), count, replace=False))]
    effects = sorted(rng.choice(config.num_numeric, config.num_important_numeric, replace=False))
    laws = [_zipf(k, config.zipf_exponent) for k in cards]

    def table(f: int, rank: int | None) -> np.ndarray:
        values = rng.standard_normal(cards[f] if rank is None else (rank, cards[f]))
        return values - (values @ laws[f])[..., None]  # centred under the id law

    rank = config.interaction_rank
    tables = [[table(f, None if len(term) == 1 else rank) for f in term] for term in terms]
    plan = _Plan(
        config=config,
        alias_tables=[_alias_table(p) for p in laws],
        tokens=[
            _hex_tokens(int(s), k)
            for s, k in zip(rng.integers(0, 2**32, len(cards)), cards, strict=True)
        ],
        shapes=rng.uniform(1.2, 3.0, config.num_numeric),
        scales=10 ** rng.uniform(-0.5, 2.5, config.num_numeric),
        important=important,
        terms=terms,
        tables=tables,
        effects=[int(j) for j in effects],
        coefs=np.ones(len(terms) + len(effects)),
    )
    return plan, _describe(plan, *_calibrate(plan, rng.choice([-1.0, 1.0], len(effects))))


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
        bias=plan.bias,
        positive_rate=float(_sigmoid(logit).mean()),
        bayes_auc=_auc(labels, logit),
        first_order_auc=_auc(labels, first_order),
    )


def _batch(plan: _Plan, start: int, stop: int, include_logits: bool) -> pa.RecordBatch:
    cfg, n = plan.config, stop - start
    columns: dict[str, pa.Array] = {}
    ids, counts = {}, {}

    def missing(role: int, index: int, planted: bool) -> np.ndarray | None:
        if planted or cfg.missing_rate == 0:
            return None
        return _uniforms(cfg.seed, role, index, start, n) < cfg.missing_rate

    for j, name in enumerate(cfg.numeric_columns):
        counts[j] = _counts(plan, j, _uniforms(cfg.seed, _NUM_VALUES, j, start, n))
        columns[name] = pa.array(counts[j], mask=missing(_NUM_MISSING, j, j in plan.effects))
    for f, name in enumerate(cfg.categorical_columns):
        ids[f] = _sample_ids(plan, f, _uniforms(cfg.seed, _CAT_IDS, f, start, n))
        mask = missing(_CAT_MISSING, f, f in plan.important)
        columns[name] = plan.tokens[f].take(pa.array(ids[f], mask=mask))
        if f not in plan.important:
            del ids[f]  # keep memory to what the logit needs
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


def _hex_tokens(salt: int, count: int) -> pa.Array:
    """Tokens of ids 0..count-1: 8 hex digits of a bijective 32-bit hash (lowbias32) of id+salt."""
    mask = np.uint64(0xFFFFFFFF)
    x = (np.arange(count, dtype=np.uint64) + np.uint64(salt)) & mask
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(multiplier)) & mask
    x ^= x >> np.uint64(16)
    digits = _HEX[(x[:, None] >> np.arange(28, -1, -4, dtype=np.uint64)) & np.uint64(15)]
    offsets = np.arange(0, 8 * count + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(digits))


def _counts(plan: _Plan, j: int, u: np.ndarray) -> np.ndarray:
    value = plan.scales[j] * ((1.0 - u) ** (-1.0 / plan.shapes[j]) - 1.0)
    return np.minimum(np.floor(value), 1e9).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Rank (Mann-Whitney) AUC, ties averaged; nan unless both classes occur."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # 1-based
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / positives / negatives)
