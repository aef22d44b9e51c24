"""The model registry: ``candidate`` and ``champion`` aliases and the promotion rule."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from portrait.errors import PortraitError
from training.train import CANDIDATE, CHAMPION


@dataclass
class Promotion:
    name: str
    version: str
    previous: str | None
    metric: str
    candidate_value: float
    champion_value: float | None
    forced: bool

    def sentence(self) -> str:
        if self.previous is None:
            return f"{self.name} v{self.version} is now champion (there was none; {self.metric} = {self.candidate_value:.4f})"
        how = "forced over" if self.forced else "replaces"
        return (
            f"{self.name} v{self.version} ({self.metric} {self.candidate_value:.4f}) {how} "
            f"champion v{self.previous} ({self.champion_value:.4f})"
        )


def _version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _headline(client: MlflowClient, version) -> tuple[str, float]:
    run = client.get_run(version.run_id)
    metric = run.data.tags.get("headline_metric") or (
        "holdout_gini" if run.data.params.get("label") == "future_spend" else "holdout_roc_auc"
    )
    if metric not in run.data.metrics:
        raise PortraitError(f"run {version.run_id} of version {version.version} has no metric {metric}")
    return metric, run.data.metrics[metric]


def promote(name: str, version: str | None = None, force: bool = False) -> Promotion:
    """Move ``champion`` to ``version`` (default: the ``candidate``) when its holdout metric is
    at least the champion's, or when forced; otherwise refuse and say why."""
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise PortraitError(f"no registered model named {name!r}; train it first (portrait train)") from None
    if version is None:
        candidate = _version_by_alias(client, name, CANDIDATE)
        if candidate is None:
            raise PortraitError(f"{name} has no {CANDIDATE!r} version; pass --version")
    else:
        try:
            candidate = client.get_model_version(name, str(version))
        except MlflowException:
            raise PortraitError(f"{name} has no version {version}") from None
    metric, value = _headline(client, candidate)
    champion = _version_by_alias(client, name, CHAMPION)
    champion_value = None
    if champion is not None:
        if str(champion.version) == str(candidate.version):
            raise PortraitError(f"{name} v{candidate.version} is already the champion")
        _, champion_value = _headline(client, champion)
        if value < champion_value and not force:
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: its {metric} {value:.4f} is below "
                f"champion v{champion.version}'s {champion_value:.4f} (use --force to promote anyway)"
            )
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    return Promotion(
        name,
        str(candidate.version),
        str(champion.version) if champion else None,
        metric,
        value,
        champion_value,
        force and champion_value is not None and value < champion_value,
    )
