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
>>> model = slimctr.load_model(slimctr.export(work / "run", work / "bundle"))
>>> import polars as pl
>>> rows = pl.read_parquet(work / "clicks.parquet").head(3).reverse()  # columns by name
>>> model.predict(rows).shape
(3,)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimctr.data.datasets import locate
from slimctr.data.prepare import PrepareOptions, Sources
from slimctr.data.prepare import prepare as _prepare
from slimctr.data.store import Store
from slimctr.data.synthetic import GroundTruth, SyntheticConfig, write_synthetic

if TYPE_CHECKING:
    from slimctr.bundle import Bundle


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
    """``slimctr train``: returns the run's metrics (also recorded in the run folder ``out``)."""
    from slimctr.runconfig import resolve_config
    from slimctr.training import run

    config = resolve_config(
        model,
        config_file=config_file,
        overrides=overrides,
        seed=seed,
        threads=threads,
    )
    return run.train(Path(data_dir), Path(out), config, resume=resume)


def evaluate(
    path: str | Path,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    source: str | Path | None = None,
    columns: Sequence[str] | None = None,
) -> dict[str, float]:
    """``slimctr evaluate``: AUC and logloss of a finished run or bundle, on a split of its store
    (or of ``data_dir``) or on the labelled file ``source``."""
    from slimctr.training import run

    return run.evaluate(
        Path(path),
        data_dir=Path(data_dir) if data_dir else None,
        split=split,
        source=Path(source) if source else None,
        columns=columns,
    )


def predict(
    path: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    columns: Sequence[str] | None = None,
) -> int:
    """``slimctr predict``: one probability per row of ``source``, in order; returns the count."""
    from slimctr.training import run

    return run.predict(Path(path), Path(source), Path(out), columns=columns).rows


def load_model(path: str | Path) -> Bundle:
    """The model of a finished run or an exported bundle: ``.predict(frame)`` gives click
    probabilities for a polars or pandas DataFrame (or a mapping of columns), matched by name;
    ``.schema`` and ``.config`` describe it."""
    from slimctr.training import run

    return run.load_model(path)


def export(
    run_dir: str | Path,
    out: str | Path,
    *,
    format: str = "bundle",
    data_dir: str | Path | None = None,
) -> Path:
    """``slimctr export``: copy a finished run's model bundle to the new folder ``out``, or
    write it as ONNX (``format="onnx"``, checked on the test split of ``data_dir`` or of the
    run's store); returns ``out``."""
    from slimctr.training import run

    data = None if data_dir is None else Path(data_dir)
    return Path(run.export(Path(run_dir), Path(out), format=format, data_dir=data)["out"])
