"""The model registry: ``candidate`` and ``champion`` aliases and the promotion rule.

Models of different data sets are kept apart at promotion: a registered model's name is what
scoring, lists, tags and the nightly refresh ask for, so versions keep the experiment's name
whatever data they were trained on (``--data``), but each run records its data set (the tag
``dataset``, the data set folder's name) and ``promote`` refuses to compare holdout metrics
of versions trained on different data sets (``--force`` moves the alias anyway, and says so).
To keep a model per data set, give each its own experiment file and name."""

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
    datasets: tuple[str | None, str | None] | None = None  # (champion's, candidate's) when they differ

    def sentence(self) -> str:
        if self.previous is None:
            return f"{self.name} v{self.version} is now champion (there was none; {self.metric} = {self.candidate_value:.4f})"
        how = "forced over" if self.forced else "replaces"
        text = (
            f"{self.name} v{self.version} ({self.metric} {self.candidate_value:.4f}) {how} "
            f"champion v{self.previous} ({self.champion_value:.4f})"
        )
        if self.datasets:
            text += f"; trained on {self.datasets[1]!r}, the previous champion on {self.datasets[0]!r}"
        return text


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


def _dataset(client: MlflowClient, version) -> str | None:
    """The data set a version was trained on, as its runs name it: the folder's name, and its
    place where recorded (``shop_a/data`` and ``shop_b/data`` share the name ``data``)."""
    tags = client.get_run(version.run_id).data.tags
    name, path = tags.get("dataset"), tags.get("dataset_path")
    return f"{name} ({path})" if path else name


def _same_dataset(ours: str | None, theirs: str | None) -> bool:
    """Equal, or equal by name where one run (trained before places were recorded) has none."""
    if ours == theirs:
        return True
    if ours is None or theirs is None:
        return False
    return (" (" not in ours or " (" not in theirs) and ours.split(" (")[0] == theirs.split(" (")[0]


def _label(client: MlflowClient, version) -> tuple[str | None, str | None]:
    """What the version predicts (params of its run): its label kind and horizon, the high-value
    kind with its quantile ("the top 20%" and "the top 5%" are different targets)."""
    params = client.get_run(version.run_id).data.params
    kind = params.get("label")
    if kind == "high_value" and params.get("high_value_quantile") is not None:
        kind = f"high_value (quantile {params['high_value_quantile']})"
    return kind, params.get("horizon_days")


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
    champion_value, other_label = None, False
    if champion is not None:
        if str(champion.version) == str(candidate.version):
            raise PortraitError(f"{name} v{candidate.version} is already the champion")
        champion_metric, champion_value = _headline(client, champion)
        labels = _label(client, candidate), _label(client, champion)
        other_label = labels[0] != labels[1] or metric != champion_metric
        if other_label and not force:
            # A spend model's Gini is no better or worse than a classifier's AUC: not the same model.
            (kind, days), (their_kind, their_days) = labels
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: it predicts {kind} over {days} days ({metric}) "
                f"and champion v{champion.version} {their_kind} over {their_days} days ({champion_metric}): "
                "train it under its own name (a copy of the experiment file with another name)"
            )
        ours, theirs = _dataset(client, candidate), _dataset(client, champion)
        if not _same_dataset(ours, theirs) and not force:
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: it was trained on the data set {ours!r} and "
                f"champion v{champion.version} on {theirs!r}, so their holdout metrics do not compare (use --force "
                "to promote anyway, or train it under its own name: a copy of the experiment file with another name)"
            )
        if value < champion_value and not force:
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: its {metric} {value:.4f} is below "
                f"champion v{champion.version}'s {champion_value:.4f} (use --force to promote anyway)"
            )
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    across = champion is not None and not _same_dataset(_dataset(client, candidate), _dataset(client, champion))
    return Promotion(
        name,
        str(candidate.version),
        str(champion.version) if champion else None,
        metric,
        value,
        champion_value,
        force and champion_value is not None and (value < champion_value or across or other_label),
        (_dataset(client, champion), _dataset(client, candidate)) if across else None,
    )
