"""Registers a data set's tables on a DuckDB connection as raw, checked and clean views.

Row-level rules (a row breaking one is quarantined, with the first reason that applies):

- a required column that is null or blank: ``missing_<column>``;
- a timestamp that does not parse: ``unparseable_<column>``;
- a number that does not parse or is not finite: ``non_numeric_<column>``;
- a negative value in a column that must be >= 0: ``negative_<column>``;
- purchases: an exact copy of an earlier line: ``duplicate_line`` (one copy is kept);
- customers: one customer id with different attributes in several rows:
  ``conflicting_customer_rows`` (all its rows; the customer keeps its purchases).

Table-level rules (a :class:`ContractError`, nothing written): a missing required table or
column, and (checked by :mod:`portrait.validate`) a column most of whose values do not parse.
"""

from __future__ import annotations

import duckdb

from portrait import contract
from portrait.dataset import Dataset, TableSource, quote_ident, quote_literal
from portrait.errors import ContractError

REASON = "_reject_reason"
PARSED = "_parsed_"  # prefix of the parsed copy of each column inside checked_*
_NUMERIC_TYPES = (
    "DOUBLE",
    "FLOAT",
    "REAL",
    "DECIMAL",
    "BIGINT",
    "INTEGER",
    "SMALLINT",
    "TINYINT",
    "HUGEINT",
    "UBIGINT",
    "UINTEGER",
    "USMALLINT",
    "UTINYINT",
)


def register_views(con: duckdb.DuckDBPyConnection, dataset: Dataset) -> None:
    con.execute("SET TimeZone = 'UTC'")
    attached = False
    for table in contract.TABLES:
        source = dataset.sources.get(table.name)
        if source is None:
            continue
        if source.frame is not None:
            con.register(f"_frame_{table.name}", source.frame)
        if source.duckdb_file is not None and not attached:
            con.execute(f"ATTACH {quote_literal(str(source.duckdb_file))} AS source_db (READ_ONLY)")
            attached = True
        _register_table(con, table, source)
    _register_final_views(con, dataset)


def source_columns(con: duckdb.DuckDBPyConnection, source: TableSource) -> dict[str, str]:
    scan = source.scan_sql(f"_frame_{source.table}")
    rows = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    return {row[0]: row[1] for row in rows}


def _register_table(con, table: contract.Table, source: TableSource) -> None:
    available = source_columns(con, source)
    by_lower = {name.lower(): name for name in available}
    selected: list[str] = []
    types: dict[str, str] = {}
    used: set[str] = set()
    for column in table.columns:
        wanted = source.columns.get(column.name, column.name)
        actual = wanted if wanted in available else by_lower.get(wanted.lower())
        if actual is None:
            if column.required:
                renamed = f" (renamed from {wanted!r} in the config)" if wanted != column.name else ""
                raise ContractError(
                    f"required column {column.name!r}{renamed} is missing from "
                    f"{source.describe()}; its columns are {sorted(available)}",
                    table=table.name,
                    column=column.name,
                )
            selected.append(f"CAST(NULL AS VARCHAR) AS {quote_ident(column.name)}")
            types[column.name] = "VARCHAR"
            continue
        used.add(actual)
        selected.append(f"{quote_ident(actual)} AS {quote_ident(column.name)}")
        types[column.name] = available[actual].upper()
    extras: list[str] = []
    if table.keeps_extra_columns:
        extras = [name for name in available if name not in used]
        selected += [quote_ident(name) for name in extras]
    scan = source.scan_sql(f"_frame_{table.name}")
    con.execute(f"CREATE OR REPLACE VIEW raw_{table.name} AS SELECT {', '.join(selected)} FROM {scan}")

    trim = source.is_csv
    parsed = {c.name: parse_expr(c, types[c.name], source.timestamp_format, trim) for c in table.columns}
    parsed_columns = ", ".join(f"{expr} AS {quote_ident(PARSED + name)}" for name, expr in parsed.items())
    reasons = _reason_cases(table, types, trim)
    # Each value is parsed once, in the inner query; reasons and typed columns reuse it.
    con.execute(
        f"CREATE OR REPLACE VIEW checked_{table.name} AS SELECT *, {reasons} AS {REASON} "
        f"FROM (SELECT *, {parsed_columns} FROM raw_{table.name}) parsed"
    )
    typed_columns = [f"{quote_ident(PARSED + c.name)} AS {quote_ident(c.name)}" for c in table.columns]
    typed_columns += [quote_ident(name) for name in extras]
    con.execute(
        f"CREATE OR REPLACE VIEW typed_{table.name} AS SELECT {', '.join(typed_columns)} "
        f"FROM checked_{table.name} WHERE {REASON} IS NULL"
    )
    _register_deduplicated(con, table)


def parse_expr(column: contract.Column, source_type: str, timestamp_format: str | None, trim: bool) -> str:
    """SQL parsing a raw value into the column's kind; NULL when missing or unparseable.

    ``trim``: strip spaces from text first (CSV exports pad values; Parquet and frames are
    written by programs and are taken as they are, which saves a pass over every string).
    """
    ident = quote_ident(column.name)
    is_text = source_type == "VARCHAR"
    cleaned = (f"NULLIF(TRIM({ident}), '')" if trim else f"NULLIF({ident}, '')") if is_text else ident
    if column.kind in ("id", "text"):
        return cleaned if is_text else f"CAST({ident} AS VARCHAR)"
    if column.kind == "number":
        if source_type in ("DOUBLE", "FLOAT", "REAL"):
            return f"CASE WHEN NOT isnan({ident}) THEN CAST({ident} AS DOUBLE) END"
        if source_type.startswith(_NUMERIC_TYPES):
            return f"CAST({ident} AS DOUBLE)"
        return f"TRY_CAST({cleaned} AS DOUBLE)"
    if column.kind == "timestamp":
        if is_text and timestamp_format:
            return f"TRY_STRPTIME({cleaned}, {quote_literal(timestamp_format)})"
        if source_type == "TIMESTAMP":
            return ident
        return f"TRY_CAST({cleaned} AS TIMESTAMP)"
    raise AssertionError(column.kind)


def present_expr(column_name: str, source_type: str, trim: bool) -> str:
    """SQL that is true when a raw value is there: not null, not blank, and not a float NaN
    (pandas and numpy write NaN for a missing number)."""
    ident = quote_ident(column_name)
    if source_type in ("DOUBLE", "FLOAT", "REAL"):
        return f"({ident} IS NOT NULL AND NOT isnan({ident}))"
    if source_type == "VARCHAR":
        return f"{'NULLIF(TRIM(' + ident + '), ' if trim else 'NULLIF(' + ident + ', '}'') IS NOT NULL"
    return f"{ident} IS NOT NULL"


def _reason_cases(table: contract.Table, types: dict[str, str], trim: bool) -> str:
    """The first rule a row breaks, from its parsed values; ``present`` is only evaluated for
    the few rows whose value did not parse, to tell *missing* from *unparseable*."""
    cases: list[str] = []
    for column in table.columns:
        value = quote_ident(PARSED + column.name)
        present = present_expr(column.name, types[column.name], trim)
        if column.required:
            cases.append(f"WHEN {value} IS NULL AND NOT ({present}) THEN 'missing_{column.name}'")
        if column.kind == "timestamp":
            cases.append(f"WHEN {value} IS NULL AND {present} THEN 'unparseable_{column.name}'")
        if column.kind == "number":
            cases.append(
                f"WHEN ({value} IS NULL AND {present}) OR NOT isfinite({value}) THEN 'non_numeric_{column.name}'"
            )
            if column.non_negative:
                cases.append(f"WHEN {value} < 0 THEN 'negative_{column.name}'")
    if not cases:
        return "CAST(NULL AS VARCHAR)"
    return "CASE " + " ".join(cases) + " ELSE NULL END"


def _register_deduplicated(con, table: contract.Table) -> None:
    """``clean_t`` (good rows, one copy each) and ``duplicates_t`` (what was dropped, counted)."""
    name = table.name
    if table.name == "customers":
        con.execute(
            """CREATE OR REPLACE VIEW _distinct_customers AS
            SELECT DISTINCT * FROM typed_customers"""
        )
        con.execute(
            """CREATE OR REPLACE VIEW _conflicting_customer_ids AS
            SELECT customer_id FROM _distinct_customers GROUP BY customer_id HAVING COUNT(*) > 1"""
        )
        con.execute(
            """CREATE OR REPLACE VIEW clean_customers AS
            SELECT * FROM _distinct_customers
            WHERE customer_id NOT IN (SELECT customer_id FROM _conflicting_customer_ids)"""
        )
        con.execute(
            """CREATE OR REPLACE VIEW duplicates_customers AS
            SELECT *, 'conflicting_customer_rows' AS _reject_reason, 1 AS _rows
            FROM typed_customers
            WHERE customer_id IN (SELECT customer_id FROM _conflicting_customer_ids)
            UNION ALL
            SELECT *, 'duplicate_row' AS _reject_reason, COUNT(*) - 1 AS _rows
            FROM typed_customers
            WHERE customer_id NOT IN (SELECT customer_id FROM _conflicting_customer_ids)
            GROUP BY ALL HAVING COUNT(*) > 1"""
        )
    elif table.check_duplicates:
        con.execute(f"CREATE OR REPLACE VIEW clean_{name} AS SELECT DISTINCT * FROM typed_{name}")
        con.execute(
            f"""CREATE OR REPLACE VIEW duplicates_{name} AS
            SELECT *, 'duplicate_line' AS _reject_reason, COUNT(*) - 1 AS _rows
            FROM typed_{name} GROUP BY ALL HAVING COUNT(*) > 1"""
        )
    else:
        con.execute(f"CREATE OR REPLACE VIEW clean_{name} AS SELECT * FROM typed_{name}")


def _register_final_views(con, dataset: Dataset) -> None:
    """The views features read: clean rows with customer ids unified through identities."""
    from portrait.identity import register_identity_map

    has_map = dataset.has("identities") and register_identity_map(con)
    for table in contract.TABLES:
        if not dataset.has(table.name) or table.name == "identities":
            continue
        if not has_map:
            con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM clean_{table.name}")
            continue
        others = ", ".join(f"t.{quote_ident(c)}" for c in _columns(con, f"clean_{table.name}") if c != "customer_id")
        mapped = (
            f"SELECT COALESCE(m.person_id, t.customer_id) AS customer_id"
            f"{', ' + others if others else ''}, t.customer_id AS _source_customer_id "
            f"FROM clean_{table.name} t LEFT JOIN identity_remap m ON t.customer_id = m.customer_id"
        )
        if table.name == "customers":
            # Several merged ids may each have a customers row: keep the person's own row,
            # else the smallest id's, so the attributes chosen never depend on file order.
            ranked_columns = ", ".join(quote_ident(c) for c in _columns(con, "clean_customers"))
            con.execute(
                f"""CREATE OR REPLACE VIEW customers AS SELECT {ranked_columns} FROM (
                    SELECT *, ROW_NUMBER() OVER (
                        PARTITION BY customer_id
                        ORDER BY CASE WHEN _source_customer_id = customer_id THEN 0 ELSE 1 END,
                                 _source_customer_id) AS _rank
                    FROM ({mapped}) merged) ranked WHERE _rank = 1"""
            )
        else:
            columns = ", ".join(quote_ident(c) for c in _columns(con, f"clean_{table.name}"))
            con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT {columns} FROM ({mapped}) m")


def _columns(con, view: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]
