"""Point-in-time history features for repurchase models: the RFM percentile ranks and the
BG/NBD outputs (P(alive), P(any purchase in the horizon), expected purchases), per cutoff.

Both are computed from a cutoff's feature rows only (the catalogue's value features, which are
point in time): ranks among the customers with a purchase at that cutoff, and BG/NBD fitted on
their history before it (no label is read). A stacked training frame holds several cutoffs;
its ``cutoff`` column groups the rows, so each cutoff's ranks and fit see only that cutoff's
population. A frame without the column is one population (a scoring run as of one day).

A frame without the ``cutoff`` column and without the history columns is what serving scores
(a batch as of one day, or a handful of customers through the API): it is ranked against, and
scored with the BG/NBD fit of, the reference population kept at ``fit`` (the latest cutoff seen
in training), so a customer's score never depends on who else is scored with them.

Guards: BG/NBD on a short history degenerates (no evidence of dropout: ``b`` to its bound and
P(alive) about 1, or ``a`` and ``b`` growing together, a fixed dropout per purchase that puts
one-time buyers above regulars); the fit is kept and flagged (``flags_``), the outputs stay finite. Expected
purchases that are not finite (an overflow the closed form's fallback did not catch) become
missing, which the models read as "unknown". No customer has a missing P(any purchase): a
customer without a purchase gets 0 and rank 0, as the RFM score gives them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from models.btyd import BTYD_FEATURES, BGNBDClassifier

GROUP_COLUMN = "cutoff"
RFM_FEATURES = ("days_since_last_purchase", "orders_lifetime", "spend_lifetime")
HISTORY_FEATURES = (
    "rfm_recency_rank",
    "rfm_frequency_rank",
    "rfm_monetary_rank",
    "rfm_score",
    "bgnbd_p_alive",
    "bgnbd_p_any",
    "bgnbd_expected_purchases",
)
NEEDED = tuple(dict.fromkeys(RFM_FEATURES + BTYD_FEATURES))
# The catalogue features each history feature is computed from: a contribution of a history
# feature is shared among them when reasons are phrased (models.reasons reads catalogue meanings).
SOURCES: dict[str, tuple[str, ...]] = {
    "rfm_recency_rank": ("days_since_last_purchase",),
    "rfm_frequency_rank": ("orders_lifetime",),
    "rfm_monetary_rank": ("spend_lifetime",),
    "rfm_score": RFM_FEATURES,
    "bgnbd_p_alive": BTYD_FEATURES,
    "bgnbd_p_any": BTYD_FEATURES,
    "bgnbd_expected_purchases": BTYD_FEATURES,
}
# Direction known in advance (for monotone constraints): +1 more likely to buy as it grows.
DIRECTIONS: dict[str, int] = {
    "rfm_recency_rank": 1,
    "rfm_frequency_rank": 1,
    "rfm_monetary_rank": 1,
    "rfm_score": 1,
    "bgnbd_p_any": 1,
    "bgnbd_expected_purchases": 1,
    "days_since_last_purchase": -1,
    "recency_share_of_tenure": -1,
    "orders_lifetime": 1,
    "active_days_lifetime": 1,
    "orders_per_month_of_tenure": 1,
    "active_days_per_month_of_tenure": 1,
}


def percentile(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The share of ``reference`` at or below each value, ties counted half (the average rank
    as a share, as ``rank(pct=True)`` gives within a population), in (0, 1]: a value above every
    reference value is 1 (it was 1 + 0.5 / n, an RFM score above 3)."""
    below = np.searchsorted(reference, values, side="left")
    at_or_below = np.searchsorted(reference, values, side="right")
    return np.minimum((below + at_or_below) / (2.0 * len(reference)) + 0.5 / len(reference), 1.0)


def rfm_ranks(features: pd.DataFrame, reference: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Percentile ranks (0-1] among customers with a purchase of recency (fewer days is
    better), frequency (orders) and monetary value (net spend), and their sum, the RFM score
    (0-3]; 0 for a customer without a purchase. Ranked within ``features``, or against the
    sorted ``reference`` values of another population when given."""
    bought = features["orders_lifetime"].to_numpy(float) > 0
    columns = {}
    for name, source, higher in (
        ("rfm_recency_rank", "days_since_last_purchase", False),
        ("rfm_frequency_rank", "orders_lifetime", True),
        ("rfm_monetary_rank", "spend_lifetime", True),
    ):
        values = features[source].to_numpy(float)
        if not higher:
            values = -values
        if reference is None:
            rank = pd.Series(np.where(bought, values, np.nan)).rank(pct=True, method="average").to_numpy()
        else:
            rank = percentile(values, _signed(reference[source], higher))
        columns[name] = np.where(bought, np.nan_to_num(rank, nan=0.0), 0.0)
    frame = pd.DataFrame(columns, index=features.index)
    frame["rfm_score"] = frame.sum(axis=1)
    return frame


def _signed(sorted_values: np.ndarray, higher: bool) -> np.ndarray:
    return sorted_values if higher else np.sort(-sorted_values)


def rank_reference(features: pd.DataFrame) -> dict[str, np.ndarray]:
    """The sorted RFM inputs of the customers with a purchase: what a small frame is ranked against."""
    bought = features["orders_lifetime"].to_numpy(float) > 0
    return {c: np.sort(features.loc[bought, c].to_numpy(float)) for c in RFM_FEATURES}


def fit_bgnbd(features: pd.DataFrame, horizon_days: int) -> BGNBDClassifier | None:
    """BG/NBD fitted on the buyers in ``features``; None when nobody has bought yet."""
    if not (features["active_days_lifetime"].to_numpy(float) > 0).any():
        return None
    with np.errstate(all="ignore"):
        return BGNBDClassifier(horizon_days=horizon_days).fit(features)


def bgnbd_outputs(features: pd.DataFrame, model: BGNBDClassifier | None) -> pd.DataFrame:
    """P(alive), P(any purchase in the horizon) and expected purchases from a fitted BG/NBD;
    0 for customers without a purchase; missing where a value is not finite (or no model)."""
    n = len(features)
    if model is None:
        nan = np.full(n, np.nan)
        return pd.DataFrame(
            {"bgnbd_p_alive": nan, "bgnbd_p_any": nan, "bgnbd_expected_purchases": nan}, index=features.index
        )
    from models.btyd import btyd_inputs

    inputs = btyd_inputs(features, model.unit_days)
    bought = inputs["frequency"].notna().to_numpy()
    alive = np.zeros(n)
    with np.errstate(all="ignore"):
        if bought.any():
            alive[bought] = model.model_.p_alive(*(inputs.loc[bought, c] for c in ("frequency", "recency", "T")))
        p_any = model.predict_proba(features)[:, 1]
        expected = model.expected_purchases(features)
    finite = np.isfinite(expected) & (expected >= 0)
    return pd.DataFrame(
        {
            "bgnbd_p_alive": np.where(np.isfinite(alive), alive, np.nan),
            "bgnbd_p_any": np.where(np.isfinite(p_any), p_any, np.nan),
            "bgnbd_expected_purchases": np.where(finite, expected, np.nan),
        },
        index=features.index,
    )


def _check_columns(X: pd.DataFrame) -> None:
    missing = [c for c in NEEDED if c not in X.columns]
    if missing:
        raise ValueError(f"history features need the value features {missing}; include the 'value' family")


def population_history(features: pd.DataFrame, horizon_days: int) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The history features of one population (one cutoff), and the BG/NBD fit's flags."""
    model = fit_bgnbd(features, horizon_days)
    frame = pd.concat([rfm_ranks(features), bgnbd_outputs(features, model)], axis=1)
    return frame[list(HISTORY_FEATURES)], (model.flags_ if model is not None else ("nobody has bought yet",))


def add_history_features(frame: pd.DataFrame, horizon_days: int) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]]]:
    """``frame`` with the history features, each cutoff (``cutoff`` column) on its own; and the
    flags of each cutoff's BG/NBD fit that had any."""
    _check_columns(frame)
    groups = frame[GROUP_COLUMN] if GROUP_COLUMN in frame.columns else pd.Series(0, index=frame.index)
    parts, flags = [], {}
    for key, rows in frame.groupby(groups, sort=True, observed=True):  # one loop step per cutoff
        part, part_flags = population_history(rows, horizon_days)
        parts.append(part)
        if part_flags:
            flags[key.date().isoformat() if hasattr(key, "date") else str(key)] = part_flags
    history = pd.concat(parts).reindex(frame.index)
    return pd.concat([frame.drop(columns=[c for c in HISTORY_FEATURES if c in frame.columns]), history], axis=1), flags


class HistoryFeatures(TransformerMixin, BaseEstimator):
    """Adds :data:`HISTORY_FEATURES` to a feature frame (see the module docstring).

    ``fit`` keeps the reference population (the rows of the latest ``cutoff``, or all rows):
    its sorted RFM inputs and its BG/NBD fit. ``transform`` leaves a frame that already has
    every history column as it is (a training frame where they were computed per cutoff on the
    whole population), computes them per cutoff for a frame with a ``cutoff`` column, and
    against the reference for any other frame (what serving scores)."""

    def __init__(self, horizon_days: int = 90):
        self.horizon_days = horizon_days

    def fit(self, X: pd.DataFrame, y=None) -> HistoryFeatures:
        _check_columns(X)
        rows = X
        if GROUP_COLUMN in X.columns:
            rows = X[X[GROUP_COLUMN] == X[GROUP_COLUMN].max()]
        self.reference_ = rank_reference(rows)
        self.bgnbd_ = fit_bgnbd(rows, self.horizon_days)
        return self

    def against_reference(self, X: pd.DataFrame) -> bool:
        """Whether ``transform`` computes ``X``'s history features against the reference
        population (a frame without a ``cutoff`` column and without them): what serving scores."""
        return GROUP_COLUMN not in X.columns and not any(c in X.columns for c in HISTORY_FEATURES)

    def reference_history(self, X: pd.DataFrame) -> pd.DataFrame:
        """Only the history columns ``transform`` adds to such a frame."""
        check_is_fitted(self, "reference_")
        _check_columns(X)
        history = pd.concat([rfm_ranks(X, self.reference_), bgnbd_outputs(X, self.bgnbd_)], axis=1)
        return history[list(HISTORY_FEATURES)]

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "reference_")
        if all(c in X.columns for c in HISTORY_FEATURES):
            return X
        _check_columns(X)
        if GROUP_COLUMN in X.columns:
            return add_history_features(X, self.horizon_days)[0]
        return pd.concat([X, self.reference_history(X)], axis=1)


def fold_contributions(contributions: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Contributions over ``columns`` (catalogue features): each history feature's share is
    split equally among the catalogue features it is computed from (:data:`SOURCES`), so the
    row sums are kept and every reason names a catalogue feature."""
    folded = contributions.reindex(columns=columns, fill_value=0.0).astype(float)
    for name, sources in SOURCES.items():
        if name not in contributions.columns:
            continue
        present = [s for s in sources if s in folded.columns]
        if not present:
            continue
        share = contributions[name].to_numpy(float) / len(present)
        for source in present:
            folded[source] = folded[source].to_numpy() + share
    return folded
