"""Behaviour terms (``purchased``, ``spent``, ``events``) computed per customer in SQL.

Every term of every condition in a run is computed in one pass per table: one grouped query
over ``purchases`` and one over ``events``, each reading only rows before the as-of date (and
after the start of the longest window asked for). Values from the user (categories, event
types, windows) are bound parameters, never pasted into the SQL text; column names come from
a fixed list in :mod:`marketing.filters`.

Windows follow the features' rule: ``within_days = N`` is ``ts >= as_of - N days`` (midnight),
so "in the last 30 days" means the same thing in a feature, a tag and a segment. Text filters
compare case-insensitively after trimming. ``purchased`` counts orders with at least one
matching purchase line (amount > 0); ``spent`` sums the net amount of matching lines (refund
lines deduct); ``events`` counts events of the type.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable

import duckdb
import pandas as pd

from marketing.filters import BehaviourTerm, FilterError
from portrait.dataset import quote_ident

# The columns of the features' one read of the purchases (features.plan.purchase_steps).
_READ_COLUMNS = {"category", "brand", "channel", "payment_method"}
_FILTER_COLUMNS = {
    "purchases": {"category", "brand", "channel", "product_id", "store_id", "payment_method"},
    "events": {"category", "channel"},
}


def _start(as_of: dt.date, days: int) -> dt.datetime:
    return dt.datetime.combine(as_of - dt.timedelta(days=days), dt.time())


def _condition(term: BehaviourTerm, as_of: dt.date, params: list) -> str:
    parts = []
    if term.function == "purchased":
        parts.append("amount > 0")
    if term.function == "events":
        parts.append("LOWER(TRIM(event_type)) = ?")
        params.append(term.event_type)
    if term.within_days is not None:
        parts.append("ts >= ?")
        params.append(_start(as_of, term.within_days))
    for column, value in term.filters:
        if column not in _FILTER_COLUMNS[term.table]:  # the parser allows only these
            raise FilterError(f"{term.describe()}: {column} is not a column of {term.table}")
        parts.append(f"{_normalised(column)} = ?")
        params.append(value.strip().lower())
    return " AND ".join(parts) or "TRUE"


def behaviour_table(
    con: duckdb.DuckDBPyConnection,
    terms: Iterable[BehaviourTerm],
    as_of: dt.date,
    customers: pd.Series,
    purchases: str | None = None,
) -> pd.DataFrame:
    """One row per customer in ``customers`` (in that order) and one column per term, 0 where the
    customer has no matching rows; a filter value the data never has is an error.
    ``purchases`` names a table already holding the purchase lines before ``as_of`` (with
    ``order_id, ts, amount, category, brand, channel, payment_method``) to read instead of the
    ``purchases`` view, when the terms filter on no other column."""
    terms = list(dict.fromkeys(terms))
    result = pd.DataFrame({"customer_id": customers.astype("str").to_numpy()})
    for table in ("purchases", "events"):
        chosen = [t for t in terms if t.table == table]
        if not chosen:
            continue
        if not _has_table(con, table):
            raise FilterError(f"{chosen[0].describe()} needs the {table} table, which this data set does not have")
        asked = _asked(chosen)
        source = table
        if table == "purchases" and purchases and {c for t in chosen for c, _ in t.filters} <= _READ_COLUMNS:
            source = purchases
        frame = _query(con, table, chosen, as_of, asked, source)
        # The query flags which asked values it saw; only a value it did not see (perhaps
        # outside the windows) needs a look at the whole history, which raises if it is a typo.
        flags = [f"_seen_{i}" for i in range(len(asked))]
        unseen = [pair for pair, flag in zip(asked, flags, strict=True) if not frame[flag].max() > 0]
        if unseen:
            check_values(con, chosen, as_of, only=set(unseen))
        result = result.merge(frame.drop(columns=flags), on="customer_id", how="left")
        for term in chosen:
            result[term.column] = result[term.column].fillna(0).astype("float64")
    return result


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
    con: duckdb.DuckDBPyConnection,
    table: str,
    terms: list[BehaviourTerm],
    as_of: dt.date,
    asked: list[tuple[str, str]],
    source: str,
) -> pd.DataFrame:
    params: list = []
    as_of_ts = dt.datetime.combine(as_of, dt.time())
    windows = [t.within_days for t in terms]
    lower = "" if None in windows else " AND ts >= ?"
    if table == "purchases":
        # Per order first, so that "orders with a matching line" needs no DISTINCT aggregate.
        inner, outer = [], []
        for i, term in enumerate(terms):
            condition = _condition(term, as_of, params)
            if term.function == "purchased":
                inner.append(f"MAX(CASE WHEN {condition} THEN 1 ELSE 0 END) AS t{i}")
            else:
                inner.append(f"SUM(CASE WHEN {condition} THEN amount ELSE 0 END) AS t{i}")
            outer.append(f"CAST(SUM(t{i}) AS DOUBLE) AS {quote_ident(term.column)}")
        for i, (column, value) in enumerate(asked):
            inner.append(f"MAX(CASE WHEN {_normalised(column)} = ? THEN 1 ELSE 0 END) AS s{i}")
            params.append(value)
            outer.append(f"MAX(s{i}) AS _seen_{i}")
        sql = (
            f"SELECT customer_id, {', '.join(outer)} FROM ("
            f"SELECT customer_id, order_id, {', '.join(inner)} FROM {source} WHERE ts < ?{lower} "
            "GROUP BY customer_id, order_id) o GROUP BY customer_id"
        )
    else:
        columns = []
        for term in terms:
            condition = _condition(term, as_of, params)
            columns.append(
                f"CAST(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS DOUBLE) AS {quote_ident(term.column)}"
            )
        for i, (column, value) in enumerate(asked):
            columns.append(f"MAX(CASE WHEN {_normalised(column)} = ? THEN 1 ELSE 0 END) AS _seen_{i}")
            params.append(value)
        sql = f"SELECT customer_id, {', '.join(columns)} FROM events WHERE ts < ?{lower} GROUP BY customer_id"
    params.append(as_of_ts)
    if lower:
        params.append(_start(as_of, max(windows)))
    frame = con.execute(sql, params).df()
    frame["customer_id"] = frame["customer_id"].astype("str")
    return frame


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = con.execute("SELECT COUNT(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [table]).fetchall()[
        0
    ][0]
    return bool(found)


def check_values(
    con: duckdb.DuckDBPyConnection, terms: list[BehaviourTerm], as_of: dt.date, only: set | None = None
) -> None:
    """A filter value or event type the data never has before ``as_of`` is a typo more often
    than a real empty set: say so, with the closest values."""
    asked: dict[tuple[str, str], set[str]] = {}
    for term in terms:
        if term.event_type:
            asked.setdefault(("events", "event_type"), set()).add(term.event_type)
        for column, value in term.filters:
            asked.setdefault((term.table, column), set()).add(value.strip().lower())
    if only is not None:
        asked = {key: {v for v in values if (key[1], v) in only} for key, values in asked.items()}
        asked = {key: values for key, values in asked.items() if values}
    as_of_ts = dt.datetime.combine(as_of, dt.time())
    for (table, column), values in asked.items():
        # One scan per column: which of the asked values occur at all before the as-of date.
        normalised = _normalised(column)
        asked_values = sorted(values)
        placeholders = ", ".join("?" for _ in asked_values)
        present = {
            row[0]
            for row in con.execute(
                f"SELECT DISTINCT {normalised} FROM {table} WHERE ts < ? AND {normalised} IN ({placeholders})",
                [as_of_ts, *asked_values],
            ).fetchall()
        }
        for value in asked_values:
            if value in present:
                continue
            known = [
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT {normalised} AS v FROM {table} WHERE ts < ? AND v IS NOT NULL LIMIT 100000",
                    [as_of_ts],
                ).fetchall()
            ]
            close = difflib.get_close_matches(value, known, n=5, cutoff=0.5) or sorted(known)[:5]
            raise FilterError(
                f"no {table} row before {as_of} has {column} = {value!r}" + (f"; closest: {close}" if close else "")
            )
