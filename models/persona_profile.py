"""What a persona looks like: the crowd portrait table, generated names, and matching personas
across refits so that ids and names stay stable."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from features.catalogue import DAY_NAMES, HOUR_BANDS, Feature, describe

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
# A persona is distinguished by a feature whose mean is at least 1.5 times, or at most 2/3 of,
# the population's (issue 13 §5).
DISTINCT_HIGH, DISTINCT_LOW = 1.5, 0.67
# A lift needs customers behind it: a feature fewer than this many customers hold (not 0) in the
# whole population has none (one night order made 32 customers "night shoppers"), and a
# persona is high on a feature only when at least MIN_PERSONA_HOLDERS of its own hold it.
MIN_HOLDERS, MIN_PERSONA_HOLDERS = 10, 5
TOP_DISTINGUISHING = 3  # shown in the portrait table
# The spending-power axis: levels of spend_365d at quintiles of the customers who spent, as the
# "value/spending_power" group of the shipped tag library (marketing/templates/retail.toml).
SPENDING_POWER = ("spend_365d", (0.2, 0.4, 0.6, 0.8), ("low", "lower-middle", "middle", "upper-middle", "high"))


def persona_feature_columns(
    columns: list[str],
    longest_window: int = 365,
    meanings: dict[str, Feature] | None = None,
    aspects: tuple[str, ...] | None = None,
) -> list[str]:
    """Default persona features: every window-free feature plus the longest window's; shorter
    windows repeat the same behaviour and would outweigh the rest. Attributes (the customers
    table) describe a persona in the portrait table; they do not define it. With ``aspects``
    (``("shape",)`` for personas that differ in how people shop), only features of those
    aspects. Family, window and aspect are the catalogue's; a column it does not know (a date
    attribute) is left out."""
    meanings = meanings if meanings is not None else describe(columns)
    return [
        column
        for column in columns
        if (feature := meanings.get(column)) is not None
        and feature.family != "attributes"
        and feature.window in (None, longest_window)
        and feature.cluster
        and (aspects is None or feature.aspect in aspects)
    ]


def support_columns(
    clustered: list[str], available: list[str], meanings: dict[str, Feature] | None = None
) -> list[str]:
    """The order counts behind the clustered shares (the catalogue's ``per``) that are not
    clustered themselves: read to shrink the shares, not clustered on."""
    meanings = meanings if meanings is not None else describe(clustered)
    pers = {meanings[c].per for c in clustered if c in meanings and meanings[c].per}
    return [c for c in available if c in pers and c not in clustered]


def spending_power(spend: pd.Series) -> pd.Series:
    """Each customer's spending-power level (the tag library's): quintiles of the positive
    spend; zero or missing spend is the lowest level."""
    _, quantiles, values = SPENDING_POWER
    positive = spend[spend > 0]
    if positive.empty:
        return pd.Series(values[0], index=spend.index)
    bounds = positive.quantile(list(quantiles)).to_numpy()
    levels = np.searchsorted(bounds, spend.fillna(0).to_numpy(), side="left")
    return pd.Series(np.asarray(values)[levels], index=spend.index)


def distinguishing(
    lift: pd.Series,
    meanings: dict[str, Feature],
    high: float = DISTINCT_HIGH,
    low: float = DISTINCT_LOW,
    longest_window: int = 365,
) -> pd.Series:
    """The non-volume features (shape, state; window-free or the longest window's, as the
    clustered ones) whose lift is at least ``high`` or at most ``low``, furthest from 1 first
    (by |log lift|)."""
    known = [
        c
        for c in lift.index
        if c in meanings and meanings[c].aspect in ("shape", "state") and meanings[c].window in (None, longest_window)
    ]
    values = pd.to_numeric(lift[known], errors="coerce").dropna()
    values = values[(values >= high) | ((values <= low) & (values > 0))]
    return values.reindex(np.log(values).abs().sort_values(ascending=False).index)


def lifts(features: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Mean of each numeric feature per persona divided by the population mean; missing where
    the population mean is not positive (a ratio to zero or to a negative trend means nothing)."""
    numeric = features.select_dtypes("number")
    means = numeric.groupby(labels).mean()
    population = numeric.mean()
    return means / population.where(population > 0)


def trait_lifts(features: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """:func:`lifts` that can name a persona: missing where too few customers hold the feature
    to say (:data:`MIN_HOLDERS` in the population, :data:`MIN_PERSONA_HOLDERS` in a persona
    said to be high on it)."""
    lift = lifts(features, labels)
    numeric = features.select_dtypes("number")
    holds = numeric.notna() & numeric.ne(0)
    held = holds.groupby(labels).sum()
    too_few = (held < MIN_PERSONA_HOLDERS) & (lift > 1)
    too_few |= pd.DataFrame(
        np.broadcast_to((holds.sum() < MIN_HOLDERS).to_numpy(), lift.shape), index=lift.index, columns=lift.columns
    )
    return lift.mask(too_few)


def feature_lifts(features: pd.DataFrame, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    """:func:`trait_lifts` as a table: ``persona_id``, ``persona_name``, then one column per feature."""
    table = trait_lifts(features, labels)
    table.insert(0, "persona_name", [names[int(p)] for p in table.index])
    return table.rename_axis("persona_id").reset_index()


def _pretty(value: str) -> str:
    """A data value as a name part: shouted values (``BEERS/ALES``) in title case."""
    value = str(value)
    return value.title() if value.isupper() else value[:1].upper() + value[1:]


EVENT_PEOPLE = {
    "view": "Browsers",
    "search": "Searchers",
    "add_to_cart": "Cart fillers",
    "favorite": "Wish-listers",
    "campaign_click": "Campaign clickers",
    "coupon_redeemed": "Coupon redeemers",
    "service_contact": "Service callers",
    "review": "Reviewers",
}
LOW_PHRASES = {
    "price_level": "Value shoppers",
    "premium_line_share": "Value shoppers",
    "discount_order_share": "Full-price shoppers",
    "promo_share_365d": "Full-price shoppers",
    "campaign_response_rate": "Campaign-indifferent shoppers",
    "interactions_per_order_365d": "Quiet shoppers",
}
HIGH_PHRASES = {
    "premium_line_share": "Premium buyers",
    "price_level": "Full-price shoppers",
    "campaign_response_rate": "Campaign responders",
    "avg_discount_depth": "Deep-discount hunters",
    "refund_rate": "Returners",
    "interactions_per_order_365d": "Engaged shoppers",
}


def trait_phrase(column: str, feature: Feature | None, high: bool, lift: pd.Series | None = None) -> str | None:
    """Who the customers high (or low) on a shape feature are, as a persona name: "Weekend
    shoppers", "Beers/Ales buyers", "App shoppers"; None where the trait has no short name.
    Read from the catalogue (subject, value, label), so it works on any retailer's values.
    Engagement is named by the event type whose count stands out most in ``lift`` (coupon
    redeemers where the interactions are coupons, browsers where they are product views)."""
    if feature is None:
        return None
    if not high:
        return LOW_PHRASES.get(column)
    if column == "interactions_per_order_365d" and lift is not None:
        events = {
            f"{event}_count_365d": people for event, people in EVENT_PEOPLE.items() if f"{event}_count_365d" in lift
        }
        counts = pd.to_numeric(lift[list(events)], errors="coerce").dropna()
        if len(counts) and counts.max() >= DISTINCT_HIGH:
            return events[counts.idxmax()]
    if feature.subject in ("category", "brand", "channel", "payment") and feature.value is not None:
        value = _pretty(feature.value)
        return {
            "category": f"{value} buyers",
            "brand": f"{value}-brand buyers",
            "channel": f"{value} shoppers",
            "payment": f"{value} payers",
        }[feature.subject]
    when = column.removeprefix("order_share_")
    if when != column:
        if when in DAY_NAMES or when == "weekend" or when in {band for band, _, _ in HOUR_BANDS}:
            return f"{when.title()} shoppers"
        if when.startswith("q"):
            return f"{feature.label.rsplit(' in ', 1)[-1]} shoppers"  # "Oct-Dec shoppers"
    return HIGH_PHRASES.get(column)


def trait_phrases(lift: pd.Series, meanings: dict[str, Feature]) -> list[tuple[bool, float, str]]:
    """The named shape traits of one persona as (high, |log lift|, phrase): what it does more
    than others first (a persona is better named by what it does than by what it does not),
    then the strongest."""
    traits = distinguishing(lift, meanings)
    named = []
    for column, value in traits.items():
        if meanings[column].aspect == "shape":
            phrase = trait_phrase(column, meanings[column], value >= 1, lift)
            if phrase:
                named.append((bool(value >= 1), abs(float(np.log(value))), phrase))
    return sorted(named, reverse=True)


def name_parts(
    lift: pd.Series, profile: pd.Series, meanings: dict[str, Feature] | None = None
) -> tuple[str | None, list[str]]:
    """A persona's name core where a rule names it (new, one-time, seasonal, lapsed, lapsing,
    promotion or payday shoppers; browsers), else None (its traits name it), and its suffixes
    (its channel, its price level), from its lifts against the population. The value level is
    not part of the name: it is its own axis (the spending-power mix)."""
    meanings = meanings if meanings is not None else describe(lift.index)

    def high(name, threshold=1.4):
        return name in lift and lift[name] >= threshold

    def low(name, threshold=0.6):
        return name in lift and lift[name] <= threshold

    orders = profile.get("orders_lifetime", 2)
    core = None
    if low("days_since_first_purchase", 0.4):
        core = "New customers"  # too new for their habits to show
    elif high("view_count_365d", 2.0) and (high("interactions_per_order_365d", 2.0) or low("orders_365d", 0.7)):
        core = "Browsers"
    elif orders <= 1.2:
        core = "One-time buyers"
    elif high("order_share_q4", 1.6):
        core = "Seasonal shoppers"  # before lapsing: out of season they look overdue
    elif (high("recency_share_of_tenure", 2.0) or high("days_since_last_purchase", 1.5)) and orders >= 3:
        core = "Lapsed regulars"
    elif high("overdue_ratio", 1.8) and orders >= 3:
        core = "Lapsing regulars"  # still bought this year, but long past their usual gap
    elif high("promo_share_365d") or high("discount_order_share"):
        core = "Promotion hunters"
    elif high("payday_order_share", 1.6):
        core = "Payday shoppers"
    suffixes = []
    channel = profile.get("favourite_channel")
    # 'other' (a channel outside the top ones) names no channel: no suffix
    if isinstance(channel, str) and channel != "other" and profile.get("favourite_channel_share", 0) >= 0.5:
        suffixes.append(channel)
    if high("price_level", 1.25) and not high("promo_share_365d"):
        suffixes.append("full price")
    elif low("price_level", 0.8):
        suffixes.append("value")
    return core, suffixes


def _fallback_core(lift: pd.Series) -> str:
    if "orders_365d" in lift and lift["orders_365d"] >= 1.4:
        return "Regulars"
    if "orders_365d" in lift and lift["orders_365d"] <= 0.7:
        return "Occasional buyers"
    return "Mainstream shoppers"  # no stand-out habit


def _join(core: str, suffixes: list[str]) -> str:
    """Core and suffixes, less a suffix the core already says (value shoppers · value)."""
    said = {"value": "Value shoppers", "full price": "Full-price shoppers"}
    return " · ".join([core, *[s for s in suffixes if said.get(s) != core]])


def generate_name(lift: pd.Series, profile: pd.Series, meanings: dict[str, Feature] | None = None) -> str:
    """A readable name from the most distinguishing traits (lift against the population)."""
    meanings = meanings if meanings is not None else describe(lift.index)
    core, suffixes = name_parts(lift, profile, meanings)
    if core is None:
        phrases = trait_phrases(lift, meanings)
        core = phrases[0][2] if phrases else _fallback_core(lift)
    return _join(core, suffixes)


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
    return describe(
        features.columns, vocabulary=features.attrs.get("vocabulary"), attributes=features.attrs.get("attributes")
    )


def portrait_table(features: pd.DataFrame, labels: np.ndarray, names: dict[int, str]) -> pd.DataFrame:
    """One row per persona: size, share of customers and revenue, key medians and means, top
    categories / channels / payment methods, demographic mix, the spending-power mix (the value
    axis, apart from the personas), the distinguishing non-volume features with their lifts,
    and each key feature's lift."""
    labels = np.asarray(labels)
    revenue = features["spend_365d"].clip(lower=0) if "spend_365d" in features else pd.Series(0, index=features.index)
    total_revenue = revenue.sum() or 1.0
    lift, traits_lift = lifts(features, labels), trait_lifts(features, labels)
    meanings = describe_frame(features)
    attributes = [
        (c, f.value)
        for c, f in meanings.items()
        if f.family == "attributes" and not pd.api.types.is_numeric_dtype(features[c])
    ]
    power = spending_power(features[SPENDING_POWER[0]]) if SPENDING_POWER[0] in features else None
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
        traits = distinguishing(traits_lift.loc[persona], meanings)
        row["distinguishing_features"] = "; ".join(
            f"{meanings[c].label} x{v:.2f}" for c, v in traits.head(TOP_DISTINGUISHING).items()
        )
        row["distinguishing_count"] = len(traits)
        if power is not None:
            shares = power[mask].value_counts(normalize=True).reindex(list(SPENDING_POWER[2])).fillna(0)
            row["spending_power"] = ", ".join(f"{level} {share:.0%}" for level, share in shares.items())
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
    """A name per persona. Rules name the lifecycle and the classic habits (:func:`name_parts`);
    the other personas take their strongest named trait that no other persona has taken (the
    strongest traits across personas are given out first), so three personas that are all
    cheaper than average are not all "Value shoppers". A suffix every persona shares (the
    channel when everyone buys in store) says nothing and is dropped; names that still collide
    take the persona's next unused trait, else a number."""
    lift = trait_lifts(features, labels)
    meanings = describe_frame(features)
    labels = np.asarray(labels)
    personas = sorted(int(p) for p in np.unique(labels))
    orders = (
        features["orders_lifetime"].groupby(labels).median()
        if "orders_lifetime" in features
        else pd.Series(2.0, index=personas)
    )
    favourite = None
    if "favourite_channel" in features:
        counts = pd.crosstab(labels, features["favourite_channel"].astype("object").fillna(""), normalize="index")
        favourite = pd.DataFrame({"channel": counts.idxmax(axis=1), "share": counts.max(axis=1)})
    cores, suffixes, phrases = {}, {}, {}
    for persona in personas:
        profile = {"orders_lifetime": orders.get(persona, 2.0)}
        if favourite is not None and persona in favourite.index and favourite.loc[persona, "channel"]:
            profile["favourite_channel"] = favourite.loc[persona, "channel"]
            profile["favourite_channel_share"] = favourite.loc[persona, "share"]
        cores[persona], suffixes[persona] = name_parts(lift.loc[persona], pd.Series(profile, dtype="object"), meanings)
        phrases[persona] = trait_phrases(lift.loc[persona], meanings)
    taken = {core for core in cores.values() if core}
    offers = sorted(
        ((is_high, strength, p, phrase) for p in personas for is_high, strength, phrase in phrases[p]), reverse=True
    )
    for _, _, persona, phrase in offers:  # the strongest traits first, each to one persona
        if cores[persona] is None and phrase not in taken:
            cores[persona] = phrase
            taken.add(phrase)
    for persona in personas:
        cores[persona] = cores[persona] or _fallback_core(lift.loc[persona])
    if len(personas) > 1:  # drop the suffixes that do not tell personas apart
        shared = set.intersection(*(set(s) for s in suffixes.values()))
        suffixes = {p: [s for s in suffixes[p] if s not in shared] for p in personas}
    names = {p: _join(cores[p], suffixes[p]) for p in personas}
    for persona in personas:
        if list(names.values()).count(names[persona]) == 1:
            continue
        for _, _, phrase in phrases[persona]:
            if phrase not in taken and phrase != cores[persona]:
                names[persona] = f"{names[persona]} · {phrase.lower()}"
                taken.add(phrase)
                break
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
