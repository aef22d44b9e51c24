"""Loading registered models by alias, with errors that say what is missing."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.task import PERSONA_LABEL, PersonaCard, is_model_name
from portrait.errors import NotFound, PortraitError, Unavailable, first_line
from portrait.tracking import load_version, missing_store, registry_unreachable

PERSONAS = "personas"


@dataclass
class LoadedModel:
    name: str
    version: str
    alias: str
    meta: dict
    estimator: object  # PropensityClassifier, SpendRegressor, or StoredFit for personas
    run_metrics: dict

    @property
    def is_personas(self) -> bool:
        return self.meta.get("label") == PERSONA_LABEL

    @property
    def features(self) -> list[str]:
        return list(self.meta["features"])


def load_model(name: str, alias: str = "champion") -> LoadedModel:
    """The version of ``name`` that ``alias`` names, loaded (:func:`alias_version`, then
    :func:`load_model_version`)."""
    return load_model_version(name, alias_version(name, alias), alias)


def alias_version(name: str, alias: str = "champion") -> str:
    """The version ``alias`` names now (two registry reads, no model files)."""
    if not is_model_name(name):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise NotFound(f"no registered model named {shown!r}: a model's name is letters, digits, '_' or '-'")
    if problem := missing_store():
        raise Unavailable(problem)
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # a server that cannot be reached, a broken store
            raise registry_unreachable(exc) from None
        raise PortraitError(f"no registered model named {name!r}; train it first (portrait train)") from None
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # busy, unreachable
            raise registry_unreachable(exc) from None
        raise PortraitError(
            f"model {name!r} has no version with alias {alias!r}; promote one (portrait promote {name}) "
            "or choose another alias (--alias, or alias in the refresh settings)"
        ) from None
    return str(version.version)


def trained_on(name: str, alias: str = "champion") -> str | None:
    """The fingerprint of the data set the version under ``alias`` was trained on (its run's
    ``dataset_fingerprint`` tag), or None when it cannot be told (an older run, the registry
    unreadable): a caller then does what it would without it."""
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
        return client.get_run(version.run_id).data.tags.get("dataset_fingerprint")
    except MlflowException:
        return None


def load_model_version(name: str, version: str, alias: str = "champion") -> LoadedModel:
    """Version ``version`` of ``name`` (the one ``alias`` named when asked), loaded."""
    client = MlflowClient()
    try:
        registered = client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # the registry busy or unreachable, not the model
            raise registry_unreachable(exc) from None
        raise PortraitError(f"model {name!r} has no version {version}") from None
    try:
        python_model, meta = load_version(name, version)
    except (MlflowException, OSError, ValueError) as exc:  # files moved or deleted under the registry
        advice = (
            "this user may not read them: give it read access to the model store's files (retraining would "
            "register a new version, not fix the access)"
            if _denied(exc)
            else "its files were moved or deleted: train and promote it again, or restore them"
        )
        raise PortraitError(
            f"model {name!r} version {version} ({alias}) cannot be loaded from {registered.source}: {first_line(exc)}; "
            + advice
        ) from None
    if meta.get("label") == PERSONA_LABEL:
        # Through the typed card: cards stored before it gain what they lack (the same shape).
        try:
            meta = PersonaCard.from_dict({"name": name, **meta}).to_dict()
        except ValueError as exc:
            raise PortraitError(f"model {name!r} version {version}: {exc}") from None
    estimator = python_model.fit if hasattr(python_model, "fit") else python_model.estimator
    metrics = client.get_run(registered.run_id).data.metrics
    return LoadedModel(name, version, alias, meta, estimator, metrics)


def _denied(exc: BaseException) -> bool:
    """A permission error, raised as it is or wrapped by MLflow (its message kept, the error not)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PermissionError) or "[Errno 13]" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def list_models() -> list[dict]:
    client = MlflowClient()
    result = []
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        aliases = dict(model.aliases or {})
        result.append(
            {
                "name": model.name,
                "versions": sorted((str(v.version) for v in versions), key=int),  # 2 before 10
                "aliases": {alias: str(version) for alias, version in aliases.items()},
                "metrics": {
                    alias: {
                        k: v
                        for k, v in client.get_run(
                            client.get_model_version(model.name, version).run_id
                        ).data.metrics.items()
                        if k.startswith(("holdout_", "persona_", "registered_candidate_holdout_"))
                    }
                    for alias, version in aliases.items()
                },
            }
        )
    return result
