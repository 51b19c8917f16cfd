"""The registered dimension searches, like ``MODELS`` (``slimctr searchers`` lists them).

A searcher is built from its typed config, ``fit(start, work)`` runs its stages on a ``Start``
(keeping what it needs to resume under ``work``) and returns itself with the result in ``plan_``
(scikit-learn's convention for fitted attributes) and, in ``initial_``, the weights the retrained
model starts from (None: fresh ones), which ``train_plan`` takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from torch import Tensor

from slimctr.search.dnis import DNIS, DNISConfig
from slimctr.search.fdo import FDO, FDOConfig
from slimctr.search.ihas import IHAS, IHASConfig
from slimctr.search.optembed import OptEmbed, OptEmbedConfig
from slimctr.search.optfs import OptFS, OptFSConfig
from slimctr.search.pep import PEP, PEPConfig
from slimctr.search.plan import Plan
from slimctr.search.runner import Start


class Searcher(Protocol):
    name: str
    plan_: Plan
    initial_: dict[str, Tensor] | None

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
    "dnis": SearcherEntry(
        DNISConfig,
        DNIS,
        "store",
        "DNIS (2020): soft selection weights per frequency block and dimension, learned on "
        "validation batches, then a magnitude cut of the table and fine-tuning",
    ),
    "ihas": SearcherEntry(
        IHASConfig,
        IHAS,
        "store",
        "iHAS-style (our reading of CIKM 2023; no code published): per-sample block gates from a "
        "controller, k-means groups, one model per group behind the frozen router",
    ),
    "optembed": SearcherEntry(
        OptEmbedConfig,
        OptEmbed,
        "store",
        "OptEmbed (CIKM 2022): a supernet learns row-pruning thresholds and trains every width, "
        "evolution picks per-field widths, retraining from the initial weights",
    ),
    "optfs": SearcherEntry(
        OptFSConfig,
        OptFS,
        "store",
        "OptFS (WWW 2023): a gate per feature value sharpened by a temperature schedule keeps "
        "the values that help, retraining from a rewound checkpoint",
    ),
    "pep": SearcherEntry(
        PEPConfig,
        PEP,
        "store",
        "PEP (ICLR 2021): learned soft thresholds on every embedding entry until the tables keep "
        "a share of their entries, retraining that mask from the initial weights",
    ),
}
