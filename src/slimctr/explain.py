"""Explanations of gated cross models: interaction strengths, gate importance, FDO widths.

GDCN spec 5 (Wang et al., CIKM 2023, arXiv 2311.04635). Fields are in ``Schema.fields`` order;
field f owns a slice of width d_f of the concatenated embedding c0 and of every layer's vectors.

* **Interaction strength** (spec 5.1): S^(l)[i, j] = ||W_c^(l)[rows of i, columns of j]||_F,
  the block of the cross matrix that weighs field i (through c0) against field j (through c_l).
  Raw by default; ``normalise`` divides by sqrt(d_i d_j), the block's root mean square entry,
  which compares blocks of unequal size (after FDO). A *pair* {i, j} is ranked by
  sqrt(S[i, j]^2 + S[j, i]^2), the Frobenius norm of both of its blocks: each multiplies e_i with
  e_j (one in the slice of field i, one in that of field j), and with the diagonal blocks these
  squares still sum to ||W_c||_F^2.
* **Gates** (spec 5.2-5.3): an instance's bit-wise gates sigmoid(W_g^(l) c_l), (D,) per layer,
  their field-wise means over each slice, (F,), and the gate importance of a field: its field-wise
  gate averaged over N instances drawn (seeded) from a split. Above 0.5 the layer lets the
  field's crossed signal through more than it holds it back. Caveat: the loss does not pull the
  gate of a field the model ignores to any value, so without weight decay such gates drift
  (upwards as training overfits, most for the largest fields); with weight decay the gate
  weights of unused fields shrink and their gates settle near sigmoid(0) = 0.5.
* **FDO widths** (spec 5.4): the width ``slimctr.search.fdo`` gives each trained table at a variance
  ratio, beside the importance, with their Pearson correlation per layer and for the layer mean.

GCN, GDCN-S and GDCN-P support all three; DCN-V2 only the interaction heatmap (no gates).
``slimctr.report.explain_run`` explains a finished run and writes the report folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.data.loader import BatchLoader
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.schema import Schema

if TYPE_CHECKING:
    from slimctr.compare import Rankings

HEATMAP, GATES = "interaction heatmap", "gates"
DEFAULT_INSTANCES = 10_000
TOP = 5  # fields and pairs named in the summary
FLAT_GATES = 0.005  # mean gates closer together than this across fields rank nothing


class CrossModel(Protocol):
    """What the interaction heatmap needs (GCN, GDCN-S, GDCN-P, DCNv2)."""

    @property
    def field_dims(self) -> tuple[int, ...]: ...

    def cross_matrices(self) -> list[Tensor]: ...


class GatedModel(CrossModel, Protocol):
    """What the gate explanations need (GCN, GDCN-S, GDCN-P)."""

    def gates(self, batch: Batch) -> list[Tensor]: ...

    def gated_terms(self, batch: Batch) -> list[Tensor]: ...


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """The numbers of one explained model. Arrays are per layer (L), field (F), instance (E).

    ``interactions`` (L, F, F) are block norms (``normalised`` says whether divided by
    sqrt(d_i d_j)); ``importance`` (L, F) mean field-wise gates over ``num_instances`` instances
    of ``split``; ``examples`` are row numbers within ``split`` of the instances whose bit-wise
    (L, E, D) and field-wise (L, E, F) gates are kept. ``None`` where the model lacks cross
    matrices, gates or its tables (FDO). ``correlations`` maps "layer l" and "layer mean" to
    Pearson's r between ``fdo_widths`` and importance, ``None`` where either has no variance.
    ``rankings``: the methods of ``slimctr.compare`` that were asked for, side by side.
    """

    model_name: str
    run_dir: str
    field_names: tuple[str, ...]
    field_dims: tuple[int, ...]
    interactions: np.ndarray | None
    normalised: bool = False
    importance: np.ndarray | None = None
    split: str = "test"
    num_instances: int = 0
    examples: tuple[int, ...] = ()
    example_bitwise: np.ndarray | None = None
    example_fieldwise: np.ndarray | None = None
    variance_ratio: float | None = None
    fdo_widths: np.ndarray | None = None
    correlations: dict[str, float | None] = field(default_factory=dict)
    rankings: Rankings | None = None

    @property
    def num_layers(self) -> int:
        return 0 if self.interactions is None else int(self.interactions.shape[0])

    @property
    def summary(self) -> str:
        """A few lines of text: top fields, closed fields, top pairs, widths vs importance."""
        return summarise(self)

    def field_importance(self) -> dict[str, float] | None:
        """Mean field-wise gate per field, averaged over layers; None without gates."""
        if self.importance is None:
            return None
        mean = self.importance.mean(axis=0)
        return {name: float(value) for name, value in zip(self.field_names, mean, strict=True)}

    def ranked_pairs(self, layer: int = 0) -> list[tuple[str, str, float]]:
        """Field pairs by interaction strength in ``layer`` (0: the first), strongest first;
        none without cross matrices."""
        if self.interactions is None:
            return []
        pairs = _ranked_pairs(pair_strengths(self.interactions)[layer])
        return [(self.field_names[i], self.field_names[j], float(v)) for i, j, v in pairs]

    def to_frames(self) -> dict[str, pl.DataFrame]:
        """The numbers as tables: ``fields``, ``interactions``, ``pairs`` and, with gates,
        ``examples`` (field-wise), ``example_bits`` (bit-wise) and ``correlations``."""
        return frames(self)


def supported(model: nn.Module) -> tuple[str, ...]:
    """Which explanations ``model`` supports: ``HEATMAP`` and/or ``GATES``."""
    found = []
    if callable(getattr(model, "cross_matrices", None)) and hasattr(model, "field_dims"):
        found.append(HEATMAP)
    if callable(getattr(model, "gates", None)) and hasattr(model, "field_dims"):
        found.append(GATES)
    return tuple(found)


def interaction_strengths(model: nn.Module, *, normalise: bool = False) -> np.ndarray:
    """S^(l)[i, j] = ||block (i, j) of W_c^(l)||_F for every layer: (L, F, F), rows = c0's field.

    With ``normalise`` each block norm is divided by sqrt(d_i d_j).
    """
    crossing = cast(CrossModel, _require(model, HEATMAP))
    dims = np.asarray(crossing.field_dims)
    starts = np.concatenate([[0], np.cumsum(dims)[:-1]])
    layers = []
    for matrix in crossing.cross_matrices():
        squares = matrix.detach().cpu().double().numpy() ** 2  # (D, D)
        blocks = np.add.reduceat(np.add.reduceat(squares, starts, axis=0), starts, axis=1)
        layers.append(np.sqrt(blocks))  # (F, F)
    strengths = np.stack(layers)
    return strengths / np.sqrt(np.outer(dims, dims)) if normalise else strengths


def pair_strengths(interactions: np.ndarray) -> np.ndarray:
    """sqrt(S[i, j]^2 + S[j, i]^2) per layer, (L, F, F), symmetric; the diagonal is S[i, i]."""
    symmetric = np.sqrt(interactions**2 + interactions.swapaxes(-1, -2) ** 2)
    diagonal = np.arange(interactions.shape[-1])
    symmetric[..., diagonal, diagonal] = interactions[..., diagonal, diagonal]
    return symmetric


def field_means(values: np.ndarray, field_dims: tuple[int, ...]) -> np.ndarray:
    """Means of the last axis over each field's slice: (..., D) -> (..., F)."""
    dims = np.asarray(field_dims)
    starts = np.concatenate([[0], np.cumsum(dims)[:-1]])
    return np.add.reduceat(values, starts, axis=-1) / dims


@torch.no_grad()
def instance_gates(model: nn.Module, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Bit-wise gates (L, B, D) and their field-wise means (L, B, F) of each instance."""
    gated = cast(GatedModel, _require(model, GATES))
    bitwise = torch.stack(gated.gates(batch)).double().cpu().numpy()  # (L, B, D)
    return bitwise, field_means(bitwise, gated.field_dims)


@torch.no_grad()
def gate_importance(
    model: nn.Module,
    store: Store,
    *,
    instances: int = DEFAULT_INSTANCES,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 4096,
) -> np.ndarray:
    """Mean field-wise gate of each layer over ``instances`` rows of ``split``: (L, F).

    The rows are ``sample_rows(store, split, instances, seed)`` (all of them when the split is
    smaller), scored in batches of ``batch_size``: ``gate_scores``'s ``mean``.
    """
    _require(model, GATES)
    rows = np.sort(sample_rows(store, split, instances, seed))
    return gate_scores(model, gather(store, split, rows), chunk=batch_size)["mean"]


# How a field's gates become one score per layer, (L, F), over a batch of instances. ``mean``
# is spec 5.3's gate importance; the others are what issue 21's suite compares it with.
GATE_SCORES = {
    "mean": "the mean field-wise gate",
    "centred": "the mean distance of the field's bit-wise gates from 0.5",
    "spread": "the standard deviation over instances of the field-wise gate",
    "term": "the root mean square of the gated cross term c0 * (W_c c_l + b) * gate over the "
    "field's entries, averaged over instances: the signal the gates let through",
}
# How the per-layer scores become one score per field (or pair).
LAYER_AGGREGATES = ("mean", "first", "max")


@torch.no_grad()
def gate_scores(model: nn.Module, batch: Batch, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Every statistic of ``GATE_SCORES`` for each layer and field, (L, F), over ``batch``
    (read ``chunk`` rows at a time)."""
    gated = cast(GatedModel, _require(model, GATES))
    dims = gated.field_dims
    sums: dict[str, np.ndarray] = {}
    for start in range(0, len(batch), chunk):
        part = batch.rows(slice(start, start + chunk))
        bitwise = torch.stack(gated.gates(part)).double().cpu().numpy()  # (L, b, D)
        terms = torch.stack(gated.gated_terms(part)).double().cpu().numpy()  # (L, b, D)
        fieldwise = field_means(bitwise, dims)  # (L, b, F)
        found = {
            "mean": fieldwise,
            "squares": fieldwise**2,
            "centred": field_means(np.abs(bitwise - 0.5), dims),
            "term": np.sqrt(field_means(terms**2, dims)),
        }
        for name, values in found.items():
            sums[name] = sums.get(name, 0) + values.sum(axis=1)
    means = {name: total / len(batch) for name, total in sums.items()}
    spread = np.sqrt(np.maximum(means.pop("squares") - means["mean"] ** 2, 0.0))
    return {"mean": means["mean"], "centred": means["centred"], "spread": spread,
            "term": means["term"]}  # fmt: skip


def over_layers(scores: np.ndarray, how: str) -> np.ndarray:
    """Per-layer scores (L, ...) aggregated as ``LAYER_AGGREGATES`` says: (...)."""
    if how not in LAYER_AGGREGATES:
        raise SlimctrError(f"unknown layer aggregate {how!r}: use one of {LAYER_AGGREGATES}")
    return {"mean": scores.mean(axis=0), "first": scores[0], "max": scores.max(axis=0)}[how]


def sample_rows(store: Store, split: str, instances: int, seed: int) -> np.ndarray:
    """``instances`` distinct row numbers within ``split`` (all rows if fewer), drawn from
    ``numpy.random.default_rng(seed)``, in drawing order."""
    if instances < 1:
        raise SlimctrError(f"--instances must be >= 1, got {instances}")
    size = len(store.split(split))
    if size == 0:
        raise SlimctrError(f"the {split} split of {store.path} is empty: no instances to explain")
    rng = np.random.default_rng(seed)
    return rng.choice(size, size=min(instances, size), replace=False)


def gather(store: Store, split: str, rows: np.ndarray) -> Batch:
    """The ``Batch`` of the given row numbers within ``split`` (any order)."""
    loader = BatchLoader(store, split, batch_size=max(len(rows), 1))
    return loader.gather(loader.range.start + np.asarray(rows, dtype=np.int64))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r of two vectors; ``None`` when either is constant (r is undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def width_correlations(widths: np.ndarray, importance: np.ndarray) -> dict[str, float | None]:
    """Pearson's r of the widths with each layer's importance and with the layer mean."""
    found = {f"layer {layer + 1}": pearson(widths, row) for layer, row in enumerate(importance)}
    found["layer mean"] = pearson(widths, importance.mean(axis=0))
    return found


def explain_model(
    model: nn.Module,
    store: Store,
    *,
    model_name: str,
    run_dir: str = "",
    instances: int = DEFAULT_INSTANCES,
    variance_ratio: float = 0.95,
    seed: int = 0,
    split: str = "test",
    num_examples: int = 2,
    normalise: bool = False,
    methods: tuple[str, ...] = (),
) -> Explanation:
    """``explain_rows`` of ``instances`` rows of ``split`` of ``store``, drawn with ``seed``."""
    field_dims = getattr(model, "field_dims", None)
    if field_dims is not None and len(field_dims) != store.schema.num_fields:
        count = store.schema.num_fields
        raise SlimctrError(f"the model has {len(field_dims)} fields, {store.path} has {count}")
    rows = sample_rows(store, split, instances, seed)
    return explain_rows(
        model,
        gather(store, split, rows),
        store.schema,
        rows,
        model_name=model_name,
        run_dir=run_dir,
        variance_ratio=variance_ratio,
        seed=seed,
        split=split,
        num_examples=num_examples,
        normalise=normalise,
        methods=methods,
    )


def explain_rows(
    model: nn.Module,
    batch: Batch,
    schema: Schema,
    rows: np.ndarray,
    *,
    model_name: str,
    run_dir: str = "",
    variance_ratio: float = 0.95,
    seed: int = 0,
    split: str = "test",
    num_examples: int = 2,
    normalise: bool = False,
    methods: tuple[str, ...] = (),
) -> Explanation:
    """Every explanation ``model`` supports (see ``supported``) on the instances of ``batch``
    (row numbers ``rows`` of ``split``), as one ``Explanation``.

    Gates: the mean field-wise gates over the instances, and the gates of the first
    ``num_examples``. ``normalise``: see ``interaction_strengths``. ``methods``: the methods of
    ``slimctr.compare`` to run beside them (on the same instances, labels included); with
    ``captum`` or ``permutation`` among them, a model without cross matrices is explained too.
    """
    from slimctr.compare import compare

    kinds = supported(model)
    agnostic = any(m != "gates" for m in methods)
    if HEATMAP not in kinds and not agnostic:
        raise SlimctrError(_unsupported_message(model_name, kinds))
    importance = bitwise = fieldwise = None
    if GATES in kinds:
        importance = gate_scores(model, batch)["mean"]
        bitwise, fieldwise = instance_gates(model, batch.rows(slice(0, num_examples)))
    widths = _fdo_widths(model, schema, variance_ratio) if HEATMAP in kinds else None
    return Explanation(
        model_name=model_name,
        run_dir=run_dir,
        field_names=tuple(f.name for f in schema.fields),
        field_dims=cast(CrossModel, model).field_dims if HEATMAP in kinds else (),
        interactions=interaction_strengths(model, normalise=normalise)
        if HEATMAP in kinds
        else None,
        normalised=normalise,
        importance=importance,
        split=split,
        num_instances=len(batch),
        examples=tuple(int(r) for r in rows[:num_examples]) if GATES in kinds else (),
        example_bitwise=bitwise,
        example_fieldwise=fieldwise,
        variance_ratio=variance_ratio if widths is not None else None,
        fdo_widths=widths,
        correlations={}
        if widths is None or importance is None
        else width_correlations(widths, importance),
        rankings=compare(model, batch, schema, methods, seed=seed) if methods else None,
    )


def summarise(explanation: Explanation, top: int = TOP) -> str:
    """The summary text: top fields by mean gate over layers, fields below 0.5, the strongest
    pairs of layer 1 and the correlation of FDO widths with importance."""
    e, names = explanation, explanation.field_names
    if e.interactions is None:
        lines = [f"{e.model_name}: {len(names)} fields, no cross matrices (no heatmap, no gates)."]
    else:
        lines = [
            f"{e.model_name}: {e.num_layers} cross layers, {len(names)} fields, "
            f"D = {sum(e.field_dims)}."
        ]
    if e.importance is None and e.interactions is not None:
        lines.append(f"{e.model_name} has no gates: the interaction heatmap only.")
    elif e.importance is not None:
        mean = e.importance.mean(axis=0)
        flat = np.ptp(mean) < FLAT_GATES
        digits = 4 if flat else 3  # enough to tell nearly flat gates apart
        best = np.argsort(-mean, kind="stable")[:top]
        closed = [f"{names[i]} {mean[i]:.{digits}f}" for i in np.flatnonzero(mean < 0.5)]
        lines += [
            f"Gates averaged over {e.num_instances:,} instances of the {e.split} split.",
            "Most important fields (mean gate, averaged over layers): "
            + ", ".join(f"{names[i]} {mean[i]:.{digits}f}" for i in best),
            "Fields with mean gate below 0.5: " + (", ".join(closed) or "none"),
        ]
        if flat:
            lines.append(
                f"Caution: the mean gates differ by less than {FLAT_GATES} across fields, so "
                "this ranking says little (tiny embeddings, e.g. N(0, 1e-4) ones, keep W_g c_l "
                "near 0 and every gate near 0.5)."
            )
    if e.interactions is not None:
        pairs = _ranked_pairs(pair_strengths(e.interactions)[0])[:top]
        kind = "normalised" if e.normalised else "raw"
        lines.append(
            f"Strongest interactions (layer 1, sqrt(S_ij^2 + S_ji^2) of {kind} block norms): "
            + ", ".join(f"{names[i]} x {names[j]} {value:.3g}" for i, j, value in pairs)
        )
    if e.correlations:
        text = {k: "n/a" if r is None else f"{r:.2f}" for k, r in e.correlations.items()}
        lines.append(
            f"FDO widths at variance ratio {e.variance_ratio} vs importance: Pearson r "
            + ", ".join(f"{k} {v}" for k, v in text.items())
        )
    if e.rankings is not None:
        lines += e.rankings.summary(top)
    return "\n".join(lines)


def frames(explanation: Explanation) -> dict[str, pl.DataFrame]:
    """``Explanation.to_frames``: long tables with field names, layers numbered from 1."""
    e, names = explanation, list(explanation.field_names)
    layers, count = e.num_layers, len(names)
    fields: dict[str, object] = {"field": names}
    if e.field_dims:
        fields["width"] = list(e.field_dims)
    if e.fdo_widths is not None:
        fields["fdo_width"] = e.fdo_widths.tolist()
    if e.importance is not None:
        fields |= {f"importance_layer_{k + 1}": row for k, row in enumerate(e.importance)}
        fields["importance_mean"] = e.importance.mean(axis=0)
    found = {"fields": pl.DataFrame(fields)}
    if e.interactions is not None:
        strength = "block_norm_normalised" if e.normalised else "block_norm"
        grid = np.indices((layers, count, count)).reshape(3, -1)
        found["interactions"] = pl.DataFrame(
            {
                "layer": grid[0] + 1,
                "row_field": [names[i] for i in grid[1]],
                "column_field": [names[j] for j in grid[2]],
                strength: e.interactions.ravel(),
            }
        )
        found["pairs"] = _pairs_frame(e.interactions, names)
    if e.rankings is not None:
        found |= e.rankings.to_frames()
    if e.example_fieldwise is not None and e.example_bitwise is not None:
        found["examples"] = _gates_frame(e.example_fieldwise, e.examples, names)
        owner = [name for name, d in zip(names, e.field_dims, strict=True) for _ in range(d)]
        found["example_bits"] = _gates_frame(e.example_bitwise, e.examples, owner)
    if e.correlations:
        found["correlations"] = pl.DataFrame(
            {"layer": list(e.correlations), "pearson_r": list(e.correlations.values())},
            schema={"layer": pl.String, "pearson_r": pl.Float64},
        )
    return found


def _ranked_pairs(symmetric: np.ndarray) -> list[tuple[int, int, float]]:
    """Off-diagonal pairs i < j of an (F, F) symmetric matrix, strongest first."""
    upper = np.triu_indices(symmetric.shape[0], k=1)
    order = np.argsort(-symmetric[upper], kind="stable")
    return [(int(upper[0][k]), int(upper[1][k]), float(symmetric[upper][k])) for k in order]


def _pairs_frame(interactions: np.ndarray, names: list[str]) -> pl.DataFrame:
    rows = [
        (layer + 1, names[i], names[j], value)
        for layer, symmetric in enumerate(pair_strengths(interactions))
        for i, j, value in _ranked_pairs(symmetric)
    ]
    return pl.DataFrame(rows, schema=["layer", "field_a", "field_b", "pair_strength"], orient="row")


def _gates_frame(gates: np.ndarray, rows: tuple[int, ...], owners: list[str]) -> pl.DataFrame:
    """(L, E, K) gates as rows (row, layer, position, field, gate); K = F or D."""
    layer, instance, position = np.indices(gates.shape).reshape(3, -1)
    return pl.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64)[instance],
            "layer": layer + 1,
            "position": position,
            "field": [owners[k] for k in position],
            "gate": gates.ravel(),
        }
    )


def _fdo_widths(model: nn.Module, schema: Schema, variance_ratio: float) -> np.ndarray | None:
    from slimctr.search.fdo import fdo_plan

    if not hasattr(model, "embedding"):
        return None
    plan = fdo_plan(model, schema, variance_ratio)
    return np.array([plan.widths[f.name] for f in schema.fields])


def _require(model: nn.Module, kind: str) -> nn.Module:
    if kind not in supported(model):
        names = [n for n, e in MODELS.items() if e.model is type(model)]
        name = names[0] if names else type(model).__name__
        raise SlimctrError(_unsupported_message(name, supported(model)))
    return model


def _unsupported_message(model_name: str, kinds: tuple[str, ...]) -> str:
    """One line: what ``model_name`` supports and which registered models support what."""
    heatmap = [n for n, e in MODELS.items() if _class_supports(e.model, HEATMAP)]
    gates = [n for n, e in MODELS.items() if _class_supports(e.model, GATES)]
    where = (
        f"the interaction heatmap needs cross matrices ({', '.join(heatmap)}), "
        f"the gates need gated cross layers ({', '.join(gates)})"
    )
    if not kinds:
        agnostic = "--method permutation or captum explains any model"
        return f"model {model_name!r} has nothing to explain in its weights: {where}; {agnostic}"
    missing = [kind for kind in (HEATMAP, GATES) if kind not in kinds]
    return (
        f"model {model_name!r} supports the {' and the '.join(kinds)} only, "
        f"not the {' and the '.join(missing)}: {where}"
    )


def _class_supports(model_class: type[nn.Module], kind: str) -> bool:
    method = "cross_matrices" if kind == HEATMAP else "gates"
    return callable(getattr(model_class, method, None)) and hasattr(model_class, "field_dims")
