"""Shared test helpers: the real-data folder, running the CLI in-process, and a small finished
run (compression and export start from it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimctr.cli import main
from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.runconfig import resolve_config
from slimctr.training import run as training

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `slimctr ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: object) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the licensed data is not here."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (licensed data is not redistributed; see the README)")
    return path


def write_text(path: Path, lines: list[str], *, gzip_it: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if gzip_it:
        import gzip

        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A folder with a tiny raw log (``raw.csv``) and its store (``data``): 4 categorical and 2
    numeric fields. The fixtures below train their runs into it."""
    tmp = tmp_path_factory.mktemp("tiny")
    synthetic = SyntheticConfig(
        rows=3_000, num_numeric=2, num_categorical=4, cardinalities=(3, 12, 40, 150),
        num_important=3, num_pairs=1, num_triples=0, seed=7,
    )  # fmt: skip
    write_synthetic(synthetic, tmp / "raw.csv")
    options = PrepareOptions(numeric=("I1", "I2"), numeric_encoding="standardize")
    prepare(Sources(train=(tmp / "raw.csv",)), tmp / "data", options)
    return tmp


@pytest.fixture(scope="session")
def trained(tiny):
    """``tiny`` with a finished DeepFM run (width 8, so a first-order term too), ``deepfm``."""
    overrides = ["train.batch_size=256", "train.epochs=2", "model.embedding_dim=8"]
    config = resolve_config("deepfm", overrides=overrides, threads=1)
    training.train(tiny / "data", tiny / "deepfm", config)
    return tiny
