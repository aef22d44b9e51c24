"""Where runs go: a local SQLite store and artifact folder unless MLFLOW_TRACKING_URI says
otherwise. Called by the CLI entry, never at import."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from portrait.tracking import DEFAULT_ARTIFACTS, ensure_store, setup_tracking  # noqa: F401  (re-exported)

_CREATE_ATTEMPTS = 5

# What a registered model needs to load and predict: the package holding its code and the
# libraries its pickled estimator was made with, pinned to the versions it was made with.
# Declared, not inferred: MLflow's inference loads the model in a subprocess (about 4 s of a
# 14 s training run here, measured with cProfile on the 3,000-customer synthetic set) and
# left lightgbm out of the list.
MODEL_LIBRARIES = ("customer-portrait", "lightgbm", "scikit-learn", "numpy", "pandas", "scipy", "joblib", "cloudpickle")


def model_requirements() -> list[str]:
    """:data:`MODEL_LIBRARIES` pinned to the installed versions (a name alone where one is not
    installed as a distribution, e.g. the project run from a source folder)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in MODEL_LIBRARIES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def ensure_experiment(name: str, workdir: Path | None = None) -> str:
    """The experiment's id, creating it with artifacts under ``mlartifacts/`` for a local store.

    Two first runs of a new experiment may both find it missing and both create it; the store
    refuses the second (a UNIQUE constraint), which then finds the one the first created. A
    busy store (SQLite locked) is retried a few times. A new SQLite store is created first, by
    one process at a time (:func:`portrait.tracking.ensure_store`)."""
    ensure_store()
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = ((workdir or Path.cwd()).resolve() / DEFAULT_ARTIFACTS / name).as_uri()
    for attempt in range(_CREATE_ATTEMPTS):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except MlflowException:
            # Created meanwhile by another run (found on the next look), or the store was busy.
            if attempt == _CREATE_ATTEMPTS - 1:
                experiment = mlflow.get_experiment_by_name(name)
                if experiment is not None:
                    return experiment.experiment_id
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def register_pyfunc(name: str, python_model, artifacts: dict[str, str], example, output, alias: str) -> str:
    """Log ``python_model`` with its ``artifacts`` as the run's ``model``, register it under
    ``name`` (a new version), point ``alias`` at that version and return it: the one way
    propensity, spend and persona models are registered. ``artifacts["meta"]`` is the model's
    typed card (:class:`models.task.ModelCard` or :class:`models.task.PersonaCard`). A caller
    whose new version depends on the one it read (a persona fit carries ids over) holds its own
    lock from that read through this call (:func:`training.personas.run_persona_fit`)."""
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts=artifacts,
        signature=infer_signature(example, output),
        input_example=example,
        registered_model_name=name,
        pip_requirements=model_requirements(),
    )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, alias, version)
    return version
