"""The Python face of slimctr: the same operations as the command line, on the same objects.

>>> import slimctr, tempfile, pathlib
>>> work = pathlib.Path(tempfile.mkdtemp())
>>> truth = slimctr.synth(work / "clicks.parquet", rows=5_000, seed=0)
>>> store = slimctr.prepare(work / "clicks.parquet", work / "data", dataset="synthetic")
>>> store.manifest["rows"]
{'train': 4000, 'valid': 500, 'test': 500}
>>> metrics = slimctr.train(work / "data", "lr", work / "run", overrides=["train.epochs=2"])
>>> sorted(metrics["test"])
['auc', 'logloss']
>>> slimctr.evaluate(work / "run")["auc"] == metrics["test"]["auc"]
True
>>> slimctr.predict(work / "run", work / "clicks.parquet", work / "p.csv")
5000
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slimctr.data.datasets import locate
from slimctr.data.prepare import PrepareOptions, Sources
from slimctr.data.prepare import prepare as _prepare
from slimctr.data.store import Store
from slimctr.data.synthetic import GroundTruth, SyntheticConfig, write_synthetic


def synth(path: str | Path, *, rows: int = SyntheticConfig.rows, seed: int = 0) -> GroundTruth:
    """Write the synthetic default (and ``<path>.truth.json``); returns the planted truth."""
    return write_synthetic(SyntheticConfig(rows=rows, seed=seed), Path(path))


def prepare(
    source: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    dataset: str | None = None,
    valid: Sequence[str | Path] = (),
    test: Sequence[str | Path] = (),
    options: PrepareOptions | None = None,
    overwrite: bool = False,
) -> Store:
    """``slimctr prepare``: encode raw files (or a registered dataset) into a store."""
    paths = [Path(source)] if isinstance(source, str | Path) else [Path(p) for p in source]
    if dataset:
        located = locate(dataset, paths)
        sources, base, attach = located.sources, located.options, located.attach
    else:
        sources = Sources(
            train=tuple(paths), valid=tuple(map(Path, valid)), test=tuple(map(Path, test))
        )
        base, attach = PrepareOptions(), {}
    chosen = options or base  # given options replace the dataset protocol as a whole
    store, _ = _prepare(sources, Path(out), chosen, overwrite=overwrite, attach=attach)
    return store


def train(
    data_dir: str | Path,
    model: str,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    seed: int | None = None,
    threads: int | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """``slimctr train``: returns the run's metrics (also written to ``out/metrics.json``)."""
    from slimctr.training import run

    config = run.resolve_config(
        model,
        config_file=Path(config_file) if config_file else None,
        overrides=overrides,
        seed=seed,
        threads=threads,
    )
    return run.train(Path(data_dir), Path(out), config, resume=resume)


def evaluate(
    run_dir: str | Path, *, data_dir: str | Path | None = None, split: str = "test"
) -> dict[str, float]:
    """``slimctr evaluate``: AUC and logloss of a finished run's best model on a split."""
    from slimctr.training import run

    return run.evaluate(Path(run_dir), Path(data_dir) if data_dir else None, split)


def predict(run_dir: str | Path, source: str | Path, out: str | Path) -> int:
    """``slimctr predict``: one probability per row of ``source``, in order; returns the count."""
    from slimctr.training import run

    return run.predict(Path(run_dir), Path(source), Path(out))
