"""RunDir: the one owner of a run folder's files, its states, reuse and resume.

Layout of ``RUN_DIR``::

    run.json            the record: format, state, the error of a failed run, and the sha256 of
                        every file below, checked whenever one is read
    config.yaml         the resolved configuration (with ``config_version`` in run.json)
    schema.json         the data schema the model was built for
    data.json           the store it was trained on (path and recipe id)
    versions.json       package versions and the git revision
    plan.json           the dimension plan a run was trained with (FDO), if any
    checkpoint-<E>.pt   the resumable state after epoch E (only while the run is unfinished)
    history.json        per-epoch training loss, validation scores, learning rate, speed
    metrics.json        the result (cli.md): validation and test at the best epoch, sizes, speed
    bundle/             the model bundle (slimctr.bundle): what predict, evaluate and export use

States: **new** (no folder, or an empty one), **started** (the run's first files are in place,
training has not finished: ``--resume`` continues it from its last checkpoint), **finished**
(metrics and bundle written) and **failed** (training stopped with an error, recorded in run.json;
a new training into the folder starts over). A run folder appears whole: its first files are
written into a hidden sibling that is renamed into place. Every later file is written under a
temporary name and renamed, and run.json, rewritten last, only ever names complete files, so a
run killed at any moment is either resumable or was never there. Writers hold ``lock()``.
"""

from __future__ import annotations

import enum
import functools
import io
import json
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from textwrap import shorten
from typing import Any, Literal

import torch

from slimctr.bundle import MANIFEST as BUNDLE_MANIFEST
from slimctr.bundle import is_bundle
from slimctr.config import dump_yaml, parse_yaml, to_dict
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.files import (
    atomic_path,
    exclusive,
    json_bytes,
    read_manifest,
    remove_leftovers,
    sha256_bytes,
    staged,
    verified,
    write_manifested,
)
from slimctr.runconfig import CONFIG_VERSION, RunConfig, read_config
from slimctr.schema import Schema
from slimctr.training.trainer import resolve_precision

RUN_FORMAT = 1
RECORD = "run.json"
CONFIG = "config.yaml"
SCHEMA = "schema.json"
DATA = "data.json"
VERSIONS = "versions.json"
PLAN = "plan.json"
HISTORY = "history.json"
METRICS = "metrics.json"
BUNDLE = "bundle"


class RunState(enum.StrEnum):
    NEW = "new"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"


class RunDir:
    """A run folder: read its files (checked against run.json) and move it between states."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()  # see files.staged

    # -- reading -------------------------------------------------------------------------------

    def holds_run(self) -> bool:
        """Whether the folder has a run record (in whatever state)."""
        return (self.path / RECORD).is_file()

    @property
    def state(self) -> RunState:
        if not self.path.exists():
            return RunState.NEW
        if not self.path.is_dir():
            raise SlimctrError(f"{self.path} is a file, not a run folder")
        if not (self.path / RECORD).is_file():
            if not any(self.path.iterdir()):
                return RunState.NEW
            raise SlimctrError(self._not_a_run())
        return RunState(self._record()["state"])

    def require_finished(self) -> None:
        """Raise unless training finished here (so the metrics and bundle exist)."""
        state = self.state
        if state is RunState.FINISHED:
            return
        why = {
            RunState.NEW: "nothing was trained there",
            RunState.STARTED: "its training never finished (continue it with `train --resume`)",
            RunState.FAILED: f"its training failed: {self._record().get('error')}",
        }[state]
        raise SlimctrError(f"{self.path} is not a finished run: {why}")

    def config(self) -> RunConfig:
        raw = parse_yaml(self._read(CONFIG).decode("utf-8"), self.path / CONFIG)
        return read_config(raw, self._record()["config_version"], str(self.path / CONFIG))

    def schema(self) -> Schema:
        data = self._json(SCHEMA)
        try:
            return Schema.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise SlimctrError(f"{self.path / SCHEMA} is not a slimctr schema ({error})") from None

    def data(self) -> dict[str, Any]:
        """The training store: ``path`` and ``recipe_id``."""
        return dict(self._json(DATA))

    def metrics(self) -> dict[str, Any]:
        return dict(self._json(METRICS))

    def history(self) -> list[dict[str, Any]]:
        return list(self._json(HISTORY))

    def versions(self) -> dict[str, str]:
        return dict(self._json(VERSIONS))

    def plan(self) -> dict[str, Any] | None:
        """The dimension plan this run was trained with, or None."""
        return dict(self._json(PLAN)) if PLAN in self._record()["files"] else None

    def checkpoint(self) -> dict[str, Any] | None:
        """The state saved after the last finished epoch, or None before the first."""
        name = self._record().get("checkpoint")
        if name is None:
            return None
        content = self._read(name)
        try:
            state = torch.load(io.BytesIO(content), weights_only=True)
        except Exception:  # torch raises many types for a file it cannot read
            raise SlimctrError(f"{self.path / name} is not a slimctr checkpoint") from None
        if not isinstance(state, dict) or "model" not in state:
            raise SlimctrError(f"{self.path / name} is not a slimctr checkpoint")
        return state

    @property
    def bundle_path(self) -> Path:
        """The finished run's model bundle; every file of the run, the bundle's manifest
        included, is checked first (the bundle checks its own files from there)."""
        self.require_finished()
        for name, expected in self._record()["files"].items():
            verified(self.path / name, expected, RECORD)
        return self.path / BUNDLE

    def check_continues(self, config: RunConfig, store: Store, schema: Schema) -> None:
        """Raise unless this run was started with ``config`` on ``store``, its model built for
        ``schema`` (the store's, or one with pruned fields)."""
        try:
            saved = self.config()
        except SlimctrError:  # no longer reads as a config (a model or key since removed)
            saved = None
        # asking for auto again matches a run that resolved it, or an older run that fixed it
        auto = config.train.precision == "auto"
        if saved and auto and saved.train.precision in ("auto", self.precision()):
            config = replace(config, train=replace(config.train, precision=saved.train.precision))
        same = saved is not None and to_dict(saved) == to_dict(config)
        if not same:
            raise SlimctrError(
                f"{self.path} was started with another configuration; continue it with the "
                "same --model, --config and --set options"
            )
        if self.data().get("recipe_id") != store.manifest["recipe_id"]:
            raise SlimctrError(f"{self.path} was trained on another store than {store.path}")
        if self.schema() != schema:
            raise SlimctrError(f"{self.path} was started with other kept rows of its fields")

    # -- writing ---------------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time; a second process is refused at once."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.path, "the run"):
            yield

    def precision(self) -> Literal["fp32", "bf16"]:
        """What the run trains in: its ``train.precision`` with ``auto`` resolved when it started
        (runs from before ``auto`` existed name theirs in the config)."""
        recorded = self._record().get("precision")
        return resolve_precision(str(recorded) if recorded else self.config().train.precision)

    def start(
        self,
        config: RunConfig,
        store: Store,
        schema: Schema,
        *,
        precision: str,
        plan: dict[str, Any] | None = None,
    ) -> None:
        """Create the run (new, or over a failed one) with its configuration and provenance;
        ``schema`` is what its model is built for (the store's, or one with pruned fields),
        ``precision`` what its ``train.precision`` resolved to on this machine."""
        if self.state not in (RunState.NEW, RunState.FAILED):
            raise SlimctrError(f"{self.path} already holds a {self.state} run")
        remove_leftovers(self.path)  # of a killed start; we hold the lock
        files = {
            CONFIG: dump_yaml(to_dict(config)).encode(),
            SCHEMA: json_bytes(schema.to_dict()),
            DATA: json_bytes(
                {"path": str(store.path.resolve()), "recipe_id": store.manifest["recipe_id"]}
            ),
            VERSIONS: json_bytes(versions()),
            **({PLAN: json_bytes(plan)} if plan is not None else {}),
        }
        header = {
            "format": "slimctr-run",
            "format_version": RUN_FORMAT,
            "config_version": CONFIG_VERSION,
            "state": RunState.STARTED.value,
            "precision": precision,
        }
        with staged(self.path) as staging:
            write_manifested(staging, files, RECORD, header)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Keep ``state`` (``Trainer.state_dict()``) as the run's resume point, atomically: the new
        file is complete before run.json names it, and the old one goes after."""
        record = self._record()
        name = f"checkpoint-{state['epoch']}.pt"
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._write(record, name, buffer.getvalue())
        previous, record["checkpoint"] = record.get("checkpoint"), name
        self._write_record(record)
        if previous not in (None, name):
            (self.path / previous).unlink(missing_ok=True)
            record["files"].pop(previous, None)
            self._write_record(record)

    def finish(
        self,
        history: list[dict[str, Any]],
        metrics: dict[str, Any],
        write_bundle: Callable[[Path], None],
    ) -> None:
        """Write the result and the bundle (``write_bundle`` fills a folder), then mark the run
        finished and drop its checkpoint: a finished run is reused, never resumed."""
        record = self._record()
        self._write(record, HISTORY, json_bytes(history))
        self._write(record, METRICS, json_bytes(metrics))
        remove_leftovers(self.path / BUNDLE)  # of a finish that was killed
        with staged(self.path / BUNDLE) as staging:
            write_bundle(staging)
        manifest = f"{BUNDLE}/{BUNDLE_MANIFEST}"  # the bundle checks its own files from there
        record["files"][manifest] = sha256_bytes((self.path / manifest).read_bytes())
        checkpoint = record.pop("checkpoint", None)
        record["files"].pop(checkpoint, None)
        record["state"] = RunState.FINISHED.value
        self._write_record(record)
        if checkpoint is not None:
            (self.path / checkpoint).unlink(missing_ok=True)

    def fail(self, error: str) -> None:
        """Record that training stopped with ``error``; the next training here starts over."""
        record = self._record()
        line = " ".join(error.split())  # one line, for the one-line messages that quote it
        record["state"], record["error"] = RunState.FAILED.value, shorten(line, 500)
        self._write_record(record)

    # -- internals -------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        if not (self.path / RECORD).is_file():
            raise SlimctrError(self._not_a_run())
        record = read_manifest(self.path / RECORD, "slimctr-run", RUN_FORMAT)
        if record.get("state") not in {s.value for s in RunState} - {"new"}:
            raise SlimctrError(f"{self.path / RECORD} records an unknown state")
        return record

    def _read(self, name: str) -> bytes:
        """A run file's bytes, checked against the sha256 in run.json."""
        expected = self._record()["files"].get(name)
        if expected is None:
            raise SlimctrError(f"{self.path} has no {name} (the run did not get that far)")
        return verified(self.path / name, expected, RECORD)

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self._read(name))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SlimctrError(f"{self.path / name} is not valid JSON") from None

    def _write(self, record: dict[str, Any], name: str, content: bytes) -> None:
        """Write one file atomically and note its checksum in ``record`` (saved by the caller)."""
        with atomic_path(self.path / name) as temporary:
            temporary.write_bytes(content)
        record["files"][name] = sha256_bytes(content)

    def _write_record(self, record: dict[str, Any]) -> None:
        with atomic_path(self.path / RECORD) as temporary:
            temporary.write_bytes(json_bytes(record))

    def _not_a_run(self) -> str:
        if is_bundle(self.path):
            return f"{self.path} is a model bundle; this needs the finished run it came from"
        if (self.path / CONFIG).is_file():
            return (
                f"{self.path} was written by an older slimctr (it has no {RECORD}); "
                "train it again into a new folder"
            )
        return f"{self.path} is not a slimctr run folder (no {RECORD})"


@functools.cache
def versions() -> dict[str, str]:
    """Python, package versions and the git revision of the working tree (if any).

    Read once per process: a long-lived process (a benchmark study, a notebook) keeps running the
    code it imported, so later commits must not be credited with its runs. The revision is that
    of the first call, close to the import in practice; "-dirty" marks uncommitted changes.
    """
    packages = ("slimctr", "torch", "numpy", "polars", "pyarrow", "safetensors")
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
