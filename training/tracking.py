"""Where runs go: a local SQLite store and artifact folder unless MLFLOW_TRACKING_URI says
otherwise. Called by the CLI entry, never at import."""

from __future__ import annotations

from pathlib import Path

import mlflow

from portrait.tracking import DEFAULT_ARTIFACTS, setup_tracking  # noqa: F401  (re-exported)


def ensure_experiment(name: str, workdir: Path | None = None) -> str:
    """The experiment's id, creating it with artifacts under ``mlartifacts/`` for a local store."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = ((workdir or Path.cwd()).resolve() / DEFAULT_ARTIFACTS / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)
