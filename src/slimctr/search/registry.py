"""The registered dimension searches, like ``MODELS`` (``slimctr searchers`` lists them).

A searcher is built from its typed config, ``fit(start, work)`` runs its stages on a ``Start``
(keeping what it needs to resume under ``work``) and returns itself with the result in ``plan_``
(scikit-learn's convention for fitted attributes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from slimctr.search.fdo import FDO, FDOConfig
from slimctr.search.plan import Plan
from slimctr.search.runner import Start


class Searcher(Protocol):
    name: str
    plan_: Plan

    def fit(self, start: Start, work: Path | None = None) -> Searcher: ...


@dataclasses.dataclass(frozen=True)
class SearcherEntry:
    """A search method: its settings, the searcher they build, what it starts from (a trained
    ``run``, or a ``store`` with settings) and one line on what it does."""

    config: type
    searcher: Callable[[Any], Searcher]
    starts_from: Literal["run", "store"]
    summary: str


SEARCHERS: dict[str, SearcherEntry] = {
    "fdo": SearcherEntry(
        FDOConfig,
        FDO,
        "run",
        "field-level dimension optimisation (GDCN): PCA of each trained table, the smallest "
        "width keeping a share of its variance",
    ),
}
