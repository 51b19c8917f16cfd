"""Training, evaluating and predicting with run folders (``slimctr.rundir``) and bundles.

``train`` creates a run folder, or continues or reuses the one there; ``load_model`` opens the
model bundle of a finished run (or an exported bundle), which is all that ``predict`` and
``evaluate --input`` need; ``load_run`` adds the training store, for what reads its splits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimctr.bundle import Bundle, Predictions, write_bundle
from slimctr.compress.dense import Int8Linear
from slimctr.compress.table import CompressedTable
from slimctr.data.store import Store, open_store
from slimctr.errors import SlimctrError
from slimctr.files import exclusive, remove_leftovers, staged
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.fm import LinearTerm
from slimctr.nn.masked import stored_bytes
from slimctr.nn.pruned import map_bytes
from slimctr.runconfig import RunConfig, build_model
from slimctr.rundir import RunDir, RunState, versions
from slimctr.schema import Schema
from slimctr.training.callbacks import Callback, Checkpoint
from slimctr.training.distributed import World
from slimctr.training.trainer import Trainer, resolve_precision, score


def train(
    data_dir: Path,
    out: Path,
    config: RunConfig,
    *,
    resume: bool = False,
    progress: Callback | None = None,
    plan: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    schema: Schema | None = None,
) -> dict[str, Any]:
    """Train, keep the best epoch, score the test split there, and write the run folder ``out``.

    A new or failed ``out`` gets a fresh run. With ``resume``, an unfinished run there is
    continued from its last finished epoch and a finished one is reused (its metrics returned),
    both only if they were started with ``config`` on this store; without it they are refused.
    ``plan`` (a dimension plan's JSON data) is recorded in the run; ``callbacks`` act inside the
    trainer after ``progress`` (tuning's pruning, or a search's initial weights), on rank 0 only.
    ``schema``, the store's with some fields' rows pruned or entries masked (a search plan's,
    ``slimctr.search.plan.model_schema``), builds the model with those tables; the run and its
    bundle record it. Started by torchrun,
    every rank trains its share and rank 0 alone writes (``slimctr.training.distributed``).
    """
    world = World.from_env()
    store = open_store(data_dir)
    if schema is None:
        schema = store.schema
    elif schema.unpruned() != store.schema:
        raise SlimctrError(f"the model's schema does not fit the fields of {store.path}")
    # the batch size and epochs the auto preset chooses are recorded with the run
    config = replace(config, train=config.train.for_rows(len(store.split("train"))))
    run = RunDir(out)
    with run.lock() if world.rank == 0 else contextlib.nullcontext():
        decided = _decide(run, store, schema, config, resume, plan) if world.rank == 0 else None
        state, found = world.broadcast(decided)
        if state == "error" or state is RunState.FINISHED:
            world.leave()
            if state == "error":
                raise SlimctrError(found)
            return dict(found)
        # read before training: a damaged checkpoint is an error, not a failure of the run
        checkpoint = run.checkpoint() if state is RunState.STARTED else None
        trained = replace(config, train=replace(config.train, precision=run.precision()))
        try:
            acting = [*([progress] if progress else []), *callbacks]
            metrics = _fit(run, store, schema, trained, acting, checkpoint, world)
        except Exception as error:  # an interrupt (not an Exception) leaves it resumable
            if world.rank == 0:
                run.fail(str(error) if isinstance(error, SlimctrError) else repr(error))
            raise
        world.leave()  # the other ranks return once rank 0 has written the run
        return metrics


def _decide(
    run: RunDir,
    store: Store,
    schema: Schema,
    config: RunConfig,
    resume: bool,
    plan: dict[str, Any] | None,
) -> tuple[Any, Any]:
    """Rank 0's decision, for every rank: train (a new run, or resume one), reuse a finished run
    (with its metrics), or an error message."""
    try:
        state = run.state
        if state in (RunState.STARTED, RunState.FINISHED):
            if not resume:
                hint = "continue it" if state is RunState.STARTED else "reuse it"
                raise SlimctrError(
                    f"{run.path} already holds a {state} run ({hint} with --resume, or give "
                    "another --out)"
                )
            run.check_continues(config, store, schema)
            if state is RunState.FINISHED:
                return state, run.metrics()
        else:
            precision = resolve_precision(config.train.precision)
            run.start(config, store, schema, precision=precision, plan=plan)
        return state, None
    except SlimctrError as error:
        return "error", str(error)


def _fit(
    run: RunDir,
    store: Store,
    schema: Schema,
    config: RunConfig,
    acting: Sequence[Callback],
    checkpoint: dict[str, Any] | None,
    world: World,
) -> dict[str, Any]:
    cores_per_rank = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(config.threads or max(cores_per_rank, 1))
    model = build_model(config, schema)
    writers = [*acting, Checkpoint(run.save_checkpoint)]
    callbacks = writers if world.rank == 0 else []
    trainer = Trainer(
        model, store, config.train, seed=config.seed, callbacks=callbacks, world=world
    )
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
    result = trainer.fit()
    history = result["history"]
    metrics = {
        "model": config.model_name,
        "valid": history[result["best_epoch"] - 1]["valid"],
        "test": trainer.evaluate("test"),
        "best_epoch": result["best_epoch"],
        **model_size(trainer.model),
        "train_samples_per_s": sum(h["train_samples_per_s"] for h in history) / len(history),
        "seed": config.seed,
        "precision": config.train.precision,
        "processes": world.size,
    }

    def bundle(folder: Path) -> None:
        write_bundle(
            folder,
            config=config,
            model=trainer.model,
            store=store,
            schema=schema,
            metrics=metrics,
            versions=versions(),
        )

    if world.rank == 0:
        run.finish(history, metrics, bundle)
    return metrics


def load_model(path: str | Path) -> Bundle:
    """The model of a finished run folder or of a bundle folder (``slimctr export``)."""
    path = Path(path)
    run = RunDir(path)
    return Bundle(run.bundle_path if run.holds_run() else path)


def load_run(run_dir: Path, data_dir: Path | None = None) -> tuple[RunConfig, nn.Module, Store]:
    """A finished run's config, its best model (eval mode) and its store (or ``data_dir``, which
    must be encoded the same way)."""
    run = RunDir(run_dir)
    bundle = Bundle(run.bundle_path)
    store = open_store(data_dir or _training_store(run))
    bundle.check_store(store)
    return bundle.config, bundle.module, store


def evaluate(
    path: Path,
    *,
    data_dir: Path | None = None,
    split: str = "test",
    source: Path | None = None,
    columns: Sequence[str] | None = None,
) -> dict[str, float]:
    """AUC and logloss of a finished model: on the labelled file ``source`` (a run or a bundle),
    or on a split of its training store (a run) or of ``data_dir``."""
    if source is not None:
        return load_model(path).evaluate_file(source, columns=columns)
    bundle = load_model(path)
    store = open_store(data_dir or training_store(path))
    bundle.check_store(store)
    return score(
        bundle.module,
        store,
        split,
        batch_size=bundle.config.train.eval_batch_size,
        bf16=bundle.bf16,
    )


def predict(
    path: Path, source: Path, out: Path, *, columns: Sequence[str] | None = None
) -> Predictions:
    """One click probability per row of ``source``, in its order, written to ``out``."""
    return load_model(path).predict_file(source, out, columns=columns)


EXPORT_FORMATS = ("bundle", "onnx")


def export(
    run_dir: Path, out: Path, *, format: str = "bundle", data_dir: Path | None = None
) -> dict[str, Any]:
    """Copy a finished run's (or a bundle's) model bundle, checked, to the new (or empty) folder
    ``out``; or, ``format="onnx"``, write it as ONNX with its sidecar
    (``slimctr.onnx_export``), checked against PyTorch on the test split of ``data_dir`` or of
    the run's own store."""
    if format not in EXPORT_FORMATS:
        raise SlimctrError(
            f"unknown export format {format!r} (choose from {', '.join(EXPORT_FORMATS)})"
        )
    if format == "onnx":
        from slimctr.onnx_export import export_onnx, store_for_check

        return export_onnx(load_model(run_dir), out, store_for_check(run_dir, data_dir))
    out = out.resolve()  # see files.staged
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SlimctrError(f"--out {out} already exists and is not empty; give a new folder")
    source = load_model(run_dir).path  # opening it checks every file
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "the export"):
        remove_leftovers(out)
        with staged(out) as staging:
            shutil.copytree(source, staging, dirs_exist_ok=True)
    return {"out": str(out), "format": format}


def model_size(model: nn.Module) -> dict[str, int]:
    """Parameters, embedding parameters and the bytes the embedding tables actually store.

    Embeddings are the field embeddings' tables plus the numeric fields' vectors: sum_f d_f n_f
    with n_f = 1 for a numeric field, the count search plans report (a pruned field: its kept
    rows; a masked table: its kept entries); their bytes include the id-to-row maps of pruned
    fields (a bit per id, as a bundle stores them) and the bit masks of masked tables, which
    decoding needs; a compressed table counts
    its entries (rows x width) as parameters and what its codec stores as bytes. The
    first-order weights of LR, FM and the models with a linear term (``LinearTerm``, one scalar
    per feature value) are their own line, ``first_order_params`` (dimension-search spec 1.4.4),
    and count in ``num_params`` like an alignment layer's maps, which are not embeddings either.
    An int8 dense layer (``slimctr.compress.dense``) counts its entries in ``num_params``.
    """
    first_order = {id(m.weights) for m in model.modules() if isinstance(m, LinearTerm)}
    tables: dict[int, Tensor] = {}
    linear: dict[int, Tensor] = {}
    masked_params = masked_bytes = compressed_params = compressed_bytes = maps = 0
    for module in model.modules():
        if not isinstance(module, FieldEmbedding):
            continue
        found = linear if id(module) in first_order else tables
        for compressed in module.field_tables:
            if isinstance(compressed, CompressedTable):  # its entries, and the bytes it stores
                compressed_params += compressed.rows * compressed.width
                compressed_bytes += compressed.stored_bytes
        for table in module._embedding_modules():
            if module.masked:  # stored as its kept values and a bit per entry
                masked_params += int(module.entry_mask.sum())
                masked_bytes += stored_bytes(module.entry_mask)
            else:
                found[id(table.weight)] = table.weight
        if module.numeric_vectors is not None:
            found[id(module.numeric_vectors)] = module.numeric_vectors
        if module.pruned_fields:  # stored as a bit per id
            maps += map_bytes(module)
    return {
        "num_params": compressed_params
        + sum(m.params for m in model.modules() if isinstance(m, Int8Linear))
        + sum(p.numel() for p in model.parameters()),
        "embedding_params": masked_params
        + compressed_params
        + sum(t.numel() for t in tables.values()),
        "embedding_bytes": masked_bytes
        + compressed_bytes
        + maps
        + sum(t.numel() * t.element_size() for t in tables.values()),
        "first_order_params": sum(t.numel() for t in linear.values()),
    }


def _training_store(run: RunDir) -> Path:
    path = Path(run.data()["path"])
    if not path.is_dir():
        raise SlimctrError(
            f"the store {run.path} was trained on ({path}) is not here; give --data DIR, "
            "or evaluate on a labelled file with --input"
        )
    return path


def training_store(path: Path) -> Path:
    """The store the finished run ``path`` trained on; a bundle has none (an error that says
    what to give instead)."""
    run = RunDir(path)
    if not run.holds_run():
        raise SlimctrError(f"{path} is a bundle: give a labelled --input FILE or a --data DIR")
    return _training_store(run)
