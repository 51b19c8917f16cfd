"""Models, one per file; importing this package registers them all in ``MODELS``."""

from slimctr.models import dcnv2, deepfm, dnn, fm, lr
from slimctr.models.registry import MODELS, ModelEntry, register

__all__ = ["MODELS", "ModelEntry", "dcnv2", "deepfm", "dnn", "fm", "lr", "register"]
