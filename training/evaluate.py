"""Fitting a model on a time split (or customer folds) and judging it on the holdout, with the
baselines beside it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from features.catalogue import describe, windowed
from features.config import FeatureConfig
from models.propensity import PropensityClassifier, SpendRegressor
from training.config import ExperimentConfig
from training.data import TrainingData
from training.metrics import classification_metrics, ranking_metrics, spend_metrics


def make_model(config: ExperimentConfig, params: dict | None = None, callbacks=None):
    params = {**config.model_params, **(params or {})}
    if config.label.is_classification:
        return PropensityClassifier(params=params, calibration=config.validation.calibration, callbacks=callbacks)
    return SpendRegressor(params=params, callbacks=callbacks)


def predict(model, X: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(X)[:, 1] if hasattr(model, "predict_proba") else model.predict(X)


def rfm_score(features: pd.DataFrame) -> np.ndarray:
    """Recency, frequency and monetary quintiles (1-5, best 5) summed; 0 for no purchase."""

    def quintile(values: pd.Series, higher_is_better: bool) -> np.ndarray:
        ranks = values.rank(pct=True, ascending=higher_is_better, method="average")
        return np.ceil(ranks.fillna(0) * 5).to_numpy()

    bought = features["orders_lifetime"] > 0
    score = (
        quintile(features["days_since_last_purchase"].where(bought), higher_is_better=False)
        + quintile(features["orders_lifetime"].where(bought), True)
        + quintile(features["spend_lifetime"].where(bought), True)
    )
    return np.where(bought, score, 0.0)


def recent_buyer(features: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """1 when the customer bought within the last horizon-length window."""
    return (features["days_since_last_purchase"].fillna(np.inf) <= horizon_days).astype(float).to_numpy()


def recent_spend(features: pd.DataFrame, horizon_days: int, config: FeatureConfig | None = None) -> np.ndarray:
    """Spend over the last horizon-length window (from the nearest windowed spend feature of the
    catalogue for ``config``), as a naive forecast."""
    spend = windowed("spend", describe(features.columns, config).values())
    if not spend:
        raise ValueError(f"no windowed spend feature among the columns {list(features.columns)[:10]}")
    nearest = min(sorted(spend), key=lambda w: abs(w - horizon_days))
    return (features[spend[nearest].name] * horizon_days / nearest).clip(lower=0).to_numpy()


def baseline_metrics(holdout: pd.DataFrame, y: np.ndarray, config: ExperimentConfig) -> dict[str, float]:
    needed = {"orders_lifetime", "days_since_last_purchase", "spend_lifetime"}
    if not needed <= set(holdout.columns):
        return {}
    h = config.label.horizon_days
    if config.label.is_classification:
        return {
            **ranking_metrics(y, rfm_score(holdout), "baseline_rfm_holdout_"),
            **ranking_metrics(y, recent_buyer(holdout, h), "baseline_recent_buyer_holdout_"),
        }
    forecast = recent_spend(holdout, h, config.features)
    return {
        **spend_metrics(y, rfm_score(holdout), "baseline_rfm_holdout_"),
        **spend_metrics(y, forecast, "baseline_recent_spend_holdout_"),
    }


@dataclass
class FitResult:
    model: object
    metrics: dict[str, float]
    holdout: pd.DataFrame  # holdout rows' features
    holdout_y: np.ndarray
    holdout_prediction: np.ndarray
    holdout_uncalibrated: np.ndarray | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _score_metrics(config, y, p, prefix) -> dict[str, float]:
    return classification_metrics(y, p, prefix) if config.label.is_classification else spend_metrics(y, p, prefix)


def fit_time_split(config: ExperimentConfig, data: TrainingData, params: dict | None = None) -> FitResult:
    train, valid, holdout = data.train_rows, data.rows(data.split.validation), data.rows(data.split.holdout)
    model = make_model(config, params).fit(data.X(train), data.y(train), data.X(valid), data.y(valid))
    p_valid, p_holdout = predict(model, data.X(valid)), predict(model, data.X(holdout))
    y_holdout = data.y(holdout)
    metrics = {
        **_score_metrics(config, data.y(valid), p_valid, "validation_"),
        **_score_metrics(config, y_holdout, p_holdout, "holdout_"),
        **baseline_metrics(data.X(holdout), y_holdout, config),
        "best_iteration": float(model.best_iteration_),
    }
    uncalibrated = None
    if config.label.is_classification:
        uncalibrated = model.predict_uncalibrated(data.X(holdout))
        metrics["holdout_ece_uncalibrated"] = classification_metrics(y_holdout, uncalibrated)["ece"]
    return FitResult(model, metrics, data.X(holdout), y_holdout, p_holdout, uncalibrated, {"validation_scheme": "time"})


def fit_customer_folds(config: ExperimentConfig, data: TrainingData, params: dict | None = None) -> FitResult:
    """One cutoff, K folds of customers: each fold is scored by a model trained (and early-
    stopped and calibrated on an inner 20% split) on the other folds. Out-of-fold predictions
    are the holdout. The returned model is refitted the same way on all rows."""
    rows = data.rows(data.split.holdout)
    X, y = data.X(rows), data.y(rows)
    seed = int(config.model_params.get("random_state", 42))
    classify = config.label.is_classification
    folds = (StratifiedKFold if classify else KFold)(config.validation.folds, shuffle=True, random_state=seed)
    out_of_fold = np.zeros(len(rows))
    uncalibrated = np.zeros(len(rows))

    def fit_inner(X_part, y_part):
        X_fit, X_stop, y_fit, y_stop = train_test_split(
            X_part, y_part, test_size=0.2, random_state=seed, stratify=y_part if classify else None
        )
        return make_model(config, params).fit(X_fit, y_fit, X_stop, y_stop)

    for train_index, test_index in folds.split(X, y):
        model = fit_inner(X.iloc[train_index], y[train_index])
        out_of_fold[test_index] = predict(model, X.iloc[test_index])
        if classify:
            uncalibrated[test_index] = model.predict_uncalibrated(X.iloc[test_index])
    final = fit_inner(X, y)
    metrics = {
        **_score_metrics(config, y, out_of_fold, "holdout_"),
        **baseline_metrics(X, y, config),
        "best_iteration": float(final.best_iteration_),
    }
    if classify:
        metrics["holdout_ece_uncalibrated"] = classification_metrics(y, uncalibrated)["ece"]
    return FitResult(
        final,
        metrics,
        X,
        y,
        out_of_fold,
        uncalibrated if classify else None,
        {"validation_scheme": f"customer_kfold ({config.validation.folds} folds, out-of-fold holdout)"},
    )


def fit_and_evaluate(config: ExperimentConfig, data: TrainingData, params: dict | None = None) -> FitResult:
    if config.validation.scheme == "customer_kfold":
        return fit_customer_folds(config, data, params)
    return fit_time_split(config, data, params)
