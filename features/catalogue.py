"""The feature catalogue: every feature declared once with its name, family, window and meaning.

Each :class:`Feature` says which *stage* computes it and gives its SQL: an aggregate over the
stage's relation (one row per order, line, event bucket, ...), grouped by customer, or for the
``derived`` stage an expression over other features. :mod:`features.plan` compiles the
catalogue into a few SQL passes; nothing here touches data.

Each feature also carries its meaning, which every other module reads from here and never
re-derives from the column name: ``scale`` (count, money, share, ratio, days, category, flag,
number), ``unit``, a human ``label`` ("spend in the last 90 days"), the windowless ``measure``
it belongs to (``spend`` for ``spend_90d``), and for per-value features the ``subject``
(category, brand, channel, payment, attribute) and the data ``value`` it is about. A family is
one builder function plus one entry in :data:`FAMILY_BUILDERS`.

Relations and their columns (all restricted to rows before the cutoff):

- ``orders`` (one row per order part, :func:`portrait.contract.purchase_order`: an order's
  purchase lines (:func:`portrait.contract.purchase_line`) are its purchase, ``is_purchase =
  1``, as the labels count one; its refund lines are a refund, ``is_purchase = 0``, until one
  comes more than a day after the previous (then another); each part dated by its own first
  line): ``amount`` (net,
  rounded to 6 decimals), ``gross`` (amount + discount), ``discount``, ``items``, ``age``
  (whole days from the part's date to the cutoff date, >= 1), ``day``, ``is_purchase``,
  ``refunded`` (a refund's money, positive; 0 for a purchase), ``has_discount``, ``dow``
  (0 = Sunday), ``hour``, ``dom`` (day of month), ``quarter``, ``channel_slot``,
  ``payment_slot`` (index in the top-K vocabulary, NULL for the rest);
- ``timeline`` (one row per purchase order): ``age``, ``gap`` (days since the customer's
  previous purchase order, NULL for the first) and ``new_day`` (1 for the first purchase order
  of its day, so ``SUM(new_day)`` counts the days with a purchase);
- ``lines`` (one row per purchase line): ``amount``, ``age``, ``category``,
  ``category_slot``, ``brand_slot``, ``price_ratio`` (unit list price / category median);
- ``category_spend`` and ``brand_spend`` (one row per customer and top-K category or brand,
  the rest pooled in a NULL slot): ``category_slot`` (``brand_slot``) and ``spend``, the net
  spend (refunds deducted; 0 where they cancel the purchases or exceed them), so that shares
  of spend go to what the customer kept;
- ``line_categories`` (one row per category bought): ``age`` of its latest purchase, so
  "categories bought in the last w days" counts rows with ``age <= w``, and
  ``favourite_key``, whose largest value per customer gives the favourite category
  (:data:`FAVOURITE_SLOT`: the net spend, then the name; its rank by name among the
  vocabulary's categories, 999 outside it);
- ``event_buckets`` (events pre-aggregated per customer id and event type as written, several
  rows per customer): ``type_slot``, ``n_<w>d`` (events in the last w days, for each window),
  ``n`` (all before the cutoff), ``min_age``, and ``event_days_<j>`` (the days with an event in
  the behaviour window as bits: bit a - 1 - 62 j of mask j for a day a = 62 j + 1 .. 62 j + 62
  days before the cutoff; :func:`day_mask_count` masks), built only when a feature reads them;
- ``campaigns`` (one row per campaign received whose response window closed before the
  cutoff): ``responded`` (1 when a purchase followed within the response days).

Null rules: counts and money are 0 for a customer with no rows in a stage; recency, averages,
shares and ratios are NULL where they are undefined (no purchase, no order in the window, no
view). A customer with only events therefore has ``orders_lifetime = 0``,
``spend_lifetime = 0`` and a NULL ``days_since_last_purchase``. Money is net: refund lines
(amount < 0) are deducted from every spend sum, windowed or not, at their own time, whether
they are booked under their order's id or a new one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from features.config import FeatureConfig
from portrait.contract import KNOWN_EVENT_TYPES
from portrait.errors import PortraitError

EVENT_TYPES = KNOWN_EVENT_TYPES
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
HOUR_BANDS = (("night", 0, 5), ("morning", 6, 11), ("afternoon", 12, 17), ("evening", 18, 23))
SCALES = ("count", "money", "share", "ratio", "days", "category", "flag", "number")
# What a feature says about a customer: ``volume`` how much or how often they buy (spend, orders,
# units, rates per month, intervals: it grows with the customer's value), ``shape`` how they buy
# whatever the amount (shares, per-order rates, price and engagement ratios, the timeline's
# shape), ``state`` where they are in time (days since, which depend on the history's length),
# ``descriptive`` what they are (attributes, favourites). Personas cluster on shape; the value
# level is its own axis (the spending-power tag).
ASPECTS = ("volume", "shape", "state", "descriptive")
_SCALE_ASPECTS = {"count": "volume", "money": "volume", "share": "shape", "ratio": "shape", "days": "state"}
# Per-value features: the subject, the prefix of their names, and what their share is of.
PER_VALUE_PREFIXES = {
    "category": "category_share_",
    "brand": "brand_share_",
    "channel": "channel_share_",
    "payment": "payment_share_",
}
EVENT_WORDS = {
    "view": "product views",
    "search": "searches",
    "add_to_cart": "add-to-carts",
    "favorite": "favourites saved",
    "campaign_received": "campaigns received",
    "campaign_click": "campaign clicks",
    "coupon_redeemed": "coupons redeemed",
    "service_contact": "service contacts",
    "review": "reviews written",
}


DAYS_PER_MASK = 62  # days per event_days_<j> mask: bits 0..61 of a BIGINT


def day_mask_count(window: int) -> int:
    """How many ``event_days_<j>`` masks hold the days 1..``window`` before the cutoff."""
    return -(-window // DAYS_PER_MASK)


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
    scale: str = "number"  # one of SCALES
    unit: str = ""  # currency, orders, units, days, events, categories, fraction, ...
    label: str = ""  # what a person reads: "spend in the last 90 days"
    measure: str = ""  # windowless concept: "spend" for spend_90d; the name when not windowed
    subject: str | None = None  # per-value features: category, brand, channel, payment, attribute
    value: str | None = None  # the data value a per-value feature is about
    per: str | None = None  # shares of orders: the order count they divide
    cluster: bool = True  # personas cluster on it by default; False for an input that repeats another
    aspect: str = ""  # one of ASPECTS; by default from the scale (money and counts are volume...)
    # Features that describe one thing together (the shares of each weekday, of each category):
    # personas weigh a group as one feature. By default the measure (per-value shares share one).
    group: str = ""

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"feature {self.name}: scale {self.scale!r} is not one of {SCALES}")
        if not self.aspect:
            object.__setattr__(self, "aspect", _SCALE_ASPECTS.get(self.scale, "descriptive"))
        if self.aspect not in ASPECTS:
            raise ValueError(f"feature {self.name}: aspect {self.aspect!r} is not one of {ASPECTS}")
        if not self.label:
            object.__setattr__(self, "label", self.description.rstrip(".").lower())
        if not self.measure:
            object.__setattr__(self, "measure", self.name)
        if not self.group:
            object.__setattr__(self, "group", self.measure)

    def meaning(self) -> dict:
        """What is stored beside a model or a report: everything but the SQL."""
        return {
            "family": self.family,
            "window": self.window,
            "scale": self.scale,
            "unit": self.unit,
            "label": self.label,
            "measure": self.measure,
            "subject": self.subject,
            "value": self.value,
            "per": self.per,
            "aspect": self.aspect,
        }


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


_SPELLED_OUT = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "ss",
        "æ": "ae",
        "Æ": "ae",
        "ø": "o",
        "Ø": "o",
        "œ": "oe",
        "Œ": "oe",
        "ł": "l",
        "Ł": "l",
        "đ": "d",
        "Đ": "d",
        "þ": "th",
        "Þ": "th",
    }
)


def _short_hash(text: str) -> str:
    """Six hex digits of the text as written: stable from day to day, distinct in practice."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:6]


def slug(value: str) -> str:
    """A feature-name-safe form of a data value or column name: lower-case ASCII letters, digits
    and underscores. Accents are dropped (``Café`` and its decomposed spelling are both
    ``cafe``; ``Größe`` is ``grosse``). A name with a character that has no such form (``お茶``,
    ``حلويات``, an emoji) also keeps a short hash of its text (``u5f0c1a``, ``tea_9b2d44``), so
    that two such names never share a slug and a name's slug does not depend on the other
    names of the day (it did: all were ``blank``, numbered by their rank)."""
    text = unicodedata.normalize("NFC", str(value)).strip()
    if not text:
        return "blank"
    letters = "".join(
        c for c in unicodedata.normalize("NFKD", text.translate(_SPELLED_OUT)) if not unicodedata.combining(c)
    )
    base = re.sub(r"[^0-9a-z]+", "_", letters.lower()).strip("_")
    lost = any(not c.isascii() and not c.isspace() for c in letters)
    if not lost and base:
        return base
    return f"{base}_{_short_hash(text)}" if base else f"u{_short_hash(text)}"


def slugs(values: tuple[str, ...]) -> list[str]:
    """Feature-name-safe labels, unique even when two values slugify alike (``Tea`` and
    ``tea``; ``Café`` composed and decomposed, two values to the data): then each of them keeps
    a short hash of its own text as written, so that a name never passes from one value to
    another as the values of the day change."""
    bases = [slug(value) for value in values]
    shared = {b for b in bases if bases.count(b) > 1}
    return [f"{b}_{_short_hash(str(v))}" if b in shared else b for b, v in zip(bases, values, strict=True)]


# The day per-value feature names took their present form (:func:`slug`): names written before
# it (saved conditions, models, persona fits) are recognised by :func:`legacy_names`.
RENAMED_ON = "2026-12-06"


def _legacy_slugs(values: tuple[str, ...]) -> list[str]:
    """Per-value labels as :func:`slugs` wrote them before :data:`RENAMED_ON`: accents and other
    letters outside a-z dropped (``Süßwaren``: ``s_waren``), nothing left ``blank``, and a label
    written twice numbered by its rank (``blank_2``)."""
    seen: dict[str, int] = {}
    result = []
    for value in values:
        base = re.sub(r"[^0-9a-z]+", "_", str(value).lower()).strip("_") or "blank"
        seen[base] = seen.get(base, 0) + 1
        result.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return result


def legacy_names(vocab: Vocabulary | None) -> dict[str, str]:
    """Each per-value share feature's name as written before :data:`RENAMED_ON`, where it
    differs, to its name now, for the values of ``vocab`` (those of the day: a name whose value has
    left the top since is not found). A legacy name that is also a name now is left out."""
    if vocab is None:
        return {}
    renamed = {}
    for subject, values in (
        ("category", vocab.categories),
        ("brand", vocab.brands),
        ("channel", vocab.channels),
        ("payment", vocab.payment_methods),
    ):
        prefix = PER_VALUE_PREFIXES[subject]
        now = slugs(values)
        for old, new in zip(_legacy_slugs(values), now, strict=True):
            if old != new and old not in now:
                renamed[prefix + old] = prefix + new
    return renamed


# The favourite category's rank by name among the top categories (999: outside them; NULL: no
# net spend in any category), from the line_categories stage's favourite_key.
OTHER_SLOT = 999
FAVOURITE_SLOT = (
    f"CASE WHEN MAX(favourite_key) >= 1000 THEN {OTHER_SLOT} - CAST(MOD(MAX(favourite_key), 1000) AS BIGINT) END"
)


def money_sum(expr: str) -> str:
    """A sum of money as a ratio reads it: rounded to 6 decimals. Amounts in cents that cancel
    (a purchase refunded in parts) leave a residue of about 1e-17 whose size and sign depend on
    the order of addition, which differs between runs and engines; a ratio over such a residue
    would be NULL in one run and -1 or 1 in the next. Rounded, the residue is 0 (NULL)."""
    return f"ROUND(SUM({expr}), 6)"


def _share(condition: str) -> str:
    return f"SUM(CASE WHEN is_purchase = 1 AND {condition} THEN 1 ELSE 0 END) * 1.0 / NULLIF(SUM(is_purchase), 0)"


def _in_window(w: int) -> str:
    return f"age <= {w}"


def _last(w: int) -> str:
    return f"in the last {w} days"


def _order_share(name: str, family: str, description: str, sql: str, label: str, **meaning) -> Feature:
    """A share of the customer's purchase orders (shrunk towards the population's by order count)."""
    return Feature(
        name,
        family,
        None,
        description,
        "orders",
        sql,
        scale="share",
        unit="fraction",
        label=label,
        per="orders_lifetime",
        **meaning,
    )


def value_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    f = "value"
    return [
        Feature(
            "days_since_last_purchase",
            f,
            None,
            "Days from the last purchase to the cutoff (recency).",
            "orders",
            "MIN(CASE WHEN is_purchase = 1 THEN age END)",
            scale="days",
            unit="days",
            label="days since the last purchase",
        ),
        Feature(
            "days_since_first_purchase",
            f,
            None,
            "Days from the first purchase to the cutoff (tenure).",
            "orders",
            "MAX(CASE WHEN is_purchase = 1 THEN age END)",
            scale="days",
            unit="days",
            label="days since the first purchase",
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
            scale="count",
            unit="orders",
            label="orders in all",
        ),
        Feature(
            "active_days_lifetime",
            f,
            None,
            "Days with a purchase before the cutoff (several orders on one day count once).",
            "timeline",
            "SUM(new_day)",
            "int",
            True,
            scale="count",
            unit="days",
            label="shopping days in all",
            measure="active_days",
            cluster=False,  # BG/NBD's frequency; for personas it repeats orders_lifetime
        ),
        Feature(
            "spend_lifetime",
            f,
            None,
            "Net spend before the cutoff, refunds deducted (monetary).",
            "orders",
            "SUM(amount)",
            fill_zero=True,
            scale="money",
            unit="currency",
            label="spend in all, net of refunds",
        ),
        Feature(
            "avg_order_value",
            f,
            None,
            "Average value of a purchase (its sold lines, discounts deducted; refunds are counted apart).",
            "orders",
            "SUM(CASE WHEN is_purchase = 1 THEN amount END) / NULLIF(SUM(is_purchase), 0)",
            scale="money",
            unit="currency",
            label="average order value",
        ),
        Feature(
            "max_order_value",
            f,
            None,
            "Largest purchase order.",
            "orders",
            "MAX(CASE WHEN is_purchase = 1 THEN amount END)",
            scale="money",
            unit="currency",
            label="largest order",
        ),
        Feature(
            "refund_count",
            f,
            None,
            "Refunds and returns, booked under the order's id or a new one: an order's refund lines are one "
            "until one comes more than a day after the previous.",
            "orders",
            "SUM(CASE WHEN refunded > 0 THEN 1 ELSE 0 END)",
            "int",
            True,
            scale="count",
            unit="orders",
            label="refunds and returns",
        ),
        Feature(
            "refund_amount",
            f,
            None,
            "Money refunded (positive): the refund lines, under their order's id or a new one.",
            "orders",
            "SUM(refunded)",
            fill_zero=True,
            scale="money",
            unit="currency",
            label="money refunded",
        ),
        Feature(
            "refund_rate",
            f,
            None,
            "Money refunded per unit of money spent on purchases (the sold lines): above 1 where the "
            "refunds exceed what was bought before the cutoff (shipping refunded, or purchases "
            "from before the data); missing where nothing was bought.",
            "derived",
            "refund_amount / NULLIF(spend_lifetime + refund_amount, 0)",
            scale="share",
            unit="fraction",
            label="share of spend refunded",
        ),
        *tenure_rates(f),
    ]


MONTH_DAYS = 30.4375  # days in an average month
# Tenure in months for the per-month rates, counted as at least one month: a customer whose
# first purchase was last week has one month of tenure, not a quarter of one.
_TENURE_MONTHS = f"(GREATEST(days_since_first_purchase, {MONTH_DAYS}) / {MONTH_DAYS})"


def tenure_rates(family: str) -> list[Feature]:
    """Rates per month of tenure: comparable across cutoffs with different history lengths,
    where lifetime counts grow with the history the data holds before the cutoff (a customer
    with 4 orders in 2 months is not one with 4 orders in 2 years). NULL for a customer with no
    purchase yet. Rates are volume, not clustered by personas (they repeat the lifetime value
    features); the recency share is the timeline's shape, which personas cluster on."""
    rates = (
        ("orders", "orders_lifetime", "Purchase orders", "orders per month", "ratio", "orders per month"),
        ("spend", "spend_lifetime", "Net spend", "spend per month", "money", "currency per month"),
        (
            "active_days",
            "active_days_lifetime",
            "Days with a purchase",
            "shopping days per month",
            "ratio",
            "days per month",
        ),
    )
    features = [
        Feature(
            f"{measure}_per_month_of_tenure",
            family,
            None,
            f"{what} per month since the first purchase (tenure of at least one month).",
            "derived",
            f"CASE WHEN days_since_first_purchase IS NOT NULL THEN {source} / {_TENURE_MONTHS} END",
            scale=scale,
            unit=unit,
            label=f"{label} since the first purchase",
            cluster=False,
            aspect="volume",
        )
        for measure, source, what, label, scale, unit in rates
    ]
    features.append(
        Feature(
            "recency_share_of_tenure",
            family,
            None,
            "Days since the last purchase as a share of the days since the first (0: bought just "
            "before the cutoff, 1: bought only once, long ago).",
            "derived",
            "days_since_last_purchase * 1.0 / NULLIF(days_since_first_purchase, 0)",
            scale="share",
            unit="fraction",
            label="time since the last purchase as a share of the time since the first",
            cluster=True,  # the one scale-free recency personas cluster on (days since is a state)
        )
    )
    return features


def windows_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
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
                scale="count",
                unit="orders",
                label=f"orders {_last(w)}",
                measure="orders",
            ),
            Feature(
                f"spend_{w}d",
                f,
                w,
                f"Net spend in the last {w} days, refunds deducted.",
                "orders",
                f"SUM(CASE WHEN {inside} THEN amount ELSE 0 END)",
                fill_zero=True,
                scale="money",
                unit="currency",
                label=f"spend {_last(w)}",
                measure="spend",
            ),
            Feature(
                f"items_{w}d",
                f,
                w,
                f"Units bought in the last {w} days: the purchases' units (a line without a quantity "
                "counts as one unit; refunds give none back here).",
                "orders",
                f"SUM(CASE WHEN {inside} AND is_purchase = 1 THEN items ELSE 0 END)",
                fill_zero=True,
                scale="count",
                unit="units",
                label=f"units bought {_last(w)}",
                measure="items",
            ),
            Feature(
                f"active_days_{w}d",
                f,
                w,
                f"Days with a purchase in the last {w} days.",
                "timeline",
                f"SUM(CASE WHEN {inside} THEN new_day ELSE 0 END)",
                "int",
                True,
                scale="count",
                unit="days",
                label=f"shopping days {_last(w)}",
                measure="active_days",
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
                scale="count",
                unit="categories",
                label=f"categories bought {_last(w)}",
                measure="distinct_categories",
            ),
        ]
    return result


def rhythm_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    f, t = "rhythm", config.trend_window
    recent = f"age <= {t}"
    before = f"age > {t} AND age <= {2 * t}"
    recent_spend = money_sum(f"CASE WHEN {recent} THEN amount ELSE 0 END")
    before_spend = money_sum(f"CASE WHEN {before} THEN amount ELSE 0 END")
    return [
        Feature(
            "mean_days_between_orders",
            f,
            None,
            "Mean days between consecutive purchase orders.",
            "orders",
            "(MAX(CASE WHEN is_purchase = 1 THEN age END) - MIN(CASE WHEN is_purchase = 1 THEN age END))"
            " * 1.0 / NULLIF(SUM(is_purchase) - 1, 0)",
            scale="days",
            unit="days",
            label="days between orders on average",
            aspect="volume",  # the inverse of frequency
        ),
        Feature(
            "std_days_between_orders",
            f,
            None,
            "Standard deviation of days between purchase orders.",
            "timeline",
            "STDDEV_SAMP(gap)",
            scale="days",
            unit="days",
            label="variation of the days between orders",
            aspect="volume",
        ),
        Feature(
            "overdue_ratio",
            f,
            None,
            "Days since the last purchase divided by the customer's mean interval (>1: overdue).",
            "derived",
            "days_since_last_purchase / NULLIF(mean_days_between_orders, 0)",
            scale="ratio",
            unit="times the usual gap",
            label="time since the last order against the usual gap",
        ),
        Feature(
            f"spend_trend_{t}d",
            f,
            t,
            f"Spend in the last {t} days vs the {t} before, from -1 (stopped) to 1 (new).",
            "orders",
            f"({recent_spend} - {before_spend}) / NULLIF(ABS({recent_spend}) + ABS({before_spend}), 0)",
            scale="ratio",
            label=f"spend trend, last {t} days against the {t} before",
            measure="spend_trend",
        ),
        Feature(
            f"orders_trend_{t}d",
            f,
            t,
            f"Orders in the last {t} days vs the {t} before, from -1 to 1.",
            "orders",
            f"(SUM(CASE WHEN {recent} THEN is_purchase ELSE 0 END) - SUM(CASE WHEN {before} THEN is_purchase ELSE 0 END)) * 1.0"
            f" / NULLIF(SUM(CASE WHEN {recent} THEN is_purchase ELSE 0 END) + SUM(CASE WHEN {before} THEN is_purchase ELSE 0 END), 0)",
            scale="ratio",
            label=f"order trend, last {t} days against the {t} before",
            measure="orders_trend",
        ),
    ]


def per_value_feature(subject: str, label: str, slot: int | None, value: str | None) -> Feature:
    """The share of spend (categories, brands) or of orders (channels, payment methods) that
    goes to one value. ``label`` is the name part, ``slot`` the value's index in the vocabulary
    (None: the pooled ``other`` share of categories and brands), ``value`` the data value (None
    in the catalogue's template line)."""
    name = PER_VALUE_PREFIXES[subject] + label
    shown = value if value is not None else label.replace("_", " ")
    meaning = {"measure": f"{subject}_share", "subject": subject, "value": value}
    if subject in ("category", "brand"):
        condition = f"{subject}_slot IS NULL" if slot is None else f"{subject}_slot = {slot}"
        plural = {"category": "categories", "brand": "brands"}[subject]
        if slot is None:
            described = f"Share of net spend (refunds deducted) outside the top {plural}."
            label_text = f"share of spend on other {plural}"
        else:
            described = (
                f"Share of net spend (refunds deducted) on {subject} {shown!r}."
                if value is not None
                else f"Share of net spend (refunds deducted) on each top {subject}."
            )
            label_text = f"share of spend on {shown}"
        return Feature(
            name,
            "preferences",
            None,
            described,
            f"{subject}_spend",
            f"SUM(CASE WHEN {condition} THEN spend ELSE 0 END) / NULLIF(SUM(spend), 0)",
            scale="share",
            unit="fraction",
            label=label_text,
            per="orders_lifetime",
            **meaning,
        )
    if slot is None:
        raise ValueError(f"{subject} shares have no pooled 'other' share")
    described = (
        f"Share of orders via {subject} {shown!r}." if value is not None else f"Share of orders via each top {subject}."
    )
    label_text = f"share of orders via {shown}" if subject == "channel" else f"share of orders paid by {shown}"
    return _order_share(name, "preferences", described, _share(f"{subject}_slot = {slot}"), label_text, **meaning)


def preferences_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    f = "preferences"
    result: list[Feature] = []
    for subject, values in (
        ("category", vocab.categories if vocab else None),
        ("brand", vocab.brands if vocab else None),
        ("channel", vocab.channels if vocab else None),
        ("payment", vocab.payment_methods if vocab else None),
    ):
        if values is None:
            result.append(per_value_feature(subject, f"<top {subject}>", 0, None))
        else:
            result += [
                per_value_feature(subject, label, i, value)
                for i, (label, value) in enumerate(zip(slugs(values), values, strict=True))
            ]
        if subject in ("category", "brand"):
            result.append(per_value_feature(subject, "other", None, None))
    result += [
        Feature(
            "favourite_category",
            f,
            None,
            "Category with the largest net spend (refunds deducted; equal spends: the first by name among the "
            "top categories); 'other' when it is not one of the top categories.",
            "line_categories",
            FAVOURITE_SLOT,
            "category",
            scale="category",
            label="favourite category",
            subject="category",
        ),
        Feature(
            "favourite_channel",
            f,
            None,
            "Channel with the most purchase orders (equal counts: the first by name among the top channels); "
            "'other' when it is not one of the top channels.",
            "order_channels",
            FAVOURITE_SLOT,
            "category",
            scale="category",
            label="favourite channel",
            subject="channel",
        ),
        Feature(
            "distinct_categories_lifetime",
            f,
            None,
            "Categories ever bought.",
            "line_categories",
            "COUNT(*)",
            "int",
            True,
            scale="count",
            unit="categories",
            label="categories ever bought",
        ),
    ]
    return result


def price_promotion_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    f = "price_promotion"
    result = [
        _order_share(
            "discount_order_share",
            f,
            "Share of purchase orders with a discount.",
            _share("has_discount = 1"),
            "share of orders with a discount",
        ),
        Feature(
            "avg_discount_depth",
            f,
            None,
            "Money off as a share of list price, on discounted orders.",
            "orders",
            "SUM(CASE WHEN has_discount = 1 AND is_purchase = 1 THEN discount END)"
            " / NULLIF(SUM(CASE WHEN has_discount = 1 AND is_purchase = 1 THEN gross END), 0)",
            scale="share",
            unit="fraction",
            label="discount depth on discounted orders",
        ),
        Feature(
            "price_level",
            f,
            None,
            "Typical unit list price relative to its category's median (1 = typical, >1 = pricier): "
            "the geometric mean of the lines' ratios, so that a few lines priced at thousands of times "
            "their category's median (fuel or coupons counted in odd units) do not set it, as they "
            "set an average.",
            "lines",
            "EXP(AVG(CASE WHEN price_ratio > 0 THEN LN(price_ratio) END))",
            scale="ratio",
            unit="times the category median",
            label="price level against the category median",
        ),
        Feature(
            "premium_line_share",
            f,
            None,
            "Share of lines priced over 1.5 times the category median.",
            "lines",
            "AVG(CASE WHEN price_ratio > 1.5 THEN CAST(1 AS DOUBLE) WHEN price_ratio IS NOT NULL THEN CAST(0 AS DOUBLE) END)",
            scale="share",
            unit="fraction",
            label="share of premium-priced items",
            per="orders_lifetime",
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
                    scale="share",
                    unit="fraction",
                    label=f"share of orders with a discount {_last(w)}",
                    measure="promo_share",
                    per=f"orders_{w}d",
                )
            )
    return result


def timing_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    f, n = "timing", config.payday_days
    result = [
        _order_share(
            f"order_share_{day}",
            f,
            f"Share of purchase orders placed on a {day.title()}.",
            _share(f"dow = {i}"),
            f"share of orders on {day.title()}s",
            group="order_share_weekday",
        )
        for i, day in enumerate(DAY_NAMES)
    ]
    result.append(
        _order_share(
            "order_share_weekend",
            f,
            "Share of purchase orders on Saturday or Sunday.",
            _share("dow IN (0, 6)"),
            "share of orders at the weekend",
            group="order_share_weekday",
        )
    )
    result += [
        _order_share(
            f"order_share_{band}",
            f,
            f"Share of purchase orders placed {lo:02d}:00-{hi:02d}:59.",
            _share(f"hour BETWEEN {lo} AND {hi}"),
            f"share of orders in the {band} ({lo:02d}-{hi + 1:02d} h)"
            if band != "night"
            else "share of orders at night (00-06 h)",
            group="order_share_hour",
        )
        for band, lo, hi in HOUR_BANDS
    ]
    result += [
        _order_share(
            f"order_share_q{q}",
            f,
            f"Share of purchase orders placed in quarter {q} ({months}).",
            _share(f"quarter = {q}"),
            f"share of orders in {months}",
            group="order_share_season",
        )
        for q, months in ((1, "Jan-Mar"), (2, "Apr-Jun"), (3, "Jul-Sep"), (4, "Oct-Dec"))
    ]
    result += [
        _order_share(
            "payday_order_share",
            f,
            f"Share of purchase orders in the first {n} days after the 1st or the 15th (payday buying).",
            _share(f"(dom BETWEEN 1 AND {n} OR dom BETWEEN 15 AND {14 + n})"),
            "share of orders just after payday",
        ),
        _order_share(
            "peak_season_order_share",
            f,
            "Share of purchase orders in the customer's busiest quarter of the year.",
            "GREATEST("
            + ", ".join(f"SUM(CASE WHEN is_purchase = 1 AND quarter = {q} THEN 1 ELSE 0 END)" for q in (1, 2, 3, 4))
            + ") * 1.0 / NULLIF(SUM(is_purchase), 0)",
            "share of orders in the busiest quarter",
            group="order_share_season",
        ),
    ]
    return result


def behaviour_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    f, b = "behaviour", config.behaviour_window
    result = []
    for w in config.windows:
        for slot, event_type in enumerate(EVENT_TYPES):
            result.append(
                Feature(
                    f"{event_type}_count_{w}d",
                    f,
                    w,
                    f"{event_type} events in the last {w} days.",
                    "event_buckets",
                    f"SUM(CASE WHEN type_slot = {slot} THEN n_{w}d ELSE 0 END)",
                    "int",
                    True,
                    scale="count",
                    unit="events",
                    label=f"{EVENT_WORDS.get(event_type, event_type.replace('_', ' ') + ' events')} {_last(w)}",
                    measure=f"{event_type}_count",
                    subject="event",
                    value=event_type,
                )
            )
        result.append(
            Feature(
                f"event_count_{w}d",
                f,
                w,
                f"Events of any type in the last {w} days.",
                "event_buckets",
                f"SUM(n_{w}d)",
                "int",
                True,
                scale="count",
                unit="events",
                label=f"interactions {_last(w)}",
                measure="event_count",
            )
        )
        result.append(
            Feature(
                f"interactions_per_order_{w}d",
                f,
                w,
                f"Events the customer started (all but campaigns received) per purchase order in the last {w} days, "
                "counting one order more (defined without an order: browsing without buying is engagement too).",
                "derived",
                f"(event_count_{w}d - campaign_received_count_{w}d) * 1.0 / (orders_{w}d + 1)",
                scale="ratio",
                unit="events per order",
                label=f"interactions per order {_last(w)}",
                measure="interactions_per_order",
            )
        )
    result += [
        Feature(
            "days_since_last_event",
            f,
            None,
            "Days from the last event to the cutoff.",
            "event_buckets",
            "MIN(min_age)",
            scale="days",
            unit="days",
            label="days since the last interaction",
        ),
        Feature(
            f"active_event_days_{b}d",
            f,
            b,
            f"Days with any event in the last {b} days.",
            "event_buckets",
            " + ".join(f"COALESCE(BIT_COUNT(BIT_OR(event_days_{j})), 0)" for j in range(day_mask_count(b))),
            "int",
            True,
            scale="count",
            unit="days",
            label=f"days with an interaction {_last(b)}",
            measure="active_event_days",
        ),
        Feature(
            f"view_to_cart_rate_{b}d",
            f,
            b,
            f"Carts per view in the last {b} days.",
            "derived",
            f"add_to_cart_count_{b}d * 1.0 / NULLIF(view_count_{b}d, 0)",
            scale="ratio",
            unit="carts per view",
            label=f"add-to-carts per product view {_last(b)}",
            measure="view_to_cart_rate",
        ),
        Feature(
            f"cart_to_purchase_rate_{b}d",
            f,
            b,
            f"Purchase orders per cart in the last {b} days (at most 1).",
            "derived",
            f"CASE WHEN add_to_cart_count_{b}d > 0 THEN LEAST(orders_{b}d * 1.0 / add_to_cart_count_{b}d, 1.0) END",
            scale="share",
            unit="fraction",
            label=f"orders per add-to-cart {_last(b)}",
            measure="cart_to_purchase_rate",
        ),
        Feature(
            "campaign_response_rate",
            f,
            None,
            f"Share of campaigns received that were followed by a purchase within "
            f"{config.campaign_response_days} days (before the same time {config.campaign_response_days} days later); "
            "a campaign counts once those days are over.",
            "campaigns",
            "AVG(responded)",
            scale="share",
            unit="fraction",
            label="share of campaigns answered with a purchase",
        ),
    ]
    return result


def attribute_feature(column: str, kind: str) -> Feature:
    """The feature for one column of the customers table (``kind``: number, date or category)."""
    if kind == "date":
        return Feature(
            f"days_since_{slug(column)}",
            "attributes",
            None,
            f"Days from the customer's {column} to the cutoff (missing when it is on the cutoff's day or later).",
            "attributes",
            column,
            scale="days",
            unit="days",
            label=f"days since {column.replace('_', ' ')}",
            subject="attribute",
            value=column,
        )
    return Feature(
        f"attr_{slug(column)}",
        "attributes",
        None,
        f"The customer's {column}.",
        "attributes",
        column,
        "float" if kind == "number" else "category",
        scale="number" if kind == "number" else "category",
        label=column.replace("_", " "),
        subject="attribute",
        value=column,
    )


def attributes_family(config: FeatureConfig, vocab: Vocabulary | None = None, attributes=None) -> list[Feature]:
    """Each extra column of the customers table; without ``attributes``, a template line."""
    if attributes is None:
        return [
            Feature(
                "<customer attribute>",
                "attributes",
                None,
                "Each column of the customers table: numbers as is, dates as days "
                "before the cutoff, text as a category.",
                "attributes",
                "",
                "category",
                scale="category",
                label="customer attribute",
                subject="attribute",
            )
        ]
    by_name: dict[str, list[str]] = {}
    for column in attributes:
        by_name.setdefault(slug(column), []).append(column)
    clashes = [columns for columns in by_name.values() if len(columns) > 1]
    if clashes:

        def shown(column: str) -> str:  # two spellings that look alike (composed, decomposed) told apart
            return repr(column) if column.isascii() else f"{column!r} ({ascii(column)})"

        raise PortraitError(
            "customers columns "
            + "; ".join(
                " and ".join(shown(c) for c in columns) + f" would be one feature (attr_{slug(columns[0])})"
                for columns in clashes
            )
            + ": rename all but one of each in the export"
        )
    return [attribute_feature(column, kind) for column, kind in attributes.items()]


FAMILY_BUILDERS: dict[str, Callable[..., list[Feature]]] = {
    "value": value_family,
    "windows": windows_family,
    "rhythm": rhythm_family,
    "preferences": preferences_family,
    "price_promotion": price_promotion_family,
    "timing": timing_family,
    "behaviour": behaviour_family,
    "attributes": attributes_family,
}
FAMILIES = tuple(FAMILY_BUILDERS)


def catalogue(
    config: FeatureConfig | None = None, vocab: Vocabulary | None = None, attributes: dict[str, str] | None = None
) -> list[Feature]:
    """Every feature for this configuration; ``vocab`` names the per-value shares.

    ``attributes`` maps each extra column of the customers table to ``number``, ``date`` or
    ``category``; without it the attributes family is shown as a template.
    """
    config = config or FeatureConfig()
    features = [feature for build in FAMILY_BUILDERS.values() for feature in build(config, vocab, attributes)]
    names = [feature.name for feature in features]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"feature names declared twice: {sorted(duplicates)}")
    return features


@lru_cache(maxsize=32)
def _by_name(
    config: FeatureConfig, vocab: Vocabulary | None, attributes: tuple[tuple[str, str], ...]
) -> dict[str, Feature]:
    return {f.name: f for f in catalogue(config, vocab, dict(attributes))}


def describe(
    names: Iterable[str],
    config: FeatureConfig | None = None,
    vocabulary: Vocabulary | dict | None = None,
    attributes: dict[str, str] | None = None,
) -> dict[str, Feature]:
    """The catalogue entry of every name in ``names`` that is a feature.

    Per-value shares and attribute columns depend on the data: with ``vocabulary`` their data
    value is exact, and with ``attributes`` (each customers column's kind, as a feature table
    holds it in ``frame.attrs["attributes"]``) an attribute is a number, a date's days or a
    category as it was built; without them they are recognised by name, the value read from the
    name and an ``attr_`` column taken for a category. Names that are not features (ids,
    scores, ``cutoff``) are left out.
    """
    config = config or FeatureConfig()
    if isinstance(vocabulary, dict):
        vocabulary = Vocabulary.from_dict(vocabulary)
    known = _by_name(config, vocabulary, tuple((attributes or {}).items()))
    # a name written before RENAMED_ON (a persona fit's, a model's) means today's feature
    known |= {old: known[new] for old, new in legacy_names(vocabulary).items() if new in known}
    result = {}
    for name in names:
        if name in known:
            result[name] = known[name]
        elif (feature := _recognise(name)) is not None:
            result[name] = feature
    return result


def _recognise(name: str) -> Feature | None:
    """A data-dependent feature from its name alone: per-value shares and attributes."""
    for subject, prefix in PER_VALUE_PREFIXES.items():
        if name.startswith(prefix):
            label = name[len(prefix) :]
            other = label == "other" and subject in ("category", "brand")
            return per_value_feature(subject, label, None if other else 0, None if other else label.replace("_", " "))
    if name.startswith("attr_"):
        return attribute_feature(name[len("attr_") :], "category")
    return None


def label_of(name: str, meanings: dict[str, Feature] | None = None) -> str:
    """A human label for any column: the catalogue's label, else the name in words."""
    feature = (meanings or {}).get(name) or describe([name]).get(name)
    return feature.label if feature else name.replace("_", " ")


def windowed(measure: str, features: Iterable[Feature]) -> dict[int, Feature]:
    """The windowed features of one measure (``spend``, ``orders``...) by window."""
    return {f.window: f for f in features if f.measure == measure and f.window is not None}
