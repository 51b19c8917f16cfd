"""Hyperparameter tuning on Optuna: search spaces (``space``) and ``slimctr tune`` (``tune``)."""
