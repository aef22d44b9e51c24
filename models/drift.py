"""Reference distributions saved with a model, for population stability checks at scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd

# A category feature's reference keeps its most common values; the rest are one "other" share.
REFERENCE_VALUES = 20


def is_category(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values)


def reference_distributions(X: pd.DataFrame, bins: int = 10) -> dict[str, dict]:
    """Per numeric feature: inner decile edges (``edges``) and each bin's share, plus the missing
    share; per category feature (a favourite, a text attribute): its most common values
    (``values``) and each one's share, plus the share of any other value and the missing share."""
    reference = {}
    for column in X.columns:
        values = X[column]
        if is_category(values):
            counts = values.astype("object").value_counts(dropna=True)
            known = [str(v) for v in counts.index[:REFERENCE_VALUES]]
            reference[column] = {"values": known, "shares": category_shares(values, known).tolist()}
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


def category_shares(values: pd.Series, known: list[str]) -> np.ndarray:
    """Shares of each of the ``known`` values, then of any other value, then of missing ones."""
    text = values.astype("object")
    missing = text.isna().to_numpy()
    as_text = text[~missing].astype("str")
    counts = as_text.value_counts()
    shares = [float(counts.get(v, 0)) for v in known]
    shares += [float(len(as_text) - sum(shares)), float(missing.sum())]
    return np.asarray(shares) / max(len(text), 1)


def population_stability_index(expected, actual, floor: float = 1e-4) -> float:
    e = np.clip(np.asarray(expected, float), floor, None)
    a = np.clip(np.asarray(actual, float), floor, None)
    return float(np.sum((a - e) * np.log(a / e)))
