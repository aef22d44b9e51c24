"""Evaluation metrics for propensity and spend models (pure functions on arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
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
    """Gini of the prediction's ordering of actual value, divided by the perfect ordering's.
    Customers with equal predictions are in no order among themselves: their part of the
    curve is its expectation over every order (a straight line), so a constant prediction has
    Gini 0 (row order gave it -0.36 or +0.36)."""

    def gini(actual, order_by):
        keys = -np.asarray(order_by, float)
        order = np.argsort(keys, kind="stable")
        a, keys = np.asarray(actual, float)[order], keys[order]
        group = np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1
        sums, sizes = np.bincount(group, weights=a), np.bincount(group)
        before = np.cumsum(sums) - sums
        place = np.arange(len(a)) - np.searchsorted(group, group) + 1  # 1.. within its group
        cumulative = (before[group] + place / sizes[group] * sums[group]) / a.sum()
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
        # no rank correlation with a constant (scipy warns and gives NaN): NaN, said once by the notes
        "spearman": float(spearmanr(y, prediction).statistic) if np.ptp(prediction) and np.ptp(y) else float("nan"),
        "mae": float(np.mean(np.abs(y - prediction))),
        "total_actual": float(y.sum()),
        "total_predicted": float(prediction.sum()),
    }
    deciles = pd.qcut(pd.Series(prediction).rank(method="first"), 10, labels=False)
    # Every decile is named, NaN where it has no row (fewer than 10 customers): metrics of
    # several folds or runs then have the same keys.
    errors = pd.Series(prediction - y).groupby(deciles.to_numpy()).mean().reindex(range(10))
    for decile, error in errors.items():
        metrics[f"mean_error_decile_{int(decile) + 1}"] = float(error)
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}


def weighted_roc_auc(y, score, weights) -> np.ndarray:
    """ROC AUC of ``score`` for each row of ``weights`` (resamples x customers; a customer's
    weight is how many times a bootstrap resample drew them). Ties count one half, as in
    ``roc_auc_score``."""
    return ResampledAUC(y, score)(np.atleast_2d(np.asarray(weights, float)))


class ResampledAUC:
    """The weighted AUC of one score for many weight rows: customers are grouped by tied score
    once (sparse indicator matrices), then each batch of rows is two sparse products and a
    cumulative sum over the groups; no loop over customers or resamples."""

    def __init__(self, y, score) -> None:
        y = np.asarray(y, float)
        _, group = np.unique(np.asarray(score, float), return_inverse=True)
        shape, rows = (len(y), int(group.max()) + 1 if len(y) else 0), np.arange(len(y))
        self.positives = sparse.csr_matrix((y, (rows, group)), shape=shape).T.tocsr()
        self.negatives = sparse.csr_matrix((1 - y, (rows, group)), shape=shape).T.tocsr()

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        positives = np.asarray(self.positives @ weights.T).T  # resamples x score groups
        negatives = np.asarray(self.negatives @ weights.T).T
        below = np.cumsum(negatives, axis=1) - negatives
        with np.errstate(invalid="ignore", divide="ignore"):
            return (positives * (below + 0.5 * negatives)).sum(axis=1) / (positives.sum(axis=1) * negatives.sum(axis=1))


def bootstrap_counts(n: int, resamples: int, seed: int, chunk_cells: int = 4_000_000):
    """Bootstrap resamples of ``n`` customers as count matrices (at most ``chunk_cells`` cells
    at a time), from one seeded generator: the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_cells // max(n, 1))
    done = 0
    while done < resamples:
        rows = min(per_chunk, resamples - done)
        draws = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)
        done += rows


def paired_bootstrap_auc_margin(
    y, score, other, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """ROC AUC of ``score`` minus that of ``other`` on the same customers and labels, and the
    percentile interval of that margin over ``resamples`` bootstrap resamples of customers
    (each resample scores both on the same draw: paired). Returns (margin, low, high)."""
    y = np.asarray(y, float)
    first, second = ResampledAUC(y, score), ResampledAUC(y, other)
    margins = np.concatenate(
        [first(c) - second(c) for c in (counts.astype(float) for counts in bootstrap_counts(len(y), resamples, seed))]
    )
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(margins, [tail, 100 - tail])
    margin = float(roc_auc_score(y, score) - roc_auc_score(y, other))
    return margin, float(low), float(high)


class ResampledGini:
    """The Gini of one ordering of ``actual`` for many weight rows (resamples x customers, a
    customer's weight being how many times a resample drew them), as :func:`normalized_gini`'s
    unnormalised Gini of the resample in the order of ``score`` (descending), customers of
    equal score in no order among themselves (the curve's expectation over their orders). A
    group of equal scores with ``W`` copies worth ``A`` after a cumulative total ``S`` adds
    ``W S + A (W + 1) / 2`` to the sum of cumulative totals (a customer alone: ``w S + a w (w + 1) / 2``)."""

    def __init__(self, actual, score) -> None:
        keys = -np.asarray(score, float)
        order = np.argsort(keys, kind="stable")
        self.actual = np.asarray(actual, float)[order]
        group = np.cumsum(np.r_[True, keys[order][1:] != keys[order][:-1]]) - 1
        # customers (in score order) x groups of equal score: one product sums each group's copies
        self.groups = sparse.csr_matrix((np.ones(len(order)), (np.arange(len(order)), group)))
        self.order = order

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        w = weights[:, self.order]
        copies = np.asarray(w @ self.groups)  # resamples x groups
        worth = np.asarray((w * self.actual) @ self.groups)
        before = np.cumsum(worth, axis=1) - worth
        total, n = worth.sum(axis=1), copies.sum(axis=1)
        cumulative = (copies * before + worth * (copies + 1) / 2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cumulative / (n * total) - (n + 1) / (2 * n)


def paired_bootstrap_gini_margin(
    y, score, other, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Normalised Gini (:func:`normalized_gini`, spend clipped at 0 as in :func:`spend_metrics`)
    of ``score`` minus that of ``other`` on the same customers and spend, and the percentile
    interval of that margin over ``resamples`` bootstrap resamples of customers (both scored
    on the same draw: paired; the same draws as :func:`paired_bootstrap_auc_margin` for the
    same seed). Returns (margin, low, high)."""
    y = np.clip(np.asarray(y, float), 0, None)
    first, second, perfect = ResampledGini(y, score), ResampledGini(y, other), ResampledGini(y, y)
    margins = []
    for counts in bootstrap_counts(len(y), resamples, seed):
        c = counts.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            margins.append((first(c) - second(c)) / perfect(c))
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(np.concatenate(margins), [tail, 100 - tail])
    margin = normalized_gini(y, score) - normalized_gini(y, other)
    return float(margin), float(low), float(high)


def headline_value(y, score, spend: bool) -> float:
    """The metric a run is judged by, of ``score`` on ``y``: the normalised Gini of spend (clipped
    at 0, as :func:`spend_metrics`), else the ROC AUC."""
    if spend:
        return float(normalized_gini(np.clip(np.asarray(y, float), 0, None), score))
    return float(ranking_metrics(y, score, "")["roc_auc"])


def shown(value: float, digits: int = 4) -> float:
    """``value`` rounded for printing, a negative zero made zero: a margin of -0.00001 printed
    as "-0.0000" reads as a loss."""
    return round(value, digits) + 0.0
