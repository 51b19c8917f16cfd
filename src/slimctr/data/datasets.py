"""Registered datasets: each knows its files, its schema and its published protocol.

``slimctr prepare --dataset NAME [PATH ...]`` takes the dataset's folder or files; with no path it
looks in ``$SLIMCTR_DATA/<name>`` (default ``./data/<name>``). Options given on the command line
override the dataset's protocol (e.g. ``--min-count``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimctr.data.formats import RawSource, detect_format, first_line
from slimctr.data.prepare import PrepareOptions, Sources
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.errors import SlimctrError, shown

FRAPPE_FIELDS = (
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
CRITEO_NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))


@dataclass(frozen=True)
class Located:
    """A dataset resolved to files: what to read, how, and extra files to keep in the store."""

    sources: Sources
    options: PrepareOptions
    attach: dict[str, Path]


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    looks_for: str  # file names tried inside the dataset folder, for `slimctr datasets`
    locate: Callable[[list[Path], bool, int], Located]  # (paths, resplit, seed) -> Located


def data_root() -> Path:
    return Path(os.environ.get("SLIMCTR_DATA", "data"))


def locate(name: str, paths: list[Path], *, resplit: bool = False, seed: int = 0) -> Located:
    if name not in DATASETS:
        raise SlimctrError(f"unknown dataset {shown(name)} (registered: {', '.join(DATASETS)})")
    return DATASETS[name].locate(paths or [data_root() / name], resplit, seed)


def _find(folder: Path, candidates: tuple[str, ...], dataset: str) -> Path:
    for candidate in candidates:
        for path in (folder / candidate, folder / f"{candidate}.gz"):
            if path.is_file():
                return path
    raise SlimctrError(
        f"no {dataset} file in {folder} (looked for {', '.join(candidates)}, optionally .gz)"
    )


def _single_folder(paths: list[Path]) -> Path | None:
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0]
    if len(paths) == 1 and not paths[0].exists():
        raise SlimctrError(f"no such file or directory: {paths[0]}")
    return None


_FRAPPE_LAYOUTS = (
    ("Frappe_x1_csv", ("train.reconstructed.csv", "train.csv"), ("valid.csv",), ("test.csv",)),
    (
        "libfm",
        ("frappe.train.reconstructed.libfm", "frappe.train.libfm"),
        ("frappe.validation.libfm",),
        ("frappe.test.libfm",),
    ),
    (
        ".",
        (
            "train.reconstructed.csv",
            "train.csv",
            "frappe.train.reconstructed.libfm",
            "frappe.train.libfm",
        ),
        ("valid.csv", "frappe.validation.libfm"),
        ("test.csv", "frappe.test.libfm"),
    ),
)


def _locate_frappe(paths: list[Path], resplit: bool, seed: int) -> Located:
    """Frappe_x1: the published 7:2:1 file split, or with ``resplit`` the paper's 8:1:1 re-split."""
    folder = _single_folder(paths)
    if folder is None:
        if len(paths) != 3:
            raise SlimctrError("frappe takes its folder or three files: train, valid, test")
        files = paths
    else:
        for sub, *names in _FRAPPE_LAYOUTS:
            try:
                files = [_find(folder / sub, n, "frappe") for n in names]
                break
            except SlimctrError:
                continue
        else:
            raise SlimctrError(
                f"no Frappe files in {folder} (expected Frappe_x1_csv/*.csv or "
                "libfm/frappe.*.libfm, optionally .gz)"
            )
    sources = (
        Sources(train=tuple(files))
        if resplit
        else Sources(train=(files[0],), valid=(files[1],), test=(files[2],))
    )
    options = PrepareOptions(names=("label", *FRAPPE_FIELDS), categorical=FRAPPE_FIELDS, seed=seed)
    return Located(sources, options, {})


def _locate_criteo(paths: list[Path], resplit: bool, seed: int) -> Located:
    """Criteo: label, I1-I13 bucketed by floor(ln(v)^2), C1-C26, min count 10, random 8:1:1."""
    folder = _single_folder(paths)
    files = [_find(folder, ("train.txt", "criteo_sample.txt"), "criteo")] if folder else paths
    first_line_has_header = detect_format(files[0]).kind == "csv" and _starts_with_label(files[0])
    options = PrepareOptions(
        names=("label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL),
        header=first_line_has_header,
        numeric=CRITEO_NUMERIC,
        categorical=CRITEO_CATEGORICAL,
        numeric_encoding="bucket",
        min_count=10,
        seed=seed,
    )
    return Located(Sources(train=tuple(files)), options, {})


def _locate_avazu(paths: list[Path], resplit: bool, seed: int) -> Located:
    """Avazu: CSV with header; `id` dropped, `click` the label, 22 categorical fields, min count 5.

    The raw `hour` (YYMMDDHH) is kept as one categorical field, as in the GDCN reference loader,
    which is why there are 22 fields where the paper says 23.
    """
    folder = _single_folder(paths)
    files = [_find(folder, ("train", "train.csv"), "avazu")] if folder else paths
    options = PrepareOptions(label="click", drop=("id",), numeric=(), min_count=5, seed=seed)
    return Located(Sources(train=tuple(files)), options, {})


def _locate_synthetic(paths: list[Path], resplit: bool, seed: int) -> Located:
    """The embedded default; with no file, generates it (seeded) once under the data root."""
    if paths == [data_root() / "synthetic"]:
        config = SyntheticConfig(seed=seed)
        file = paths[0] / f"synthetic-{config.rows}-seed{seed}.parquet"
        if not file.is_file() or not _truth(file).is_file():
            file.parent.mkdir(parents=True, exist_ok=True)
            write_synthetic(config, file)
        paths = [file]
    attach = {"truth.json": _truth(paths[0])} if _truth(paths[0]).is_file() else {}
    columns = RawSource(paths[0], detect_format(paths[0])).columns
    numeric = tuple(c for c in columns if c.startswith("I"))  # counts, as Criteo's I1..I13
    options = PrepareOptions(numeric=numeric, numeric_encoding="bucket", min_count=2, seed=seed)
    return Located(Sources(train=tuple(paths)), options, attach)


def _truth(path: Path) -> Path:
    return path.with_name(path.name + ".truth.json")


def _starts_with_label(path: Path) -> bool:
    return first_line(path).split(",")[0].split("\t")[0].strip().lower() == "label"


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "synthetic",
            "Criteo-like synthetic data with planted important fields and "
            "interactions (the embedded default; generated when absent)",
            "synthetic-<rows>-seed<seed>.parquet",
            _locate_synthetic,
        ),
        Dataset(
            "frappe",
            "Frappe_x1 (BARS): 10 categorical fields, published 7:2:1 split "
            "(--split re-splits the concatenation 8:1:1 as the GDCN paper does)",
            "Frappe_x1_csv/{train.reconstructed,train,valid,test}.csv or "
            "libfm/frappe.{train,validation,test}.libfm",
            _locate_frappe,
        ),
        Dataset(
            "criteo",
            "Criteo display ads: 13 bucketed integers + 26 categoricals, "
            "min count 10, random 8:1:1",
            "train.txt, criteo_sample.txt",
            _locate_criteo,
        ),
        Dataset(
            "avazu",
            "Avazu mobile ads: 22 categorical fields, min count 5, random 8:1:1",
            "train, train.csv",
            _locate_avazu,
        ),
    )
}


def with_overrides(options: PrepareOptions, **given: Any) -> PrepareOptions:
    """The dataset's options with the command line's explicit choices on top."""
    return replace(options, **{k: v for k, v in given.items() if v is not None})
