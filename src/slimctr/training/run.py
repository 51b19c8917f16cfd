"""A run directory: one trained model with everything needed to reproduce, evaluate and serve it.

Layout of ``RUN_DIR``::

    config.yaml     the resolved configuration (model name, seed, threads, model and train)
    schema.json     the data schema the model was built for
    data.json       the store it was trained on (path and recipe id)
    versions.json   package versions and the git revision
    history.json    per-epoch training loss, validation scores, learning rate, speed
    metrics.json    the result (cli.md): validation and test at the best epoch, sizes, speed
    best.pt         weights of the best epoch (torch.load(weights_only=True))
    last.pt         the resumable state at the end of the last finished epoch
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimctr.config import apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from slimctr.data.store import Store, open_store, write_json
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.models.registry import ModelEntry
from slimctr.nn.embedding import FieldEmbedding
from slimctr.schema import Schema
from slimctr.training.trainer import PRESETS, Progress, TrainConfig, Trainer, score


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run depends on besides the data; ``model`` is the chosen model's config."""

    model_name: str
    seed: int = 0
    threads: int | None = None  # None: all cores
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise SlimctrError(f"threads must be >= 1, got {self.threads}")


def resolve_config(
    model_name: str,
    *,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    threads: int | None = None,
) -> RunConfig:
    """The run configuration: defaults, then the YAML file, then ``--set`` overrides, then flags."""
    entry = _model_entry(model_name)
    data = load_yaml(config_file) if config_file else {}
    if data.get("model_name", model_name) != model_name:
        raise SlimctrError(f"{config_file} is for model {data['model_name']!r}, not {model_name!r}")
    data = {**data, "model_name": model_name}
    data.setdefault("model", {})
    types = {"model": entry.config}
    config = apply_overrides(from_dict(RunConfig, data, types=types), list(overrides))
    flags = {"seed": seed, "threads": threads}
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        config = from_dict(RunConfig, {**to_dict(config), **given}, types=types)
    return _apply_preset(config, data.get("train") or {}, overrides)


def _apply_preset(
    config: RunConfig, file_train: dict[str, Any], overrides: Sequence[str]
) -> RunConfig:
    """Fill the preset's keys that neither the config file nor ``--set`` chose."""
    chosen = set(file_train) | {
        key.strip().removeprefix("train.")
        for key, _, _ in (o.partition("=") for o in overrides)
        if key.strip().startswith("train.")
    }
    preset = {k: v for k, v in PRESETS[config.train.preset].items() if k not in chosen}
    return replace(config, train=replace(config.train, **preset))


def build_model(config: RunConfig, schema: Schema) -> nn.Module:
    torch.manual_seed(config.seed)
    return _model_entry(config.model_name).model(schema, config.model)


def train(
    data_dir: Path,
    out: Path,
    config: RunConfig,
    *,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, keep the best epoch, score the test split there, and write the run directory."""
    store = open_store(data_dir)
    last = out / "last.pt"
    if resume:
        _check_resumable(out, config, store)
    elif out.exists() and any(out.iterdir()):
        raise SlimctrError(
            f"{out} already holds files (use --resume to continue that run, or another --out)"
        )
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    model = build_model(config, store.schema)
    trainer = Trainer(
        model, store, config.train, seed=config.seed, checkpoint=last, progress=progress
    )
    if resume and last.is_file():
        trainer.resume()
    else:
        _write_run_files(out, config, store)
    result = trainer.fit()
    write_json(out / "history.json", result["history"])
    best = result["history"][result["best_epoch"] - 1]
    metrics = {
        "model": config.model_name,
        "valid": best["valid"],
        "test": trainer.evaluate("test"),
        "best_epoch": result["best_epoch"],
        **model_size(model),
        "train_samples_per_s": sum(h["train_samples_per_s"] for h in result["history"])
        / len(result["history"]),
        "seed": config.seed,
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def load_run(run_dir: Path, data_dir: Path | None = None) -> tuple[RunConfig, nn.Module, Store]:
    """A finished run's config, its best model (eval mode) and its store (or ``data_dir``)."""
    if not (run_dir / "best.pt").is_file() or not (run_dir / "config.yaml").is_file():
        raise SlimctrError(f"{run_dir} is not a finished slimctr run (no best.pt / config.yaml)")
    config = _read_config(run_dir)
    store = open_store(data_dir or Path(json.loads((run_dir / "data.json").read_text())["path"]))
    trained = Schema.from_dict(json.loads((run_dir / "schema.json").read_text()))
    if store.schema != trained:
        raise SlimctrError(
            f"{store.path} has a different schema from the one {run_dir} was "
            "trained on (fields, kinds or vocabulary sizes differ)"
        )
    model = build_model(config, store.schema)
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    return config, model.eval(), store


def evaluate(run_dir: Path, data_dir: Path | None, split: str) -> dict[str, float]:
    """AUC and logloss of a finished run's best model on one split."""
    config, model, store = load_run(run_dir, data_dir)
    store.split(split)
    return score(
        model, store, split, batch_size=config.train.eval_batch_size, bf16=config.train.bf16
    )


def predict(run_dir: Path, source: Path, out: Path) -> int:
    """Write one click probability per row of ``source``, in its order; returns the row count.

    Probabilities are streamed to ``out`` (.csv with one ``probability`` column, or .parquet)
    batch by batch, written under a temporary name and renamed at the end.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from slimctr.data.encoder import StoreEncoder
    from slimctr.files import atomic_path

    if out.suffix not in (".csv", ".parquet"):
        raise SlimctrError(f"--out {out} must end in .csv or .parquet")
    _, model, store = load_run(run_dir)
    schema = pa.schema([("probability", pa.float64())])
    rows = 0
    with atomic_path(out) as temporary, torch.no_grad():
        if out.suffix == ".csv":
            plain = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
            writer = pacsv.CSVWriter(str(temporary), schema, write_options=plain)
        else:
            writer = pq.ParquetWriter(str(temporary), schema)
        with writer:
            for batch in StoreEncoder(store).batches(source):
                probabilities = torch.sigmoid(model(batch).double()).numpy()
                writer.write_batch(pa.record_batch([pa.array(probabilities)], schema=schema))
                rows += len(batch)
    return rows


def model_size(model: nn.Module) -> dict[str, int]:
    """Parameters, embedding parameters and the bytes the embedding tables actually store.

    Embeddings are every ``nn.Embedding`` table plus the numeric fields' vectors: sum_f d_f n_f
    with n_f = 1 for a numeric field, the count FDO plans report. An alignment layer's maps are
    parameters but not embeddings.
    """
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        if isinstance(module, FieldEmbedding) and module.numeric_vectors is not None:
            tables[id(module.numeric_vectors)] = module.numeric_vectors
    return {
        "num_params": sum(p.numel() for p in model.parameters()),
        "embedding_params": sum(t.numel() for t in tables.values()),
        "embedding_bytes": sum(t.numel() * t.element_size() for t in tables.values()),
    }


def _model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SlimctrError(f"unknown model {name!r} ({hint}see `slimctr models`)")
    return MODELS[name]


def _write_run_files(out: Path, config: RunConfig, store: Store) -> None:
    (out / "config.yaml").write_text(dump_yaml(to_dict(config)))
    write_json(out / "schema.json", store.schema.to_dict())
    write_json(
        out / "data.json",
        {"path": str(store.path.resolve()), "recipe_id": store.manifest["recipe_id"]},
    )
    write_json(out / "versions.json", versions())


def _check_resumable(out: Path, config: RunConfig, store: Store) -> None:
    if not (out / "config.yaml").is_file():
        raise SlimctrError(f"nothing to resume in {out} (no config.yaml)")
    try:
        started = to_dict(_read_config(out))
    except SlimctrError:  # no longer reads as a config (a model or key since removed)
        started = None
    if started != to_dict(config):
        raise SlimctrError(
            f"{out} was started with another configuration; resume it with the "
            "same --model, --config and --set options"
        )
    saved = json.loads((out / "data.json").read_text())
    if saved["recipe_id"] != store.manifest["recipe_id"]:
        raise SlimctrError(f"{out} was trained on another store than {store.path}")


def _read_config(run_dir: Path) -> RunConfig:
    """The config a run was started with; keys added to slimctr since then take their defaults,
    which is how that run behaves."""
    saved = load_yaml(run_dir / "config.yaml")
    entry = _model_entry(saved.get("model_name", ""))
    return from_dict(RunConfig, saved, types={"model": entry.config})


@functools.cache
def versions() -> dict[str, str]:
    """Python, package versions and the git revision of the working tree (if any).

    Read once per process: a long-lived process (a benchmark study, a notebook) keeps running the
    code it imported, so later commits must not be credited with its runs. The revision is that
    of the first call, close to the import in practice; "-dirty" marks uncommitted changes.
    """
    packages = ("slimctr", "torch", "numpy", "polars", "pyarrow")
    found = {name: _version(name) for name in packages}
    try:
        dirty = "-dirty" if _git("status", "--porcelain") else ""
        found["git_revision"] = _git("rev-parse", "HEAD") + dirty
    except (OSError, subprocess.CalledProcessError):
        found["git_revision"] = "unknown"
    return {"python": platform.python_version(), **found}


def _git(*args: str) -> str:
    """Output of a git command run where slimctr's source lives."""
    done = subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    return done.stdout.strip()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
