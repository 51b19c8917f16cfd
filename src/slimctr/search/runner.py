"""What every search shares: where it starts, applying a plan to a model, and training it.

A search starts from a ``Start``: the settings and data of a finished run (whose trained model
some methods read, as FDO does) or of a store with settings. ``train_plan`` is the one runner:
it checks the plan against the data, gives the model the plan's widths and kept rows, starts it
from fresh weights or from a search's saved ones (``restore``), and trains it into a run folder
that records the plan; a finished run of the same plan is reused and an unfinished one resumed.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimctr.config import from_dict, to_dict
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.models.routed import RoutedConfig
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm
from slimctr.runconfig import RunConfig, build_model
from slimctr.schema import Schema
from slimctr.search.plan import Plan, model_schema
from slimctr.training import run
from slimctr.training.callbacks import Callback, ProgressBar
from slimctr.training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Start:
    """A search's starting point: settings and data, and the finished run they came from (with
    its best model) when there is one."""

    config: RunConfig
    store: Store
    run_dir: Path | None = None
    model: nn.Module | None = None

    @classmethod
    def from_run(cls, run_dir: Path) -> Start:
        """A finished run's settings, training store and best model."""
        config, model, store = run.load_run(Path(run_dir))
        return cls(config, store, Path(run_dir).resolve(), model)

    def trained_model(self, method: str) -> nn.Module:
        """The run's best model; an error naming ``method`` when the search started from a
        store."""
        if self.model is None:
            raise SlimctrError(f"{method} starts from a trained run: give a run folder, not data")
        return self.model


def train_plan(
    plan: Plan,
    start: Start,
    out: Path,
    *,
    initial: Mapping[str, Tensor] | None = None,
    progress: ProgressBar | None = None,
) -> dict[str, Any]:
    """Train a model of ``start``'s settings with ``plan`` applied into ``out``, the plan
    recorded in the run; returns its metrics. A finished run of this plan in ``out`` is reused and
    an unfinished one resumed from its last epoch (``run.train`` refuses one with other settings:
    the widths and kept rows are part of it).

    Fields whose rows the plan prunes store only their kept rows, and masked tables only their
    kept entries (``model_schema``).
    The model starts from fresh weights, or from ``initial``, a state of ``start``'s own model
    (the reset of dimension-search spec 1.2: OptEmbed's initial weights, OptFS's rewind
    checkpoint), as ``restore`` maps it onto the planned shapes. A plan with groups trains a
    ``routed`` model (``routed_config``): every group model fresh, behind the router that
    ``initial`` holds (the ``router.`` weights and centroids of an instance-wise search).
    """
    plan.check_schema(start.store.schema)
    if plan.groups:
        return run.train(
            start.store.path,
            Path(out),
            routed_config(start.config, plan),
            resume=True,
            progress=progress,
            plan=plan.to_dict(),
            callbacks=[RouterFrom(initial or {})],
        )
    resized = config_for_plan(start.config, plan.widths)
    source = None
    if initial is not None:
        with torch.random.fork_rng(devices=[]):
            source = build_model(start.config, start.store.schema)
        source.load_state_dict(initial)
    return run.train(
        start.store.path,
        Path(out),
        resized,
        resume=True,
        progress=progress,
        plan=plan.to_dict(),
        callbacks=[StartFrom(plan, source)],
        schema=model_schema(plan, start.store.schema),
    )


class StartFrom(Callback):
    """Before a plan's first epoch: give its pruned fields their kept ids and, with a ``source``
    model, ``restore`` the weights from it, then its masked fields their masks (which zero the
    masked entries). A resumed run has all of them in its checkpoint."""

    def __init__(self, plan: Plan, source: nn.Module | None) -> None:
        self.plan, self.source = plan, source

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.epoch > 0:
            return
        embedding = field_embedding(trainer.model, self.plan.method)
        for name, ids in self.plan.kept.items():
            embedding.set_kept(name, torch.from_numpy(ids))
        if self.source is not None:
            fresh = restore(trainer.model, self.source, self.plan)
            if fresh:
                print(
                    f"{self.plan.method}: {len(fresh)} tensors whose shape the plan changed "
                    f"start fresh: {', '.join(fresh)}",
                    file=sys.stderr,
                )
        for name, mask in self.plan.masks.items():
            embedding.set_mask(name, torch.from_numpy(mask))


class RouterFrom(Callback):
    """Before a routed model's first epoch: its router's weights and centroids from ``state``
    (keys ``router.*``), which must hold all of them."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self.state = state

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.epoch > 0:
            return
        router = trainer.model.router
        assert isinstance(router, nn.Module)
        given = {k.removeprefix("router."): v for k, v in self.state.items()}
        if set(given) != set(router.state_dict()):
            raise SlimctrError("a routed model needs the router that its search found")
        router.load_state_dict(given)


def routed_config(config: RunConfig, plan: Plan) -> RunConfig:
    """A ``routed`` model of ``plan``'s groups: each group model ``config``'s model with the
    group's widths (``config_for_plan``), behind a router of the plan's settings."""
    assert plan.router is not None
    experts = tuple(to_dict(config_for_plan(config, group).model) for group in plan.groups)
    routed = RoutedConfig(
        backbone=config.model_name, experts=experts, router_rows=plan.router_rows, **plan.router
    )
    return dataclasses.replace(config, model_name="routed", model=routed)


@torch.no_grad()
def restore(model: nn.Module, source: nn.Module, plan: Plan) -> list[str]:
    """Copy ``source``'s weights (the full-width model) into ``model`` (``plan`` applied);
    returns the names of the tensors left as they were.

    Each field's table takes the source rows of its kept ids, their first d_f columns. Every
    other tensor is copied when its shape is unchanged; one that the widths changed is copied
    with each dimension of the source's embedding width D indexed by the kept columns (field f's
    first d_f of its D/F), when that gives its shape (a cross matrix, an MLP's first layer);
    others stay as they are (an alignment layer, or GDCN-P's output layer, which reads the cross
    output and the MLP's together). A non-embedding dimension that happens to equal D would be
    sliced too: that only changes where retraining starts from.
    """
    target, origin = field_embedding(model, plan.method), field_embedding(source, plan.method)
    for name, width in plan.widths.items():
        rows = origin.table(name)
        if name in plan.kept:
            rows = rows[torch.from_numpy(plan.kept[name])]
        target.table(name).copy_(rows[:, :width])
    starts = itertools.accumulate(origin.field_dims, initial=0)  # one more than the fields
    pairs = zip(starts, target.field_dims, strict=False)
    columns = torch.cat([torch.arange(start, start + width) for start, width in pairs])
    width = origin.output_dim
    prefix = next(name for name, module in model.named_modules() if module is target)
    tables = {f"{prefix}.{key}" if prefix else key for key in target.state_dict()}
    given = source.state_dict()
    fresh = []
    for key, tensor in model.state_dict().items():
        if key in tables:
            continue
        value = given[key]
        for dim in range(value.dim()):
            if value.shape[dim] == width and value.shape != tensor.shape:
                value = value.index_select(dim, columns)
        if value.shape == tensor.shape:
            tensor.copy_(value)
        else:
            fresh.append(key)
    return fresh


def config_for_plan(config: RunConfig, widths: Mapping[str, int]) -> RunConfig:
    """``config`` with ``widths`` as ``model.embedding_dim``, one int when all are equal.

    A model with an ``embedding_align_dim`` setting left at None gets one when the widths differ:
    the source's common width, or else the largest planned width.
    """
    model = config.model
    keys = {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else set()
    if "embedding_dim" not in keys:
        raise SlimctrError(
            f"model {config.model_name!r} has no embedding_dim setting, so a plan's widths "
            "cannot be applied to it"
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


def implied_params(
    config: RunConfig,
    schema: Schema,
    widths: Mapping[str, int],
    kept_rows: Mapping[str, int] | None = None,
) -> int:
    """Parameters of ``config``'s model with per-field ``widths`` (an alignment layer included)
    and, for the fields ``kept_rows`` names, only that many rows.

    The model is built and dropped; the global random state is left as it was.
    """
    resized = config_for_plan(config, widths)
    with torch.random.fork_rng(devices=[]):
        model = MODELS[resized.model_name].model(
            schema.with_kept_rows(kept_rows or {}), resized.model
        )
    return sum(p.numel() for p in model.parameters())


def field_embedding(model: nn.Module, method: str) -> FieldEmbedding:
    """The model's ``embedding``, or its one field embedding that is not a first-order term
    (``LinearTerm``'s width-1 weights: LR's only tables, nothing to shrink); an error naming
    ``method`` otherwise."""
    embedding = getattr(model, "embedding", None)
    if isinstance(embedding, FieldEmbedding):
        return embedding
    linear = {id(m.weights) for m in model.modules() if isinstance(m, LinearTerm)}
    found = [m for m in model.modules() if isinstance(m, FieldEmbedding) and id(m) not in linear]
    if len(found) != 1:
        what = "several field embeddings" if found else "no per-field embedding tables"
        raise SlimctrError(
            f"{method} needs one field embedding, but {type(model).__name__} has {what}"
        )
    return found[0]


def model_widths(model: nn.Module, method: str) -> dict[str, int]:
    """The width of each field of ``model``'s field embedding."""
    embedding = field_embedding(model, method)
    return dict(zip(embedding.field_names, embedding.field_dims, strict=True))
