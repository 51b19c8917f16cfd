"""Models, one per file; importing this package registers them all in ``MODELS``.

Every module of this package except the registry and the config checks is imported here, so a
new model file registers itself (and joins the common test suite) without further wiring.
"""

import importlib
import pkgutil

from slimctr.models.registry import MODELS, ModelEntry, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("registry", "checks"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "ModelEntry", "register"]
