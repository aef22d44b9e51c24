"""Where MLflow runs and models live: a local SQLite store and artifact folder unless
MLFLOW_TRACKING_URI says otherwise. Called by CLI entries, never at import; shared by training
and serving (which must not import training)."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

DEFAULT_STORE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def setup_tracking(workdir: Path | None = None) -> str:
    """Point MLflow at ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<workdir>/mlflow.db``."""
    # MLflow and Optuna configure their loggers when imported; quiet them once they are.
    import logging

    import optuna

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        workdir = (workdir or Path.cwd()).resolve()
        uri = f"sqlite:///{workdir / DEFAULT_STORE}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri
