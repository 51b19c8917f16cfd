"""`slimctr demo` end to end on the synthetic default (slow: minutes; run with `pytest -m slow`)."""

from __future__ import annotations

import pytest

from slimctr.rundir import RunDir


@pytest.mark.slow
def test_demo_tells_the_whole_story(cli, tmp_path):
    result = cli("demo", "--out", tmp_path)
    assert result.code == 0, result.err
    out = result.out
    for fragment in (
        "planted:",
        "gdcn_p FDO 0.8",
        "gdcn_p FDO 0.95",
        "gate importance:",
        "report:",
    ):
        assert fragment in out, out
    full = RunDir(tmp_path / "runs" / "gdcn_p").metrics()
    for ratio in ("0.8", "0.95"):
        shrunk = RunDir(tmp_path / "fdo" / f"run-{ratio}").metrics()
        assert shrunk["embedding_params"] < full["embedding_params"]
        assert shrunk["test"]["auc"] > 0.7  # the first-order part alone scores 0.77
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5
    # A second demo in the same folder reuses every finished run.
    again = cli("demo", "--out", tmp_path)
    assert again.code == 0 and "training gdcn_p" not in again.err
