"""Probabilities of a relative label moved to the share it has by construction.

A label such as "in the top 20% of the next window's spend" marks a fixed share of whatever
population is scored. A model calibrated at its training cutoffs does not know that: when the
features' levels move (a season's higher spend), its probabilities move with them, and their mean
drifts from the share (on the demo's high-value holdout 0.235 against 0.200). Where the whole
population is scored (a batch), one logit offset brings their mean back to the share, the
classic correction for a known class prior (Saerens, Latinne & Decaestecker 2002): the order
of the scores is kept, only their level moves.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

EDGE = 1e-12  # probabilities are clipped to [EDGE, 1 - EDGE] before their logit
BOUND = 60.0  # the offset is sought in [-BOUND, BOUND] logits


def shift_to_share(probabilities: np.ndarray, share: float) -> tuple[np.ndarray, float]:
    """``probabilities`` moved by one logit offset so that their mean is ``share``; returns
    (moved probabilities, offset).

    Edge rules: ``share`` must be strictly between 0 and 1 (ValueError otherwise); no rows
    give no rows and offset 0; probabilities are clipped to [1e-12, 1 - 1e-12] first (so rows
    below 1e-12 tie, as they would at any printed precision); a missing probability is an
    error. The order of the rows is kept: the offset is one number added to every logit."""
    if not 0 < share < 1:
        raise ValueError(f"share must be between 0 and 1, got {share!r}")
    p = np.asarray(probabilities, dtype="float64")
    if not len(p):
        return p.copy(), 0.0
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite numbers to be moved to a share")
    logits = logit(np.clip(p, EDGE, 1 - EDGE))
    offset = float(brentq(lambda d: expit(logits + d).mean() - share, -BOUND, BOUND, xtol=1e-10))
    return expit(logits + offset), offset


def move_by(probabilities: np.ndarray, offset: float) -> np.ndarray:
    """``probabilities`` moved by a given logit ``offset`` (one a batch found with
    :func:`shift_to_share`), for rows scored apart from their population; the same clipping."""
    p = np.asarray(probabilities, dtype="float64")
    return expit(logit(np.clip(p, EDGE, 1 - EDGE)) + float(offset))
