"""FDO: field-level dimension optimisation (GDCN, Wang et al. CIKM 2023, section 4; GDCN spec 4).

Train a model with every field at one width d, give each field f the smallest width that keeps a
share r (``variance_ratio``) of its trained table's variance, then retrain from scratch:

    X_f = E_f - mean over rows of E_f           (n_f x d; rows are the field's values)
    s_1 >= s_2 >= ...                            singular values of X_f
    d_f = min { k : Σ_{i<=k} s_i² / Σ_i s_i² > r }   (strictly greater; 1 <= d_f <= min(n_f, d))

which is ``sklearn.decomposition.PCA(n_components=r).n_components_``, the reference code's rule.
A ``DimensionPlan`` holds the widths and the sizes the paper reports: D̄ = Σ d_f n_f / T with
T = Σ n_f (embedding parameters = D̄ T), and K̄ = Σ d_f / F, which sets the cross matrices since
D = F K̄. DCN's formula and one uniform width give the baseline plans.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from slimctr.config import from_dict, to_dict
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.files import write_json
from slimctr.models import MODELS
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm
from slimctr.runconfig import RunConfig
from slimctr.schema import PAD_ID, Schema
from slimctr.training import run
from slimctr.training.callbacks import ProgressBar

_DERIVED = ("d_bar", "k_bar", "embedding_params")  # written for readers, checked on reading
_SUMMARY = ("widths", "d_bar", "k_bar", "embedding_params", "model_params")
_ZERO_VARIANCE = 1e-20  # centred energy below this share of the table's energy is rounding noise


def pca_width(table: Tensor | np.ndarray, variance_ratio: float) -> int:
    """Smallest k whose top-k principal components explain strictly more than ``variance_ratio``
    of the centred table's variance (rows are samples); 1 <= k <= min(n, d).

    Ratio 1 gives min(n, d); a table without variance (one row, or equal rows) gives 1.

    >>> pca_width(torch.tensor([[0.0, 0.0], [2.0, 0.1], [4.0, -0.1]]), 0.9)
    1
    """
    _check_ratio(variance_ratio)
    matrix = torch.as_tensor(table).detach().to("cpu", torch.float64)
    if matrix.dim() != 2 or 0 in matrix.shape:
        raise ValueError(f"pca_width needs a non-empty 2-D table, got shape {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all():
        raise SlimctrError("the embedding table holds NaN or infinite values")
    variance = torch.linalg.svdvals(matrix - matrix.mean(dim=0)) ** 2  # (min(n, d),) descending
    total = variance.sum()
    if total <= _ZERO_VARIANCE * (matrix**2).sum():
        return 1
    if variance_ratio == 1:  # a cumulative sum need not reach 1 exactly
        return min(matrix.shape)
    explained = torch.cumsum(variance, 0) / total
    return min(int((explained <= variance_ratio).sum()) + 1, min(matrix.shape))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DimensionPlan:
    """A width per field (schema order) and where it came from.

    ``rule``: ``pca`` (FDO at ``variance_ratio`` of the model in ``source_run``, whose widths were
    ``source_widths``), ``formula`` or ``uniform``. ``field_sizes`` are the table rows n_f (1 for
    a numeric field's vector). ``model_params`` counts the parameters of the source model's
    architecture at these widths, when known.
    """

    rule: Literal["pca", "formula", "uniform"]
    widths: dict[str, int]
    field_sizes: dict[str, int]
    variance_ratio: float | None = None
    source_run: str | None = None
    source_widths: dict[str, int] | None = None
    model_params: int | None = None

    def __post_init__(self) -> None:
        if not self.field_sizes:
            raise SlimctrError("a dimension plan needs at least one field")
        for key in ("widths", "field_sizes", "source_widths"):
            values = getattr(self, key)
            if values is not None:
                _check_fields(f"the plan's {key} and field_sizes differ", self.field_sizes, values)
                _check_counts(key, values)
        object.__setattr__(self, "widths", {n: self.widths[n] for n in self.field_sizes})
        if (self.rule == "pca") != (self.variance_ratio is not None):
            raise SlimctrError("a dimension plan has a variance_ratio exactly when its rule is pca")
        if self.variance_ratio is not None:
            _check_ratio(self.variance_ratio)
        if self.model_params is not None and not _is_count(self.model_params):
            raise SlimctrError(
                f"model_params must be an int >= 1 or null, got {self.model_params!r}"
            )

    @property
    def embedding_params(self) -> int:
        """Σ d_f n_f: the parameters of the embedding tables (numeric vectors included)."""
        return sum(self.widths[n] * size for n, size in self.field_sizes.items())

    @property
    def d_bar(self) -> float:
        """D̄ = Σ d_f n_f / T, the mean width weighted by table rows (T = Σ n_f)."""
        return self.embedding_params / sum(self.field_sizes.values())

    @property
    def k_bar(self) -> float:
        """K̄ = Σ d_f / F, the mean width over fields (D = F K̄)."""
        return sum(self.widths.values()) / len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: the fields, then ``d_bar``, ``k_bar`` and ``embedding_params``."""
        return {**to_dict(self), **{key: getattr(self, key) for key in _DERIVED}}

    @classmethod
    def from_dict(cls, data: Any) -> DimensionPlan:
        """The plan in ``data``. Unknown or missing keys are errors, and so are derived values
        (``d_bar``, ``k_bar``, ``embedding_params``; optional) that disagree with the widths."""
        if not isinstance(data, Mapping):
            raise SlimctrError(f"a dimension plan must be a JSON object, got {type(data).__name__}")
        plan = from_dict(cls, {k: v for k, v in data.items() if k not in _DERIVED})
        for key in (k for k in _DERIVED if k in data):
            value, expected = data[key], getattr(plan, key)
            if not isinstance(value, int | float) or not math.isclose(
                value, expected, rel_tol=1e-9
            ):
                raise SlimctrError(
                    f"the plan's {key} {value!r} disagrees with its widths ({expected})"
                )
        return plan

    def save(self, path: Path) -> None:
        """Write the plan as JSON, atomically."""
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> DimensionPlan:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise SlimctrError(f"dimension plan not found: {path}") from None
        except json.JSONDecodeError as error:
            raise SlimctrError(
                f"dimension plan {path} is not valid JSON (line {error.lineno}: {error.msg})"
            ) from None
        except (OSError, UnicodeDecodeError, SlimctrError) as error:
            raise SlimctrError(f"dimension plan {path}: {error}") from None

    def check_schema(self, schema: Schema) -> None:
        """Raise unless the plan names exactly the schema's fields."""
        expected = [f.name for f in schema.fields]
        _check_fields("the dimension plan does not fit the data's fields", expected, self.widths)


def pca_plan(
    model: nn.Module, schema: Schema, variance_ratio: float, source_run: str | None = None
) -> DimensionPlan:
    """FDO widths from ``model``'s trained per-field tables (GDCN spec 4.1-4.2).

    A categorical table's row ``PAD_ID`` is left out of its PCA: no input reaches it, so it keeps
    its random initial values (the reference tables have no such row). A numeric field's single
    vector gets width 1, which loses nothing: its embeddings z_f v_f lie on one line.
    """
    _check_ratio(variance_ratio)
    embedding = _field_embedding(model)
    if embedding.field_names != tuple(f.name for f in schema.fields):
        raise SlimctrError("the model's embedding fields differ from the schema's fields")
    widths = {}
    for spec in schema.fields:
        table = embedding.table(spec.name).detach()  # (n_f, d)
        samples = table[PAD_ID + 1 :] if spec.kind == "categorical" else table
        try:
            widths[spec.name] = pca_width(samples, variance_ratio)
        except SlimctrError as error:
            raise SlimctrError(f"field {spec.name!r}: {error}") from None
    return DimensionPlan(
        rule="pca",
        widths=widths,
        field_sizes=_field_sizes(schema),
        variance_ratio=float(variance_ratio),
        source_run=source_run,
        source_widths=_widths(model),
    )


def formula_plan(
    schema: Schema, multiplier: float = 6.0, *, rounding: Literal["ceil", "floor"] = "ceil"
) -> DimensionPlan:
    """The "Formula" baseline d_f = ceil(multiplier n_f^(1/4)).

    The default is the DCN paper's ceil(6 n_f^0.25), which the issue asks for; the GDCN reference
    code's Formula list (GDCN spec 4.5) is ``multiplier=1, rounding="floor"``. A product within
    1e-9 of an integer counts as that integer, so 81^0.25 gives 3 either way.
    """
    if isinstance(multiplier, bool) or not 0 < multiplier < math.inf:
        raise SlimctrError(f"the formula multiplier must be a number > 0, got {multiplier!r}")
    widths = {}
    for name, size in _field_sizes(schema).items():
        value = multiplier * size**0.25
        if abs(value - round(value)) <= 1e-9 * value:
            value = round(value)
        widths[name] = max(1, math.ceil(value) if rounding == "ceil" else math.floor(value))
    return DimensionPlan(rule="formula", widths=widths, field_sizes=_field_sizes(schema))


def uniform_plan(schema: Schema, width: int) -> DimensionPlan:
    """Every field at ``width`` (the fixed-width baseline)."""
    if not _is_count(width):
        raise SlimctrError(f"the uniform width must be an int >= 1, got {width!r}")
    sizes = _field_sizes(schema)
    return DimensionPlan(rule="uniform", widths=dict.fromkeys(sizes, width), field_sizes=sizes)


def config_for_plan(config: RunConfig, plan: DimensionPlan | Mapping[str, int]) -> RunConfig:
    """``config`` with the plan's widths (or these widths) as ``model.embedding_dim``, one int
    when all are equal.

    A model with an ``embedding_align_dim`` setting left at None gets one when the widths differ:
    the source's common width, or else the largest planned width.
    """
    widths = dict(plan.widths if isinstance(plan, DimensionPlan) else plan)
    model = config.model
    keys = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else set()
    if "embedding_dim" not in keys:
        raise SlimctrError(
            f"model {config.model_name!r} has no embedding_dim setting, so FDO widths cannot "
            "be applied to it"
        )
    distinct = set(widths.values())
    changes: dict[str, Any] = {"embedding_dim": distinct.pop() if len(distinct) == 1 else widths}
    if len(distinct) > 1 and "embedding_align_dim" in keys and model.embedding_align_dim is None:
        source = model.embedding_dim
        common = set(source.values()) if isinstance(source, Mapping) else {source}
        changes["embedding_align_dim"] = common.pop() if len(common) == 1 else max(distinct)
    try:  # a run directory must be able to load the config back
        resized = dataclasses.replace(config, model=dataclasses.replace(model, **changes))
        from_dict(RunConfig, to_dict(resized), types={"model": type(model)})
    except SlimctrError as error:
        raise SlimctrError(
            f"model {config.model_name!r} cannot take these widths: {error}"
        ) from None
    return resized


def implied_params(config: RunConfig, schema: Schema, widths: Mapping[str, int]) -> int:
    """Parameters of ``config``'s model with per-field ``widths`` (an alignment layer included).

    The model is built and dropped; the global random state is left as it was.
    """
    resized = config_for_plan(config, widths)
    with torch.random.fork_rng(devices=[]):
        model = MODELS[resized.model_name].model(schema, resized.model)
    return sum(p.numel() for p in model.parameters())


def plan_from_run(run_dir: Path, variance_ratio: float) -> DimensionPlan:
    """The FDO plan of a finished run's best model at ``variance_ratio``."""
    _check_ratio(variance_ratio)
    config, model, store = run.load_run(Path(run_dir))
    return _plan(config, model, store.schema, Path(run_dir), variance_ratio)


def retrain(
    plan: DimensionPlan, source_run_dir: Path, out: Path, *, progress: ProgressBar | None = None
) -> dict[str, Any]:
    """Train a fresh model with ``plan``'s widths into ``out`` (the source run's data and config
    otherwise; no weight is copied), with the plan recorded in the run. Returns its metrics."""
    config, _, store = run.load_run(Path(source_run_dir))
    return _train_plan(plan, config, store, Path(out), progress)


def fdo(
    run_dir: Path,
    ratios: Sequence[float],
    out: Path,
    *,
    retrain: bool = False,
    formula: bool = False,
    uniform: Sequence[int] = (),
    progress: ProgressBar | None = None,
) -> list[dict[str, Any]]:
    """For each variance ratio r, write ``out/plan-<r>.json`` and, with ``retrain``, train it into
    ``out/run-<r>/``; ``formula`` and each ``uniform`` width add the baseline plans
    ``plan-formula`` and ``plan-uniform-<w>`` (and their runs). Returns a summary per plan: its
    rule, ratio, widths and sizes, file paths and, when retrained, the metrics.

    A run directory that already holds a finished run of the same plan is reused, not retrained,
    and an unfinished one is resumed, so an interrupted ``fdo --retrain`` can simply be run
    again.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not ratios and not formula and not uniform:
        raise SlimctrError("give at least one variance ratio (or a formula or uniform plan)")
    for ratio in ratios:
        _check_ratio(ratio)
    if len({float(r) for r in ratios}) < len(ratios):
        raise SlimctrError(f"a variance ratio is given more than once: {list(ratios)}")
    if len(set(uniform)) < len(uniform):
        raise SlimctrError(f"a uniform width is given more than once: {list(uniform)}")
    config, model, store = run.load_run(run_dir)
    plans = {str(float(r)): _plan(config, model, store.schema, run_dir, r) for r in ratios}
    if formula:
        plans["formula"] = formula_plan(store.schema)
    for width in uniform:
        plans[f"uniform-{width}"] = uniform_plan(store.schema, width)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for name, plan in plans.items():
        if plan.model_params is None:  # a baseline plan: record what it is compared with
            plan = dataclasses.replace(
                plan,
                source_run=str(run_dir.resolve()),
                source_widths=_widths(model),
                model_params=implied_params(config, store.schema, plan.widths),
            )
        plan.save(out / f"plan-{name}.json")
        summary: dict[str, Any] = {
            "name": name,
            "rule": plan.rule,
            "variance_ratio": plan.variance_ratio,
            "plan": str(out / f"plan-{name}.json"),
        }
        summary |= {key: plan.to_dict()[key] for key in _SUMMARY}
        if retrain:
            summary["run"] = str(out / f"run-{name}")
            if progress is not None:
                progress.title = f"plan {name}"
            summary["metrics"] = _train_plan(plan, config, store, out / f"run-{name}", progress)
        summaries.append(summary)
    return summaries


# -- internals -------------------------------------------------------------------------------


def _check_ratio(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise SlimctrError(f"variance_ratio must be in (0, 1], got {value!r}")


def _check_fields(what: str, expected: Iterable[str], given: Iterable[str]) -> None:
    expected, given = list(expected), list(given)
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        listed = [", ".join(names) or "none" for names in (missing, unknown)]
        raise SlimctrError(f"{what}: missing {listed[0]}; unknown {listed[1]}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_counts(key: str, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if not _is_count(value):
            raise SlimctrError(f"the plan's {key} of {name!r} must be an int >= 1, got {value!r}")


def _field_sizes(schema: Schema) -> dict[str, int]:
    """n_f: a categorical field's table rows (PAD and OOV included); 1 for a numeric field."""
    return {f.name: f.vocab_size if f.kind == "categorical" else 1 for f in schema.fields}


def _field_embedding(model: nn.Module) -> FieldEmbedding:
    """The model's ``embedding``, or its one field embedding that is not a first-order term
    (``LinearTerm``'s width-1 weights: LR's only tables, nothing to shrink)."""
    embedding = getattr(model, "embedding", None)
    if isinstance(embedding, FieldEmbedding):
        return embedding
    linear = {id(m.weights) for m in model.modules() if isinstance(m, LinearTerm)}
    found = [m for m in model.modules() if isinstance(m, FieldEmbedding) and id(m) not in linear]
    if len(found) != 1:
        what = "several field embeddings" if found else "no per-field embedding tables"
        raise SlimctrError(f"FDO needs one field embedding, but {type(model).__name__} has {what}")
    return found[0]


def _plan(
    config: RunConfig, model: nn.Module, schema: Schema, run_dir: Path, ratio: float
) -> DimensionPlan:
    plan = pca_plan(model, schema, ratio, source_run=str(run_dir.resolve()))
    return dataclasses.replace(plan, model_params=implied_params(config, schema, plan.widths))


def _train_plan(
    plan: DimensionPlan, config: RunConfig, store: Store, out: Path, progress: ProgressBar | None
) -> dict[str, Any]:
    """Check the plan against the data and train it from scratch, the plan recorded in the run.

    A finished run of this plan in ``out`` is reused and an unfinished one resumed from its last
    epoch (``run.train`` refuses one with other settings: the widths are part of the config).
    """
    plan.check_schema(store.schema)
    resized = config_for_plan(config, plan)
    return run.train(store.path, out, resized, resume=True, progress=progress, plan=plan.to_dict())


def _widths(model: nn.Module) -> dict[str, int]:
    embedding = _field_embedding(model)
    return dict(zip(embedding.field_names, embedding.field_dims, strict=True))
