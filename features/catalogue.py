"""The feature catalogue: every feature declared once with its name, family, window and meaning.

Each :class:`Feature` says which *stage* computes it and gives its SQL: an aggregate over the
stage's relation (one row per order, line, event bucket, ...), grouped by customer, or for the
``derived`` stage an expression over other features. :mod:`features.plan` compiles the
catalogue into a few SQL passes; nothing here touches data.

Relations and their columns (all restricted to rows before the cutoff):

- ``orders`` (one row per order): ``amount`` (net), ``gross`` (amount + discount), ``discount``,
  ``items``, ``age`` (whole days from the order's date to the cutoff date, >= 1), ``day``,
  ``is_purchase`` (net amount >= 0), ``is_refund`` (net amount < 0), ``has_discount``, ``dow``
  (0 = Sunday), ``hour``, ``dom`` (day of month), ``quarter``, ``channel_slot``,
  ``payment_slot`` (index in the top-K vocabulary, NULL for the rest);
- ``gaps`` (one row per purchase order after a customer's first): ``gap`` in days;
- ``purchase_days`` (one row per day with a purchase order): ``age``;
- ``lines`` (one row per purchase line): ``amount``, ``age``, ``category``,
  ``category_slot``, ``brand_slot``, ``price_ratio`` (unit list price / category median);
- ``line_categories`` (one row per category bought): ``age`` of its latest purchase, so
  "categories bought in the last w days" counts rows with ``age <= w``;
- ``event_buckets`` (events pre-aggregated per customer, type and window bucket, and per day
  inside the behaviour window): ``type_slot``, ``bucket`` (index of the smallest window
  holding the events), ``n``, ``min_age``;
- ``event_days`` (one row per day with an event in the behaviour window);
- ``campaigns`` (one row per campaign received whose response window closed before the
  cutoff): ``responded`` (1 when a purchase followed within the response days).

Null rules: counts and money are 0 for a customer with no rows in a stage; recency, averages,
shares and ratios are NULL where they are undefined (no purchase, no order in the window, no
view). A customer with only events therefore has ``orders_lifetime = 0``,
``spend_lifetime = 0`` and a NULL ``days_since_last_purchase``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from features.config import FeatureConfig
from portrait.contract import KNOWN_EVENT_TYPES

FAMILIES = (
    "value",
    "windows",
    "rhythm",
    "preferences",
    "price_promotion",
    "timing",
    "behaviour",
    "attributes",
)
EVENT_TYPES = KNOWN_EVENT_TYPES
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
HOUR_BANDS = (("night", 0, 5), ("morning", 6, 11), ("afternoon", 12, 17), ("evening", 18, 23))


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    window: int | None  # days before the cutoff; None: all history
    description: str
    stage: str
    sql: str
    dtype: str = "float"  # float, int or category
    fill_zero: bool = False  # 0 instead of NULL for a customer the stage has no rows for


@dataclass(frozen=True)
class Vocabulary:
    """The top values that get a share feature of their own; the rest pool into ``other``."""

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    payment_methods: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        return cls(**{k: tuple(v) for k, v in data.items()})


def slug(value: str) -> str:
    text = re.sub(r"[^0-9a-z]+", "_", str(value).lower()).strip("_")
    return text or "blank"


def slugs(values: tuple[str, ...]) -> list[str]:
    """Feature-name-safe labels, unique even when two values slugify alike."""
    seen: dict[str, int] = {}
    result = []
    for value in values:
        base = slug(value)
        seen[base] = seen.get(base, 0) + 1
        result.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return result


def _share(condition: str) -> str:
    return f"SUM(CASE WHEN is_purchase = 1 AND {condition} THEN 1 ELSE 0 END) * 1.0 / NULLIF(SUM(is_purchase), 0)"


def _in_window(w: int) -> str:
    return f"age <= {w}"


def value_family(config: FeatureConfig) -> list[Feature]:
    f = "value"
    return [
        Feature(
            "days_since_last_purchase",
            f,
            None,
            "Days from the last purchase to the cutoff (recency).",
            "orders",
            "MIN(CASE WHEN is_purchase = 1 THEN age END)",
        ),
        Feature(
            "days_since_first_purchase",
            f,
            None,
            "Days from the first purchase to the cutoff (tenure).",
            "orders",
            "MAX(CASE WHEN is_purchase = 1 THEN age END)",
        ),
        Feature(
            "orders_lifetime",
            f,
            None,
            "Purchase orders before the cutoff (frequency).",
            "orders",
            "SUM(is_purchase)",
            "int",
            True,
        ),
        Feature(
            "spend_lifetime",
            f,
            None,
            "Net spend before the cutoff, refunds deducted (monetary).",
            "orders",
            "SUM(amount)",
            fill_zero=True,
        ),
        Feature(
            "avg_order_value",
            f,
            None,
            "Average net value of a purchase order.",
            "orders",
            "SUM(CASE WHEN is_purchase = 1 THEN amount END) / NULLIF(SUM(is_purchase), 0)",
        ),
        Feature(
            "max_order_value",
            f,
            None,
            "Largest purchase order.",
            "orders",
            "MAX(CASE WHEN is_purchase = 1 THEN amount END)",
        ),
        Feature(
            "refund_count", f, None, "Orders that were net refunds or returns.", "orders", "SUM(is_refund)", "int", True
        ),
        Feature(
            "refund_amount",
            f,
            None,
            "Money refunded (positive).",
            "orders",
            "SUM(CASE WHEN is_refund = 1 THEN -amount ELSE 0 END)",
            fill_zero=True,
        ),
        Feature(
            "refund_rate",
            f,
            None,
            "Money refunded per unit of money spent on purchases.",
            "derived",
            "refund_amount / NULLIF(spend_lifetime + refund_amount, 0)",
        ),
    ]


def windows_family(config: FeatureConfig) -> list[Feature]:
    f = "windows"
    result = []
    for w in config.windows:
        inside = _in_window(w)
        result += [
            Feature(
                f"orders_{w}d",
                f,
                w,
                f"Purchase orders in the last {w} days.",
                "orders",
                f"SUM(CASE WHEN {inside} THEN is_purchase ELSE 0 END)",
                "int",
                True,
            ),
            Feature(
                f"spend_{w}d",
                f,
                w,
                f"Net spend in the last {w} days.",
                "orders",
                f"SUM(CASE WHEN {inside} THEN amount ELSE 0 END)",
                fill_zero=True,
            ),
            Feature(
                f"items_{w}d",
                f,
                w,
                f"Units bought in the last {w} days.",
                "orders",
                f"SUM(CASE WHEN {inside} AND is_purchase = 1 THEN items ELSE 0 END)",
                fill_zero=True,
            ),
            Feature(
                f"active_days_{w}d",
                f,
                w,
                f"Days with a purchase in the last {w} days.",
                "purchase_days",
                f"SUM(CASE WHEN {inside} THEN 1 ELSE 0 END)",
                "int",
                True,
            ),
            Feature(
                f"distinct_categories_{w}d",
                f,
                w,
                f"Categories bought in the last {w} days.",
                "line_categories",
                f"SUM(CASE WHEN {inside} THEN 1 ELSE 0 END)",
                "int",
                True,
            ),
        ]
    return result


def rhythm_family(config: FeatureConfig) -> list[Feature]:
    f, t = "rhythm", config.trend_window
    recent = f"age <= {t}"
    before = f"age > {t} AND age <= {2 * t}"
    return [
        Feature(
            "mean_days_between_orders",
            f,
            None,
            "Mean days between consecutive purchase orders.",
            "orders",
            "(MAX(CASE WHEN is_purchase = 1 THEN age END) - MIN(CASE WHEN is_purchase = 1 THEN age END))"
            " * 1.0 / NULLIF(SUM(is_purchase) - 1, 0)",
        ),
        Feature(
            "std_days_between_orders",
            f,
            None,
            "Standard deviation of days between purchase orders.",
            "gaps",
            "STDDEV_SAMP(gap)",
        ),
        Feature(
            "overdue_ratio",
            f,
            None,
            "Days since the last purchase divided by the customer's mean interval (>1: overdue).",
            "derived",
            "days_since_last_purchase / NULLIF(mean_days_between_orders, 0)",
        ),
        Feature(
            f"spend_trend_{t}d",
            f,
            t,
            f"Spend in the last {t} days vs the {t} before, from -1 (stopped) to 1 (new).",
            "orders",
            f"(SUM(CASE WHEN {recent} THEN amount ELSE 0 END) - SUM(CASE WHEN {before} THEN amount ELSE 0 END))"
            f" / NULLIF(ABS(SUM(CASE WHEN {recent} THEN amount ELSE 0 END)) + ABS(SUM(CASE WHEN {before} THEN amount ELSE 0 END)), 0)",
        ),
        Feature(
            f"orders_trend_{t}d",
            f,
            t,
            f"Orders in the last {t} days vs the {t} before, from -1 to 1.",
            "orders",
            f"(SUM(CASE WHEN {recent} THEN is_purchase ELSE 0 END) - SUM(CASE WHEN {before} THEN is_purchase ELSE 0 END)) * 1.0"
            f" / NULLIF(SUM(CASE WHEN {recent} THEN is_purchase ELSE 0 END) + SUM(CASE WHEN {before} THEN is_purchase ELSE 0 END), 0)",
        ),
    ]


def preferences_family(config: FeatureConfig, vocab: Vocabulary | None) -> list[Feature]:
    f = "preferences"
    result: list[Feature] = []
    spend = "NULLIF(SUM(amount), 0)"
    for kind, values, slot in (
        ("category", vocab.categories if vocab else None, "category_slot"),
        ("brand", vocab.brands if vocab else None, "brand_slot"),
    ):
        labels = slugs(values) if values is not None else [f"<top {kind}>"]
        for i, label in enumerate(labels):
            result.append(
                Feature(
                    f"{kind}_share_{label}",
                    f,
                    None,
                    f"Share of spend on {kind} {values[i]!r}." if values else f"Share of spend on each top {kind}.",
                    "lines",
                    f"SUM(CASE WHEN {slot} = {i} THEN amount ELSE 0 END) / {spend}",
                )
            )
        result.append(
            Feature(
                f"{kind}_share_other",
                f,
                None,
                f"Share of spend outside the top {kind}s.",
                "lines",
                f"SUM(CASE WHEN {slot} IS NULL THEN amount ELSE 0 END) / {spend}",
            )
        )
    for kind, values, slot in (
        ("channel", vocab.channels if vocab else None, "channel_slot"),
        ("payment", vocab.payment_methods if vocab else None, "payment_slot"),
    ):
        labels = slugs(values) if values is not None else [f"<top {kind}>"]
        for i, label in enumerate(labels):
            result.append(
                Feature(
                    f"{kind}_share_{label}",
                    f,
                    None,
                    f"Share of orders via {kind} {values[i]!r}." if values else f"Share of orders via each top {kind}.",
                    "orders",
                    _share(f"{slot} = {i}"),
                )
            )
    result += [
        Feature(
            "favourite_category", f, None, "Category with the largest share of spend.", "favourite", "", "category"
        ),
        Feature("favourite_channel", f, None, "Channel with the largest share of orders.", "favourite", "", "category"),
        Feature(
            "distinct_categories_lifetime",
            f,
            None,
            "Categories ever bought.",
            "line_categories",
            "COUNT(*)",
            "int",
            True,
        ),
    ]
    return result


def price_promotion_family(config: FeatureConfig) -> list[Feature]:
    f = "price_promotion"
    result = [
        Feature(
            "discount_order_share",
            f,
            None,
            "Share of purchase orders with a discount.",
            "orders",
            _share("has_discount = 1"),
        ),
        Feature(
            "avg_discount_depth",
            f,
            None,
            "Money off as a share of list price, on discounted orders.",
            "orders",
            "SUM(CASE WHEN has_discount = 1 AND is_purchase = 1 THEN discount END)"
            " / NULLIF(SUM(CASE WHEN has_discount = 1 AND is_purchase = 1 THEN gross END), 0)",
        ),
        Feature(
            "price_level",
            f,
            None,
            "Average unit list price relative to its category's median (1 = typical, >1 = pricier).",
            "lines",
            "AVG(price_ratio)",
        ),
        Feature(
            "premium_line_share",
            f,
            None,
            "Share of lines priced over 1.5 times the category median.",
            "lines",
            "AVG(CASE WHEN price_ratio > 1.5 THEN 1.0 WHEN price_ratio IS NOT NULL THEN 0.0 END)",
        ),
    ]
    for w in config.windows:
        if w >= 30:
            result.append(
                Feature(
                    f"promo_share_{w}d",
                    f,
                    w,
                    f"Share of purchase orders with a discount, last {w} days.",
                    "orders",
                    f"SUM(CASE WHEN is_purchase = 1 AND has_discount = 1 AND age <= {w} THEN 1 ELSE 0 END) * 1.0"
                    f" / NULLIF(SUM(CASE WHEN age <= {w} THEN is_purchase ELSE 0 END), 0)",
                )
            )
    return result


def timing_family(config: FeatureConfig) -> list[Feature]:
    f, n = "timing", config.payday_days
    result = [
        Feature(
            f"order_share_{day}",
            f,
            None,
            f"Share of purchase orders placed on a {day.title()}.",
            "orders",
            _share(f"dow = {i}"),
        )
        for i, day in enumerate(DAY_NAMES)
    ]
    result.append(
        Feature(
            "order_share_weekend",
            f,
            None,
            "Share of purchase orders on Saturday or Sunday.",
            "orders",
            _share("dow IN (0, 6)"),
        )
    )
    result += [
        Feature(
            f"order_share_{band}",
            f,
            None,
            f"Share of purchase orders placed {lo:02d}:00-{hi:02d}:59.",
            "orders",
            _share(f"hour BETWEEN {lo} AND {hi}"),
        )
        for band, lo, hi in HOUR_BANDS
    ]
    result += [
        Feature(
            f"order_share_q{q}",
            f,
            None,
            f"Share of purchase orders placed in quarter {q} ({months}).",
            "orders",
            _share(f"quarter = {q}"),
        )
        for q, months in ((1, "Jan-Mar"), (2, "Apr-Jun"), (3, "Jul-Sep"), (4, "Oct-Dec"))
    ]
    result += [
        Feature(
            "payday_order_share",
            f,
            None,
            f"Share of purchase orders in the first {n} days after the 1st or the 15th (payday buying).",
            "orders",
            _share(f"(dom BETWEEN 1 AND {n} OR dom BETWEEN 15 AND {14 + n})"),
        ),
        Feature(
            "peak_season_order_share",
            f,
            None,
            "Share of purchase orders in the customer's busiest quarter of the year.",
            "orders",
            "GREATEST("
            + ", ".join(f"SUM(CASE WHEN is_purchase = 1 AND quarter = {q} THEN 1 ELSE 0 END)" for q in (1, 2, 3, 4))
            + ") * 1.0 / NULLIF(SUM(is_purchase), 0)",
        ),
    ]
    return result


def behaviour_family(config: FeatureConfig) -> list[Feature]:
    f, b = "behaviour", config.behaviour_window
    result = []
    for k, w in enumerate(config.windows):
        for slot, event_type in enumerate(EVENT_TYPES):
            result.append(
                Feature(
                    f"{event_type}_count_{w}d",
                    f,
                    w,
                    f"{event_type} events in the last {w} days.",
                    "event_buckets",
                    f"SUM(CASE WHEN type_slot = {slot} AND bucket <= {k} THEN n ELSE 0 END)",
                    "int",
                    True,
                )
            )
        result.append(
            Feature(
                f"event_count_{w}d",
                f,
                w,
                f"Events of any type in the last {w} days.",
                "event_buckets",
                f"SUM(CASE WHEN bucket <= {k} THEN n ELSE 0 END)",
                "int",
                True,
            )
        )
    result += [
        Feature(
            "days_since_last_event", f, None, "Days from the last event to the cutoff.", "event_buckets", "MIN(min_age)"
        ),
        Feature(
            f"active_event_days_{b}d",
            f,
            b,
            f"Days with any event in the last {b} days.",
            "event_days",
            "COUNT(*)",
            "int",
            True,
        ),
        Feature(
            f"view_to_cart_rate_{b}d",
            f,
            b,
            f"Carts per view in the last {b} days.",
            "derived",
            f"add_to_cart_count_{b}d * 1.0 / NULLIF(view_count_{b}d, 0)",
        ),
        Feature(
            f"cart_to_purchase_rate_{b}d",
            f,
            b,
            f"Purchase orders per cart in the last {b} days (at most 1).",
            "derived",
            f"CASE WHEN add_to_cart_count_{b}d > 0 THEN LEAST(orders_{b}d * 1.0 / add_to_cart_count_{b}d, 1.0) END",
        ),
        Feature(
            "campaign_response_rate",
            f,
            None,
            f"Share of campaigns received that were followed by a purchase within "
            f"{config.campaign_response_days} days.",
            "campaigns",
            "AVG(responded)",
        ),
    ]
    if b not in config.windows:
        raise ValueError(f"behaviour_window {b} must be one of the windows {config.windows}")
    return result


def catalogue(
    config: FeatureConfig | None = None, vocab: Vocabulary | None = None, attributes: dict[str, str] | None = None
) -> list[Feature]:
    """Every feature for this configuration; ``vocab`` names the per-value shares.

    ``attributes`` maps each extra column of the customers table to ``number``, ``date`` or
    ``category``; without it the attributes family is shown as a template.
    """
    config = config or FeatureConfig()
    features = (
        value_family(config)
        + windows_family(config)
        + rhythm_family(config)
        + preferences_family(config, vocab)
        + price_promotion_family(config)
        + timing_family(config)
        + behaviour_family(config)
    )
    if attributes is None:
        features.append(
            Feature(
                "<customer attribute>",
                "attributes",
                None,
                "Each column of the customers table: numbers as is, dates as days "
                "before the cutoff, text as a category.",
                "attributes",
                "",
                "category",
            )
        )
    else:
        for column, kind in attributes.items():
            if kind == "date":
                features.append(
                    Feature(
                        f"days_since_{slug(column)}",
                        "attributes",
                        None,
                        f"Days from the customer's {column} to the cutoff.",
                        "attributes",
                        column,
                    )
                )
            else:
                features.append(
                    Feature(
                        f"attr_{slug(column)}",
                        "attributes",
                        None,
                        f"The customer's {column}.",
                        "attributes",
                        column,
                        "float" if kind == "number" else "category",
                    )
                )
    names = [feature.name for feature in features]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"feature names declared twice: {sorted(duplicates)}")
    return features
