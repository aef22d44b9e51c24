"""Behaviour terms (``purchased``, ``spent``, ``events``) computed per customer in SQL.

Every term of every condition in a run is computed in one pass per table: one grouped query
over ``purchases`` and one over ``events``, each reading only rows before the as-of date (and
after the start of the longest window asked for). Values from the user (categories, event
types) are bound parameters, never pasted into the SQL text; windows are whole numbers the
parser bounded, written as timestamps formatted from dates; column names come from a fixed list
in :mod:`marketing.filters`. The SQL runs on DuckDB or, through :mod:`portrait.engine`, Spark.

Windows follow the features' rule: ``within_days = N`` is ``ts >= as_of - N days`` (midnight),
so "in the last 30 days" means the same thing in a feature, a tag and a segment. Text filters
compare case-insensitively after trimming. ``purchased`` without a filter counts purchase
orders by the features' rule (:func:`portrait.contract.purchase_order`), on the order's lines
in the window: orders with a line there that is not a refund (a $0.00 order is one; a refund
alone is not). An order whose lines straddle the window's start is judged by its lines inside it, where
the features date it by its first line and judge all of its lines (rare: an order is one
moment in most data); with a filter (``category = ...``) it counts orders with at least one matching purchase
line (amount > 0). ``spent`` sums the net amount of matching lines (refund lines deduct);
``events`` counts events of the type.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
from collections.abc import Iterable

import duckdb
import numpy as np
import pandas as pd

from features.catalogue import money_sum
from features.plan import timestamp_literal
from marketing.filters import BehaviourTerm, FilterError
from portrait.contract import purchase_order
from portrait.engine import Engine, as_engine
from portrait.privacy import holds_personal_value
from portrait.sql import quote_ident
from portrait.views import by_person

# The columns of the features' one read of the purchases (features.plan.purchase_steps).
_READ_COLUMNS = {"category", "brand", "channel", "payment_method"}
_FILTER_COLUMNS = {
    "purchases": {"category", "brand", "channel", "product_id", "store_id", "payment_method"},
    "events": {"category", "channel"},
}
_CUSTOMERS = "_behaviour_customers"  # the listed customers and their positions, while a query runs

log = logging.getLogger(__name__)


def _start(as_of: dt.date, days: int) -> str:
    """The first moment of a ``within_days`` window, as SQL (formatted from a parsed date)."""
    return timestamp_literal(as_of - dt.timedelta(days=days))


def _condition(term: BehaviourTerm, as_of: dt.date) -> tuple[str, list]:
    """The term's test of one row (on the normalised columns of :func:`_query`'s read of the
    rows) and its parameters."""
    parts, params = [], []
    if term.function == "purchased" and term.filters:
        parts.append("amount > 0")
    if term.function == "events":
        parts.append("event_type = ?")
        params.append(term.event_type)
    if term.within_days is not None:
        parts.append(f"ts >= {_start(as_of, term.within_days)}")
    for column, value in term.filters:
        if column not in _FILTER_COLUMNS[term.table]:  # the parser allows only these
            raise FilterError(f"{term.describe()}: {column} is not a column of {term.table}")
        parts.append(f"{quote_ident(column)} = ?")
        params.append(value.strip().lower())
    return " AND ".join(parts) or "TRUE", params


def behaviour_table(
    con: duckdb.DuckDBPyConnection | Engine,
    terms: Iterable[BehaviourTerm],
    as_of: dt.date,
    customers: pd.Series,
    purchases: str | None = None,
) -> pd.DataFrame:
    """One row per customer in ``customers`` (in that order) and one column per term, 0 where the
    customer has no matching rows; a filter value the data never has is an error.
    ``purchases`` names a table already holding the purchase lines before ``as_of`` (with
    ``order_id, ts, amount, category, brand, channel, payment_method``) to read instead of the
    ``purchases`` view, when the terms filter on no other column. ``con`` is a DuckDB connection
    or an engine (:mod:`portrait.engine`: Spark too)."""
    engine = as_engine(con)
    terms = list(dict.fromkeys(terms))
    ids = customers.astype("str").reset_index(drop=True)
    columns: dict[str, object] = {"customer_id": ids}
    # The customers' positions, joined in SQL: the answer comes back as row numbers and
    # numbers, never as a million id strings to convert and merge.
    engine.register_frame(_CUSTOMERS, pd.DataFrame({"customer_id": ids, "_pos": np.arange(len(ids), dtype="int64")}))
    try:
        for table in ("purchases", "events"):
            chosen = [t for t in terms if t.table == table]
            if not chosen:
                continue
            if not engine.has_relation(table):
                raise FilterError(f"{chosen[0].describe()} needs the {table} table, which this data set does not have")
            asked = _asked(chosen)
            source = table
            if table == "purchases" and purchases and {c for t in chosen for c, _ in t.filters} <= _READ_COLUMNS:
                source = purchases
            frame = _query(engine, table, chosen, as_of, asked, source)
            # The query flags which asked values it saw (over every customer, listed or not);
            # only a value it did not see (perhaps outside the windows) needs a look at the
            # whole history, which raises if it is a typo.
            unseen = [pair for i, pair in enumerate(asked) if not frame[f"s{i}"].max() > 0]
            if unseen:
                check_values(engine, chosen, as_of, only=set(unseen))
            positions = frame["_pos"].to_numpy()
            listed = positions >= 0
            for i, term in enumerate(chosen):
                values = np.zeros(len(ids), dtype="float64")
                values[positions[listed]] = frame[f"t{i}"].fillna(0).to_numpy(dtype="float64")[listed]
                columns[term.column] = values
    finally:
        engine.drop(_CUSTOMERS)
    return pd.DataFrame(columns)


def _asked(terms: list[BehaviourTerm]) -> list[tuple[str, str]]:
    """Every (column, normalised value) the terms filter on, event types included."""
    pairs = []
    for term in terms:
        if term.event_type:
            pairs.append(("event_type", term.event_type))
        pairs += [(column, value.strip().lower()) for column, value in term.filters]
    return list(dict.fromkeys(pairs))


def _normalised(column: str) -> str:
    return f"LOWER(TRIM(CAST({quote_ident(column)} AS VARCHAR)))"


def _query(
    engine: Engine,
    table: str,
    terms: list[BehaviourTerm],
    as_of: dt.date,
    asked: list[tuple[str, str]],
    source: str,
) -> pd.DataFrame:
    """``_pos`` (the customer's position in :data:`_CUSTOMERS`, -1 for a customer not listed),
    ``t<i>`` (the value of ``terms[i]``) and ``s<i>`` (1 if ``asked[i]`` occurs in the rows
    read), one row per customer with rows in the windows."""
    windows = [t.within_days for t in terms]
    lower = "" if None in windows else f" AND ts >= {_start(as_of, max(windows))}"
    before = f"ts < {timestamp_literal(as_of)}"
    # Each filter column is normalised once per row, in the read; the conditions compare with it.
    filtered = sorted({c for t in terms for c, _ in t.filters} | ({"event_type"} if table == "events" else set()))
    kept = ["customer_id", "ts"] + (["order_id", "amount", "quantity"] if table == "purchases" else [])
    read = ", ".join([*kept, *(f"{_normalised(c)} AS {quote_ident(c)}" for c in filtered)])
    conditions, condition_params = zip(*(_condition(term, as_of) for term in terms), strict=True)
    value_params = [p for term_params in condition_params for p in term_params]
    seen = []
    for i, (column, value) in enumerate(asked):
        seen.append(f"MAX(CASE WHEN {quote_ident(column)} = ? THEN 1 ELSE 0 END) AS s{i}")
        value_params.append(value)
    if table == "purchases":
        # "Orders with a matching line" per order first, then per customer. Only lines that
        # match a ``purchased`` term need their order: every other line of a customer joins
        # one group (a NULL order), which keeps the grouping several times smaller.
        values = [
            _per_order(term, condition, i) for i, (term, condition) in enumerate(zip(terms, conditions, strict=True))
        ]

        per_order = [i for i, term in enumerate(terms) if term.function == "purchased"]
        order_key, key_params = "", []
        if per_order:
            order_key = f", CASE WHEN {' OR '.join(f'({conditions[i]})' for i in per_order)} THEN order_id END"
            key_params = [p for i in per_order for p in condition_params[i]]
        # money rounded as the features round it (money_sum): a fully refunded purchase sums to a
        # residue of either sign, which "spent(...) > 0" would read differently from run to run
        outer = [
            f"SUM(t{i}) AS t{i}" if term.function == "purchased" else f"{money_sum(f't{i}')} AS t{i}"
            for i, term in enumerate(terms)
        ] + [f"MAX(s{i}) AS s{i}" for i in range(len(asked))]
        grouped = (
            f"SELECT customer_id, {', '.join(outer)} FROM ("
            f"SELECT customer_id, {', '.join(values + seen)} FROM (SELECT {read} FROM {source} WHERE {before}{lower}) l "
            f"GROUP BY customer_id{order_key}) o GROUP BY customer_id"
        )
        params = value_params + key_params
    else:
        # Events are counted under the ids as written (clean_events), then the counts are
        # summed per person: the events view's counts without mapping each of 100M rows.
        values = [f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS t{i}" for i, condition in enumerate(conditions)]
        grouped = by_person(
            f"SELECT customer_id, {', '.join(values + seen)} "
            f"FROM (SELECT {read} FROM clean_events WHERE {before}{lower}) e GROUP BY customer_id",
            [(f"t{i}", "SUM") for i in range(len(terms))] + [(f"s{i}", "MAX") for i in range(len(asked))],
        )
        params = value_params
    answers = [f"CAST(g.t{i} AS DOUBLE) AS t{i}" for i in range(len(terms))]
    answers += [f"g.s{i}" for i in range(len(asked))]
    sql = (
        f"SELECT COALESCE(c._pos, -1) AS _pos, {', '.join(answers)} "
        f"FROM ({grouped}) g LEFT JOIN {_CUSTOMERS} c ON g.customer_id = c.customer_id"
    )
    return engine.frame(sql, params)


def _per_order(term: BehaviourTerm, condition: str, i: int) -> str:
    """The value of ``term`` for one order's lines (one customer's other lines: a NULL order)."""
    if term.function != "purchased":
        return f"SUM(CASE WHEN {condition} THEN amount ELSE 0 END) AS t{i}"
    if term.filters:  # a matching purchase line
        return f"MAX(CASE WHEN {condition} THEN 1 ELSE 0 END) AS t{i}"
    # a purchase order by its lines in the window (every such line is in the group), as the
    # features judge one. The condition is read more than once: it has no parameters (a
    # window, formatted from a date).
    return (
        f"CASE WHEN COUNT(CASE WHEN {condition} THEN 1 END) > 0 "
        f"AND {purchase_order(f'CASE WHEN {condition} THEN amount END')} THEN 1 ELSE 0 END AS t{i}"
    )


def _values(count: int) -> str:
    return f"{count:,} value{'' if count == 1 else 's'}"


def check_values(
    con: duckdb.DuckDBPyConnection | Engine, terms: list[BehaviourTerm], as_of: dt.date, only: set | None = None
) -> None:
    """A filter value or event type the data never has is a typo more often than a real empty
    set: say so, with the closest values. One the data has only from ``as_of`` on (a category
    introduced later, a date before an event type was tracked) is not: nobody has it before
    then, which is logged as a warning, so that a saved segment can be refreshed, backfilled or
    followed over time across the day its value first occurs."""
    asked: dict[tuple[str, str], set[str]] = {}
    for term in terms:
        if term.event_type:
            asked.setdefault(("events", "event_type"), set()).add(term.event_type)
        for column, value in term.filters:
            asked.setdefault((term.table, column), set()).add(value.strip().lower())
    if only is not None:
        asked = {key: {v for v in values if (key[1], v) in only} for key, values in asked.items()}
        asked = {key: values for key, values in asked.items() if values}
    engine = as_engine(con)
    before = f"ts < {timestamp_literal(as_of)}"
    for (table, column), values in asked.items():
        # One scan per column: which of the asked values occur at all, and whether before the
        # as-of date.
        normalised = _normalised(column)
        asked_values = sorted(values)
        placeholders = ", ".join("?" for _ in asked_values)
        present = {
            row[0]: bool(row[1])
            for row in engine.rows(
                f"SELECT {normalised}, MAX(CASE WHEN {before} THEN 1 ELSE 0 END) FROM {table} "
                f"WHERE {normalised} IN ({placeholders}) GROUP BY {normalised}",
                asked_values,
            )
        }
        for value in asked_values:
            if value in present:
                if not present[value]:
                    log.warning(
                        "%s.%s = %r occurs only on or after %s: nobody has it before then",
                        table,
                        column,
                        value,
                        as_of,
                    )
                continue
            # never a value holding an e-mail address or a phone number (a payload in event_type)
            # each value as the data writes it (values compare without case: 'onions' for 'ONIONS'
            # read as a value that differs, where exact matches elsewhere are told apart by case)
            written = {
                row[0]: row[1]
                for row in engine.rows(
                    f"SELECT {normalised} AS v, MIN(CAST({quote_ident(column)} AS VARCHAR)) AS shown FROM {table} "
                    f"WHERE {normalised} IS NOT NULL GROUP BY {normalised} LIMIT 100000"
                )
                if not holds_personal_value(str(row[1]))
            }
            close = difflib.get_close_matches(value, list(written), n=5, cutoff=0.5)
            listed = (  # none close (another script, another word): some values, not called close
                f"; closest: {[written[v] for v in close]}"
                if close
                else f"; none is close; {_values(len(written))}, such as {[written[v] for v in sorted(written)[:5]]}"
                if written
                else ""
            )
            raise FilterError(f"no {table} row has {column} = {value!r} (compared without case){listed}")
