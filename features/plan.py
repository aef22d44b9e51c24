"""Compile the catalogue into a few SQL passes.

The plan is a list of named steps, each one ``SELECT``; an engine materialises each step as a
temporary table (DuckDB) or a cached view (Spark) and the last step is the feature table. A
relation that only one later step reads is not a step of its own but a ``WITH`` of its reader.
``purchases`` is read once (into ``f_purchases``, the rows before the cutoff) and ``events``
twice (window buckets with active days, campaign receipts), whatever the number of features:
every feature is a conditional aggregate over one of a few pre-aggregated relations, never a
pass of its own. ``purchase_steps`` come first so that the vocabulary can be computed from
``f_purchases`` before the rest runs.

The SQL keeps to forms both DuckDB and Spark SQL accept (``CASE``, ``DATE_DIFF``, window
functions, ``GREATEST``/``LEAST``; a 0/1 averaged is a DOUBLE, as Spark averages DECIMAL
literals to 5 places; ``DATE_DIFF`` on dates, which both count alike); each step is transpiled
to Spark SQL by :mod:`portrait.spark_engine`. No value from the data or the user is pasted into it:
vocabularies are joined as tables, and the cutoff is formatted from a parsed date.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass

from features.catalogue import (
    DAYS_PER_MASK,
    EVENT_TYPES,
    Feature,
    day_mask_count,
    money_sum,
)
from features.config import FeatureConfig
from portrait.contract import any_timed, line_units, purchase_line
from portrait.views import REMAP, by_person

# Refund lines of one order further apart than this are separate refunds (f_orders).
REFUND_GAP_DAYS = 1
# The purchase lines' columns f_orders reads.
ORDER_LINE_COLUMNS = "customer_id, order_id, ts, age, amount, quantity, discount, channel, payment_method"

STAGE_RELATIONS = {
    "orders": "f_orders",
    "timeline": "f_timeline",
    "lines": "f_lines",
    "category_spend": "f_category_spend",
    "brand_spend": "f_brand_spend",
    "line_categories": "f_line_categories",
    "order_channels": "f_order_channels",
    "event_buckets": "f_event_buckets",
    "campaigns": "f_campaigns",
}
EVENT_STAGES = ("event_buckets", "campaigns")


@dataclass(frozen=True)
class Step:
    name: str
    sql: str


def purchase_steps(cutoff: dt.date, with_store: bool = False) -> list[Step]:
    """Purchase lines before the cutoff, with their age in days: the one read of ``purchases``.
    ``with_store`` keeps ``store_id`` too, which no feature reads but crowd reports do (350 MB
    of 21M lines: left out of a feature build)."""
    store = "store_id, " if with_store else ""
    return [
        Step(
            "f_purchases",
            f"""
        SELECT customer_id, order_id, ts, amount, quantity, discount, category, brand, channel,
               payment_method, {store}DATE_DIFF('day', CAST(ts AS DATE), {date_literal(cutoff)}) AS age
        FROM purchases WHERE ts < {timestamp_literal(cutoff)}""",
        )
    ]


def date_literal(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


def timestamp_literal(day: dt.date) -> str:
    return f"TIMESTAMP '{day.isoformat()} 00:00:00'"


def _sql_type(feature: Feature) -> str:
    # a category computed in SQL is a slot of the vocabulary, named in pandas (build._finish)
    return "BIGINT" if feature.dtype in ("int", "category") else "DOUBLE"


def compile_plan(
    features: list[Feature],
    cutoff: dt.date,
    config: FeatureConfig,
    has_events: bool,
    spine_extra: str | None = None,
    attribute_select: str | None = None,
    event_first_seen: str | None = None,
    unrecorded: Collection[str] = (),
) -> list[Step]:
    """Steps that build one row per customer with every feature, as of ``cutoff``.

    ``spine_extra`` is an optional ``SELECT customer_id ...`` adding known customers without
    activity; ``attribute_select`` an optional ``SELECT customer_id, ...`` of attribute columns.
    ``event_first_seen`` optionally names a relation of ``customer_id, first_ts`` (the ids as
    written in ``clean_events`` and the time of each one's first event, over all events): when
    no event feature is selected, who had an event before the cutoff is read from it instead of
    from the events (the same ids: an id has an event before the cutoff exactly when its first
    one is), so that several cutoffs read the events once (the crowd trend).
    ``unrecorded``: purchase columns with no value before the cutoff (:data:`UNRECORDED_READ_AS`):
    the features that read them are missing for everyone, not 0 ("no discount" where the export
    has no discount column at all).
    """
    before = f"ts < {timestamp_literal(cutoff)}"
    # The lines' brand slot and price ratio (and the category prices it needs) only when a
    # selected feature reads them.
    line_sql = " ".join(f.sql for f in features if f.stage in ("lines", "line_categories"))
    brand_slot, brand_join = "CAST(NULL AS BIGINT)", ""
    if re.search(r"\bbrand_slot\b", line_sql):
        brand_slot, brand_join = "vb.slot", "\n            LEFT JOIN vocab_brand vb ON p.brand = vb.value"
    price_ratio, price_join = "CAST(NULL AS DOUBLE)", ""
    if re.search(r"\bprice_ratio\b", line_sql):
        price_ratio = (
            "CASE WHEN p.quantity > 0 AND cp.median_unit_price > 0 "
            "THEN (p.amount + COALESCE(p.discount, 0)) / p.quantity / cp.median_unit_price END"
        )
        price_join = "\n            LEFT JOIN f_category_price cp ON p.category = cp.category"
    steps = purchase_steps(cutoff)
    steps += [
        # The lines' stages first, then the orders: the lines (the largest table) can be dropped
        # once the orders are built, before the orders are aggregated (about 0.5 GB less at the peak).
        Step(
            "f_category_price",
            """
            SELECT category, MEDIAN((amount + COALESCE(discount, 0)) / quantity) AS median_unit_price
            FROM f_purchases WHERE amount > 0 AND quantity > 0 AND category IS NOT NULL
            GROUP BY category""",
        ),
        Step(
            "f_lines",
            f"""
            SELECT p.customer_id, p.amount, p.age, p.category,
                   vc.slot AS category_slot, {brand_slot} AS brand_slot, {price_ratio} AS price_ratio
            FROM f_purchases p
            LEFT JOIN vocab_category vc ON p.category = vc.value{brand_join}{price_join}
            WHERE p.amount > 0""",
        ),
        # Net spend per customer and top category (brand), refunds deducted, never below 0: a
        # category whose purchases were all returned is not where the customer spends (its
        # share is 0). The categories (brands) outside the top K are one slot, NULL. Rounded to
        # 6 decimals (money_sum, as window sums are) so that money that cancels is 0 on either engine, not
        # a floating residue of either sign.
        *(
            Step(
                f"f_{subject}_spend",
                f"""
            SELECT customer_id, slot AS {subject}_slot,
                   CASE WHEN {money_sum("amount")} > 0 THEN {money_sum("amount")} ELSE 0 END AS spend
            FROM (SELECT p.customer_id, p.amount, v.slot FROM f_purchases p
                  LEFT JOIN vocab_{subject} v ON p.{subject} = v.value) l
            GROUP BY customer_id, slot""",
            )
            for subject in ("category", "brand")
        ),
        # One row per category bought (a purchase line with amount > 0): the age of its latest
        # purchase, and a key whose largest value per customer names the favourite category: the
        # net spend (rounded as money_sum rounds it) in millionths, times 1000, plus 999 minus its
        # rank by name among the top categories (0 outside them), so that equal spends go to the
        # first by name, whatever the vocabulary's order (a model's, or the day's: one customer
        # had two favourites, in a tag and in a profile), and any category outside it reads as
        # 'other' (999).
        Step(
            "f_line_categories",
            f"""
            SELECT c.customer_id, c.category, c.age,
                   CAST(ROUND(c.spend * 1000000) AS DECIMAL(38, 0)) * 1000
                       + (999 - COALESCE(v.name_rank, 999)) AS favourite_key
            FROM (
                SELECT customer_id, category, MIN(CASE WHEN amount > 0 THEN age END) AS age,
                       CASE WHEN {money_sum("amount")} > 0 THEN {money_sum("amount")} ELSE 0 END AS spend
                FROM f_purchases WHERE category IS NOT NULL GROUP BY customer_id, category
                HAVING COUNT(CASE WHEN amount > 0 THEN 1 END) > 0
            ) c
            LEFT JOIN vocab_category v ON c.category = v.value""",
        ),
        # One row per order part, as the labels, the tags and the funnel read orders
        # (portrait.contract.purchase_order): an order's purchase lines are its purchase, its
        # refund lines a refund until one comes more than REFUND_GAP_DAYS after the previous
        # (then another), each dated by its own first line, so that a return booked under its
        # order's id counts as one booked under a new id (a return in two parts, weeks apart, is
        # two refunds either way; one across midnight is one).
        Step(
            "f_orders",
            f"""
            SELECT customer_id, ts, age, amount, gross, discount, items,
                   is_purchase, refunded,
                   CASE WHEN discount > 0 THEN 1 ELSE 0 END AS has_discount,
                   MOD(MOD(DATE_DIFF('day', DATE '1970-01-04', CAST(ts AS DATE)), 7) + 7, 7) AS dow,
                   EXTRACT(HOUR FROM ts) AS hour, EXTRACT(DAY FROM ts) AS dom,
                   EXTRACT(QUARTER FROM ts) AS quarter,
                   vc.slot AS channel_slot, vp.slot AS payment_slot,
                   CASE WHEN vc.slot IS NULL THEN o.channel END AS other_channel
            FROM (
                SELECT customer_id, order_id, is_purchase, MIN(ts) AS ts, MAX(age) AS age,
                       {money_sum("amount")} AS amount,
                       SUM(amount + COALESCE(discount, 0)) AS gross, SUM(COALESCE(discount, 0)) AS discount,
                       SUM({line_units()}) AS items,
                       CASE WHEN is_purchase = 0 THEN -{money_sum("amount")} ELSE 0 END AS refunded,
                       MIN(channel) AS channel,
                       MIN(payment_method) AS payment_method
                FROM (
                    SELECT {ORDER_LINE_COLUMNS}, 1 AS is_purchase, 0 AS refund_part
                    FROM f_purchases WHERE {purchase_line()}
                    UNION ALL
                    -- a refund line more than a day after the order's previous one starts another
                    -- refund (the refund lines alone are ordered: a few of the lines)
                    SELECT {ORDER_LINE_COLUMNS}, 0 AS is_purchase,
                           SUM(starts) OVER (PARTITION BY customer_id, order_id ORDER BY ts
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS refund_part
                    FROM (SELECT {ORDER_LINE_COLUMNS},
                                 CASE WHEN ts > LAG(ts) OVER (PARTITION BY customer_id, order_id ORDER BY ts)
                                                + INTERVAL {REFUND_GAP_DAYS} DAY THEN 1 ELSE 0 END AS starts
                          FROM f_purchases WHERE NOT {purchase_line()}) r
                ) p
                GROUP BY customer_id, order_id, is_purchase, refund_part
            ) o
            LEFT JOIN vocab_channel vc ON o.channel = vc.value
            LEFT JOIN vocab_payment vp ON o.payment_method = vp.value""",
        ),
        # One row per channel a customer's purchase orders went through (a top channel by its slot,
        # another by its name: f_orders keeps the name of those alone, a few bytes), with a key whose largest
        # value per customer names the favourite channel, as f_line_categories does for categories:
        # the orders times 1000, plus 999 minus the channel's rank by name among the top channels (0
        # outside them: a channel the vocabulary lacks, a new one, reads as 'other', not as the best
        # of the known ones).
        Step(
            "f_order_channels",
            """
            SELECT c.customer_id, CAST(c.orders AS BIGINT) * 1000 + (999 - COALESCE(v.name_rank, 999)) AS favourite_key
            FROM (
                SELECT customer_id, channel_slot, other_channel, COUNT(*) AS orders FROM f_orders
                WHERE is_purchase = 1 AND (channel_slot IS NOT NULL OR other_channel IS NOT NULL)
                GROUP BY customer_id, channel_slot, other_channel
            ) c
            LEFT JOIN vocab_channel v ON c.channel_slot = v.slot""",
        ),
        # Each purchase order's place in its customer's timeline, oldest first: the days since
        # the previous purchase order (NULL for the first) and 1 for the first purchase order of
        # its day. One sort of the narrow rows gives both the gaps and the distinct days. Orders
        # of one day are left in any order: whichever comes first, the day has one row with its
        # gap and new_day 1 and the others gap 0 and new_day 0, the same rows to every feature
        # (sorting by order id as well cost 0.5 s in a probe of the step at 1M customers).
        Step(
            "f_timeline",
            """
            SELECT customer_id, age, previous_age - age AS gap,
                   CASE WHEN previous_age IS NULL OR previous_age <> age THEN 1 ELSE 0 END AS new_day
            FROM (
                SELECT customer_id, age,
                       LAG(age) OVER (PARTITION BY customer_id ORDER BY age DESC) AS previous_age
                FROM f_orders WHERE is_purchase = 1
            ) t""",
        ),
    ]
    if has_events:
        # age <= w (whole days from the event's date to the cutoff) is ts >= cutoff - w days.
        # Counted (a SUM of 0/1 would be a 128-bit integer) and kept as INTEGER: the stage sums
        # ~50 of them per row, and DuckDB sums 32-bit integers in 64 bits, wider ones in 128.
        window_counts = "".join(
            f"COUNT(CASE WHEN ts >= {timestamp_literal(cutoff - dt.timedelta(days=w))} THEN 1 END) AS n_{w}d, "
            for w in config.windows
        )
        response = config.campaign_response_days
        # Receipts whose response window [ts, ts + days) closed by the cutoff (the others are not
        # counted, and a receipt changes no other row's next order), so they never enter the
        # sort. The window is half-open, so that an order at its very end, which the cutoff
        # closing it does not see, counts at no later cutoff either: the rate of a campaign does
        # not change once it is counted.
        closed = f"ts + INTERVAL {response} DAY <= {timestamp_literal(cutoff)}"
        # The days with an event in the behaviour window, as bits of whole numbers (bit a - 1 of
        # mask j for an event a = 62 j + 1 .. 62 j + 62 days before the cutoff), only when a
        # selected feature counts active days: OR-ing the masks of a person's rows is the set of
        # their days, without grouping ~100M events by day.
        day_masks, mask_columns = "", ""
        if any(re.search(r"\bevent_days_\d+\b", f.sql) for f in features if f.stage == "event_buckets"):
            age = f"DATE_DIFF('day', CAST(ts AS DATE), {date_literal(cutoff)})"
            for j in range(day_mask_count(config.behaviour_window)):
                low = DAYS_PER_MASK * j + 1
                high = min(low + DAYS_PER_MASK - 1, config.behaviour_window)
                # low <= age <= high, written as bounds on the time (the midnights of the days
                # cutoff - high and cutoff - low + 1): cheaper than the age of 100M rows twice
                # (about 0.2 s at 1M customers, measured); a bit shift, not a float POWER.
                after = f"ts >= {timestamp_literal(cutoff - dt.timedelta(days=high))}"
                before_low = f" AND ts < {timestamp_literal(cutoff - dt.timedelta(days=low - 1))}" if low > 1 else ""
                day_masks += (
                    f", BIT_OR(CASE WHEN {after}{before_low} "
                    f"THEN CAST(1 AS BIGINT) << ({age} - {low}) END) AS event_days_{j}"
                )
                mask_columns += f", event_days_{j}"
        steps += [
            # One pass over the events as written (no identity map on ~100M rows, one group per
            # id and type as written, window counts as conditional sums), then the ~6M grouped
            # rows are mapped to their person and their type's slot. Every feature of the stage
            # is a sum, a minimum or an OR, so a person's rows need no second grouping here.
            Step(
                "f_event_buckets",
                f"""
                SELECT COALESCE(m.person_id, g.customer_id) AS customer_id, et.slot AS type_slot,
                       {"".join(f"CAST(n_{w}d AS INTEGER) AS n_{w}d, " for w in config.windows)}n,
                       DATE_DIFF('day', CAST(last_ts AS DATE), {date_literal(cutoff)}) AS min_age{mask_columns}
                FROM (
                    SELECT customer_id, event_type, {window_counts}COUNT(*) AS n, MAX(ts) AS last_ts{day_masks}
                    FROM clean_events WHERE {before} GROUP BY customer_id, event_type
                ) g
                LEFT JOIN {REMAP} m ON g.customer_id = m.customer_id
                LEFT JOIN vocab_event_type et ON LOWER(TRIM(g.event_type)) = et.value""",
            ),
            Step(
                "f_campaigns",
                f"""
                SELECT customer_id,
                       CASE WHEN next_order_ts IS NOT NULL
                                 AND next_order_ts < ts + INTERVAL {response} DAY THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END AS responded
                FROM (
                    -- A receipt's next purchase order: the first order after it (at the same
                    -- time, receipts sort first), skipping the receipts in between.
                    SELECT customer_id, ts, is_receipt,
                           LEAD(CASE WHEN is_receipt = 0 THEN ts END IGNORE NULLS) OVER (
                               PARTITION BY customer_id ORDER BY ts, is_receipt DESC) AS next_order_ts
                    FROM (
                        SELECT customer_id, ts, 1 AS is_receipt FROM events
                        WHERE {closed} AND LOWER(TRIM(event_type)) = 'campaign_received'
                        UNION ALL
                        SELECT customer_id, ts, 0 AS is_receipt FROM f_orders WHERE is_purchase = 1
                    ) u
                ) r
                WHERE is_receipt = 1""",
            ),
        ]

    by_stage: dict[str, list[Feature]] = {}
    for feature in features:
        by_stage.setdefault(feature.stage, []).append(feature)

    # Who bought or had an event: read from the per-customer aggregate of a relation when one
    # is built (one row per customer rather than per order or bucket).
    spine_parts = ["SELECT customer_id FROM " + ("f_stage_orders" if by_stage.get("orders") else "f_orders")]
    if has_events and any(f.stage in EVENT_STAGES for f in features):
        relation = "f_stage_event_buckets" if by_stage.get("event_buckets") else "f_event_buckets"
        spine_parts.append(f"SELECT customer_id FROM {relation}")
    elif has_events:  # no event feature: only who had an event, without the buckets
        # The ids as written first (a million, not 100M rows), then mapped to persons.
        ids = (
            f"SELECT customer_id FROM {event_first_seen} WHERE first_ts < {timestamp_literal(cutoff)}"
            if event_first_seen
            else f"SELECT DISTINCT customer_id FROM clean_events WHERE {before}"
        )
        spine_parts.append(by_person(ids))
    if spine_extra:
        spine_parts.append(spine_extra)
    steps.append(Step("f_spine", f"SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(spine_parts)}) s"))
    joins, columns = [], []
    joined_rounded: set[str] = set()  # rounded as they are joined (_joined_column), not again
    for stage, relation in STAGE_RELATIONS.items():
        stage_features = by_stage.get(stage, [])
        if not stage_features:
            continue
        if stage in EVENT_STAGES and not has_events:
            columns += [_absent(f) for f in stage_features]
            continue
        unknown = [f for f in stage_features if stage in STAGES_READING_PURCHASES and _reads(f, unrecorded)]
        columns += [f"CAST(NULL AS {_sql_type(f)}) AS {f.name}" for f in unknown]
        stage_features = [f for f in stage_features if f not in unknown]
        if not stage_features:
            continue
        aggregates = ", ".join(f"CAST({f.sql} AS {_sql_type(f)}) AS {f.name}" for f in stage_features)
        steps.append(Step(f"f_stage_{stage}", f"SELECT customer_id, {aggregates} FROM {relation} GROUP BY customer_id"))
        joins.append(f"LEFT JOIN f_stage_{stage} USING (customer_id)")
        columns += [_joined_column(f) for f in stage_features]
        joined_rounded.update(f.name for f in stage_features if f.dtype == "float")
    if attribute_select:
        joins.append(f"LEFT JOIN ({attribute_select}) attributes USING (customer_id)")
        columns += [f.name for f in by_stage.get("attributes", [])]
    derived = ", ".join(f"CAST({f.sql} AS DOUBLE) AS {f.name}" for f in by_stage.get("derived", []))
    joined = f"SELECT f_spine.customer_id, {', '.join(columns)} FROM f_spine {' '.join(joins)}"
    # Every number rounded to 9 decimals: parallel sums differ in the last bits from run to run
    # (on either engine), and rounding keeps features, and the models trained on them,
    # reproducible. Done here, in the engine, rather than on 150 columns in pandas. Written with
    # ROUND of whole numbers (:func:`rounded`), which both engines compute alike (the same
    # product, halves away from zero); Spark's ROUND(x, 9) rounds the decimal text of x instead.
    # A stage's numbers were rounded as they were joined: rounding them again changed none of
    # 86 million values at 1M customers (only from about 1e12 on, past a double's precision for
    # 3 decimals, does it move one in a million by its last bit), in a step whose expressions
    # took 2.3 s of CPU (profiled; the saving was not measured alone).
    output = ", ".join(
        f"{rounded(f.name)} AS {f.name}" if f.dtype == "float" and f.name not in joined_rounded else f.name
        for f in features
    )
    final = Step(
        "f_features",
        f"SELECT customer_id, {output} FROM (SELECT j.*{', ' + derived if derived else ''} FROM ({joined}) j) r",
    )
    kept = _prune(_aggregates_after_their_relation(steps), final.sql)
    return _inline_single_readers(kept, final, first=[s.name for s in purchase_steps(cutoff)]) + [final]


def _joined_column(feature: Feature) -> str:
    """A stage feature as the final step joins it: NULL as 0 where it counts, and a number
    rounded (:func:`rounded`) before the derived features read it. An aggregate's last bits
    differ from run to run with the order of a parallel sum, and a ratio of two such values
    (spend per month of tenure) rounded afterwards still tips either way where it falls on a
    half; rounded first, the derived features' inputs are the same numbers in every run."""
    value = f"COALESCE({feature.name}, 0)" if feature.fill_zero else feature.name
    return f"{rounded(value) if feature.dtype == 'float' else value} AS {feature.name}"


def rounded(expr: str) -> str:
    """``expr`` rounded to 9 decimals, alike on both engines (see :func:`compile_plan`), by way
    of 12: a ratio or average that is exactly a half at the 10th decimal (0.2021484375 is
    207/1024) comes out of a parallel sum a bit above or a bit below it from run to run, and
    rounded once it would tip either way (5 values in 162 million at 1M customers); rounded
    to 12 decimals first, both are the half, which then rounds away from zero. The price: a
    value within 5e-13 of a half rounds away from zero too (off by at most 0.5005e-9).

    From a million on, 9 decimals are past a double's precision (81012370 would come out as
    81012369.99999999): such a value is rounded to 3 decimals, which it holds exactly, by way of
    6 for the same reason as above."""
    return (
        f"CASE WHEN ABS({expr}) < 1e6 THEN ROUND(ROUND({expr} * 1e12) / 1e3) / 1e9 "
        f"ELSE ROUND(ROUND({expr} * 1e6) / 1e3) / 1e3 END"
    )


def _prune(steps: list[Step], final_sql: str) -> list[Step]:
    """Only the steps the final query needs, directly or through another step."""
    needed, frontier = set(), final_sql
    for step in reversed(steps):
        if re.search(rf"\b{step.name}\b", frontier):
            needed.add(step.name)
            frontier += " " + step.sql
    return [s for s in steps if s.name in needed]


def _inline_single_readers(steps: list[Step], final: Step, first: list[str]) -> list[Step]:
    """Each step that one later step alone reads (not the final query, nor the first steps,
    which the caller builds and keeps) becomes a ``WITH`` of that step: the rows stream into
    the reader instead of being written to a table and read back."""
    ctes: dict[str, list[tuple[str, str]]] = {s.name: [] for s in steps}
    inlined: set[str] = set()
    for i, step in enumerate(steps):
        if step.name in first or re.search(rf"\b{step.name}\b", final.sql):
            continue
        readers = [s for s in steps[i + 1 :] if re.search(rf"\b{step.name}\b", s.sql)]
        if len(readers) == 1:
            ctes[readers[0].name] += [*ctes[step.name], (step.name, step.sql)]
            inlined.add(step.name)
    result = []
    for step in steps:
        if step.name in inlined:
            continue
        with_clause = ", ".join(f"{name} AS ({sql})" for name, sql in ctes[step.name])
        result.append(Step(step.name, f"WITH {with_clause} {step.sql}" if with_clause else step.sql))
    return result


def _aggregates_after_their_relation(steps: list[Step]) -> list[Step]:
    """Put each ``f_stage_*`` step right after the relation it reads, so that the relation can
    be dropped as early as possible (see :func:`droppable_after`)."""
    relation_of = {f"f_stage_{stage}": relation for stage, relation in STAGE_RELATIONS.items()}
    ordered = [s for s in steps if s.name not in relation_of]
    for step in steps:
        if step.name in relation_of:
            position = next(i for i, s in enumerate(ordered) if s.name == relation_of[step.name])
            ordered.insert(position + 1, step)
    return ordered


def droppable_after(steps: list[Step]) -> list[list[str]]:
    """For each step, the earlier relations no later step reads: safe to drop once it has run."""
    result, dropped = [], set()
    for i in range(len(steps)):
        later = " ".join(s.sql for s in steps[i + 1 :])
        done = [s.name for s in steps[: i + 1] if s.name not in dropped and not re.search(rf"\b{s.name}\b", later)]
        dropped.update(done)
        result.append(done)
    return result


# A purchase column (or what it records), and the columns of the plan's relations computed from
# it alone: a feature reading one of them says something about the column (COALESCE(discount, 0)
# reads an absent discount as "none"; an hour of 0 for every order of a log of dates reads as
# "everyone shops at night").
UNRECORDED_READ_AS = {"discount": ("discount", "has_discount"), "time_of_day": ("hour",)}
# Whether the lines before the cutoff (f_purchases) record it: one boolean each. A log with times
# has a line past midnight among its first, where the scan stops.
RECORDED_SQL = {
    "discount": "SELECT COUNT(discount) > 0 FROM f_purchases",
    "time_of_day": any_timed("f_purchases"),
}
STAGES_READING_PURCHASES = ("orders", "timeline", "lines", "category_spend", "brand_spend", "line_categories")


def _reads(feature: Feature, unrecorded: Collection[str]) -> bool:
    names = {name for column in unrecorded for name in UNRECORDED_READ_AS.get(column, (column,))}
    return bool(set(re.findall(r"[a-z_][a-z_0-9]*", feature.sql)) & names)


def _absent(feature: Feature) -> str:
    value = "0" if feature.fill_zero else "NULL"
    return f"CAST({value} AS {_sql_type(feature)}) AS {feature.name}"


def event_type_vocabulary() -> list[tuple[str, int]]:
    return [(event_type, slot) for slot, event_type in enumerate(EVENT_TYPES)]
