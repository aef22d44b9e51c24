"""Maximum likelihood over the logs of positive parameters, shared by BG/NBD and Gamma-Gamma.

Parameters are fitted as logs, bounded to +-:data:`LOG_BOUND`, by L-BFGS-B with the analytic
gradient; an objective that cannot be evaluated at a point (overflow, log of zero) answers a
huge value there, so the search steps back. A log-parameter within :data:`AT_BOUND` of its
bound is reported: the data do not pin that parameter down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import OptimizeResult, minimize

LOG_BOUND = 15.0  # parameters live in [exp(-15), exp(15)] = [3e-7, 3.3e6]
AT_BOUND = 1e-3  # a log-parameter this close to its bound is "at the bound"


def guarded(value: float, gradient: np.ndarray) -> tuple[float, np.ndarray]:
    """``(value, gradient)``, or a huge value and no slope where either is not finite."""
    if not (np.isfinite(value) and np.isfinite(gradient).all()):
        return 1e300, np.zeros(len(gradient))
    return value, gradient


def minimise_log_parameters(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: Sequence[float],
    max_iter: int,
    **tolerances: float,
) -> OptimizeResult:
    """Minimise ``objective`` (the negative log-likelihood and its gradient in the logs) from
    ``start`` (the parameters, not their logs). ``tolerances``: L-BFGS-B's ``ftol``, ``gtol``."""
    start = np.log(np.asarray(start, dtype=float))
    return minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-LOG_BOUND, LOG_BOUND)] * len(start),
        options={"maxiter": max_iter, **tolerances},
    )


def bound_flags(names: Sequence[str], log_values: Sequence[float]) -> list[str]:
    """A sentence for each parameter at its bound."""
    return [
        f"{name} is at its {'upper' if value > 0 else 'lower'} bound {np.exp(value):.3g}"
        for name, value in zip(names, log_values, strict=True)
        if abs(abs(value) - LOG_BOUND) < AT_BOUND
    ]


def not_converged(result: OptimizeResult) -> str:
    """A flag for a search that stopped without converging, in words (scipy's own message can
    be as terse as "ABNORMAL: ")."""
    message = str(result.message).strip().rstrip(":").strip()
    if message.upper().startswith("ABNORMAL"):
        message = "the line search failed (a flat likelihood: too few customers who bought again?)"
    elif "ITERATIONS" in message.upper():
        message = "it ran out of iterations"
    return f"the optimiser stopped without converging: {message or 'no reason given'}"
