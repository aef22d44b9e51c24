"""Evaluation metrics for propensity and spend models (pure functions on arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

TOP_SHARES = (0.05, 0.10, 0.20)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted| over equal-width probability bins, weighted by size."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def lift_and_capture(y: np.ndarray, score: np.ndarray, share: float) -> tuple[float, float]:
    """Among the top ``share`` by score: positive rate / base rate (lift), and the share of all
    positives found there (capture). Ties are broken by position, after a stable sort."""
    y = np.asarray(y, float)
    n = max(1, int(round(len(y) * share)))
    top = np.argsort(-np.asarray(score, float), kind="stable")[:n]
    base = y.mean()
    lift = float(y[top].mean() / base) if base > 0 else float("nan")
    capture = float(y[top].sum() / y.sum()) if y.sum() > 0 else float("nan")
    return lift, capture


def classification_metrics(y, p, prefix: str = "") -> dict[str, float]:
    y, p = np.asarray(y, int), np.asarray(p, float)
    metrics = {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "log_loss": log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1]),
        "brier": brier_score_loss(y, p),
        "ece": expected_calibration_error(y, p),
        "positive_rate": float(y.mean()),
    }
    for share in TOP_SHARES:
        lift, capture = lift_and_capture(y, p, share)
        metrics[f"lift_at_{int(share * 100)}pct"] = lift
        metrics[f"capture_at_{int(share * 100)}pct"] = capture
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}


def ranking_metrics(y, score, prefix: str = "") -> dict[str, float]:
    """ROC AUC and lift of a score that is not a probability (a baseline's rank score)."""
    y, score = np.asarray(y, int), np.asarray(score, float)
    metrics = {"roc_auc": roc_auc_score(y, score), "pr_auc": average_precision_score(y, score)}
    for share in TOP_SHARES:
        lift, capture = lift_and_capture(y, score, share)
        metrics[f"lift_at_{int(share * 100)}pct"] = lift
        metrics[f"capture_at_{int(share * 100)}pct"] = capture
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}


def normalized_gini(y, prediction) -> float:
    """Gini of the prediction's ordering of actual value, divided by the perfect ordering's."""

    def gini(actual, order_by):
        order = np.argsort(-np.asarray(order_by, float), kind="stable")
        a = np.asarray(actual, float)[order]
        cumulative = np.cumsum(a) / a.sum()
        n = len(a)
        return cumulative.sum() / n - (n + 1) / (2 * n)

    y = np.asarray(y, float)
    if y.sum() == 0:
        return float("nan")
    return float(gini(y, prediction) / gini(y, y))


def spend_metrics(y, prediction, prefix: str = "") -> dict[str, float]:
    y, prediction = np.asarray(y, float), np.asarray(prediction, float)
    metrics = {
        "gini": normalized_gini(np.clip(y, 0, None), prediction),
        "spearman": float(spearmanr(y, prediction).statistic),
        "mae": float(np.mean(np.abs(y - prediction))),
        "total_actual": float(y.sum()),
        "total_predicted": float(prediction.sum()),
    }
    deciles = pd.qcut(pd.Series(prediction).rank(method="first"), 10, labels=False)
    errors = pd.Series(prediction - y).groupby(deciles.to_numpy()).mean()
    for decile, error in errors.items():
        metrics[f"mean_error_decile_{int(decile) + 1}"] = float(error)
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}
