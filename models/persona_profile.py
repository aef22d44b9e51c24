"""What a persona looks like: the crowd portrait table, generated names, and matching personas
across refits so that ids and names stay stable."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from features.catalogue import Feature, describe

KEY_FEATURES = (
    "spend_365d",
    "orders_365d",
    "days_since_last_purchase",
    "avg_order_value",
    "promo_share_365d",
    "discount_order_share",
    "price_level",
    "payday_order_share",
    "order_share_q4",
    "event_count_365d",
    "view_count_365d",
    "campaign_response_rate",
)
# Distance (in the model's scaled space, per dimension) below which a refitted cluster keeps the
# id and name of the previous persona it matches.
MATCH_DISTANCE = 0.5


def persona_feature_columns(
    columns: list[str], longest_window: int = 365, meanings: dict[str, Feature] | None = None
) -> list[str]:
    """Default persona features: every window-free feature plus the longest window's; shorter
    windows repeat the same behaviour and would outweigh the rest. Attributes (the customers
    table) describe a persona in the portrait table; they do not define it. Family and window
    are the catalogue's; a column it does not know (a date attribute) is left out."""
    meanings = meanings if meanings is not None else describe(columns)
    return [
        column
        for column in columns
        if (feature := meanings.get(column)) is not None
        and feature.family != "attributes"
        and feature.window in (None, longest_window)
        and feature.cluster
    ]


def lifts(features: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Mean of each numeric feature per persona divided by the population mean; missing where
    the population mean is not positive (a ratio to zero or to a negative trend means nothing)."""
    numeric = features.select_dtypes("number")
    means = numeric.groupby(labels).mean()
    population = numeric.mean()
    return means / population.where(population > 0)


def feature_lifts(features: pd.DataFrame, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    """:func:`lifts` as a table: ``persona_id``, ``persona_name``, then one column per feature."""
    table = lifts(features, labels)
    table.insert(0, "persona_name", [names[int(p)] for p in table.index])
    return table.rename_axis("persona_id").reset_index()


def generate_name(lift: pd.Series, profile: pd.Series) -> str:
    """A readable name from the most distinguishing traits (lift against the population)."""

    def high(name, threshold=1.4):
        return name in lift and lift[name] >= threshold

    def low(name, threshold=0.6):
        return name in lift and lift[name] <= threshold

    if low("days_since_first_purchase", 0.4):
        core = "New customers"  # too new for their habits to show
    elif high("view_count_365d", 2.0) and low("orders_365d", 0.7):
        core = "Browsers"
    elif profile.get("orders_lifetime", 2) <= 1.2:
        core = "One-time buyers"
    elif high("order_share_q4", 1.6):
        core = "Seasonal shoppers"  # before lapsing: out of season they look overdue
    elif high("days_since_last_purchase", 1.5) and profile.get("orders_lifetime", 0) >= 3:
        core = "Lapsed regulars"
    elif high("overdue_ratio", 1.8) and profile.get("orders_lifetime", 0) >= 3:
        core = "Lapsing regulars"  # still bought this year, but long past their usual gap
    elif high("promo_share_365d") or high("discount_order_share"):
        core = "Promotion hunters"
    elif high("payday_order_share", 1.6):
        core = "Payday shoppers"
    elif high("orders_365d"):
        core = "Regulars"
    elif low("orders_365d", 0.7):
        core = "Occasional buyers"
    else:
        core = "Mainstream shoppers"  # buys about as often as the population: no stand-out habit
    value = "High-spend " if high("spend_365d", 1.6) else ("Low-spend " if low("spend_365d", 0.4) else "")
    if core.startswith("Laps"):
        value = ""  # their last year's spend measures the lapse, not their value
    name = value + (core.lower() if value else core)
    channel = profile.get("favourite_channel")
    if isinstance(channel, str) and profile.get("favourite_channel_share", 0) >= 0.5:
        name += f" · {channel}"
    if high("price_level", 1.25) and not high("promo_share_365d"):
        name += " · full price"
    elif low("price_level", 0.8):
        name += " · value"
    return name


def _top_values(series: pd.Series, k: int = 3) -> str:
    """The top values among customers where the attribute is known, and how many those are:
    demographics are often known for a minority, so the shares alone would mislead."""
    counts = series.value_counts(dropna=True)
    counts = counts[counts > 0]  # a categorical lists every category, seen or not
    if counts.empty:
        return ""
    shown = ", ".join(f"{value} ({count / counts.sum():.0%})" for value, count in counts.head(k).items())
    return f"{shown}; known for {counts.sum() / len(series):.0%}"


def _top_shares(features: pd.DataFrame, mask, subject: str, meanings: dict[str, Feature], k: int = 3) -> str:
    """The ``k`` values of ``subject`` (category, channel, payment) with the largest mean share,
    shown by their data value; the pooled ``other`` share is left out."""
    shown = {
        c: f.value
        for c, f in meanings.items()
        if f.subject == subject and f.measure == f"{subject}_share" and f.value is not None
    }
    if not shown:
        return ""
    means = features.loc[mask, list(shown)].mean().sort_values(ascending=False).head(k)
    return ", ".join(f"{shown[c]} ({v:.0%})" for c, v in means.items() if v > 0)


def describe_frame(features: pd.DataFrame) -> dict[str, Feature]:
    """The catalogue entry of each feature column, with the frame's vocabulary (kept in
    ``attrs`` by the feature build) so per-value shares name their data value."""
    return describe(features.columns, vocabulary=features.attrs.get("vocabulary"))


def portrait_table(features: pd.DataFrame, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    """One row per persona: size, share of customers and revenue, key medians and means, top
    categories / channels / payment methods, demographic mix, and each key feature's lift."""
    labels = np.asarray(labels)
    revenue = features["spend_365d"].clip(lower=0) if "spend_365d" in features else pd.Series(0, index=features.index)
    total_revenue = revenue.sum() or 1.0
    lift = lifts(features, labels)
    meanings = describe_frame(features)
    attributes = [
        (c, f.value)
        for c, f in meanings.items()
        if f.family == "attributes" and not pd.api.types.is_numeric_dtype(features[c])
    ]
    rows = []
    for persona in sorted(np.unique(labels)):
        mask = labels == persona
        row = {
            "persona_id": int(persona),
            "persona_name": names.get(int(persona), f"Persona {persona}"),
            "customers": int(mask.sum()),
            "share_of_customers": mask.mean(),
            "share_of_revenue": revenue[mask].sum() / total_revenue,
        }
        for feature in KEY_FEATURES:
            if feature in features:
                row[f"median_{feature}"] = features.loc[mask, feature].median()
                row[f"mean_{feature}"] = features.loc[mask, feature].mean()
                row[f"lift_{feature}"] = lift.loc[persona, feature]
        row["top_categories"] = _top_shares(features, mask, "category", meanings)
        row["top_channels"] = _top_shares(features, mask, "channel", meanings)
        row["top_payment_methods"] = _top_shares(features, mask, "payment", meanings)
        for column, attribute in attributes:
            row[f"mix_{attribute}"] = _top_values(features.loc[mask, column])
        rows.append(row)
    table = pd.DataFrame(rows)
    if features.attrs.get("vocabulary"):
        table.attrs["vocabulary"] = features.attrs["vocabulary"]  # lets the report name values
    return table


def name_personas(features: pd.DataFrame, labels: np.ndarray) -> dict[int, str]:
    lift = lifts(features, labels)
    names: dict[int, str] = {}
    for persona in sorted(np.unique(labels)):
        mask = np.asarray(labels) == persona
        profile = {
            "orders_lifetime": features.loc[mask, "orders_lifetime"].median() if "orders_lifetime" in features else 2
        }
        if "favourite_channel" in features:
            counts = features.loc[mask, "favourite_channel"].value_counts(normalize=True)
            if len(counts):
                profile["favourite_channel"], profile["favourite_channel_share"] = counts.index[0], counts.iloc[0]
        names[int(persona)] = generate_name(lift.loc[persona], pd.Series(profile, dtype="object"))
    seen: dict[str, int] = {}
    for persona, name in names.items():  # keep names unique
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[persona] = f"{name} ({seen[name]})"
    return names


def match_personas(previous: np.ndarray, current: np.ndarray, max_distance: float = MATCH_DISTANCE):
    """Hungarian assignment of current clusters to previous ones by centroid distance (both in
    the same space). Returns {current index: previous index} for matches closer than
    ``max_distance`` per dimension, and the previous indices left unmatched."""
    cost = np.linalg.norm(previous[:, None, :] - current[None, :, :], axis=2) / np.sqrt(previous.shape[1])
    rows, cols = linear_sum_assignment(cost)
    matches = {int(c): int(r) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= max_distance}
    gone = sorted(set(range(len(previous))) - set(matches.values()))
    return matches, gone, cost
