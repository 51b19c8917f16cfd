"""A log of finished benchmark runs, one JSON object per line, so that a long study resumes.

Each record carries the key it was run under (model, seed and the exact overrides); a study asks
the log before training and skips what is already there. The log is committed next to the table
it produces, so anyone can regenerate the table, or add seeds, without rerunning everything; the
run folders themselves stay under runs/bench (not committed), where an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
from pathlib import Path
from typing import Any

from slimctr.config import load_yaml
from slimctr.runconfig import resolve_config
from slimctr.rundir import RunDir
from slimctr.shipped import config_path
from slimctr.training import run

# Settings a study holds fixed without naming them in its keys, because every logged run, before
# and after the default changed, trained with them. fp32 wherever the study runs, so that its rows
# stay comparable across machines (``precision=auto`` would pick bf16 on some); dense Adam on the
# embedding tables, the optimiser of every logged run, whatever a later default becomes; and the
# ``paper`` preset, the default of every logged run. A study's own override of one of them wins,
# and is part of its key.
PINNED = ("train.precision=fp32", "train.embedding_optimizer=adam", "train.preset=paper")
# Model defaults that changed after runs were logged without naming them: DCNv2's dropout was 0
# and its embeddings N(0, 1e-4^2) until 2026-12-04 (now 0.2 and xavier).
PINNED_BY_MODEL = {"dcnv2": ("model.dropout=0", "model.embedding_init_std=0.0001")}


def cpu_name() -> str:
    """This machine's CPU model, as Linux names it."""
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return names[0] if names else "unknown CPU"


def pinned(model: str) -> list[str]:
    """The settings pinned for ``model``'s runs, before a study's own overrides."""
    return [*PINNED, *PINNED_BY_MODEL.get(model, ())]


def shipped_overrides(name: str, model: str) -> list[str]:
    """The shipped config ``name`` for ``model`` as ``key=value`` overrides, the form of a run's
    key (``train.embedding_l2=1e-05``, ``model.hidden_dims=[400,400]``); the settings every study
    pins (``PINNED``), which keys leave out, are left out."""
    data = load_yaml(config_path(name, model))
    overrides = [f"{key}={_text(value)}" for key, value in _leaves(data) if key != "model_name"]
    return [o for o in overrides if o not in PINNED]


def _leaves(data: dict[str, Any], where: str = "") -> list[tuple[str, Any]]:
    found = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        section = isinstance(value, dict) and path in ("model", "train")
        found += _leaves(value, path) if section else [(path, value)]
    return found


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):  # per-field widths
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def run_key(model: str, seed: int, overrides: list[str]) -> str:
    return f"{model} seed={seed} " + " ".join(sorted(overrides))


def run_folder(work: Path, model: str, seed: int, overrides: list[str]) -> Path:
    """Where ``RunLog.train`` puts this run under ``work``: named after its key, and a long key
    cut short with a hash of the whole key, so that two runs never share a folder."""
    name = run_key(model, seed, overrides).replace(" ", "_").replace("/", "_")
    if len(name) > 200:
        name = name[:180] + "-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return work / name


class RunLog:
    """The records in ``path``, read afresh on each lookup: two studies may share one log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        lines = self.path.read_text().splitlines()
        return {r["key"]: r for r in (json.loads(line) for line in lines if line.strip())}

    def get(self, model: str, seed: int, overrides: list[str]) -> dict[str, Any] | None:
        return self.records().get(run_key(model, seed, overrides))

    def train(
        self,
        data: Path,
        model: str,
        seed: int,
        overrides: list[str],
        work: Path,
        *,
        threads: int | None = None,
    ) -> dict[str, Any]:
        """The logged record of this run, training it (and logging it) first if it is new.

        The run goes to a folder of ``work`` named after its key; a run a previous process left
        unfinished there is resumed from its last finished epoch (``slimctr train --resume``).
        Studies that may run at the same time use different ``work`` folders.
        """
        found = self.get(model, seed, overrides)
        if found is not None:
            return found
        config = resolve_config(
            model, overrides=[*pinned(model), *overrides], seed=seed, threads=threads
        )
        out = run_folder(work, model, seed, overrides)
        metrics = run.train(data, out, config, resume=True)
        history = RunDir(out).history()
        record = {
            "key": run_key(model, seed, overrides),
            "model": model,
            "seed": seed,
            "overrides": sorted(overrides),
            "test": metrics["test"],
            "valid": metrics["valid"],
            "best_epoch": metrics["best_epoch"],
            "epochs_run": len(history),
            "epoch_seconds": statistics.mean(h["seconds"] for h in history),
            "num_params": metrics["num_params"],
            "embedding_bytes": metrics["embedding_bytes"],
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "threads": config.threads,
            "revision": RunDir(out).versions()["git_revision"],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        return record
