"""Per-customer reasons: the features pushing a score up the most, in words a marketer reads.

Each reason is the feature's catalogue label and its value written by the feature's scale:
"spend in the last 90 days: 1,234.50", "share of spend on Dairy: 45%", "days since the last
purchase: 12 days". The meaning comes from :mod:`features.catalogue` (stored beside a model as
``meanings``), never from the column name.

Contributions come from LightGBM's TreeSHAP (``pred_contrib``), which runs at about a thousand
rows a second here: compute reasons for lists and API calls, not for every scored customer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from features.catalogue import Feature, describe

# A feature's meaning: a catalogue Feature, or its ``meaning()`` dict as stored in model meta.
Meaning = Feature | Mapping


def _missing(value) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _number(value: float) -> str:
    """A number of no known unit (a customers attribute): whole numbers of four digits without
    a separator, so that a year reads as one ("birth year: 1975", not "1,975")."""
    value = float(value)
    if value.is_integer():
        return f"{int(value)}" if abs(value) < 10_000 else f"{int(value):,}"
    return f"{value:,.2f}"


def _days(value: float) -> str:
    value = float(value)
    shown = f"{int(value):,}" if value.is_integer() else f"{value:,.1f}"
    return f"{shown} day" if value == 1 else f"{shown} days"


_FORMATS: dict[str, Callable[[float], str]] = {
    "money": lambda v: f"{round(float(v), 2) + 0.0:,.2f}",  # + 0.0: no -0.00 for refunds that cancel
    "share": lambda v: f"{100 * float(v):.0f}%",
    "count": lambda v: f"{round(float(v)):,}",
    "days": _days,
    "ratio": lambda v: f"{float(v):,.2f}",
    "flag": lambda v: "yes" if float(v) else "no",
    "number": _number,
}


def _field(meaning: Meaning | None, key: str, default: str) -> str:
    if meaning is None:
        return default
    value = meaning.get(key) if isinstance(meaning, Mapping) else getattr(meaning, key, None)
    return value or default


def format_value(value, scale: str = "number") -> str:
    """A value as a person reads it: money with two decimals, a share as a percentage, counts
    as whole numbers, days as "N days", a category as its text; a missing value as "unknown"."""
    if _missing(value):
        return "unknown"
    if isinstance(value, str) or scale == "category":
        return str(value)
    try:
        return _FORMATS.get(scale, _number)(value)
    except (TypeError, ValueError):
        return str(value)


def _label_and_scale(feature: str, meaning: Meaning | None) -> tuple[str, str]:
    return _field(meaning, "label", feature.replace("_", " ")), _field(meaning, "scale", "number")


def phrase(feature: str, value, meanings: Mapping[str, Meaning] | None = None) -> str:
    """One feature and its value as a short phrase: "label: value".

    ``meanings`` maps feature names to catalogue entries (or their stored ``meaning()``); a
    feature not in it is looked up in the default catalogue, else shown by its name in words."""
    meaning = (meanings or {}).get(feature)
    if meaning is None:
        meaning = describe([feature]).get(feature)
    label, scale = _label_and_scale(feature, meaning)
    return f"{label}: {format_value(value, scale)}"


def resolve_meanings(names: Iterable[str], meanings: Mapping[str, Meaning] | None = None) -> dict[str, Meaning]:
    """The meaning of each name: from ``meanings`` where given, else the default catalogue."""
    names = list(names)
    given = dict(meanings or {})
    missing = [n for n in names if n not in given]
    return {**describe(missing), **given} if missing else given


def top_reasons(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    k: int = 3,
    meanings: Mapping[str, Meaning] | None = None,
    leave_out: Iterable[str] = (),
) -> pd.DataFrame:
    """Columns ``reason_1..k``: the ``k`` largest positive contributions of each row, phrased.

    Vectorised over rows: one argsort of the contribution matrix, then a phrase per chosen cell.
    ``meanings`` (feature name to catalogue entry or stored meaning) labels the features.
    ``leave_out``: features never given as a reason (the data set's sensitive attributes), the
    next largest contributions taking their place.
    """
    values = contributions.to_numpy(dtype="float64", copy=True)
    left_out = set(leave_out)
    hidden = [i for i, name in enumerate(contributions.columns) if name in left_out]
    values[:, hidden] = -np.inf
    order = np.argsort(-values, axis=1)[:, :k]
    names = list(contributions.columns)
    meanings = resolve_meanings(names, meanings)
    shown = [_label_and_scale(name, meanings.get(name)) for name in names]  # once per feature
    cells: dict[int, np.ndarray] = {}  # feature values by column, read only for chosen features
    result = {}
    for i in range(k):
        chosen = order[:, i]
        positive = values[np.arange(len(values)), chosen] > 0
        column = []
        for row, (j, ok) in enumerate(zip(chosen, positive, strict=True)):
            if not ok:
                column.append(None)
                continue
            if j not in cells:
                cells[j] = features[names[j]].to_numpy(dtype=object)
            label, scale = shown[j]
            column.append(f"{label}: {format_value(cells[j][row], scale)}")
        result[f"reason_{i + 1}"] = pd.Series(column, dtype="object", index=contributions.index)
    return pd.DataFrame(result, index=contributions.index)
