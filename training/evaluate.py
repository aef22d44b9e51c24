"""Fitting a model on a time split (or customer folds) and judging it on the holdout, with the
classic peers beside it: for classification the RFM rank score and BG/NBD, with the paired
bootstrap interval of the model's ROC AUC margin over the best of them; for spend the RFM rank
score and the last horizon's spend. Metrics of a peer are ``baseline_<peer>_holdout_*``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from features.catalogue import describe, windowed
from features.config import FeatureConfig
from models.btyd import BTYD_FEATURES, BGNBDClassifier
from models.propensity import PropensityClassifier, SpendRegressor
from training.config import ExperimentConfig
from training.data import TrainingData
from training.metrics import classification_metrics, paired_bootstrap_auc_margin, ranking_metrics, spend_metrics

BOOTSTRAP_RESAMPLES = 1000


def make_model(config: ExperimentConfig, params: dict | None = None, callbacks=None):
    params = {**config.model_params, **(params or {})}
    if config.label.is_classification:
        return PropensityClassifier(params=params, calibration=config.validation.calibration, callbacks=callbacks)
    return SpendRegressor(params=params, callbacks=callbacks)


def predict(model, X: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(X)[:, 1] if hasattr(model, "predict_proba") else model.predict(X)


def rfm_score(features: pd.DataFrame) -> np.ndarray:
    """The analysts' RFM rank score: the percentile ranks (0-1] among customers with a purchase
    of recency (fewer days since the last purchase is better), frequency (orders) and monetary
    value (net spend), summed (0-3]; 0 for no purchase yet. Ties share their average rank."""
    bought = features["orders_lifetime"] > 0

    def rank(values: pd.Series, higher_is_better: bool) -> np.ndarray:
        return values.where(bought).rank(pct=True, ascending=higher_is_better, method="average").fillna(0).to_numpy()

    score = (
        rank(features["days_since_last_purchase"], higher_is_better=False)
        + rank(features["orders_lifetime"], True)
        + rank(features["spend_lifetime"], True)
    )
    return np.where(bought, score, 0.0)


RFM_FEATURES = ("orders_lifetime", "days_since_last_purchase", "spend_lifetime")
PEER_LABELS = {
    "rfm": "RFM rank score",
    "bgnbd": "BG/NBD P(any purchase)",
    "bgnbd_expected": "BG/NBD expected purchases",
    "recent_spend": "spend in the last horizon",
}


@dataclass
class Peer:
    """A classic score a customer analyst reaches for first, judged beside the model."""

    name: str  # metric prefix: baseline_<name>_holdout_...
    label: str  # what a person reads
    scores: np.ndarray
    notes: tuple[str, ...] = ()


def classification_peers(features: pd.DataFrame, horizon_days: int) -> list[Peer]:
    """The peers of a classification task, on the holdout cutoff's features: the RFM rank
    score, and BG/NBD's P(any purchase within the horizon) and expected purchases, fitted on
    the history before the same cutoff (no label is used: its fit is the calibration period of
    the literature). Which of the two BG/NBD scores ranks better differs by data set (expected
    purchases on CDNOW), so both are peers. A peer whose inputs are not among the features is
    left out."""
    peers = []
    if set(RFM_FEATURES) <= set(features.columns):
        peers.append(Peer("rfm", PEER_LABELS["rfm"], rfm_score(features)))
    if set(BTYD_FEATURES) <= set(features.columns):
        bought = features["active_days_lifetime"].to_numpy() > 0
        if bought.any():
            bgnbd = BGNBDClassifier(horizon_days=horizon_days).fit(features)
            peers += [
                Peer("bgnbd", PEER_LABELS["bgnbd"], bgnbd.predict_proba(features)[:, 1], bgnbd.flags_),
                Peer("bgnbd_expected", PEER_LABELS["bgnbd_expected"], bgnbd.expected_purchases(features)),
            ]
    return peers


def peer_comparison(
    y: np.ndarray, prediction: np.ndarray, peers: list[Peer], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[dict[str, float], dict[str, str]]:
    """Each peer's holdout ranking metrics (``baseline_<peer>_holdout_*``), and the model's ROC
    AUC margin over the best peer (highest holdout AUC) with its paired bootstrap interval
    (same customers and labels, customers resampled). Returns (metrics, tags)."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if not peers or len(np.unique(y)) < 2:
        return metrics, tags
    for peer in peers:
        metrics.update(ranking_metrics(y, peer.scores, f"baseline_{peer.name}_holdout_"))
        if peer.notes:
            tags[f"peer_{peer.name}_notes"] = "; ".join(peer.notes)
    best = max(peers, key=lambda p: metrics[f"baseline_{p.name}_holdout_roc_auc"])
    margin, low, high = paired_bootstrap_auc_margin(y, prediction, best.scores, resamples, seed)
    metrics |= {
        "holdout_roc_auc_margin_over_best_peer": margin,
        "holdout_roc_auc_margin_ci_low": low,
        "holdout_roc_auc_margin_ci_high": high,
        "bootstrap_resamples": float(resamples),
    }
    tags["best_peer"] = best.name
    return metrics, tags


def recent_spend(features: pd.DataFrame, horizon_days: int, config: FeatureConfig | None = None) -> np.ndarray:
    """Spend over the last horizon-length window (from the nearest windowed spend feature of the
    catalogue for ``config``), as a naive forecast."""
    spend = windowed("spend", describe(features.columns, config).values())
    if not spend:
        raise ValueError(f"no windowed spend feature among the columns {list(features.columns)[:10]}")
    nearest = min(sorted(spend), key=lambda w: abs(w - horizon_days))
    return (features[spend[nearest].name] * horizon_days / nearest).clip(lower=0).to_numpy()


def baseline_metrics(
    holdout: pd.DataFrame, y: np.ndarray, config: ExperimentConfig, prediction: np.ndarray
) -> tuple[dict[str, float], dict[str, str], list[Peer]]:
    """The peers' holdout metrics beside the model's ``prediction`` (see :func:`peer_comparison`
    for classification; spend keeps its RFM and recent-spend baselines). Returns (metrics,
    tags, peers)."""
    if config.label.is_classification:
        peers = classification_peers(holdout, config.label.horizon_days)
        return *peer_comparison(y, prediction, peers), peers
    if not set(RFM_FEATURES) <= set(holdout.columns):
        return {}, {}, []
    peers = [
        Peer("rfm", PEER_LABELS["rfm"], rfm_score(holdout)),
        Peer(
            "recent_spend",
            PEER_LABELS["recent_spend"],
            recent_spend(holdout, config.label.horizon_days, config.features),
        ),
    ]
    return (
        {k: v for p in peers for k, v in spend_metrics(y, p.scores, f"baseline_{p.name}_holdout_").items()},
        {},
        peers,
    )


@dataclass
class FitResult:
    model: object
    metrics: dict[str, float]
    holdout: pd.DataFrame  # holdout rows' features
    holdout_y: np.ndarray
    holdout_prediction: np.ndarray
    holdout_uncalibrated: np.ndarray | None = None
    tags: dict[str, str] = field(default_factory=dict)
    peers: list[Peer] = field(default_factory=list)  # scored on the holdout rows


def _score_metrics(config, y, p, prefix) -> dict[str, float]:
    return classification_metrics(y, p, prefix) if config.label.is_classification else spend_metrics(y, p, prefix)


def fit_time_split(config: ExperimentConfig, data: TrainingData, params: dict | None = None) -> FitResult:
    train, valid, holdout = data.train_rows, data.rows(data.split.validation), data.rows(data.split.holdout)
    model = make_model(config, params).fit(data.X(train), data.y(train), data.X(valid), data.y(valid))
    p_valid, p_holdout = predict(model, data.X(valid)), predict(model, data.X(holdout))
    y_holdout = data.y(holdout)
    peer_metrics, peer_tags, peers = baseline_metrics(data.X(holdout), y_holdout, config, p_holdout)
    metrics = {
        **_score_metrics(config, data.y(valid), p_valid, "validation_"),
        **_score_metrics(config, y_holdout, p_holdout, "holdout_"),
        **peer_metrics,
        "best_iteration": float(model.best_iteration_),
    }
    uncalibrated = None
    if config.label.is_classification:
        uncalibrated = model.predict_uncalibrated(data.X(holdout))
        metrics["holdout_ece_uncalibrated"] = classification_metrics(y_holdout, uncalibrated)["ece"]
    return FitResult(
        model,
        metrics,
        data.X(holdout),
        y_holdout,
        p_holdout,
        uncalibrated,
        {"validation_scheme": "time", **peer_tags},
        peers,
    )


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
    peer_metrics, peer_tags, peers = baseline_metrics(X, y, config, out_of_fold)
    metrics = {
        **_score_metrics(config, y, out_of_fold, "holdout_"),
        **peer_metrics,
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
        {"validation_scheme": f"customer_kfold ({config.validation.folds} folds, out-of-fold holdout)", **peer_tags},
        peers,
    )


def fit_and_evaluate(config: ExperimentConfig, data: TrainingData, params: dict | None = None) -> FitResult:
    if config.validation.scheme == "customer_kfold":
        return fit_customer_folds(config, data, params)
    return fit_time_split(config, data, params)
