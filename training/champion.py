"""The champion judged on the candidate's holdout, at training time.

A version's holdout metric is measured on its own holdout window: the champion trained last
month was judged on an earlier window, other customers and another base rate, and a ROC AUC of
one window says little about another's. So ``portrait train`` scores the current champion (of
the same name, label and data set) on the new run's holdout customers, as of the same cutoff
and with the same labels, with the features it was trained on (rebuilt with its own settings
and vocabulary when they differ from the run's), and logs both on the same rows with the
paired bootstrap interval of the difference. ``promote`` then compares those two figures
(training.registry); it does not compare a candidate with a champion judged on another window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features.build import build_features
from features.catalogue import Vocabulary
from features.config import FeatureConfig
from models.task import learned_until_of, task_for_label
from portrait.errors import PortraitError
from portrait.tracking import load_version
from training.config import ExperimentConfig
from training.data import TrainingData, resolve_dataset
from training.evaluate import BOOTSTRAP_RESAMPLES, FitResult
from training.metrics import headline_value, paired_bootstrap_auc_margin, paired_bootstrap_gini_margin, shown

CHAMPION = "champion"
COMPARED_VERSION_TAG = "champion_compared_version"  # the champion version judged on this run's holdout


def champion_metric(headline: str) -> str:
    """The run metric holding the champion's ``headline`` on the run's holdout."""
    return f"champion_{headline}"


@dataclass(frozen=True)
class ChampionComparison:
    """The champion and the run's model on the run's holdout customers and labels."""

    version: str
    headline: str  # holdout_roc_auc or holdout_gini
    holdout: dt.date
    champion_value: float
    margin: float  # the run's model minus the champion
    low: float
    high: float

    def metrics(self) -> dict[str, float]:
        return {
            champion_metric(self.headline): self.champion_value,
            f"{self.headline}_margin_over_champion": self.margin,
            f"{self.headline}_margin_over_champion_ci_low": self.low,
            f"{self.headline}_margin_over_champion_ci_high": self.high,
        }

    def sentence(self, title: str) -> str:
        return (
            f"champion v{self.version} on this holdout ({self.holdout}): {title} {self.champion_value:.4f}; "
            f"this model minus it {shown(self.margin):+.4f}, 95% paired bootstrap interval "
            f"[{shown(self.low):+.4f}, {shown(self.high):+.4f}]"
        )


def _champion_version(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no champion yet
        return None


def target_of(params: dict) -> tuple[str | None, str | None]:
    """What a run's model predicts, from its params: the label kind (a high-value kind with its
    quantile: "the top 20%" and "the top 5%" are different targets) and the horizon in days.
    Runs logged before the quantile was a param read as the plain kind."""
    kind = params.get("label")
    if kind == "high_value" and params.get("high_value_quantile") is not None:
        kind = f"high_value (quantile {params['high_value_quantile']})"
    return kind, params.get("horizon_days")


def _same_target(params: dict, config: ExperimentConfig) -> bool:
    label = config.label
    wanted = {"label": label.kind, "horizon_days": str(label.horizon_days)}
    if "high_value_quantile" in params:  # runs logged before it was a param read as the plain kind
        wanted["high_value_quantile"] = str(label.high_value_quantile)
    return target_of(params) == target_of(wanted)


def learned_until(params: dict) -> dt.date | None:
    """The end of the latest label window a run's model learned from: its last training
    cutoff plus the horizon (with one cutoff of customer folds, that cutoff: the final model is
    fitted on all its rows)."""
    try:
        cutoffs = [dt.date.fromisoformat(c) for c in params.get("train_cutoffs", "-").split(",") if c and c != "-"]
        return learned_until_of(cutoffs, dt.date.fromisoformat(params["holdout_cutoff"]), params["horizon_days"])
    except (KeyError, ValueError):
        return None


def _champion_features(meta: dict, config: ExperimentConfig, data: TrainingData, result: FitResult) -> pd.DataFrame:
    """The champion's features for the run's holdout rows, in their order: the run's own when
    built alike, else rebuilt as of the holdout cutoff with the champion's settings."""
    needed = list(meta["features"])
    alike = (
        meta.get("vocabulary") == data.vocabulary.to_dict()
        and meta.get("feature_config") == config.to_dict()["features"]
        and set(needed) <= set(result.holdout.columns)
    )
    if alike:
        return result.holdout[needed]
    built = build_features(
        resolve_dataset(config.data, config.demo_path),
        data.split.holdout,
        FeatureConfig.from_dict(meta.get("feature_config") or {}),
        vocabulary=Vocabulary.from_dict(meta["vocabulary"]) if meta.get("vocabulary") else None,
        families=meta.get("families") or None,
    )
    missing = [c for c in needed if c not in built.columns]
    if missing:
        raise PortraitError(f"this data set no longer provides {len(missing)} of its features ({missing[:5]})")
    ids = data.frame.loc[result.holdout.index, "customer_id"]
    built = built.set_index("customer_id") if "customer_id" in built.columns else built
    absent = ~ids.isin(built.index)
    if absent.any():
        raise PortraitError(f"{int(absent.sum()):,} holdout customers have no features built its way")
    return built.loc[ids.to_numpy(), needed].set_axis(result.holdout.index)


def compare_with_champion(
    config: ExperimentConfig, data: TrainingData, result: FitResult, seed: int = 0
) -> tuple[ChampionComparison | None, str | None]:
    """The champion of ``config.name`` judged on ``result``'s holdout beside the run's model,
    or None with a note saying why not (None and no note when there is no champion)."""
    client = MlflowClient()
    champion = _champion_version(client, config.name)
    if champion is None:
        return None, None
    run = client.get_run(champion.run_id).data
    where = f"champion v{champion.version} not judged on this holdout"
    if not _same_target(run.params, config):
        return None, f"{where}: it predicts another label or horizon"
    if run.tags.get("dataset") != data.dataset_name:
        return None, f"{where}: it was trained on the data set {run.tags.get('dataset')!r}"
    seen = learned_until(run.params)
    if seen is None or seen > data.split.holdout:
        return None, f"{where}: it learned from outcomes until {seen}, after this holdout's cutoff {data.split.holdout}"
    y = result.holdout_y
    if len(np.unique(y)) < 2 and config.label.is_classification:
        return None, f"{where}: the holdout has one class only"
    try:
        python_model, meta = load_version(config.name, str(champion.version))
        X = _champion_features(meta, config, data, result)
        scores = task_for_label(meta["label"]).predict(python_model.estimator, X)
    except (MlflowException, OSError, ValueError, KeyError, PortraitError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"{where}: {first}"
    headline = config.label.task.headline_metric
    spend = not config.label.is_classification
    bootstrap = paired_bootstrap_gini_margin if spend else paired_bootstrap_auc_margin
    value = headline_value(y, scores, spend)
    margin, low, high = bootstrap(y, result.holdout_prediction, scores, BOOTSTRAP_RESAMPLES, seed)
    return ChampionComparison(str(champion.version), headline, data.split.holdout, value, margin, low, high), None
