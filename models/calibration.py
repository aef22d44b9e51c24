"""Isotonic calibration whose steps are smoothed by their size.

Plain isotonic regression gives each step the share of positives among its rows: a top step of
500 buyers and no non-buyer says 1.0 (certain), a bottom step of 12 non-buyers says 0.0, where
one more customer would prove either wrong. Here each step's share is Laplace's rule of
succession, (positives + 1) / (rows + 2), the mean of its share under a uniform prior; the steps
are then made monotone again (pool adjacent violators, weighted by rows + 2), since smoothing can
lift a small low step above a larger one after it. Between steps the probability is
interpolated, beyond the fitted scores it is the end step's, as scikit-learn's
``IsotonicRegression(out_of_bounds="clip")`` does.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.validation import check_is_fitted


class SmoothedIsotonic(BaseEstimator):
    """``fit(scores, y)`` with 0/1 ``y``; ``predict(scores)`` gives probabilities in (0, 1)."""

    def fit(self, scores, y) -> SmoothedIsotonic:
        scores, y = np.asarray(scores, dtype=float), np.asarray(y, dtype=float)
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("y must be 0/1 (who did not and who did): encode the labels first")
        steps = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
        fitted = steps.predict(scores)
        # One group per step (a step's rows share its fitted share, and shares rise with scores).
        order = np.lexsort((scores, fitted))
        fitted, scores, y = fitted[order], scores[order], y[order]
        starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
        rows = np.diff(np.r_[starts, len(fitted)])
        positives = np.add.reduceat(y, starts)
        smoothed = (positives + 1) / (rows + 2)
        monotone = IsotonicRegression().fit(np.arange(len(rows)), smoothed, sample_weight=rows + 2)
        shares = monotone.predict(np.arange(len(rows)))
        # Each step spans its lowest to its highest score: both ends take the step's share.
        ends = np.r_[starts[1:] - 1, len(scores) - 1]
        self.thresholds_ = np.column_stack([scores[starts], scores[ends]]).ravel()
        self.shares_ = np.repeat(shares, 2)
        return self

    def predict(self, scores) -> np.ndarray:
        check_is_fitted(self, "thresholds_")
        return np.interp(np.asarray(scores, dtype=float), self.thresholds_, self.shares_)
