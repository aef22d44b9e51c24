"""The one check of a target at an estimator's ``fit``: rows, no missing values, and for a
classifier exactly two classes, encoded as 0/1 with the labels kept in ``classes_`` (scikit-
learn's contract: ``predict`` answers in the labels it was given)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _values(y, what: str) -> np.ndarray:
    values = np.asarray(y)
    if values.ndim != 1:
        raise ValueError(f"{what} must be one column of values, got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"no rows to fit: {what} is empty")
    if pd.isna(values).any():
        raise ValueError(f"Input {what} contains NaN ({int(pd.isna(values).sum()):,} rows)")
    return values


def binary_target(y, what: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """``y`` as 0/1 codes and its two classes, sorted (the second is the positive class)."""
    values = _values(y, what)
    classes, codes = np.unique(values, return_inverse=True)
    if len(classes) != 2:
        raise ValueError(
            f"{what} must hold two classes (who bought and who did not), got {len(classes)}: {classes.tolist()[:5]}"
        )
    return codes.astype(int), classes


def codes_in(y, classes: np.ndarray, what: str = "y_valid") -> np.ndarray:
    """``y`` (validation labels) as the 0/1 codes of ``classes``, the training labels'."""
    values = _values(y, what)
    unknown = ~np.isin(values, classes)
    if unknown.any():
        raise ValueError(f"{what} holds labels the training labels do not: {np.unique(values[unknown]).tolist()[:5]}")
    return np.searchsorted(classes, values).astype(int)


def numeric_target(y, what: str = "y") -> np.ndarray:
    """``y`` as floats, every row present."""
    values = _values(y, what)
    try:
        return values.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers") from None
