"""Crowds (any group of customers) and the dimensions every crowd report describes them by.

A :class:`Crowd` names a group: a saved segment, a tag, a persona, a filter, the buyers of one
category, or everyone. :class:`CrowdData` opens one data set as of one date (a
:class:`~marketing.population.Population`), turns crowds into row masks over its customers,
and computes, once, one value per customer for every dimension (:data:`DIMENSIONS` and one per
customers-table attribute). Everything is point-in-time: only rows before the as-of date.

Dimension edge rules: a customer without the input (no order yet, no attribute, no scores)
is ``unknown``, its own value, so shares add to 100%. Bands of numbers (order value, unit
price, numeric attributes) are cut at quintiles of everyone's values as of the date, so a
crowd and its comparison base share the same bands.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import LATE_AS_OF_DAYS
from features.catalogue import money_sum, slug
from marketing.filters import BehaviourTerm, FilterError, check_window_days, evaluate, parse_condition
from marketing.population import Population, persona_named
from marketing.rfm import GROUPS as RFM_GROUPS
from marketing.segments import SegmentEvaluator, SegmentStore
from marketing.tags import Applied, Library, apply_tags, levels, nobody_holds, unheld_tags
from portrait.contract import line_units, purchase_order
from portrait.errors import PortraitError
from portrait.privacy import personal_values, withheld_label, withheld_labels
from portrait.sql import quote_literal

UNKNOWN = "unknown"
KINDS = ("segment", "tag", "persona", "where", "bought_category", "all")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAYPARTS = {
    "night": "night (00-06 h)",
    "morning": "morning (06-12 h)",
    "afternoon": "afternoon (12-18 h)",
    "evening": "evening (18-24 h)",
}
# The favourite weekday (time of day) of a customer whose largest share is shared by several:
# no one of them (one order on Monday and one on Friday). The first of them was taken before,
# which made Monday everyone's favourite on a log of dates (28.8% of a CDNOW crowd, 15% of
# its orders), and a significant difference between crowds out of nothing.
TIED = "tied"
ACTIVITY_WINDOW = 365
# Non-consumption activity set beside purchases: (feature, label), all over ACTIVITY_WINDOW days.
ACTIVITY = (
    ("orders_365d", "purchase orders"),
    ("view_count_365d", "product views"),
    ("add_to_cart_count_365d", "add-to-carts"),
    ("campaign_received_count_365d", "campaigns received"),
    ("campaign_click_count_365d", "campaigns answered (clicks)"),
    ("coupon_redeemed_count_365d", "coupons redeemed"),
    ("service_contact_count_365d", "service contacts"),
)

log = logging.getLogger(__name__)

# Columns of the order (one value per order), counted in orders rather than spend.
ORDER_LEVEL = frozenset({"payment_method", "store_id", "channel"})
MAX_VALUES = 20  # a dimension with more values keeps its 20 most common and "other"
OTHER = "other"
PROMOTION = ("none (no discounted order)", "some (under half of orders)", "high (half of orders or more)")


def attribute_dimensions(column: str) -> tuple[str, str]:
    """The report dimension a customers column becomes: its values (``age_band``), or for
    numbers their quintile bands (``income_band``; :func:`attribute_dimension_names`)."""
    name = slug(column)
    return name, f"{name}_band"


def attribute_dimension_names(column: str) -> tuple[str, ...]:
    """Every name a customers column's dimension may take: its values, its quintile bands, and
    the bands' name when a column or another dimension already has ``<name>_band`` (what a
    sensitive column's dimensions are refused by)."""
    name, banded = attribute_dimensions(column)
    return name, banded, f"{name}_quintile_band"


@dataclass(frozen=True)
class Crowd:
    """One named group of customers. ``value``: the segment, tag, persona, filter or category."""

    kind: str
    value: str | None = None
    within_days: int | None = None  # bought_category only; None: all history before the as-of date

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PortraitError(f"unknown crowd kind {self.kind!r}; one of {list(KINDS)}")
        if (self.kind == "all") != (self.value is None):
            raise PortraitError("--all takes no value; every other crowd names one")
        if self.within_days is not None and self.kind != "bought_category":
            raise PortraitError("--within-days is a positive number of days, only with --bought-category")
        if self.within_days is not None:
            check_window_days(self.within_days)

    def describe(self) -> str:
        if self.kind == "all":
            return "all customers"
        if self.kind == "bought_category":
            window = f" in the last {self.within_days} days" if self.within_days else ""
            return f"bought category {self.value!r}{window}"
        if self.kind == "where":
            return f"where {self.value}"
        return f"{self.kind} {self.value!r}"

    @property
    def slug(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}_{slug(self.value)}"[:80]


def check_crowd_named(crowd: Crowd, segments: SegmentStore, library: Library) -> None:
    """Raise unless the segment or tag ``crowd`` names is saved or in the library: checked
    before any data is read (an API caller naming no such segment cost 1.3-1.9 s of the
    server's CPU before its 404)."""
    if crowd.kind == "segment" and not segments.exists(crowd.value):
        close = difflib.get_close_matches(crowd.value, segments.names(), n=5, cutoff=0.5)
        saved = f"; saved: {segments.names()[:10]}" if segments.folder.is_dir() else ""
        raise PortraitError(
            f"no saved segment {crowd.value!r} in {segments.where()}" + (f"; closest: {close}" if close else saved)
        )
    if crowd.kind == "tag":
        library.check_tag(crowd.value)


def crowd_from_options(
    *,
    segment: str | None = None,
    tag: str | None = None,
    persona: str | None = None,
    where: str | None = None,
    bought_category: str | None = None,
    within_days: int | None = None,
    everyone: bool = False,
) -> Crowd:
    """The one crowd a command line names (exactly one of the options)."""
    given = {
        "segment": segment,
        "tag": tag,
        "persona": persona,
        "where": where,
        "bought_category": bought_category,
    }
    named = [(kind, value) for kind, value in given.items() if value is not None]
    if everyone:
        named.append(("all", None))
    if len(named) != 1:
        raise PortraitError(
            "name exactly one crowd: --segment S, --tag T, --persona P, --where EXPR, --bought-category C or --all"
            + (f" (got {', '.join(k for k, _ in named)})" if named else "")
        )
    kind, value = named[0]
    return Crowd(kind, value, within_days)


def parse_crowd(text: str) -> Crowd:
    """``segment:NAME``, ``tag:NAME`` or ``persona:NAME`` (the form ``crowd compare`` takes)."""
    kind, sep, value = text.partition(":")
    if not sep or kind.strip() not in ("segment", "tag", "persona") or not value.strip():
        raise PortraitError(f"{text!r}: give each crowd as segment:NAME, tag:NAME or persona:NAME")
    return Crowd(kind.strip(), value.strip())


@dataclass(frozen=True)
class Dimension:
    name: str
    label: str
    order: tuple[str, ...] = ()  # values in their natural order (else by count)


def _dimensions(library: Library) -> dict[str, Dimension]:
    fixed = [
        *(
            Dimension(level_name(g.label or g.path), g.label or g.path, (*g.values, g.no_purchase))
            for g in level_groups(library)
        ),
        Dimension("rfm_group", "RFM group", RFM_GROUPS),
        Dimension("persona", "persona"),
        Dimension("favourite_category", "favourite category (by spend)"),
        Dimension("favourite_brand", "favourite brand (by spend)"),
        Dimension("favourite_channel", "favourite channel"),
        Dimension("favourite_payment", "favourite payment method"),
        Dimension("favourite_store", "favourite store (by orders)"),
        Dimension("order_value_band", "average order value"),
        Dimension("unit_price_band", f"average unit price, last {ACTIVITY_WINDOW} days"),
        Dimension("repeat_orders", "orders ever placed", ("none", "1", "2", "3", "4+")),
        Dimension("favourite_weekday", "weekday with most orders", (*(d.capitalize() for d in WEEKDAYS), TIED)),
        Dimension("favourite_daypart", "time of day with most orders", (*DAYPARTS.values(), TIED)),
        Dimension("promotion_sensitivity", "orders with a discount", PROMOTION),
    ]
    return {d.name: d for d in fixed}


def level_groups(library: Library):
    return [g for g in library.groups.values() if g.exclusive == "levels"]


def level_name(label: str) -> str:
    return slug(label.split("/")[-1])


# Feature columns the fixed dimensions and the activity table are computed from.
BASE_COLUMNS = [
    "spend_365d",
    "spend_lifetime",
    "orders_lifetime",
    "orders_365d",
    "favourite_channel",
    "discount_order_share",
    "avg_order_value",
    "items_365d",
    *(f"order_share_{d}" for d in WEEKDAYS),
    *(f"order_share_{p}" for p in DAYPARTS),
]


class CrowdData:
    """One data set as of one date: crowds as masks, dimensions per customer (see the module)."""

    def __init__(
        self,
        population: Population,
        library: Library,
        *,
        segments: SegmentStore | None = None,
        manual_store: Path | None = None,
        say: Callable[[str], None] | None = None,
        columns: list[str] | None = None,
    ):
        """``columns``: build only these (e.g. a trend that needs no dimensions); default:
        everything the report's dimensions and activity table read."""
        self.population = population
        self.columns = columns
        self.library = library
        self.segments = segments or SegmentStore()
        self.manual_store = manual_store
        self.say = say or (lambda message: None)
        self.has_events = population.dataset.has("events")
        self._applied: Applied | None = None
        self._evaluator: SegmentEvaluator | None = None
        self._frame: pd.DataFrame | None = None
        self._dims: pd.DataFrame | None = None
        self._per_customer: dict[str, str | None] = {}
        self.definitions = _dimensions(library)
        self._fixed = frozenset(self.definitions)  # the report's own dimensions, before any attribute's

    @property
    def as_of(self):
        return self.population.as_of

    @property
    def con(self):
        """The connection holding the purchases read as of the date (and the per-customer tables)."""
        return self.population.con

    def apply_consent(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """``frame`` (with ``customer_id``) less those the consent rules leave out, and why."""
        from portrait.privacy import apply_consent

        return apply_consent(frame, self.population.dataset, self.population.con)

    def check_as_of(self, max_gap_days: int = LATE_AS_OF_DAYS) -> None:
        """An as-of date before any purchase, or more than a year after the last one, is a
        mistake more often than a question: say so with the data's range."""
        from marketing.population import PURCHASES_READ

        first, last = self.con.execute(f"SELECT MIN(ts), MAX(ts) FROM {PURCHASES_READ}").fetchall()[0]
        as_of = self.population.as_of
        if first is None:
            if not self.con.execute("SELECT COUNT(*) FROM (SELECT 1 FROM clean_purchases LIMIT 1)").fetchall()[0][0]:
                raise PortraitError(
                    "the purchases table has no readable row at all (portrait validate DATASET says why)"
                )
            raise PortraitError(f"no purchase before {as_of}: the as-of date is before the data's range")
        gap = (as_of - pd.Timestamp(last).date()).days
        if gap > max_gap_days:
            raise PortraitError(
                f"as of {as_of} is {gap} days after the last purchase ({pd.Timestamp(last).date()}); "
                f"the data runs from {pd.Timestamp(first).date()}"
            )

    # ------------------------------------------------------------ the customers

    @property
    def frame(self) -> pd.DataFrame:
        """Every customer with the columns the dimensions and the activity table read."""
        if self._frame is None and self.columns is not None:
            self._frame = self.population.frame(columns=self.columns)
        if self._frame is None:
            columns = list(BASE_COLUMNS) + [g.feature for g in level_groups(self.library)]
            columns += self.attribute_features()
            if self.has_events:
                columns += [name for name, _ in ACTIVITY[1:]]
            self.say("building the features the report reads")
            self._frame = self.population.frame(columns=list(dict.fromkeys(columns)))
        return self._frame

    @property
    def ids(self) -> pd.Series:
        return self.frame["customer_id"].astype("str")

    def attribute_features(self) -> list[str]:
        return [f.name for f in self._attribute_features()]

    def _attribute_features(self) -> list:
        return [f for f in self.population.features if f.family == "attributes" and f.scale != "days"]

    # ------------------------------------------------------------ crowds

    def mask(self, crowd: Crowd) -> np.ndarray:
        """One boolean per customer of :attr:`frame`: is the customer in the crowd?"""
        frame = self.frame
        if crowd.kind == "all":
            return np.ones(len(frame), bool)
        if crowd.kind == "where":
            condition = parse_condition(crowd.value, self.population.schema(), behaviour=True)
            return evaluate(condition, self.population.frame([condition])).to_numpy(bool)
        if crowd.kind == "bought_category":
            term = BehaviourTerm("purchased", (("category", crowd.value),), None, crowd.within_days)
            values = self._behaviour(term)
            return values > 0
        check_crowd_named(crowd, self.segments, self.library)
        if crowd.kind == "segment":
            return self._rows(self.evaluator.evaluate(self.segments.load(crowd.value)).members)
        if crowd.kind == "tag":
            self.applied.refuse_unscored([crowd.value], "the crowd")
            tags = self.applied.tags
            return self._rows(tags.loc[tags["tag"] == crowd.value, "customer_id"])
        return self._persona_mask(crowd.value)

    def unheld_tag(self, crowd: Crowd) -> str | None:
        """For a tag crowd nobody holds as of the date, the note saying so with the closest
        tags someone holds (a misspelt value: ``interest: Elektronick``); else None."""
        if crowd.kind != "tag":
            return None
        unheld = unheld_tags(self.applied.tags, [crowd.value])
        return nobody_holds(crowd.value, self.as_of, unheld[crowd.value]) if unheld else None

    def _behaviour(self, term: BehaviourTerm) -> np.ndarray:
        from marketing.behaviour import behaviour_table
        from marketing.population import PURCHASES_READ

        table = behaviour_table(self.con, [term], self.as_of, self.ids, purchases=PURCHASES_READ)
        return table[term.column].to_numpy()

    @property
    def evaluator(self) -> SegmentEvaluator:
        if self._evaluator is None:
            self._evaluator = SegmentEvaluator(
                self.population, self.segments, self.library, self.manual_store, applied=self._applied
            )
        return self._evaluator

    @property
    def tags(self) -> pd.DataFrame:
        return self.applied.tags

    @property
    def applied(self) -> Applied:
        if self._applied is None:
            self.say("applying the tag library")
            self._applied = apply_tags(self.library, self.population, manual_store=self.manual_store)
        return self._applied

    def _rows(self, ids) -> np.ndarray:
        where = pd.Index(self.ids).get_indexer(pd.Index(pd.Series(ids, dtype="str")))
        mask = np.zeros(len(self.frame), bool)
        mask[where[where >= 0]] = True
        return mask

    def named(self, crowd: Crowd) -> Crowd:
        """``crowd``, a persona crowd given by its id ("4") under its name instead: a report,
        its files and the audit log say which persona, as every persona crowd given by name does
        (one named both ways is one crowd). Any other crowd, or an id the scores do not hold (the
        mask says so), as it is."""
        if crowd.kind != "persona" or self.personas() is None:
            return crowd
        name = persona_named(self._persona_table(), crowd.value)
        return crowd if name is None or name == crowd.value else Crowd("persona", name)

    def _persona_mask(self, persona: str) -> np.ndarray:
        personas = self.personas()
        if personas is None and self.population.scores_dir is None:
            raise PortraitError("a persona crowd needs a scores folder with personas (--scores DIR)")
        if personas is None:  # scored without the personas model (a run the API serves too: no option named)
            raise PortraitError(
                "a persona crowd needs scores with personas, and these hold none (score with the personas model)"
            )
        name = persona_named(self._persona_table(), persona)  # a name, or a persona's id
        if name is None:
            known = sorted(pd.unique(personas.dropna()))
            close = difflib.get_close_matches(persona, known, n=5, cutoff=0.4)
            raise PortraitError(f"no persona {persona!r} in the scores; personas: {close or known} (or their ids)")
        return (personas == name).to_numpy(bool)

    def _persona_table(self) -> pd.DataFrame:
        """The scores' personas: ``persona_name`` and, when scored, ``persona_id``."""
        return self.population.scores

    def personas(self) -> pd.Series | None:
        """Each customer's persona name (aligned with :attr:`frame`), or None without one."""
        scores = self.population.scores
        if scores is None or "persona_name" not in scores.columns:
            return None
        named = scores.drop_duplicates("customer_id").set_index("customer_id")["persona_name"]
        return pd.Series(named.reindex(self.ids).to_numpy(), dtype="object")

    # ------------------------------------------------------------ dimensions

    @property
    def dimensions(self) -> pd.DataFrame:
        """One categorical column per dimension, aligned with :attr:`frame`, no missing values."""
        if self._dims is None:
            self.say("computing the report's dimensions")
            self._dims = self._compute_dimensions()
        return self._dims

    def dimension_label(self, name: str) -> str:
        found = self.definitions.get(name)
        return found.label if found else name.replace("_", " ")

    def check_dimension(self, name: str) -> str:
        """The dimension's name: as given, or a customers column's own name (``地域``, ``Größe``)
        for the dimension it became (:func:`attribute_dimensions`)."""
        column = next((f for f in self._attribute_features() if f.value == name), None)
        if name not in self.dimensions.columns and column is not None:  # a customers column's own name
            values, banded, renamed = attribute_dimension_names(name)
            # its values (text), or its bands (numbers; renamed where another has the bands' name)
            for own in (values,) if column.scale == "category" else (renamed, banded):
                if own in self.dimensions.columns:
                    return own
        if name not in self.dimensions.columns:
            known = list(self.dimensions.columns)
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
            raise PortraitError(f"unknown dimension {name!r}; closest: {close or known}")
        return name

    def _compute_dimensions(self) -> pd.DataFrame:
        frame = self.frame
        bought = frame["orders_lifetime"].fillna(0).to_numpy() > 0
        columns: dict[str, pd.Series | np.ndarray] = {}
        for group in level_groups(self.library):
            columns[level_name(group.label or group.path)] = levels(frame[group.feature], group, bought)
        columns["rfm_group"] = frame["rfm_group"].astype("object")
        personas = self.personas()
        columns["persona"] = personas if personas is not None else np.full(len(frame), None, dtype=object)
        columns.update(self._favourites())
        columns["favourite_channel"] = frame["favourite_channel"].astype("object")
        columns["order_value_band"] = bands(frame["avg_order_value"].where(bought))
        unit_price = frame["spend_365d"] / frame["items_365d"].where(frame["items_365d"] > 0)
        columns["unit_price_band"] = bands(unit_price.where(unit_price > 0))
        orders = frame["orders_lifetime"].fillna(0).to_numpy()
        columns["repeat_orders"] = np.select(
            [orders <= 0, orders == 1, orders == 2, orders == 3], ["none", "1", "2", "3"], "4+"
        )
        columns["favourite_weekday"] = _argmax_label(
            frame, [f"order_share_{d}" for d in WEEKDAYS], [d.capitalize() for d in WEEKDAYS]
        )
        columns["favourite_daypart"] = _argmax_label(
            frame, [f"order_share_{p}" for p in DAYPARTS], list(DAYPARTS.values())
        )
        share = frame["discount_order_share"].to_numpy(dtype=float)
        columns["promotion_sensitivity"] = np.select(
            [np.isnan(share) | ~bought, share <= 0, share < 0.5], [None, PROMOTION[0], PROMOTION[1]], PROMOTION[2]
        )
        for feature in self.attribute_features():
            name, values = self._attribute_dimension(feature, frame[feature])
            if name not in columns:
                columns[name] = values
            else:  # a text column named like a dimension of the report (order_value_band)
                log.warning(
                    "customers column %s: a report dimension has its name (%s); not in crowd reports", feature, name
                )
        dims = pd.DataFrame(
            {name: _categorical(values, self.definitions.get(name)) for name, values in columns.items()}
        )
        return dims

    def _attribute_dimension(self, feature: str, values: pd.Series) -> tuple[str, pd.Series | np.ndarray]:
        found = next(f for f in self.population.features if f.name == feature)
        name, banded = attribute_dimensions(found.value or feature.removeprefix("attr_"))
        label = found.label or name.replace("_", " ")
        if found.scale == "category" or not pd.api.types.is_numeric_dtype(values):
            self.definitions.setdefault(name, Dimension(name, label))
            return name, top_values(values.astype("object"), MAX_VALUES)
        # A customers column already named like the bands (an export with both age and age_band):
        # the bands take another name, not silently its place (or it theirs).
        named = {attribute_dimensions(f.value or f.name.removeprefix("attr_"))[0] for f in self._attribute_features()}
        name = banded if banded not in named | self._fixed else attribute_dimension_names(name)[2]
        self.definitions.setdefault(name, Dimension(name, f"{label} (quintile bands)"))
        return name, bands(values, years=names_years(feature.removeprefix("attr_")))

    def _favourites(self) -> dict[str, Coded]:
        """Favourite category, brand (by spend), payment method and store (by orders) from the
        purchases read once, over every value (the favourite_category feature only knows the top
        ones). Ties go to the alphabetically first value, so the result never depends on row order.
        Returned as codes aligned with :attr:`frame` (placed by row number in SQL: no string
        index of a million ids in pandas)."""
        con = self.con
        rows = pd.DataFrame({"customer_id": self.ids.to_numpy(), "row": np.arange(len(self.frame), dtype="int64")})
        con.register("_crowd_rows", rows)
        result = {}
        try:
            for name, column in (
                ("favourite_category", "category"),
                ("favourite_brand", "brand"),
                ("favourite_payment", "payment_method"),
                ("favourite_store", "store_id"),
            ):
                table = self.per_customer(column)
                if table is None:
                    result[name] = Coded(np.full(len(self.frame), -1, dtype="int64"), [])
                    continue
                weight = "orders" if column in ORDER_LEVEL else "spend"
                # Rounded: parallel sums differ in the last bits from run to run, and equal spends
                # must tie (to the first name) in every run.
                con.execute(
                    f"""CREATE OR REPLACE TEMP TABLE _crowd_favourite AS
                        SELECT customer_id, arg_min(value, {{'w': -ROUND({weight}, 6), 'v': value}}) AS v
                        FROM {table} WHERE {weight} > 0 GROUP BY customer_id"""
                )
                labels = [
                    row[0] for row in con.execute("SELECT DISTINCT v FROM _crowd_favourite ORDER BY v").fetchall()
                ]
                found = con.execute(
                    """SELECT r.row, l.code FROM _crowd_favourite f JOIN _crowd_rows r USING (customer_id)
                       JOIN (SELECT v, (ROW_NUMBER() OVER (ORDER BY v) - 1)::BIGINT AS code
                             FROM (SELECT DISTINCT v FROM _crowd_favourite)) l USING (v)"""
                ).fetchnumpy()
                codes = np.full(len(self.frame), -1, dtype="int64")
                codes[np.asarray(found["row"], dtype="int64")] = np.asarray(found["code"], dtype="int64")
                result[name] = top_coded(Coded(codes, labels), MAX_VALUES)
        finally:
            con.execute("DROP TABLE IF EXISTS _crowd_favourite")
            con.unregister("_crowd_rows")
        return result

    def order_mix(self) -> str:
        """A temporary table with one row per customer with orders in the last 365 days:
        ``orders`` (with a line of amount > 0) and ``multi``, those spanning several categories.
        An order spans several exactly when its smallest and largest category differ: cheaper than
        COUNT(DISTINCT category) per order, and NULL categories are ignored by both."""
        from marketing.population import PURCHASES_READ

        if "_order_mix" not in self._per_customer:
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _crowd_order_mix AS
                    SELECT customer_id, COUNT(*) AS orders, COUNT(*) FILTER (WHERE multi) AS multi
                    FROM (SELECT customer_id, order_id, MIN(category) <> MAX(category) AS multi
                          FROM {PURCHASES_READ} WHERE amount > 0 AND age <= {int(ACTIVITY_WINDOW)}
                          GROUP BY customer_id, order_id)
                    GROUP BY customer_id"""
            )
            self._per_customer["_order_mix"] = "_crowd_order_mix"
        return self._per_customer["_order_mix"]

    def drop_work_tables(self) -> None:
        """Drop the per-customer tables (the caller's connection goes on to other work)."""
        for name in self._per_customer.values():
            if name is not None:
                self.con.execute(f"DROP TABLE IF EXISTS {name}")
        self._per_customer = {}

    def per_customer(self, column: str) -> str | None:
        """A temporary table with one row per customer and value of the purchases' ``column``
        whose net spend is above 0 (for a column of the order, :data:`ORDER_LEVEL`: with a
        purchase order): ``spend`` over all history before the as-of date, ``recent_spend`` and
        ``recent_units`` of those with a sold line in the last 365 days (NULL for the others),
        and for a column of the order ``orders``, the purchase orders with that value. Built once; the
        favourites and the report's category and brand tables read it. None when the data set
        has no such column."""
        from marketing.population import PURCHASES_READ

        if column in self._per_customer:
            return self._per_customer[column]
        con = self.con
        present = {row[0] for row in con.execute(f"DESCRIBE {PURCHASES_READ}").fetchall()}
        if column not in present:
            self._per_customer[column] = None
            return None
        name = f"_crowd_by_{slug(column)}"
        recent = f"age <= {ACTIVITY_WINDOW}"
        # Money is net, as in the features: refunds are deducted per customer and value, and a
        # value whose purchases were all refunded (net spend <= 0) is not one the customer buys
        # (not even one bought in the last 365 days: the crowd "bought category" counts who
        # bought). A recent buyer of the value has a sold line of it in the last 365 days (a
        # refund there alone is not buying): ``recent_spend`` and ``recent_units`` are theirs,
        # net and never below 0, and NULL for everyone else. Units by the contract's rule
        # (portrait.contract.line_units).
        # Sums of money are rounded as the features round them (money_sum): amounts that cancel
        # (a refunded purchase) leave a residue of about 1e-17 whose sign depends on the order of
        # addition, which would put a customer's fully refunded value in or out from run to run.
        spend, units = money_sum("amount"), line_units()
        sold = f"COUNT(CASE WHEN {recent} AND amount > 0 THEN 1 END) > 0"
        if column in ORDER_LEVEL:  # per order first: "orders with the value" needs no DISTINCT
            # orders: the purchase orders with the value, as the features count them (the
            # favourite payment method or store is the one of most purchase orders, as the
            # favourite channel is)
            sql = f"""SELECT customer_id, value, {money_sum("spend")} AS spend, COUNT(*) FILTER (WHERE is_purchase) AS orders,
                             CASE WHEN BOOL_OR(sold) THEN GREATEST({money_sum("recent_spend")}, 0) END AS recent_spend,
                             CASE WHEN BOOL_OR(sold) THEN GREATEST(SUM(recent_units), 0) END AS recent_units
                      FROM (SELECT customer_id, order_id, CAST({column} AS VARCHAR) AS value, {spend} AS spend,
                                   {money_sum(f"CASE WHEN {recent} THEN amount ELSE 0 END")} AS recent_spend,
                                   SUM(CASE WHEN {recent} THEN {units} ELSE 0 END) AS recent_units, {sold} AS sold,
                                   {purchase_order()} AS is_purchase
                            FROM {PURCHASES_READ} WHERE {column} IS NOT NULL GROUP BY ALL) o
                      GROUP BY customer_id, value HAVING COUNT(*) FILTER (WHERE is_purchase) > 0"""
        else:  # a line's value: one aggregation of the lines (three times cheaper than per order)
            sql = f"""SELECT customer_id, CAST({column} AS VARCHAR) AS value, {spend} AS spend,
                             CASE WHEN {sold} THEN GREATEST({money_sum(f"CASE WHEN {recent} THEN amount ELSE 0 END")}, 0)
                                  END AS recent_spend,
                             CASE WHEN {sold} THEN GREATEST(SUM(CASE WHEN {recent} THEN {units} ELSE 0 END), 0)
                                  END AS recent_units
                      FROM {PURCHASES_READ} WHERE {column} IS NOT NULL GROUP BY ALL HAVING {spend} > 0"""
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        _withhold_personal_values(con, name, column)
        self._per_customer[column] = name
        return name


def _withhold_personal_values(con, table: str, column: str) -> None:
    """Values of ``column`` holding an e-mail address or a phone number (a product or store
    named after a person's contact) are renamed in the per-customer ``table`` to numbered
    :data:`PERSONAL_VALUE` labels, each its own value (a favourite is still the one value of
    most spend): the favourites, the category and brand tables and the crowd material's
    per-customer tables read this table, and never name such a value. Only their rows change."""
    found = personal_values(con, f"SELECT value FROM {table}")
    if not found:
        return
    log.warning(
        "%d %s value(s) hold an e-mail address or a phone number: crowd reports show them as %r, %r, ...",
        len(found),
        column,
        withheld_label(1),
        "#2",
    )
    listed = ", ".join(quote_literal(v) for v in found)
    con.execute(f"UPDATE {table} SET value = {withheld_labels(found)} WHERE value IN ({listed})")


@dataclass(frozen=True)
class Coded:
    """A dimension as integer codes into ``labels`` (-1: unknown), one per customer: a million
    small integers instead of a million strings."""

    codes: np.ndarray
    labels: list

    @classmethod
    def of(cls, values) -> Coded:
        codes, uniques = pd.factorize(pd.Series(values, dtype="object"), use_na_sentinel=True)
        return cls(np.asarray(codes, dtype="int64"), list(uniques))


def top_values(values, keep: int) -> Coded:
    """The ``keep`` most common values (ties by name); the rest become :data:`OTHER`."""
    return top_coded(Coded.of(values), keep)


def top_coded(coded: Coded, keep: int) -> Coded:
    """:func:`top_values` on codes."""
    counts = np.bincount(coded.codes[coded.codes >= 0], minlength=len(coded.labels))
    used = np.flatnonzero(counts)
    if len(used) <= keep:
        return coded
    ranked = sorted(used, key=lambda i: (-counts[i], str(coded.labels[i])))
    kept = np.asarray(ranked[:keep])
    remap = np.full(len(coded.labels), keep, dtype="int64")  # everything else: OTHER
    remap[kept] = np.arange(keep)
    codes = np.where(coded.codes >= 0, remap[np.maximum(coded.codes, 0)], -1)
    return Coded(codes, [coded.labels[i] for i in kept] + [OTHER])


def bands(values: pd.Series, q: int = 5, years: bool = False) -> np.ndarray:
    """Quintile bands of the known values, labelled by their range ("12.50-20.00"); NaN stays None.
    ``years``: the values are years, written without a thousands separator ("1958-1970")."""
    number = _year if years else _number
    x = pd.Series(values, dtype="float64").reset_index(drop=True)
    known = x.dropna()
    if known.empty:
        return np.full(len(x), None, dtype=object)
    edges = np.unique(np.quantile(known, np.linspace(0, 1, q + 1)))
    if len(edges) == 1:
        return np.where(x.isna(), None, number(edges[0])).astype(object)
    codes = np.clip(np.searchsorted(edges, x.to_numpy(), side="right") - 1, 0, len(edges) - 2)
    labels = np.array(
        [f"{number(lo)}-{number(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)], dtype=object
    )
    return np.where(x.isna(), None, labels[codes]).astype(object)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _year(value: float) -> str:
    return f"{value:.0f}"


def names_years(name: str) -> bool:
    """Whether a customers column's name says it holds years (``birth_year``, ``yob``,
    ``signup_year``): its bands are written 1958-1970, not 1,958-1,970."""
    return bool({"year", "yob", "yr"} & set(re.split(r"[^a-z]+", name.lower())))


def _argmax_label(frame: pd.DataFrame, columns: list[str], labels: list[str]) -> np.ndarray:
    present = [c for c in columns if c in frame.columns]
    if not present:
        return np.full(len(frame), None, dtype=object)
    values = frame[present].to_numpy(dtype=float)
    known = ~np.isnan(values).all(axis=1) & (np.nan_to_num(values).max(axis=1) > 0)
    filled = np.where(np.isnan(values), -1, values)
    best = np.nanargmax(filled, axis=1)
    # shares are rounded to 9 decimals (features.plan): equal ones are equal numbers
    tied = (filled == filled.max(axis=1, keepdims=True)).sum(axis=1) > 1
    chosen = np.asarray([labels[columns.index(c)] for c in present], dtype=object)[best]
    return np.where(known, np.where(tied, TIED, chosen), None).astype(object)


def _categorical(values, definition: Dimension | None) -> pd.Categorical:
    """Values (or :class:`Coded`) as a categorical: the definition's order first, then the rest
    in natural order, then :data:`UNKNOWN` for missing and blank values. Works on the distinct
    labels, never on a million strings."""
    coded = values if isinstance(values, Coded) else Coded.of(values)
    text = np.asarray([str(label) for label in coded.labels], dtype=object)
    unknown_label = np.asarray([t.strip() in ("", UNKNOWN) for t in text], dtype=bool)
    counts = np.bincount(coded.codes[coded.codes >= 0], minlength=len(text))
    seen = {t for t, n, u in zip(text, counts, unknown_label, strict=True) if n and not u}
    order = [v for v in (definition.order if definition else ()) if v in seen]
    rest = sorted(seen - set(order), key=_natural)
    has_unknown = bool((coded.codes < 0).any() or counts[unknown_label].any())
    categories = order + rest + ([UNKNOWN] if has_unknown else [])
    position = {v: i for i, v in enumerate(categories)}
    unknown = position.get(UNKNOWN, -1)
    remap = np.asarray(
        [unknown if u else position.get(t, -1) for t, u in zip(text, unknown_label, strict=True)] + [unknown],
        dtype="int64",
    )
    return pd.Categorical.from_codes(remap[coded.codes], categories=categories)  # code -1 reads remap[-1]


def _natural(value: str):
    """Sort "2.50-10.00" before "10.00-20.00": by the first number, then the text."""
    match = re.match(r"-?[\d,]+(\.\d+)?", value)
    return (0, float(match.group(0).replace(",", "")), value) if match else (1, 0.0, value)


def cell_mask(data: CrowdData, cell: str, min_cell: int | None = None) -> np.ndarray:
    """``"DIM = VALUE"`` as a mask over the customers (both checked against what exists). An
    unknown value's error lists only values at least ``min_cell`` customers hold (by default
    a report's)."""
    name, sep, value = cell.partition("=")
    name, value = name.strip(), value.strip().strip("'\"")
    if not sep or not name or not value:
        raise PortraitError(f'the cell {cell!r}: write it as "DIMENSION = VALUE", e.g. "spending_power = high"')
    column = data.dimensions[data.check_dimension(name)]
    values = [str(v) for v in column.cat.categories]
    if value not in values and value.startswith("other values ("):  # a report's pooled row
        raise FilterError(
            f"the cell {cell!r} is a report's pooled row: each of its values is held by too few customers to be "
            "shown, and so to be drilled into; its customers are not exported"
        )
    if value not in values:
        # Only values a report would show are offered: a rare one (a name held by one customer)
        # is pooled in reports and crosstabs, and an error listing it would print it.
        from marketing.crowd_report import DEFAULT_MIN_CELL

        least = DEFAULT_MIN_CELL if min_cell is None else min_cell
        codes = column.cat.codes.to_numpy()
        held = np.bincount(codes[codes >= 0], minlength=len(values))
        shown = [v for v, n in zip(values, held, strict=True) if n >= least]
        close = difflib.get_close_matches(value, shown, n=5, cutoff=0.3)
        if close:
            listed = f"closest: {close} (of its {len(values)} values)"
        elif shown:
            listed = f"its values: {shown[:12]}{' ...' if len(shown) > 12 else ''}"
        else:
            listed = f"none of its {len(values)} values is held by {least} customers or more to be listed"
        rare = (
            f"; values fewer than {least} customers hold are not listed" if shown and len(shown) < len(values) else ""
        )
        raise FilterError(f"dimension {name!r} has no value {value!r}; {listed}{rare}")
    return (column == value).to_numpy(bool)
