"""slimctr: deeper, lighter and explainable click-through-rate models in PyTorch.

The Python API (``slimctr.synth``, ``prepare``, ``train``, ``evaluate``, ``predict``, ``export``,
``load_model``) mirrors the command line; see ``slimctr.api``. It is imported on first use so
that ``import slimctr`` stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "export", "load_model", "predict", "prepare", "synth", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from slimctr import api

        return getattr(api, name)
    raise AttributeError(f"module 'slimctr' has no attribute {name!r}")
