"""Per-customer reasons: the features pushing a score up the most, in words a marketer reads.

Contributions come from LightGBM's TreeSHAP (``pred_contrib``), which runs at about a thousand
rows a second here: compute reasons for lists and API calls, not for every scored customer.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_EVENT_WORDS = {
    "view": "viewed products {v} times",
    "search": "searched {v} times",
    "add_to_cart": "added to cart {v} times",
    "favorite": "saved {v} favourites",
    "campaign_received": "received {v} campaigns",
    "campaign_click": "clicked {v} campaigns",
    "coupon_redeemed": "redeemed {v} coupons",
    "service_contact": "contacted service {v} times",
    "review": "wrote {v} reviews",
    "event": "had {v} interactions",
}


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def phrase(feature: str, value, descriptions: dict[str, str] | None = None) -> str:
    """One feature and its value as a short sentence."""
    v = _number(value) if not isinstance(value, str) else value
    if m := re.fullmatch(r"orders_(\d+)d", feature):
        return f"bought {v} times in the last {m[1]} days"
    if m := re.fullmatch(r"spend_(\d+)d", feature):
        return f"spent {v} in the last {m[1]} days"
    if m := re.fullmatch(r"active_days_(\d+)d", feature):
        return f"shopped on {v} days in the last {m[1]} days"
    if m := re.fullmatch(r"(\w+?)_count_(\d+)d", feature):
        template = _EVENT_WORDS.get(m[1])
        if template:
            return template.format(v=v) + f" in the last {m[2]} days"
    if feature == "days_since_last_purchase":
        return f"last bought {v} days ago"
    if feature == "days_since_first_purchase":
        return f"a customer for {v} days"
    if feature == "std_days_between_orders":
        return f"a steady rhythm (gaps between orders vary by {v} days)"
    if feature == "mean_days_between_orders":
        return f"buys every {v} days on average"
    if feature == "overdue_ratio":
        return f"{v} of their usual gap since the last order"
    if feature == "orders_lifetime":
        return f"{v} orders in all"
    if feature == "avg_order_value":
        return f"spends {v} per order on average"
    if m := re.fullmatch(r"(category|brand)_share_(.+)", feature):
        return f"{_percent(value)} of spend on {m[2].replace('_', ' ')}"
    if m := re.fullmatch(r"(channel|payment)_share_(.+)", feature):
        return f"{_percent(value)} of orders via {m[2].replace('_', ' ')}"
    if feature.endswith("_share") or "_share_" in feature or feature.endswith("_rate") or "_rate_" in feature:
        described = (descriptions or {}).get(feature, feature.replace("_", " "))
        return f"{described.rstrip('.').lower()}: {_percent(value)}"
    described = (descriptions or {}).get(feature, feature.replace("_", " "))
    return f"{described.rstrip('.')}: {v}"


def _percent(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    return f"{100 * float(value):.0f}%"


def top_reasons(
    contributions: pd.DataFrame, features: pd.DataFrame, k: int = 3, descriptions: dict[str, str] | None = None
) -> pd.DataFrame:
    """Columns ``reason_1..k``: the ``k`` largest positive contributions of each row, phrased.

    Vectorised over rows: one argsort of the contribution matrix, then a phrase per chosen cell.
    """
    values = contributions.to_numpy()
    order = np.argsort(-values, axis=1)[:, :k]
    names = np.asarray(contributions.columns)
    result = {}
    for i in range(k):
        chosen = order[:, i]
        positive = values[np.arange(len(values)), chosen] > 0
        column = []
        for row, (j, ok) in enumerate(zip(chosen, positive, strict=True)):
            name = names[j]
            column.append(phrase(name, features.iloc[row][name], descriptions) if ok else None)
        result[f"reason_{i + 1}"] = pd.Series(column, dtype="object", index=contributions.index)
    return pd.DataFrame(result, index=contributions.index)
