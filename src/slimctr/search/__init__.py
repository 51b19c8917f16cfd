"""Dimension search: methods that give each field its own embedding width (and, for some, keep
only some of its rows), all leaving a ``Plan`` that one runner trains.

``plan``      ``Plan``: widths, kept rows, honest sizes, provenance; JSON plus a safetensors file
``runner``    ``Start`` (a trained run or a store), applying a plan, ``train_plan``
``fdo``       FDO and the formula and uniform baseline plans
``gates``     OptEmbed's row mask and width sampling, OptFS's feature gates and temperature
``evolution`` OptEmbed's evolutionary search over per-field widths
``registry``  ``SEARCHERS``

The per-field PCA that FDO uses is ``slimctr.pca``, shared with compression.
"""

from slimctr.search.plan import Plan
from slimctr.search.registry import SEARCHERS, Searcher, SearcherEntry
from slimctr.search.runner import Start, train_plan

__all__ = ["SEARCHERS", "Plan", "Searcher", "SearcherEntry", "Start", "train_plan"]
