"""The repurchase candidates besides LightGBM, each a scikit-learn classifier with calibrated
probabilities, ``contributions`` for reasons, and the same ``fit(X, y, X_valid=..., y_valid=...)``:

- :class:`LogisticRepurchase`: a regularised (L2) logistic regression on the compact RFM and
  BG/NBD features (:data:`COMPACT`), standardised; its probabilities are its own.
- :class:`BGNBDRepurchase`: BG/NBD's P(any purchase in the horizon) at each customer's cutoff,
  calibrated (isotonic) on the validation rows.
- :class:`RankBlend`: the average of the percentile ranks of a fitted classifier's score and of
  the RFM score (``weight`` on the classifier; 0 is the RFM score alone), ranked against the
  validation rows' scores and calibrated (isotonic) on them.

Percentile ranks against stored validation scores (not within the scored frame) keep a score
the same whether a customer is scored with a million others or alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from models.btyd import BTYD_FEATURES
from models.calibration import SmoothedIsotonic
from models.history import GROUP_COLUMN, HISTORY_FEATURES, RFM_FEATURES, HistoryFeatures, percentile
from models.propensity import SharedInputs
from models.targets import binary_target

TIE_BREAK = 1e-6
# Compact inputs of the logistic regression: name -> (history or catalogue column, transform)
COMPACT: dict[str, tuple[str, str]] = {
    "rfm_recency_rank": ("rfm_recency_rank", "none"),
    "rfm_frequency_rank": ("rfm_frequency_rank", "none"),
    "rfm_monetary_rank": ("rfm_monetary_rank", "none"),
    "bgnbd_p_alive": ("bgnbd_p_alive", "none"),
    "bgnbd_p_any": ("bgnbd_p_any", "none"),
    "log_bgnbd_expected_purchases": ("bgnbd_expected_purchases", "log1p"),
    "log_days_since_last_purchase": ("days_since_last_purchase", "log1p"),
    "log_orders_lifetime": ("orders_lifetime", "log1p"),
    "log_orders_per_month_of_tenure": ("orders_per_month_of_tenure", "log1p"),
    "recency_share_of_tenure": ("recency_share_of_tenure", "none"),
}
# Which catalogue features each compact input stands for (a contribution is shared among them).
COMPACT_SOURCES: dict[str, tuple[str, ...]] = {
    "rfm_recency_rank": ("days_since_last_purchase",),
    "rfm_frequency_rank": ("orders_lifetime",),
    "rfm_monetary_rank": ("spend_lifetime",),
    "bgnbd_p_alive": BTYD_FEATURES,
    "bgnbd_p_any": BTYD_FEATURES,
    "log_bgnbd_expected_purchases": BTYD_FEATURES,
    "log_days_since_last_purchase": ("days_since_last_purchase",),
    "log_orders_lifetime": ("orders_lifetime",),
    "log_orders_per_month_of_tenure": ("orders_per_month_of_tenure",),
    "recency_share_of_tenure": ("recency_share_of_tenure",),
    "never_bought": ("orders_lifetime",),
}


def _inputs(X: pd.DataFrame) -> list[str]:
    """The catalogue features a model is given (what serving passes, and what reasons name):
    not the grouping column nor history features computed ahead for a training frame."""
    return [c for c in X.columns if c != GROUP_COLUMN and c not in HISTORY_FEATURES]


def _isotonic(scores: np.ndarray, y) -> SmoothedIsotonic:
    return SmoothedIsotonic().fit(scores, np.asarray(y))


def _calibrated(calibrator, scores: np.ndarray) -> np.ndarray:
    # Keeps the order of the scores inside an isotonic step (see models.propensity.TIE_BREAK).
    p = (1 - TIE_BREAK) * np.clip(calibrator.predict(scores), 0, 1) + TIE_BREAK * scores / (1 + np.abs(scores))
    return np.column_stack([1 - p, p])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _share(values: pd.DataFrame, sources: dict[str, tuple[str, ...]], columns: list[str]) -> pd.DataFrame:
    """``values`` (one column per input) folded onto the catalogue ``columns``."""
    folded = pd.DataFrame(0.0, index=values.index, columns=columns)
    for name in values.columns:
        present = [s for s in sources.get(name, (name,)) if s in folded.columns]
        for source in present:
            folded[source] += values[name].to_numpy(float) / len(present)
    return folded


class LogisticRepurchase(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression on :data:`COMPACT` (those present) and a
    never-bought flag; missing values (no purchase, no BG/NBD fit) are filled with the training
    median. ``C`` is scikit-learn's inverse regularisation strength."""

    def __init__(self, horizon_days: int = 90, C: float = 0.1):
        self.horizon_days = horizon_days
        self.C = C

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self.history_.transform(X)
        columns = {}
        for name, (source, transform) in COMPACT.items():
            if source in X.columns:
                values = X[source].to_numpy(float)
                columns[name] = np.log1p(np.clip(values, 0, None)) if transform == "log1p" else values
        columns["never_bought"] = (X["orders_lifetime"].to_numpy(float) <= 0).astype(float)
        return pd.DataFrame(columns, index=X.index)

    def fit(self, X: pd.DataFrame, y, X_valid=None, y_valid=None) -> LogisticRepurchase:
        codes, classes = binary_target(y)
        self.input_features_ = _inputs(X)
        self.history_ = HistoryFeatures(self.horizon_days).fit(X)
        matrix = self._matrix(X)
        self.medians_ = matrix.median().fillna(0.0)
        matrix = matrix.fillna(self.medians_)
        self.means_, self.scales_ = matrix.mean(), matrix.std(ddof=0).replace(0, 1.0)
        self.columns_ = list(matrix.columns)
        self.model_ = LogisticRegression(C=self.C, max_iter=2000).fit((matrix - self.means_) / self.scales_, codes)
        self.classes_ = classes
        self.categories_ = {}  # the text features it reads and their values: none (numbers only)
        return self

    def _standardised(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "model_")
        matrix = self._matrix(X).reindex(columns=self.columns_).fillna(self.medians_)
        return (matrix - self.means_) / self.scales_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        standardised = self._standardised(X)  # first: it checks the model is fitted
        return self.model_.predict_proba(standardised)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Coefficient times standardised value (log-odds against the average customer)."""
        z = self._standardised(X)
        return _share(z * self.model_.coef_[0], COMPACT_SOURCES, self.input_features_)


class BGNBDRepurchase(ClassifierMixin, BaseEstimator):
    """BG/NBD's P(any purchase in the horizon) (``score = "p_any"``) or expected purchases
    (``"expected"``: ranks better on some data sets), fitted at each cutoff on the history
    before it (:mod:`models.history`), calibrated on the validation rows when given."""

    SCORES = {"p_any": "bgnbd_p_any", "expected": "bgnbd_expected_purchases"}

    def __init__(self, horizon_days: int = 90, score: str = "p_any"):
        self.horizon_days = horizon_days
        self.score = score

    def fit(self, X: pd.DataFrame, y=None, X_valid=None, y_valid=None) -> BGNBDRepurchase:
        if self.score not in self.SCORES:
            raise ValueError(f"score must be one of {list(self.SCORES)}, got {self.score!r}")
        if len(X) == 0:
            raise ValueError("no rows to fit: X is empty")
        self.input_features_ = _inputs(X)
        self.history_ = HistoryFeatures(self.horizon_days).fit(X)
        self.calibrator_, self.classes_ = None, np.array([0, 1])  # uncalibrated: P(any), 0/1
        if X_valid is not None:
            codes, self.classes_ = binary_target(y_valid, "y_valid")
            self.calibrator_ = _isotonic(self._raw(X_valid), codes)
        self.categories_ = {}  # the text features it reads and their values: none (numbers only)
        # the average customer's log-odds, which contributions are measured from (not the
        # average of the rows explained together: a page's last rows then got no reasons)
        self.logit_mean_ = float(_logit(self.predict_proba(X if X_valid is None else X_valid)[:, 1]).mean())
        return self

    def _raw(self, X: pd.DataFrame) -> np.ndarray:
        return self.history_.transform(X)[self.SCORES[self.score]].fillna(0.0).to_numpy(float)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "history_")
        raw = self._raw(X)
        if self.calibrator_ is None:
            raw = raw if self.score == "p_any" else -np.expm1(-raw)  # P(any) of a Poisson count
            return np.column_stack([1 - raw, raw])
        return _calibrated(self.calibrator_, raw)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """BG/NBD has no per-feature attribution: a customer's log-odds above the average
        customer's (``logit_mean_``, of the rows it was fitted or calibrated on) is shared equally
        among its three inputs (purchase days, first and last purchase). A row's contributions
        are the same whichever rows are explained with it."""
        logit = _logit(self.predict_proba(X)[:, 1])
        center = getattr(self, "logit_mean_", None)  # versions fitted before it: the rows' own mean
        deviation = pd.DataFrame({"bgnbd": logit - (logit.mean() if center is None else center)}, index=X.index)
        return _share(deviation, {"bgnbd": BTYD_FEATURES}, self.input_features_)


RANK_COLUMNS = ("rfm_recency_rank", "rfm_frequency_rank", "rfm_monetary_rank")


class RankBlend(ClassifierMixin, BaseEstimator):
    """``weight`` x the percentile rank of ``base``'s score + (1 - ``weight``) x that of the
    RFM score, calibrated on the validation rows. ``base`` is fitted already (``prefit``): it
    is not refitted, so a blend is chosen beside the model it blends. ``weight = 0`` (no
    ``base``) is the RFM score alone, as a model."""

    def __init__(self, base=None, weight: float = 0.5, horizon_days: int = 90):
        self.base = base
        self.weight = weight
        self.horizon_days = horizon_days

    def fit(self, X: pd.DataFrame, y=None, X_valid=None, y_valid=None, base_valid_scores=None) -> RankBlend:
        """``base_valid_scores``: the base's scores of the validation rows when they differ
        from its ``predict_proba`` there (out-of-fold scores of a cross-fitted ensemble)."""
        if not 0 <= self.weight <= 1:
            raise ValueError(f"weight must be between 0 and 1, got {self.weight}")
        if self.weight > 0 and self.base is None:
            raise ValueError("a blend with weight > 0 needs a fitted base classifier")
        if X_valid is None:
            X_valid, y_valid = X, y
        self.input_features_ = _inputs(X)
        self.history_ = HistoryFeatures(self.horizon_days).fit(X)
        self.base_ = self.base if self.weight > 0 else None
        # the text features it reads and their values: its base model's (the RFM ranks are numbers)
        self.categories_ = dict(getattr(self.base_, "categories_", {})) if self.base_ is not None else {}
        rfm, model = self._scores(X_valid)
        if base_valid_scores is not None and model is not None:
            model = np.asarray(base_valid_scores, float)
        self.rfm_reference_ = np.sort(rfm)
        self.model_reference_ = np.sort(model) if model is not None else None
        codes, self.classes_ = binary_target(y_valid, "y_valid" if y_valid is not y else "y")
        self.calibrator_ = _isotonic(self._blend(rfm, model), codes)
        # the average customer's RFM ranks, which contributions are measured from
        self.rank_means_ = self.history_.transform(X_valid)[list(RANK_COLUMNS)].mean().to_dict()
        return self

    def _scores(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        rfm = self.history_.transform(X)["rfm_score"].to_numpy(float)
        model = self.base_.predict_proba(X)[:, 1] if self.base_ is not None else None
        return rfm, model

    def _blend(self, rfm: np.ndarray, model: np.ndarray | None) -> np.ndarray:
        score = (1 - self.weight) * percentile(rfm, self.rfm_reference_)
        if model is not None:
            score = score + self.weight * percentile(model, self.model_reference_)
        return score

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "calibrator_")
        return _calibrated(self.calibrator_, self._blend(*self._scores(X)))

    def predict_proba_from(self, rfm: np.ndarray, model: np.ndarray | None) -> np.ndarray:
        """P(positive) from given RFM and base scores (e.g. the base's out-of-fold scores)."""
        check_is_fitted(self, "calibrator_")
        return _calibrated(self.calibrator_, self._blend(rfm, model))[:, 1]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """The base model's contributions times ``weight``, and the RFM ranks' deviations from
        the average customer's (``rank_means_``, of its validation rows) times 1 - ``weight`` (in
        rank units, on the RFM features): the same whichever rows are explained with it."""
        history = self.history_.transform(X)
        ranks = history[list(RANK_COLUMNS)]
        means = getattr(self, "rank_means_", None)  # versions fitted before it: the rows' own means
        rfm = (1 - self.weight) * (ranks - (ranks.mean() if means is None else pd.Series(means)))
        folded = _share(
            rfm, {c: s for c, s in zip(ranks.columns, ((f,) for f in RFM_FEATURES), strict=True)}, self.input_features_
        )
        if self.base_ is not None:
            folded += self.weight * self.base_.contributions(X).reindex(columns=folded.columns, fill_value=0.0)
        return folded


class _Averaged(BaseEstimator):
    """What an average of a cross-fit's fitted members shares: ``fit`` does not refit them (they
    are fitted already), it checks they are; contributions are the members' mean; fitted
    attributes (``categories_``, ``feature_names_``, ...) are the first member's, which all share."""

    def __init__(self, members=()):
        self.members = members

    def fit(self, X=None, y=None):
        if not len(self.members):
            raise ValueError("an average needs at least one fitted member")
        for member in self.members:
            check_is_fitted(member)
        self.members_ = list(self.members)
        return self

    def _each(self, method: str, X: pd.DataFrame) -> list[np.ndarray]:
        """Each member's ``method`` on ``X``; LightGBM members share one input matrix (built once,
        not once per member: at 1M customers that conversion cost more than the trees)."""
        shared = SharedInputs()
        return [
            getattr(m, method)(X, shared=shared) if getattr(m, "shares_inputs", False) else getattr(m, method)(X)
            for m in self.members_
        ]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        parts = [m.contributions(X) for m in self.members_]
        return sum(parts[1:], parts[0]) / len(parts)

    def __getattr__(self, name: str):
        if name.endswith("_") and not name.startswith("__") and "members_" in self.__dict__:
            return getattr(self.__dict__["members_"][0], name)
        raise AttributeError(name)


class AveragedClassifier(ClassifierMixin, _Averaged):
    """The average of fitted classifiers' probabilities (and contributions): the members of a
    cross-fit, each trained without one fold of customers and early-stopped and calibrated on
    that fold."""

    def fit(self, X=None, y=None) -> AveragedClassifier:
        super().fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "members_")
        return np.mean(self._each("predict_proba", X), axis=0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def predict_uncalibrated(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean(self._each("predict_uncalibrated", X), axis=0)


class AveragedRegressor(RegressorMixin, _Averaged):
    """The average of fitted regressors' predictions and contributions (a cross-fit's members)."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "members_")
        return np.mean(self._each("predict", X), axis=0)
