"""Shared test helpers: the real-data folder, and running the CLI in-process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimctr.cli import main

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
