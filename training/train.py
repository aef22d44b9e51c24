"""``portrait train``: one experiment config into one MLflow run and a registered model version
with the alias ``candidate``."""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd

from models.drift import reference_distributions
from models.pyfunc import PortraitModel, serving_frame
from models.task import ModelCard, learned_until_of
from portrait.errors import ConfigError, first_line
from training import plots
from training.champion import COMPARED_VERSION_TAG, ChampionComparison, compare_with_champion
from training.config import ExperimentConfig
from training.data import TrainingData, label_notes, prepare
from training.evaluate import FitResult, NestedParams, fit_and_evaluate
from training.tracking import ensure_experiment, ensure_store, register_pyfunc

CANDIDATE = "candidate"
SHAP_SAMPLE_ROWS = 2000


@dataclass
class RunSummary:
    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    metrics: dict[str, float]
    tracking_uri: str
    train_cutoffs: tuple[dt.date, ...] = ()
    validation_cutoff: dt.date | None = None
    holdout_cutoff: dt.date | None = None
    horizon_days: int | None = None
    holdout_rows: int = 0
    validation_scheme: str = ""
    best_peer: str | None = None
    peer_labels: dict[str, str] = field(default_factory=dict)  # peer name -> what a person reads
    notes: tuple[str, ...] = ()  # e.g. a degenerate BG/NBD fit
    model_type: str = "lightgbm"  # the candidate chosen on validation and registered
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> its metrics
    champion: ChampionComparison | None = None  # the champion judged on this run's holdout
    can_backtest: bool = True  # False with fixed [cutoffs] dates: portrait backtest refuses them


def headline_metric(config: ExperimentConfig) -> str:
    return config.label.task.headline_metric


@contextlib.contextmanager
def lightgbm_errors_said(config: ExperimentConfig):
    """LightGBM stopping on what the machine or the ``[model]`` values cannot do (``device_type =
    "gpu"`` without an OpenCL device) as one message naming the experiment, not a traceback
    after the data was read (a user's test)."""
    from lightgbm.basic import LightGBMError

    try:
        yield
    except LightGBMError as exc:
        where = config.source or config.name
        raise ConfigError(
            f"{where}: LightGBM stopped while fitting: {first_line(exc)} (check the [model] values)"
        ) from None


def train_experiment(
    config: ExperimentConfig,
    params: dict | NestedParams | None = None,
    progress=None,
    data: TrainingData | None = None,
    parent_tags: dict | None = None,
) -> RunSummary:
    ensure_store()  # a store that cannot take the run is said before the data is read and fitted
    data = data or prepare(config, progress=progress)
    if progress:
        progress("fitting")
    with lightgbm_errors_said(config):
        result = fit_and_evaluate(config, data, params)
    experiment_id = ensure_experiment(config.name)
    if progress:
        progress("judging the champion on this holdout")
    champion, champion_note = compare_with_champion(config, data, result)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.name}-train") as run:
        _log_run(config, data, result, params.final if isinstance(params, NestedParams) else params, parent_tags or {})
        if champion is not None:
            mlflow.log_metrics(champion.metrics())
            mlflow.set_tag(COMPARED_VERSION_TAG, champion.version)
        _log_candidates(config, experiment_id, result)
        if progress:
            progress("logging the model")
        version = _log_model(config, data, result)
    split = data.split
    return RunSummary(
        run.info.run_id,
        experiment_id,
        config.name,
        version,
        result.metrics,
        mlflow.get_tracking_uri(),
        train_cutoffs=split.train,
        validation_cutoff=split.validation,
        holdout_cutoff=split.holdout,
        horizon_days=config.label.horizon_days,
        holdout_rows=len(result.holdout_y),
        validation_scheme=result.tags.get("validation_scheme", ""),
        best_peer=result.tags.get("best_peer"),
        peer_labels={p.name: p.label for p in result.peers},
        notes=label_notes(config, data)
        + tuple(f"{p.label}: {note}" for p in result.peers for note in p.notes)
        + result.notes
        + ((champion_note,) if champion_note else ()),
        model_type=result.model_type,
        candidates=result.candidates,
        champion=champion,
        can_backtest=not config.cutoffs.dates,
    )


def _log_run(config: ExperimentConfig, data: TrainingData, result: FitResult, params, tags) -> None:
    split = data.split
    mlflow.set_tags(
        {
            "headline_metric": headline_metric(config),
            "label": config.label.kind,
            "dataset": data.dataset_name,
            "dataset_fingerprint": data.dataset_fingerprint,
            "dataset_path": data.dataset_root,
            **result.tags,
            **tags,
        }
    )
    if data.history_flags:
        mlflow.log_dict({k: list(v) for k, v in data.history_flags.items()}, "report/bgnbd_flags_by_cutoff.json")
    model_params = {**config.model_params, **(params or {})}
    mlflow.log_params({f"model_{k}": v for k, v in model_params.items()})
    mlflow.log_params(
        {
            "label": config.label.kind,
            "horizon_days": config.label.horizon_days,
            "high_value_quantile": config.label.high_value_quantile,
            "families": ",".join(config.families),
            "train_cutoffs": ",".join(c.isoformat() for c in split.train) or "-",
            "validation_cutoffs": ",".join(c.isoformat() for c in split.validation_cutoffs) or "-",
            "validation_customers": config.validation.customers,
            "model_type": config.model_type,
            "monotone": config.monotone,
            "holdout_cutoff": split.holdout.isoformat(),
            "calibration": config.validation.calibration,
            "features": len(data.feature_columns),
            "dataset_fingerprint": data.dataset_fingerprint,
        }
    )
    counts = {"rows_holdout": len(data.rows(split.holdout)), "rows_train": len(data.train_rows) if split.train else 0}
    mlflow.log_metrics({k: float(v) for k, v in {**result.metrics, **counts}.items() if np.isfinite(v)})
    mlflow.log_dict(config.to_dict(), "config.json")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        importance = _shap_importance(result)
        importance.rename("mean_abs_shap").to_csv(tmp / "shap_importance.csv", index_label="feature")
        plots.importance_chart(importance, tmp / "feature_importance.png")
        scores = {"model": result.holdout_prediction, **{p.label: p.scores for p in result.peers}}
        plots.gains_chart(result.holdout_y, scores, tmp / "gains_chart.png")
        if config.label.is_classification:
            plots.calibration_curve(
                result.holdout_y, result.holdout_prediction, result.holdout_uncalibrated, tmp / "calibration_curve.png"
            )
        mlflow.log_artifacts(str(tmp), artifact_path="report")


def _log_candidates(config: ExperimentConfig, experiment_id: str, result: FitResult) -> None:
    """One nested run per candidate fitted: its validation and holdout metrics; the chosen
    one is tagged. Only the chosen one is registered."""
    for name, metrics in result.candidates.items():
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.name}-{name}", nested=True):
            mlflow.set_tags({"candidate": name, "chosen": str(name == result.model_type).lower()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
    mlflow.log_metrics(
        {
            f"candidate_{name}_holdout_roc_auc": m["holdout_roc_auc"]
            for name, m in result.candidates.items()
            if np.isfinite(m.get("holdout_roc_auc", float("nan")))
        }
    )


def _shap_importance(result: FitResult) -> pd.Series:
    frame = result.holdout_model_X if result.holdout_model_X is not None else result.holdout
    sample = frame.sample(min(SHAP_SAMPLE_ROWS, len(frame)), random_state=0)
    contributions = result.model.contributions(sample)
    return contributions.abs().mean().sort_values(ascending=False)


def model_card(config: ExperimentConfig, data: TrainingData, result: FitResult) -> ModelCard:
    """The typed card stored beside the registered model (``meta.json``)."""
    # The drift reference: the latest training cutoff's customers, the population the model saw
    # last, not every cutoff's pooled: pooled over a year and a half of cutoffs, tenure and
    # lifetime counts were far lower than at any later date, and every refresh flagged them,
    # even right after a retraining (a user's test).
    train_X = data.X(data.rows(data.split.train[-1])) if data.split.train else result.holdout
    return ModelCard(
        name=config.name,
        label=config.label.kind,
        horizon_days=config.label.horizon_days,
        features=data.feature_columns,
        families=list(config.families),
        feature_config=config.to_dict()["features"],
        vocabulary=data.vocabulary.to_dict(),
        descriptions={k: f.description for k, f in data.meanings.items() if k in data.feature_columns},
        meanings={k: f.meaning() for k, f in data.meanings.items() if k in data.feature_columns},
        categories=getattr(result.model, "categories_", {}),
        reference=reference_distributions(train_X),
        holdout_cutoff=data.split.holdout.isoformat(),
        headline_metric=headline_metric(config),
        metrics={k: v for k, v in result.metrics.items() if k.startswith(("holdout_", "baseline_"))},
        model_type=result.model_type,
        positive_share=result.positive_share,
        learned_until=learned_until_of(data.split.train, data.split.holdout, config.label.horizon_days).isoformat(),
    )


def _log_model(config: ExperimentConfig, data: TrainingData, result: FitResult) -> str:
    card = model_card(config, data, result)
    example = serving_frame(result.holdout.head(5)).reset_index(drop=True)
    scores = pd.DataFrame({"score": config.label.task.predict(result.model, result.holdout.head(5))})
    with tempfile.TemporaryDirectory() as tmp:
        estimator_path = Path(tmp) / "estimator.joblib"
        joblib.dump(result.model, estimator_path)
        meta_path = card.write(Path(tmp) / "meta.json")
        return register_pyfunc(
            config.name,
            PortraitModel(),
            {"estimator": str(estimator_path), "meta": str(meta_path)},
            example,
            scores,
            CANDIDATE,
        )
