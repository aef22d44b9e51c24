"""The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV:
Using Iso-Value Curves for Customer Base Analysis"; Fader & Hardie 2013, "The Gamma-Gamma
Model of Monetary Value").

The model. A customer's transaction values are independent draws from ``Gamma(p, nu)``
(shape ``p``, rate ``nu``), so their mean value is ``zeta = p / nu``; across customers
``nu ~ Gamma(q, v)`` (shape ``q``, rate ``v``). A customer's history is summarised by
``x``, the number of transactions their mean value is taken over, and ``m``, that mean. The
model assumes the value of a transaction is independent of how many there are (the mean
value and the frequency are uncorrelated across customers; on the CDNOW sample 0.11).

Fitting is maximum likelihood of the mean values given ``x`` (the paper's equation 3)::

    log f(m | p, q, v, x) = log G(p x + q) - log G(p x) - log G(q) + q log v
                            + (p x - 1) log m + p x log x - (p x + q) log(v + m x)

maximised by L-BFGS-B over the logs of the three parameters (bounded to +-:data:`models.likelihood.LOG_BOUND`),
with its analytic gradient. Only customers with ``x > 0`` carry information (a mean of no
transactions is no value). On the CDNOW sample (the 946 of 2,357 customers with a repeat
purchase in the 39-week calibration period, the mean of their repeat transactions, several
purchases on one day being one transaction) it gives the published p = 6.25, q = 3.74,
v = 15.44 (tests/test_gamma_gamma.py) in a few hundredths of a second.

Prediction: the posterior mean of ``zeta`` given ``(x, m)``, the paper's equation 5::

    E[M | x, m] = (q - 1) / (p x + q - 1) * v p / (q - 1) + p x / (p x + q - 1) * m
                = p (v + x m) / (p x + q - 1)

a weighted average of the population mean ``v p / (q - 1)`` and the customer's own mean,
the weight on their own mean growing with ``x``. With ``x = 0`` it is the population mean.

Degenerate fits. The population mean ``v p / (q - 1)`` is finite only for ``q > 1``: a fit
with ``q <= 1`` (a heavy tail of customers with large mean values, or very few customers) is
returned and flagged (``flags_``), and any expectation that would be infinite (``x = 0``
when ``q <= 1``, ``p x + q <= 1`` in general) raises ``ValueError`` saying so, never returns
inf or NaN: the caller decides what to fall back to (training.evaluate uses the customer's
own mean). A parameter at its bound is flagged as well (e.g. ``q`` and ``v`` growing together
when every customer has nearly the same mean: no heterogeneity to estimate). Input that is no
spend history (negative or non-whole frequency, a mean value that is missing or not positive
where ``x > 0``, no customer with ``x > 0``) raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from models.likelihood import bound_flags, guarded, minimise_log_parameters, not_converged

PARAMETERS = ("p", "q", "v")


def _check_spend(frequency, monetary_value) -> tuple[np.ndarray, np.ndarray]:
    """``(x, m)`` as float arrays; ``m`` is only looked at where ``x > 0``."""
    x = np.asarray(frequency, dtype=float).ravel()
    m = np.asarray(monetary_value, dtype=float).ravel()
    if len(x) != len(m):
        raise ValueError(f"frequency and monetary_value differ in length: {len(x)}, {len(m)}")
    counted = x > 0
    problems = {
        "frequency is missing or infinite": ~np.isfinite(x),
        "frequency is negative or not a whole number": np.isfinite(x) & ((x < 0) | (x != np.round(x))),
        "the mean transaction value is missing or infinite": counted & ~np.isfinite(m),
        "the mean transaction value is not positive (Gamma-distributed values are > 0)": counted
        & np.isfinite(m)
        & (m <= 0),
    }
    for what, bad in problems.items():
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"not a spend history: {what} for {int(bad.sum())} customer(s), e.g. row {i} "
                f"(frequency={x[i]}, monetary_value={m[i]})"
            )
    return x, m


def _log_likelihood_and_gradient(log_params: np.ndarray, x: np.ndarray, m: np.ndarray):
    """Each customer's log-likelihood (``x > 0`` only) and its gradient in the log-parameters:
    d/dp = x [psi(px+q) - psi(px) + log m + log x - log(v + m x)], d/dq = psi(px+q) - psi(q)
    + log v - log(v + m x), d/dv = q/v - (px+q)/(v + m x); each times the parameter."""
    p, q, v = np.exp(log_params)
    px = p * x
    log_total = np.log(v + m * x)
    value = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_total
    )
    psi = digamma(px + q)
    d_p = x * (psi - digamma(px) + np.log(m) + np.log(x) - log_total)
    d_q = psi - digamma(q) + np.log(v) - log_total
    d_v = q / v - (px + q) / (v + m * x)
    return value, np.column_stack([d_p * p, d_q * q, d_v * v])


class GammaGammaModel(BaseEstimator):
    """Gamma-Gamma spend per transaction, fitted by maximum likelihood (see the module docstring).

    ``fit(frequency, monetary_value)`` uses the customers with ``frequency > 0`` (the others
    are allowed and ignored, whatever their ``monetary_value``) and sets ``p_``, ``q_``,
    ``v_``, ``log_likelihood_`` (total), ``n_customers_`` (those fitted on) and ``flags_`` (a
    tuple of sentences, empty when the fit is regular).
    """

    def __init__(self, max_iter: int = 1000):
        self.max_iter = max_iter

    def fit(self, frequency, monetary_value) -> GammaGammaModel:
        x, m = _check_spend(frequency, monetary_value)
        counted = x > 0
        if not counted.any():
            raise ValueError(
                "Gamma-Gamma needs at least one customer with frequency > 0 (a mean over at least one "
                f"transaction); got none among {len(x)}"
            )
        # The likelihood depends only on the pair (x, m): fit the distinct ones, weighted.
        pairs, counts = np.unique(np.column_stack([x[counted], m[counted]]), axis=0, return_counts=True)
        ux, um = pairs.T
        weights = counts.astype(float)

        def objective(log_params):
            with np.errstate(all="ignore"):
                values, gradients = _log_likelihood_and_gradient(log_params, ux, um)
            return guarded(-float(weights @ values), -(weights @ gradients))

        # Start from p = 1, q = 2 and v at the customers' average mean value, so that the
        # population mean v p/(q-1) starts at that average.
        start = [1.0, 2.0, max(float(np.average(um, weights=weights)), 1e-6)]
        result = minimise_log_parameters(objective, start, self.max_iter, ftol=1e-12, gtol=1e-6)
        self.p_, self.q_, self.v_ = (float(v) for v in np.exp(result.x))
        self.log_likelihood_ = -float(result.fun)
        self.n_customers_ = int(counted.sum())
        flags = []
        flags += bound_flags(PARAMETERS, result.x)
        if self.q_ <= 1:
            flags.append(
                f"q = {self.q_:.3g} <= 1: the population mean spend v p/(q-1) is infinite (a heavy tail of "
                "customers with large mean values, or too few customers); customers without a transaction "
                "have no expected spend under this fit"
            )
        # L-BFGS-B may stop on a failed line search at the optimum itself (rounding in the
        # weighted sum); only a gradient that is not small per customer is "not converged".
        if not result.success and np.max(np.abs(result.jac)) > 1e-4 * max(self.n_customers_, 1):
            flags.append(not_converged(result))
        self.flags_ = tuple(flags)
        return self

    @property
    def params_(self) -> dict[str, float]:
        check_is_fitted(self, "p_")
        return {"p": self.p_, "q": self.q_, "v": self.v_}

    @property
    def population_mean_spend_(self) -> float:
        """The mean spend per transaction across customers, ``v p / (q - 1)``; ``ValueError``
        when ``q <= 1`` (infinite)."""
        check_is_fitted(self, "p_")
        if self.q_ <= 1:
            raise ValueError(f"the population mean spend is infinite: q = {self.q_:.4g} <= 1 (v p/(q-1) needs q > 1)")
        return self.v_ * self.p_ / (self.q_ - 1)

    def log_likelihood(self, frequency, monetary_value) -> np.ndarray:
        """Each customer's log-likelihood of their mean value given ``x`` (0 where ``x = 0``)."""
        check_is_fitted(self, "p_")
        x, m = _check_spend(frequency, monetary_value)
        out = np.zeros(len(x))
        counted = x > 0
        out[counted] = _log_likelihood_and_gradient(np.log([self.p_, self.q_, self.v_]), x[counted], m[counted])[0]
        return out

    def conditional_expected_average_spend(self, frequency, monetary_value) -> np.ndarray:
        """E[M | x, m] = (q-1)/(px+q-1) * vp/(q-1) + px/(px+q-1) * m = p (v + x m)/(px + q - 1);
        the population mean for ``x = 0`` (whose ``monetary_value`` is not looked at).
        ``ValueError`` where ``px + q <= 1`` (an infinite expectation; with ``q <= 1`` at least
        every ``x = 0``)."""
        check_is_fitted(self, "p_")
        x, m = _check_spend(frequency, monetary_value)
        p, q, v = self.p_, self.q_, self.v_
        denominator = p * x + q - 1
        infinite = denominator <= 0
        if infinite.any():
            i = int(np.flatnonzero(infinite)[0])
            raise ValueError(
                f"the expected spend is infinite for {int(infinite.sum())} customer(s), e.g. row {i} "
                f"(frequency={x[i]}): p x + q <= 1 with p = {p:.4g}, q = {q:.4g}"
            )
        own = np.where(x > 0, m, 0.0)
        return p * (v + x * own) / denominator
