"""Properties of `slimctr prepare` on random CSV files, run through the CLI in-process.

Either the store reads back as the input (row count per split, labels, every categorical value
through vocabulary.parquet, every numeric value through the recorded mean and std) or the run
stops with exactly one `slimctr: error:` line and exit code 1. Any other exception propagates
out of `main` and fails the test. Nothing may appear outside --out (nothing at all on error).

Column kinds are inferred: `--categorical`/`--numeric` take comma-separated lists, which cannot
carry arbitrary names. The read-back follows the kind the store records, checked against the
text. `--format csv --delimiter ,` keep random names from steering format and delimiter sniffing;
`--vocab-from all` makes every value decodable (no OOV in valid/test); `--seed 0` with the
default 8:1:1 split, whose assignment the test rebuilds from the documented rule (exact counts,
seeded shuffle) and checks against the manifest's hash.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from slimctr.data.store import SPLITS, open_store

# The `cli` fixture only captures output (reset on every call), so sharing it between examples
# is safe; each example makes its own temporary folder.
BASE = settings(
    deadline=None,
    database=None,  # no .hypothesis folder in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROOT = "{root}"  # replaced by the example's folder: absolute names that point inside it
SPECIAL_NAMES = [
    "../../../ESCAPED",
    f"{ROOT}/ABS_COL",
    "<script>alert(1)</script>",
    "a/b",
    "..",
    ".",
    "",
    "label",
    'q"uote',
    "x,y",
    "ünï 名前",
    "\x00nul",
    "tab\t",
    "cr\r",
    "new\nline",
    " ",
    "n" * 300,
]
SPECIAL_CELLS = ["", "0", "1", "-3", "2.5", "-0.125", "1e3", "inf", "-inf", "nan", "NaN", "1e400"]
SPECIAL_CELLS += ['q"uote', "x,y", " a ", "ü", "cr\r", "line\nbreak", "#"]
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
FINITE = st.floats(-1e9, 1e9, allow_nan=False).map(repr)


@dataclass
class Table:
    names: list[str]  # header, the label column included
    rows: list[list[str]]
    crlf: bool
    quote_all: bool
    bom: bool
    gzip: bool

    def write(self, path: Path) -> Path:
        quoting = csv.QUOTE_ALL if self.quote_all else csv.QUOTE_MINIMAL
        lines = []
        for row in [self.names, *self.rows]:
            # With the terminator "\r\n" the writer quotes every value holding "\r" or "\n";
            # with "\n" it would leave a "\r" bare, and a bare "\r" ends a line.
            line = io.StringIO()
            csv.writer(line, lineterminator="\r\n", quoting=quoting).writerow(row)
            lines.append(line.getvalue().removesuffix("\r\n"))
        end = "\r\n" if self.crlf else "\n"
        text = end.join(lines) + end
        data = b"\xef\xbb\xbf" * self.bom + text.encode()
        path = path.with_suffix(".csv.gz" if self.gzip else ".csv")
        path.write_bytes(gzip.compress(data) if self.gzip else data)
        return path


def _tables(
    names: st.SearchStrategy[str],
    columns: st.SearchStrategy[st.SearchStrategy[str]],
    labels: st.SearchStrategy[st.SearchStrategy[str]],
) -> st.SearchStrategy[Table]:
    """Tables of 1-25 rows: a label column at a random place among 1-4 field columns. Each
    column first draws the strategy of its cells from ``columns`` (``labels``)."""

    @st.composite
    def build(draw) -> Table:
        fields = draw(st.lists(names, min_size=1, max_size=4))
        label_at = draw(st.integers(0, len(fields)))
        num_rows = draw(st.integers(1, 25))
        cells = [
            draw(st.lists(draw(columns), min_size=num_rows, max_size=num_rows)) for _ in fields
        ]
        cells.insert(label_at, draw(st.lists(draw(labels), min_size=num_rows, max_size=num_rows)))
        return Table(
            names=[*fields[:label_at], "label", *fields[label_at:]],
            rows=[list(row) for row in zip(*cells, strict=True)],
            crlf=draw(st.booleans()),
            quote_all=draw(st.booleans()),
            bom=draw(st.booleans()),
            gzip=draw(st.booleans()),
        )

    return build()


# Each column draws its cells from one kind of text, so that some columns are clean numbers.
ANY_TABLE = _tables(
    st.one_of(st.sampled_from(SPECIAL_NAMES), ANY_TEXT),
    st.sampled_from(
        [
            ANY_TEXT,
            FINITE,
            st.one_of(FINITE, st.just("")),
            st.one_of(FINITE, st.sampled_from(["", "inf", "-inf", "nan", "1e400"])),
            st.sampled_from(SPECIAL_CELLS),
        ]
    ),
    st.sampled_from(
        [
            st.sampled_from(["0", "1"]),
            st.sampled_from(["-1", "1"]),
            st.sampled_from(["0", "1", "-1", "", "2", "nan", "1.0", " 1"]),
        ]
    ),
)


def _run(cli, table: Table):
    """Prepare ``table`` in a fresh folder and, if built, check the store against it (before the
    folder goes); returns (result, store folder, paths created)."""
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        work = root / "a" / "b" / "c" / "d"  # deep enough that `..` names stay inside root
        work.mkdir(parents=True)
        table = replace(table, names=[name.replace(ROOT, str(root)) for name in table.names])
        source = table.write(work / "in")
        out = work / "store"
        before = {p for p in root.rglob("*")}
        result = cli(
            *("prepare", source, "--out", out, "--format", "csv", "--delimiter", ","),
            *("--vocab-from", "all", "--seed", "0"),
        )
        created = {p for p in root.rglob("*")} - before
        if result.code == 0:
            _check_store(out, table)
        return result, out, created


def _check_outcome(result, out: Path, created: set[Path]) -> None:
    # Outcome counts for `pytest --hypothesis-show-statistics`: how often the store is built.
    event("built" if result.code == 0 else re.sub(r"/tmp/\S+", "FILE", result.err)[16:60])
    if result.code == 0:
        assert out in created and all(p == out or out in p.parents for p in created), created
        return
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert result.code == 1 and len(lines) == 1, result.err
    assert lines[0].startswith("slimctr: error: "), result.err
    assert created == set(), created


def _assignment(num_rows: int) -> np.ndarray:
    """The documented split: exact floor(N * 0.1) valid and test rows, shuffled with the seed."""
    held_out = int(num_rows * 0.1)
    counts = [num_rows - 2 * held_out, held_out, held_out]
    assignment = np.repeat(np.arange(3, dtype=np.uint8), counts)
    np.random.default_rng(0).shuffle(assignment)
    return assignment


def _check_store(out: Path, table: Table) -> None:
    store = open_store(out)
    manifest = store.manifest
    assignment = _assignment(len(table.rows))
    assert manifest["split"]["assignment_sha256"] == hashlib.sha256(assignment).hexdigest()
    assert [manifest["rows"][s] for s in SPLITS] == np.bincount(assignment, minlength=3).tolist()
    order = np.argsort(assignment, kind="stable")  # rows keep file order within a split
    rows = [table.rows[i] for i in order]
    train = [table.rows[i] for i in np.flatnonzero(assignment == 0)]
    label_at = table.names.index("label")
    assert store.labels()[:].tolist() == [int(float(row[label_at]) == 1) for row in rows]
    fields = [(i, name) for i, name in enumerate(table.names) if i != label_at]
    assert [spec["name"] for spec in manifest["fields"]] == [name for _, name in fields]
    for (at, name), spec in zip(fields, manifest["fields"], strict=True):
        assert spec["file"].startswith("columns/field-")
        if spec["kind"] == "categorical":
            vocabulary = dict(store.vocabulary(name).select("id", "value").iter_rows())
            assert [vocabulary[int(i)] for i in store.column(name)] == [row[at] for row in rows]
        else:
            _check_numeric(store.column(name), spec, [r[at] for r in rows], [r[at] for r in train])


def _check_numeric(stored: np.ndarray, spec: dict, cells: list[str], train: list[str]) -> None:
    present = np.array([float(c) for c in train if c.strip()])
    assert all(math.isfinite(float(c)) for c in cells if c.strip())
    mean, std = (present.mean(), present.std()) if len(present) else (0.0, 0.0)
    assert spec["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert spec["std"] == pytest.approx(std, rel=1e-6, abs=1e-9)
    scale = spec["std"] or 1.0
    expected = [(float(c) - spec["mean"]) / scale if c.strip() else 0.0 for c in cells]
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-5)


@settings(BASE, max_examples=200)
@given(table=ANY_TABLE)
def test_prepare_reads_back_or_fails_cleanly(cli, table):
    _check_outcome(*_run(cli, table))


CLEAN_NAME = ANY_TEXT.filter(lambda name: "\n" not in name and name != "label")


@st.composite
def _clean_tables(draw) -> Table:
    """Valid input: distinct names without line breaks, text columns that cannot pass for
    numbers (each holds a '#'), numeric columns of finite values with one fraction."""
    text = ANY_TEXT.filter(lambda c: "\n" not in c)
    table = draw(_tables(CLEAN_NAME, st.just(text), st.just(st.sampled_from(["0", "1"]))))
    label_at = table.names.index("label")
    if len(set(table.names)) < len(table.names):
        table.names = [f"{name}#{i}" for i, name in enumerate(table.names)]
        table.names[label_at] = "label"
    for at in range(len(table.names)):
        if at == label_at:
            continue
        if draw(st.booleans()):
            numbers = st.one_of(FINITE, st.just(""))
            column = draw(st.lists(numbers, min_size=len(table.rows), max_size=len(table.rows)))
            column[0] = "0.5"
            for row, number in zip(table.rows, column, strict=True):
                row[at] = number
        else:
            table.rows[0][at] = "#" + table.rows[0][at]
    return table


@settings(BASE, max_examples=60)
@given(table=_clean_tables())
def test_prepare_accepts_and_reads_back_valid_input(cli, table):
    result, out, created = _run(cli, table)
    assert result.code == 0, result.err
    _check_outcome(result, out, created)
