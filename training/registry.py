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
from portrait.tracking import registry_unreachable
from training.champion import CHAMPION, COMPARED_VERSION_TAG, champion_metric, target_of
from training.evaluate import REGISTERED_OWN
from training.train import CANDIDATE


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
    basis: str | None = None  # where both were judged, when the champion was judged on the candidate's holdout
    apart: bool = False  # forced over a champion measured on another holdout
    unchanged: bool = False  # the version was the champion already: promoting it again changes nothing
    below_peer: tuple[str, float] | None = None  # (best peer, margin) when the version trailed it on its holdout

    def sentence(self) -> str:
        return self._sentence() + (
            f"; note: on its holdout it trails the best peer ({self.below_peer[0]}) by {-self.below_peer[1]:.4f} "
            f"in {self.metric.removeprefix('holdout_')}"
            if self.below_peer and not self.unchanged
            else ""
        )

    def _sentence(self) -> str:
        if self.unchanged:
            return f"{self.name} v{self.version} is already the champion ({self.metric} {self.candidate_value:.4f}); nothing changed"
        if self.previous is None:
            return f"{self.name} v{self.version} is now champion (there was none; {self.metric} = {self.candidate_value:.4f})"
        how = "forced over" if self.forced else "replaces"
        text = (
            f"{self.name} v{self.version} ({self.metric} {self.candidate_value:.4f}) {how} "
            f"champion v{self.previous} ({self.champion_value:.4f})"
        )
        if self.basis:
            text += f", both on {self.basis}"
        if self.apart:
            text += "; the two were measured on different holdouts"
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
    # With folds of customers that chose different candidates, the headline scores each fold
    # with its own choice (the procedure); the registered model's own out-of-fold figure is what
    # a promotion compares (a user's test: a logistic v7 at 0.7724 was refused against a
    # champion whose registered LightGBM scored 0.7708, by the champion's mixture's 0.7731).
    return metric, run.data.metrics.get(f"{REGISTERED_OWN}{metric}", run.data.metrics[metric])


def _on_one_holdout(client, name, candidate, champion, metric, champion_value, force) -> tuple[float, str | None, bool]:
    """The champion's ``metric`` to compare with the candidate's, where both were measured, and
    whether the two figures are of different holdouts (compared only when forced).

    When the candidate's run judged this champion on its own holdout (training.champion), that
    figure: the same customers, window and labels. Otherwise the champion's own holdout metric,
    which compares only when both runs had the same holdout cutoff on the same data (else a
    refusal, unless forced)."""
    run = client.get_run(candidate.run_id).data
    judged = champion_metric(metric)
    if run.tags.get(COMPARED_VERSION_TAG) == str(champion.version) and judged in run.metrics:
        return run.metrics[judged], f"the candidate's holdout of {run.params.get('holdout_cutoff')}", False
    theirs = client.get_run(champion.run_id).data.params
    ours = run.params
    windows = ours.get("holdout_cutoff"), theirs.get("holdout_cutoff")
    data = ours.get("dataset_fingerprint"), theirs.get("dataset_fingerprint")
    apart = windows[0] != windows[1] or data[0] != data[1]
    if apart and not force:
        what = (
            f"the holdout of {windows[0]} and champion v{champion.version}'s on that of {windows[1]}"
            if windows[0] != windows[1]
            else f"a holdout of {windows[0]} on other contents of the data set than champion v{champion.version}'s"
        )
        older = None not in windows and windows[0] < windows[1]
        remedy = (
            "a holdout older than the champion's cannot judge it (it learned from those outcomes)"
            if older
            else f"train it again while v{champion.version} is champion (portrait train judges the champion on "
            "the new holdout)"
        )
        raise PortraitError(
            f"refusing to promote {name} v{candidate.version}: its {metric} was measured on {what}, other customers "
            f"and outcomes, so the two do not compare; {remedy}, or use --force to promote anyway"
        )
    return champion_value, None, apart


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
    """What the version predicts: :func:`training.champion.target_of` of its run's params."""
    return target_of(client.get_run(version.run_id).data.params)


def promote(name: str, version: str | None = None, force: bool = False) -> Promotion:
    """Move ``champion`` to ``version`` (default: the ``candidate``) when its holdout metric is
    at least the champion's, or when forced; otherwise refuse and say why. Promoting the
    champion itself changes nothing and is no error (``unchanged``), so a retried job passes."""
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # a server that cannot be reached: not a missing model
            raise registry_unreachable(exc) from None
        raise PortraitError(f"no registered model named {name!r}; train it first (portrait train)") from None
    if version is None:
        candidate = _version_by_alias(client, name, CANDIDATE)
        if candidate is None:
            raise PortraitError(f"{name} has no {CANDIDATE!r} version; pass --version")
    else:
        try:
            candidate = client.get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise registry_unreachable(exc) from None
            raise PortraitError(f"{name} has no version {version}") from None
    metric, value = _headline(client, candidate)
    champion = _version_by_alias(client, name, CHAMPION)
    champion_value, other_label, basis, apart = None, False, None, False
    if champion is not None:
        if str(champion.version) == str(candidate.version):  # a repeated promote (a retried job): no error
            return Promotion(name, str(candidate.version), None, metric, value, None, False, unchanged=True)
        their_metric, champion_value = _headline(client, champion)
        labels = _label(client, candidate), _label(client, champion)
        other_label = labels[0] != labels[1] or metric != their_metric
        if other_label and not force:
            # A spend model's Gini is no better or worse than a classifier's AUC: not the same model.
            (kind, days), (their_kind, their_days) = labels
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: it predicts {kind} over {days} days ({metric}) "
                f"and champion v{champion.version} {their_kind} over {their_days} days ({their_metric}): "
                "train it under its own name (a copy of the experiment file with another name)"
            )
        ours, theirs = _dataset(client, candidate), _dataset(client, champion)
        if not _same_dataset(ours, theirs) and not force:
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: it was trained on the data set {ours!r} and "
                f"champion v{champion.version} on {theirs!r}, so their holdout metrics do not compare (use --force "
                "to promote anyway, or train it under its own name: a copy of the experiment file with another name)"
            )
        champion_value, basis, apart = _on_one_holdout(client, name, candidate, champion, metric, champion_value, force)
        if value < champion_value and not force:
            raise PortraitError(
                f"refusing to promote {name} v{candidate.version}: its {metric} {value:.4f} is below "
                f"champion v{champion.version}'s {champion_value:.4f}{f' on {basis}' if basis else ''} "
                "(use --force to promote anyway)"
            )
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    run = client.get_run(candidate.run_id)
    margin = run.data.metrics.get(
        f"{REGISTERED_OWN}{metric}_margin_over_best_peer", run.data.metrics.get(f"{metric}_margin_over_best_peer")
    )
    below_peer = (run.data.tags.get("best_peer", "?"), float(margin)) if margin is not None and margin < 0 else None
    across = champion is not None and not _same_dataset(_dataset(client, candidate), _dataset(client, champion))
    return Promotion(
        name,
        str(candidate.version),
        str(champion.version) if champion else None,
        metric,
        value,
        champion_value,
        force and champion_value is not None and (value < champion_value or across or other_label or apart),
        (_dataset(client, champion), _dataset(client, candidate)) if across else None,
        basis,
        force and apart,
        below_peer=below_peer,
    )
