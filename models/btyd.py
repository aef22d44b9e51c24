"""BG/NBD, the Buy-Till-You-Die model of Fader, Hardie & Lee (2005), as a peer and as a model.

The model. While alive, a customer buys at the rate ``lambda`` (a Poisson process); after each
*repeat* purchase they drop out for good with probability ``p``. Across customers
``lambda ~ Gamma(r, alpha)`` (shape, rate) and ``p ~ Beta(a, b)``. A customer's history to the
cutoff is summarised by ``frequency`` ``x`` (repeat purchases: days with a purchase after the
first), ``recency`` ``t_x`` (time from the first purchase to the last) and ``T`` (time from the
first purchase to the cutoff), all in one time unit (weeks here: :data:`WEEK_DAYS`).

Fitting is maximum likelihood with the closed-form log-likelihood of the paper (equation 6),
written with ``gammaln``/``betaln``::

    log L = log G(r+x) - log G(r) + r log(alpha) + log[ B(a, b+x)/B(a, b) (alpha+T)^-(r+x)
            + [x > 0] B(a+1, b+x-1)/B(a, b) (alpha+t_x)^-(r+x) ]

maximised by L-BFGS-B over the logs of the four parameters (bounded to +-:data:`models.likelihood.LOG_BOUND`), on
the distinct ``(x, t_x, T)`` triplets weighted by their count. On the CDNOW sample (2,357
customers, 39-week calibration) it gives the published r=0.243, alpha=4.414, a=0.793, b=2.426
(tested within 2%).

Why scipy and not pymc-marketing's ``BetaGeoModel`` (the rule was: pymc-marketing if it
installs cleanly and fits CDNOW in seconds). Measured on this project's machine (2 shared
cores), ``python3 -m venv /tmp/pmc && /tmp/pmc/bin/pip install pymc-marketing``: it installs
cleanly (pymc-marketing 0.19.2, pymc 5.28.5, pytensor 2.38.3; 57 packages, 790 MB). On the
CDNOW sample's ``(x, t_x, T)`` a MAP fit with flat priors (``Prior("HalfFlat")`` on all four;
its default priors give other values) reproduces the published parameters. Importing it takes
4.2 s; the first fit ever takes 14.8 s (pytensor compiles C into ``~/.pytensor``), the first
fit in a later process 2.2 s, a repeat fit in the same process 1.2 s. This fit takes 0.17 s.
Every ``portrait train`` is a new process (about 6.5 s more per run, 19 s on a fresh machine),
a MAP fit with flat priors *is* this maximum likelihood, and the degenerate cases below need
the same guards either way; so the 790 MB and a C compiler at run time buy nothing here.

Predictions for a customer with history ``(x, t_x, T)``:

- ``P(alive)`` (paper, equation 11): ``1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``,
  computed as a logistic of the log-odds so that it never overflows.
- ``P(at least one purchase in (T, T+t])``: a customer who is dead at ``T`` never buys again.
  One who is alive buys in ``(T, T+t]`` unless the first interpurchase time after ``T`` exceeds
  ``t``; dropout happens only right after a purchase, so until that purchase the customer stays
  alive and ``P(no purchase in t | alive, lambda) = exp(-lambda t)``. Given alive at ``T``, the
  likelihood in ``lambda`` is ``lambda^x exp(-lambda T)`` (``x`` purchases, none since ``t_x``,
  and still alive), so its posterior is ``Gamma(r+x, alpha+T)``, whose Laplace transform gives
  ``P(no purchase in t | alive, x, T) = ((alpha+T)/(alpha+T+t))^(r+x)``. Hence
  ``P(any) = P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x))``. (A Monte-Carlo simulation from
  the fitted parameters agrees: tests/test_btyd.py.)
- Expected purchases in ``(T, T+t]`` (paper, equation 10), i.e. ``P(alive)`` times
  ``(a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]``.
  It is computed after Euler's transformation of the Gauss hypergeometric function (see
  :meth:`BetaGeoModel.expected_purchases`), which keeps its upper parameters small for any ``x``.
  Within ``A_NEAR_ONE`` of ``a = 1`` the bracket and ``a - 1`` vanish together and the closed form
  loses its digits: there, and for any row whose closed form is not finite or falls outside the
  bounds every answer must meet (at least ``P(any | alive)``, at most ``(r+x) t/(alpha+T)``, the
  no-dropout limit), it is computed instead by quadrature of
  ``E[(1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p]`` over ``p ~ Beta(a, b+x)`` (the posterior of
  ``p`` given alive), and flagged.

Degenerate data is fitted, flagged (``flags_``) and predicted from, never NaN: with a short
history the fit can push ``b`` to its bound (no evidence of dropout; the model is then the NBD
and ``P(alive)`` is 1); with nobody buying twice ``r`` goes to its lower bound. Only inputs
that are not a history at all (negative, NaN, ``t_x > T``, ``x > 0`` with ``t_x = 0``, no
customers) raise ``ValueError``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import betainc, betaln, digamma, expit, gammaln, hyp2f1, roots_legendre
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from models.likelihood import bound_flags, guarded, minimise_log_parameters, not_converged

WEEK_DAYS = 7.0
NO_DROPOUT_LR = 3.84  # likelihood ratio against the NBD (no dropout) below which dropout is not evidenced
PARAMETERS = ("r", "alpha", "a", "b")
# The feature catalogue's columns the BTYD inputs are computed from (features/catalogue.py).
BTYD_FEATURES = ("active_days_lifetime", "days_since_first_purchase", "days_since_last_purchase")

_QUADRATURE_NODES, _QUADRATURE_WEIGHTS = roots_legendre(96)
_QUADRATURE_EPS = 1e-12
# |a - 1| below which expected purchases are computed by quadrature: the closed form divides a
# vanishing bracket by a - 1 and keeps about -log10|a - 1| fewer digits (1e-6 relative at 1e-7).
A_NEAR_ONE = 1e-3


def btyd_inputs(features: pd.DataFrame, unit_days: float = WEEK_DAYS) -> pd.DataFrame:
    """``frequency``, ``recency`` and ``T`` in units of ``unit_days`` from the catalogue's value
    features as of a cutoff (so point-in-time like them): frequency = days with a purchase - 1,
    recency = days from the first purchase to the last, T = days from the first purchase to the
    last day before the cutoff. A purchase's time is its date, and the observation ends on the
    last day it covers (the day before the cutoff), as in the literature's CDNOW data (T to
    1997-09-30 for the cutoff 1997-10-01) and lifetimes' ``summary_data_from_transaction_data``:
    a purchase on that last day has recency = T. Measuring T to the cutoff instead (one day
    more for everyone) moves a and b by 2-3% on the CDNOW sample. Customers with no purchase yet
    get NaN in all three."""
    missing = [c for c in BTYD_FEATURES if c not in features.columns]
    if missing:
        raise ValueError(f"BTYD inputs need the value features {missing}; the frame has none of them")
    bought = features["active_days_lifetime"].to_numpy(float) > 0
    first = features["days_since_first_purchase"].to_numpy(float)
    last = features["days_since_last_purchase"].to_numpy(float)
    frequency = np.where(bought, features["active_days_lifetime"].to_numpy(float) - 1, np.nan)
    return pd.DataFrame(
        {
            "frequency": frequency,
            "recency": np.where(bought, (first - last) / unit_days, np.nan),
            "T": np.where(bought, (first - 1) / unit_days, np.nan),
        },
        index=features.index,
    )


def history_row_problems(features: pd.DataFrame) -> list[tuple[int, str, str]]:
    """``(row position, feature, why)`` for each row whose :data:`BTYD_FEATURES` are not a
    purchase history as of a cutoff (what :func:`btyd_inputs` reads and :func:`_check_history`
    refuses), for rows written by hand (a what-if score) rather than built: with a day with a
    purchase, both ages are at least 1 day (a purchase is before the cutoff), the last purchase
    is no older than the first, and the days with a purchase fit between the first and the
    last. A row without a purchase (``active_days_lifetime`` 0 or missing) has no history to
    check. One problem per row, the first found."""
    active = features["active_days_lifetime"].to_numpy(float)
    first = features["days_since_first_purchase"].to_numpy(float)
    last = features["days_since_last_purchase"].to_numpy(float)
    bought = np.nan_to_num(active, nan=0.0) > 0
    with np.errstate(invalid="ignore"):
        checks = (
            ("active_days_lifetime", ~np.isfinite(active) | (active != np.round(active)), "must be a whole number"),
            ("days_since_first_purchase", ~np.isfinite(first), "is needed when active_days_lifetime is above 0"),
            ("days_since_last_purchase", ~np.isfinite(last), "is needed when active_days_lifetime is above 0"),
            ("days_since_first_purchase", first < 1, "must be at least 1 (a purchase is before the cutoff)"),
            ("days_since_last_purchase", last < 1, "must be at least 1 (a purchase is before the cutoff)"),
            (
                "days_since_last_purchase",
                last > first,
                "cannot be more than days_since_first_purchase: the last purchase is not older than the first",
            ),
            (
                "active_days_lifetime",
                active > first - last + 1,
                "cannot be more than days_since_first_purchase - days_since_last_purchase + 1 (the days from the first purchase to the last)",
            ),
        )
    problems, seen = [], np.zeros(len(features), bool)
    for column, bad, why in checks:
        bad = bought & bad & ~seen
        seen |= bad
        problems += [(int(i), column, why) for i in np.flatnonzero(bad)]
    return sorted(problems)


def _check_history(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype=float).ravel() for v in (frequency, recency, T))
    if not len(x) == len(t_x) == len(T):
        raise ValueError(f"frequency, recency and T differ in length: {len(x)}, {len(t_x)}, {len(T)}")
    problems = {
        "a value is missing or infinite": ~(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T)),
        "frequency is negative or not a whole number": (x < 0) | (x != np.round(x)),
        "recency is negative": t_x < 0,
        "recency is later than T": t_x > T + 1e-9,
        "T is negative": T < 0,
        "frequency > 0 with recency 0": (x > 0) & (t_x <= 0),
    }
    for what, bad in problems.items():
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"not a purchase history: {what} for {int(bad.sum())} customer(s), e.g. row {i} "
                f"(frequency={x[i]}, recency={t_x[i]}, T={T[i]})"
            )
    return x, t_x, T


def _log_likelihood(log_params: np.ndarray, x, t_x, T) -> np.ndarray:
    return _log_likelihood_and_gradient(log_params, x, t_x, T, gradient=False)[0]


def _log_likelihood_and_gradient(log_params: np.ndarray, x, t_x, T, gradient: bool = True):
    """Each customer's log-likelihood and (optionally) its gradient in the log-parameters.

    With S the "still alive" term and D the "dropped out after the last purchase" term of
    the likelihood and w = S / (S + D), d/dr = psi(r+x) - psi(r) + log(alpha) - w log(alpha+T)
    - (1-w) log(alpha+t_x), d/dalpha = r/alpha - (r+x) (w/(alpha+T) + (1-w)/(alpha+t_x)), and
    the Beta function's derivatives psi(p) - psi(p+q) for a and b; each times the parameter."""
    r, alpha, a, b = np.exp(log_params)
    repeat = x > 0
    xr = x[repeat]
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    survive = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    died = np.full_like(x, -np.inf)
    died[repeat] = betaln(a + 1, b + xr - 1) - betaln(a, b) - (r + xr) * np.log(alpha + t_x[repeat])
    total = np.logaddexp(survive, died)
    value = common + total
    if not gradient:
        return value, None
    w = np.exp(survive - total)  # share of the likelihood from "still alive"; 1 without repeats
    v = 1 - w
    log_alive, log_dead = np.log(alpha + T), np.log(alpha + np.where(repeat, t_x, T))
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w * log_alive - v * log_dead
    d_alpha = r / alpha - (r + x) * (w / (alpha + T) + v / (alpha + np.where(repeat, t_x, T)))
    psi_ab, psi_abx = digamma(a + b), digamma(a + b + x)
    d_a = w * (psi_ab - psi_abx)
    d_b = w * (digamma(b + x) - psi_abx - digamma(b) + psi_ab)
    d_a[repeat] += v[repeat] * (digamma(a + 1) - psi_abx[repeat] - digamma(a) + psi_ab)
    d_b[repeat] += v[repeat] * (digamma(b + xr - 1) - psi_abx[repeat] - digamma(b) + psi_ab)
    return value, np.column_stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])


def _nbd_log_likelihood(x, T, weights, max_iter: int) -> float:
    """The maximised log-likelihood of the NBD (BG/NBD without dropout, the limit a -> 0):
    log G(r+x) - log G(r) + r log(alpha) - (r+x) log(alpha+T)."""

    def objective(log_params):
        r, alpha = np.exp(log_params)
        with np.errstate(all="ignore"):
            values = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + T)
            d_r = digamma(r + x) - digamma(r) + np.log(alpha) - np.log(alpha + T)
            d_alpha = r / alpha - (r + x) / (alpha + T)
        return guarded(-float(weights @ values), -np.array([weights @ d_r * r, weights @ d_alpha * alpha]))

    result = minimise_log_parameters(objective, [1.0, max(float(np.mean(T)), 1e-3)], max_iter)
    return -float(result.fun)


class BetaGeoModel(BaseEstimator):
    """BG/NBD fitted by maximum likelihood (see the module docstring).

    ``fit(frequency, recency, T)`` sets ``r_``, ``alpha_``, ``a_``, ``b_``,
    ``log_likelihood_`` (total), ``nbd_log_likelihood_`` (the NBD's, without dropout, when
    anyone bought twice), ``n_customers_`` and ``flags_`` (a tuple of sentences, empty when
    the fit is regular).
    """

    def __init__(self, max_iter: int = 1000):
        self.max_iter = max_iter

    def fit(self, frequency, recency, T) -> BetaGeoModel:
        x, t_x, T = _check_history(frequency, recency, T)
        if not len(x):
            raise ValueError("BG/NBD needs at least one customer with a purchase; got none")
        # The likelihood depends only on the triplet: fit the distinct ones, weighted.
        triplets, counts = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
        ux, ut, uT = triplets.T
        weights = counts.astype(float)

        def objective(log_params):
            with np.errstate(all="ignore"):
                values, gradients = _log_likelihood_and_gradient(log_params, ux, ut, uT)
            return guarded(-float(weights @ values), -(weights @ gradients))

        start = [1.0, max(float(np.mean(T)), 1e-3), 1.0, 1.0]
        result = minimise_log_parameters(objective, start, self.max_iter, ftol=1e-13, gtol=1e-8)
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(result.x))
        self.log_likelihood_ = -float(result.fun)
        self.n_customers_ = len(x)
        flags = []
        if not (x > 0).any():
            flags.append("nobody made a repeat purchase: purchase rates and dropout cannot be estimated")
        flags += bound_flags(PARAMETERS, result.x)
        if (x > 0).any():
            self.nbd_log_likelihood_ = _nbd_log_likelihood(ux, uT, weights, self.max_iter)
            if 2 * (self.log_likelihood_ - self.nbd_log_likelihood_) < NO_DROPOUT_LR:
                flags.append(
                    "no evidence of dropout: the NBD without dropout fits as well (likelihood ratio "
                    f"{2 * (self.log_likelihood_ - self.nbd_log_likelihood_):.2f} < {NO_DROPOUT_LR}, e.g. on a short "
                    "history): the dropout parameters a and b are not identified, so P(alive), and the scores built "
                    "on it, rest on a flat likelihood (near 1 where the fit drifts to b -> infinity or a -> 0; "
                    "a fixed dropout per purchase where a and b grow together)"
                )
        if not result.success:
            flags.append(not_converged(result))
        self.flags_ = tuple(flags)
        return self

    @property
    def params_(self) -> dict[str, float]:
        check_is_fitted(self, "r_")
        return {"r": self.r_, "alpha": self.alpha_, "a": self.a_, "b": self.b_}

    def log_likelihood(self, frequency, recency, T) -> np.ndarray:
        """Each customer's log-likelihood under the fitted parameters."""
        check_is_fitted(self, "r_")
        x, t_x, T = _check_history(frequency, recency, T)
        return _log_likelihood(np.log([self.r_, self.alpha_, self.a_, self.b_]), x, t_x, T)

    def p_alive(self, frequency, recency, T) -> np.ndarray:
        check_is_fitted(self, "r_")
        x, t_x, T = _check_history(frequency, recency, T)
        return self._p_alive(x, t_x, T)

    def _p_alive(self, x, t_x, T) -> np.ndarray:
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        repeat = x > 0
        log_odds_dead = np.full_like(x, -np.inf)
        xr = x[repeat]
        log_odds_dead[repeat] = (
            np.log(a) - np.log(b + xr - 1) + (r + xr) * (np.log(alpha + T[repeat]) - np.log(alpha + t_x[repeat]))
        )
        return expit(-log_odds_dead)

    def _no_purchase_if_alive(self, t: float, x, T) -> np.ndarray:
        """P(no purchase in (T, T+t] | alive at T, x, T) = ((alpha+T)/(alpha+T+t))^(r+x)."""
        return np.exp(-(self.r_ + x) * np.log1p(t / (self.alpha_ + T)))

    def p_any_purchase(self, t: float, frequency, recency, T) -> np.ndarray:
        """P(at least one purchase in (T, T+t]) = P(alive) (1 - ((alpha+T)/(alpha+T+t))^(r+x))."""
        check_is_fitted(self, "r_")
        t = _check_horizon(t)
        x, t_x, T = _check_history(frequency, recency, T)
        return self._p_alive(x, t_x, T) * -np.expm1(-(self.r_ + x) * np.log1p(t / (self.alpha_ + T)))

    def expected_purchases(self, t: float, frequency, recency, T, return_fallback: bool = False):
        """Expected purchases in ``(T, T+t]`` (closed form; quadrature where it fails, see the
        module docstring). With ``return_fallback`` also the boolean mask of the rows that
        fell back."""
        check_is_fitted(self, "r_")
        t = _check_horizon(t)
        x, t_x, T = _check_history(frequency, recency, T)
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        lower = 1 - self._no_purchase_if_alive(t, x, T)
        upper = (r + x) * t / (alpha + T)
        with np.errstate(all="ignore"):
            z = t / (alpha + T + t)
            # Euler's transformation, 2F1(r+x, b+x; c; z) = (1-z)^(c-r-x-b-x) 2F1(c-r-x, c-b-x; c; z)
            # with c = a+b+x-1: the power's (1-z)^(r+x) cancels against the bracket's, and the
            # function left has the small upper parameters a+b-1-r and a-1 whatever x. Written as
            # in the paper, scipy's 2F1 of two large upper parameters was off by 0.3% at x = 46
            # (CDNOW's parameters, T = t = 39 weeks), 1.5% at x = 80 and by half at x = 10 with a
            # horizon 200 times the history (141.5 for 61.8), all inside the bounds below (50-digit references:
            # tests/test_btyd.py); this form is within 1e-9 of them.
            closed = (
                (a + b + x - 1)
                / (a - 1)
                * (1 - np.exp(-(a - 1) * np.log1p(t / (alpha + T))) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z))
            )
        slack = 1e-9 * np.maximum(upper, 1.0)
        fallback = (
            ~np.isfinite(closed) | (closed < lower - slack) | (closed > upper + slack) | (abs(a - 1) < A_NEAR_ONE)
        )
        if_alive = np.clip(closed, lower, upper)
        if fallback.any():
            if_alive[fallback] = self._expected_if_alive_by_quadrature(t, x[fallback], T[fallback])
        expected = self._p_alive(x, t_x, T) * if_alive
        return (expected, fallback) if return_fallback else expected

    def _expected_if_alive_by_quadrature(self, t: float, x, T) -> np.ndarray:
        """E over p ~ Beta(a, b+x) of (1 - (1 + p t/(alpha+T))^-(r+x)) / p: Gauss-Legendre in
        log(p) on (eps, 1/2] and in log(1-p) on [1/2, 1-eps), the two tails by the Beta CDF."""
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        beta = (b + x)[:, None]
        k = (r + x)[:, None]
        scale = (t / (alpha + T))[:, None]

        def g(p):
            return -np.expm1(-k * np.log1p(p * scale)) / p

        lo, hi = np.log(_QUADRATURE_EPS), np.log(0.5)
        s = (hi - lo) / 2 * _QUADRATURE_NODES + (hi + lo) / 2  # nodes on [lo, hi]
        w = (hi - lo) / 2 * _QUADRATURE_WEIGHTS
        log_norm = betaln(a, beta)
        p = np.exp(s)[None, :]  # near 0: dp = p ds
        left = g(p) * np.exp(a * np.log(p) + (beta - 1) * np.log1p(-p) - log_norm)
        q = np.exp(s)[None, :]  # near 1: p = 1 - q, q = exp(s), |dp| = q ds
        right = g(1 - q) * np.exp((a - 1) * np.log1p(-q) + beta * np.log(q) - log_norm)
        total = left @ w + right @ w
        beta = beta[:, 0]
        total += (k[:, 0] * scale[:, 0]) * betainc(a, beta, _QUADRATURE_EPS)  # g(p) -> k*scale as p -> 0
        total += (-np.expm1(-k[:, 0] * np.log1p(scale[:, 0]))) * betainc(beta, a, _QUADRATURE_EPS)  # P(p > 1 - eps)
        return total


def _check_horizon(t) -> float:
    t = float(t)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"the horizon t must be a positive number of time units, got {t}")
    return t


class BGNBDClassifier(ClassifierMixin, BaseEstimator):
    """BG/NBD on a feature frame: the probability of any purchase within ``horizon_days``.

    ``fit(X, y=None)`` fits :class:`BetaGeoModel` on the BTYD inputs of ``X``'s value features
    (:func:`btyd_inputs`, in weeks); the labels are not used, only the history before the
    cutoff. Customers with no purchase yet are left out of the fit and get probability 0.
    ``predict_proba`` gives ``[1 - p, p]`` with ``p = P(any purchase in the horizon)``.
    """

    def __init__(self, horizon_days: int = 90, unit_days: float = WEEK_DAYS):
        self.horizon_days = horizon_days
        self.unit_days = unit_days

    def fit(self, X: pd.DataFrame, y=None) -> BGNBDClassifier:
        inputs = btyd_inputs(X, self.unit_days)
        bought = inputs["frequency"].notna().to_numpy()
        self.model_ = BetaGeoModel().fit(*(inputs.loc[bought, c] for c in ("frequency", "recency", "T")))
        self.classes_ = np.array([0, 1])
        return self

    @property
    def flags_(self) -> tuple[str, ...]:
        check_is_fitted(self, "model_")
        return self.model_.flags_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "model_")
        inputs = btyd_inputs(X, self.unit_days)
        bought = inputs["frequency"].notna().to_numpy()
        p = np.zeros(len(inputs))
        if bought.any():
            p[bought] = self.model_.p_any_purchase(
                self.horizon_days / self.unit_days, *(inputs.loc[bought, c] for c in ("frequency", "recency", "T"))
            )
        return np.column_stack([1 - p, p])

    def expected_purchases(self, X: pd.DataFrame) -> np.ndarray:
        """Expected purchases within the horizon (0 for customers with no purchase yet)."""
        check_is_fitted(self, "model_")
        inputs = btyd_inputs(X, self.unit_days)
        bought = inputs["frequency"].notna().to_numpy()
        expected = np.zeros(len(inputs))
        if bought.any():
            expected[bought] = self.model_.expected_purchases(
                self.horizon_days / self.unit_days, *(inputs.loc[bought, c] for c in ("frequency", "recency", "T"))
            )
        return expected

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
