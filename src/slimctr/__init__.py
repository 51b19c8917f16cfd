"""slimctr: deeper, lighter and explainable click-through-rate models in PyTorch."""

__version__ = "0.1.0"
