"""Reference distributions saved with a model, for population stability checks at scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd


def reference_distributions(X: pd.DataFrame, bins: int = 10) -> dict[str, dict]:
    """Per numeric feature: inner decile edges and each bin's share (plus the missing share)."""
    reference = {}
    for column in X.columns:
        values = X[column]
        if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values):
            continue
        present = values.dropna().to_numpy(dtype=float)
        edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else np.array([])
        reference[column] = {"edges": edges.tolist(), "shares": bin_shares(values, edges).tolist()}
    return reference


def bin_shares(values: pd.Series, edges) -> np.ndarray:
    """Shares of values in each bin between ``edges`` (right-closed), and a last bin for missing."""
    array = values.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(array)
    index = np.searchsorted(np.asarray(edges, float), array[~missing], side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, missing.sum())
    return counts / max(len(array), 1)


def population_stability_index(expected, actual, floor: float = 1e-4) -> float:
    e = np.clip(np.asarray(expected, float), floor, None)
    a = np.clip(np.asarray(actual, float), floor, None)
    return float(np.sum((a - e) * np.log(a / e)))
