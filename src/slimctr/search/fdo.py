"""FDO: field-level dimension optimisation (GDCN, Wang et al. CIKM 2023, section 4; GDCN spec 4).

Train a model with every field at one width d, give each field f the smallest width that keeps a
share r (``variance_ratio``) of its trained table's variance, then retrain from scratch:

    X_f = E_f - mean over rows of E_f           (n_f x d; rows are the field's values)
    s_1 >= s_2 >= ...                            singular values of X_f
    d_f = min { k : Σ_{i<=k} s_i² / Σ_i s_i² > r }   (strictly greater; 1 <= d_f <= min(n_f, d))

which is ``sklearn.decomposition.PCA(n_components=r).n_components_``, the reference code's rule
(``FieldPCA.width``). Its plans report D̄ = Σ d_f n_f / T with T = Σ n_f (embedding parameters
= D̄ T) and K̄ = Σ d_f / F, which sets the cross matrices since D = F K̄. DCN's formula and one
uniform width give the baseline plans.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding
from slimctr.pca import FieldPCA, check_ratio
from slimctr.schema import PAD_ID, Schema
from slimctr.search.plan import Plan, Setting, field_sizes, is_count
from slimctr.search.runner import Start, field_embedding, implied_params, model_widths, train_plan
from slimctr.training.callbacks import ProgressBar

_SUMMARY = ("widths", "d_bar", "k_bar", "embedding_params", "model_params")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FDOConfig:
    """FDO's one setting: the share of each table's variance its width keeps."""

    variance_ratio: float = 0.8

    def __post_init__(self) -> None:
        check_ratio(self.variance_ratio)


class FDO:
    """The FDO searcher: ``FDO(FDOConfig(variance_ratio=0.8)).fit(Start.from_run(RUN)).plan_``.

    It reads the start's trained model, trains nothing, and is deterministic: the same run gives
    the same plan.
    """

    name = "fdo"
    plan_: Plan  # set by fit
    initial_: dict[str, Tensor] | None = None  # the retrained model starts fresh (spec 1.2)

    def __init__(self, config: FDOConfig | None = None) -> None:
        self.config = config or FDOConfig()

    def fit(self, start: Start, work: Path | None = None) -> FDO:
        """Plan the widths of ``start``'s trained model (``work`` is not needed)."""
        model = start.trained_model(self.name)
        plan = fdo_plan(model, start.store.schema, self.config.variance_ratio)
        params = implied_params(start.config, start.store.schema, plan.widths)
        source = str(start.run_dir)
        self.plan_ = dataclasses.replace(plan, source_run=source, model_params=params)
        return self


def fdo_plan(model: nn.Module, schema: Schema, variance_ratio: float) -> Plan:
    """FDO widths from ``model``'s trained per-field tables (GDCN spec 4.1-4.2).

    A categorical table's row ``PAD_ID`` is left out of its PCA: no input reaches it, so it keeps
    its random initial values (the reference tables have no such row). A numeric field's single
    vector gets width 1, which loses nothing: its embeddings z_f v_f lie on one line. A pruned
    field (a searched model's) holds only its kept ids' rows; one that keeps no id but PAD gets
    width 1 too.
    """
    check_ratio(variance_ratio)
    embedding = field_embedding(model, "FDO")
    if embedding.field_names != tuple(f.name for f in schema.fields):
        raise SlimctrError("the model's embedding fields differ from the schema's fields")
    widths = {}
    for spec in schema.fields:
        samples = _trained_rows(embedding, spec.name, spec.kind)
        if len(samples) == 0:
            widths[spec.name] = 1
            continue
        try:
            widths[spec.name] = FieldPCA.fit(samples).width(variance_ratio)
        except SlimctrError as error:
            raise SlimctrError(f"field {spec.name!r}: {error}") from None
    return Plan(
        method="fdo",
        settings={"variance_ratio": float(variance_ratio)},
        widths=widths,
        field_sizes=field_sizes(schema),
        source_widths=model_widths(model, "FDO"),
    )


def _trained_rows(embedding: FieldEmbedding, name: str, kind: str) -> Tensor:
    """The rows of field ``name``'s table that inputs reach, (rows, d): a categorical table's
    rows but PAD's (a pruned table's rows are its kept ids'), a numeric field's vector."""
    table = embedding.table(name).detach()
    if kind != "categorical":
        return table
    pruned = name in embedding.pruned_fields
    ids = embedding.kept_ids(name) if pruned else torch.arange(len(table))  # row i holds ids[i]
    return table[ids != PAD_ID]


def formula_plan(
    schema: Schema, multiplier: float = 6.0, *, rounding: Literal["ceil", "floor"] = "ceil"
) -> Plan:
    """The "Formula" baseline d_f = ceil(multiplier n_f^(1/4)).

    The default is the DCN paper's ceil(6 n_f^0.25); the GDCN reference code's Formula list (GDCN
    spec 4.5) is ``multiplier=1, rounding="floor"``. A product within 1e-9 of an integer counts as
    that integer, so 81^0.25 gives 3 either way.
    """
    if isinstance(multiplier, bool) or not 0 < multiplier < math.inf:
        raise SlimctrError(f"the formula multiplier must be a number > 0, got {multiplier!r}")
    widths = {}
    for name, size in field_sizes(schema).items():
        value = multiplier * size**0.25
        if abs(value - round(value)) <= 1e-9 * value:
            value = round(value)
        widths[name] = max(1, math.ceil(value) if rounding == "ceil" else math.floor(value))
    settings: dict[str, Setting] = {"multiplier": float(multiplier), "rounding": rounding}
    return Plan(method="formula", settings=settings, widths=widths, field_sizes=field_sizes(schema))


def uniform_plan(schema: Schema, width: int) -> Plan:
    """Every field at ``width`` (the fixed-width baseline)."""
    if not is_count(width):
        raise SlimctrError(f"the uniform width must be an int >= 1, got {width!r}")
    sizes = field_sizes(schema)
    return Plan(
        method="uniform", settings={"width": width}, widths=dict.fromkeys(sizes, width),
        field_sizes=sizes,
    )  # fmt: skip


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
    """``slimctr fdo``: for each variance ratio r, write ``out/plan-<r>.json`` and, with
    ``retrain``, train it into ``out/run-<r>/``; ``formula`` and each ``uniform`` width add the
    baseline plans ``plan-formula`` and ``plan-uniform-<w>`` (and their runs). Returns a summary
    per plan: its name, method, ratio, widths and sizes, file paths and, when retrained, the
    metrics.

    A run directory that already holds a finished run of the same plan is reused, not retrained,
    and an unfinished one is resumed, so an interrupted ``fdo --retrain`` can simply be run
    again.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not ratios and not formula and not uniform:
        raise SlimctrError("give at least one variance ratio (or a formula or uniform plan)")
    for ratio in ratios:
        check_ratio(ratio)
    if len({float(r) for r in ratios}) < len(ratios):
        raise SlimctrError(f"a variance ratio is given more than once: {list(ratios)}")
    if len(set(uniform)) < len(uniform):
        raise SlimctrError(f"a uniform width is given more than once: {list(uniform)}")
    start = Start.from_run(run_dir)
    schema = start.store.schema
    source_widths = model_widths(start.trained_model("FDO"), "FDO")
    plans = {str(float(r)): FDO(FDOConfig(variance_ratio=r)).fit(start).plan_ for r in ratios}
    baselines = {"formula": formula_plan(schema)} if formula else {}
    baselines |= {f"uniform-{width}": uniform_plan(schema, width) for width in uniform}
    for name, plan in baselines.items():  # with what they are compared with
        plans[name] = dataclasses.replace(
            plan,
            source_run=str(start.run_dir),
            source_widths=source_widths,
            model_params=implied_params(start.config, schema, plan.widths),
        )
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for name, plan in plans.items():
        plan.save(out / f"plan-{name}.json")
        summary: dict[str, Any] = {
            "name": name,
            "method": plan.method,
            "variance_ratio": plan.settings.get("variance_ratio"),
            "plan": str(out / f"plan-{name}.json"),
        }
        data = plan.to_dict()
        summary |= {key: data[key] for key in _SUMMARY}
        if retrain:
            summary["run"] = str(out / f"run-{name}")
            if progress is not None:
                progress.title = f"plan {name}"
            summary["metrics"] = train_plan(plan, start, out / f"run-{name}", progress=progress)
        summaries.append(summary)
    return summaries
