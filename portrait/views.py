"""Registers a data set's tables on a DuckDB connection as raw, checked and clean views.

Row-level rules (a row breaking one is quarantined, with the first reason that applies):

- a CSV line DuckDB cannot split into the header's columns (too few or too many fields, an
  unterminated quote): ``malformed_row``; one with bytes that are not in the file's encoding:
  ``invalid_encoding``. DuckDB skips these lines and stores them (file, line number, text) in
  the source's rejects tables, which :mod:`portrait.validate` counts and quarantines;
- a required column that is null or blank: ``missing_<column>``;
- a timestamp that does not parse: ``unparseable_<column>``. Text timestamps are ISO with a
  four-digit year (``24-01-05`` is not the year 24) unless the data set gives a
  ``timestamp_format``; a value with an offset or zone (``+02:00``, ``Z``, ``-0500``,
  `` Europe/Paris``) is converted to the data set's time zone (UTC unless configured), a value
  without one is taken as already in it; a zone name that is not in the time zone database
  (``BST``, ``CST``, ``IST``: abbreviations several zones share) does not parse;
- a number that does not parse or is not finite: ``non_numeric_<column>``;
- a number of magnitude :data:`IMPLAUSIBLE_NUMBER` or more (no line costs 10^15 in any
  currency; sums of such values overflow): ``implausible_<column>``;
- a negative value in a column that must be >= 0: ``negative_<column>``;
- purchases: an exact copy of an earlier line: ``duplicate_line`` (one copy is kept);
- customers: one customer id with different attributes in several rows:
  ``conflicting_customer_rows`` (all its rows; the customer keeps its purchases).

Table-level rules (a :class:`ContractError`, nothing written): a missing required table or
column; a column stored with a type its kind cannot take (a boolean or a date as a number, a
float as an id: ``1.0`` would silently become the id "1.0"); and (checked by
:mod:`portrait.validate`) a column most of whose values do not parse, and a CSV file most of
whose lines are malformed or that is not in its encoding.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from portrait import contract
from portrait.errors import ConfigError, ContractError, read_error_reason
from portrait.forget import KEY_COLUMNS, exclude_forgotten, finish_tombstones, register_tombstones
from portrait.privacy import has_identity_map, is_nested_type, refuse_values_as_names
from portrait.sql import quote_ident, quote_literal, zone_aware

if TYPE_CHECKING:
    from portrait.dataset import Dataset, TableSource

REASON = "_reject_reason"
PARSED = "_parsed_"  # prefix of the parsed copy of each column inside checked_*
CLEAN = "_clean_"  # prefix of the trimmed text of a timestamp column inside cleaned_*
_FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")
_INTEGER_TYPES = (
    "BIGINT",
    "INTEGER",
    "SMALLINT",
    "TINYINT",
    "HUGEINT",
    "UHUGEINT",
    "UBIGINT",
    "UINTEGER",
    "USMALLINT",
    "UTINYINT",
)
NUMERIC_TYPES = _FLOAT_TYPES + ("DECIMAL",) + _INTEGER_TYPES  # a type whose name starts with one holds numbers

# The column pandas' to_parquet adds for a frame's index when it is not 0, 1, 2, ... (after a
# sort or a filter): the row's place in the export, not a customer attribute (it became the
# numeric feature attr_index_level_0).
PANDAS_INDEX = re.compile(r"__index_level_[0-9]+__")


_ALL_MISSING = '"NULL"'  # DuckDB's type for a pandas column holding only None
# Finite doubles lie within +-1.797...e308: BETWEEN these bounds is isfinite() in a form Spark
# SQL takes too (a NaN never gets here: the parse maps it to NULL).
_FINITE = "1.7976931348623157e308"
# No purchase line, discount, quantity or event value reaches this in any currency (10^15 Iranian
# rials are about two billion dollars); past it a value is an export's error, and money sums of
# such values overflow the plan's exact arithmetic.
IMPLAUSIBLE_NUMBER = 1e15
# A time (H:MM, optional seconds and fraction) followed by an offset or a zone: +02:00, -0500,
# Z, UTC, Europe/Paris.
ZONE_PATTERN = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([+-]\d|[A-Za-z])"
# A numeric offset (or Z) at the end of a value, with any spaces before it: DuckDB parses
# "13:07:14+0530" but not "13:07:14 +0530", so the spaces are taken out before the cast.
OFFSET_AT_END = r"([+-]\d\d(:?\d\d)?|Z)$"
# Offsets in use run from -12:00 to +14:00: hours above 14 or minutes above 59 are not an
# offset ("+25:00" would otherwise move the time by a day), and the value does not parse.
IMPOSSIBLE_OFFSET = r"\d\s*[+-](1[5-9]|[2-9]\d)(:?\d\d)?$|\d\s*[+-]\d\d:?[6-9]\d$"
# A zone written as a name without a slash at the end of a value: one of the time zone
# database's own names (UTC, GMT, Z, CET, EST, Japan, EST5EDT ...) is read as that zone; any
# other ("BST", "CST", "IST", "PST": DuckDB reads BST as Bangladesh, +6, not British Summer
# Time, and PST in June as -7) names several zones, so the value does not parse (quarantined,
# counted) rather than move by hours. A name with a slash (Europe/London) is read as itself.
ZONE_NAME_AT_END = r"\d\s*([A-Za-z][A-Za-z0-9_+-]*)$"
ZONE_NAMES_WITHOUT_SLASH = (
    "CET CST6CDT CUBA EET EGYPT EIRE EST EST5EDT GB GB-EIRE GMT GMT+0 GMT-0 GMT0 GREENWICH HST HONGKONG ICELAND "
    "IRAN ISRAEL JAMAICA JAPAN KWAJALEIN LIBYA MET MST MST7MDT NAVAJO NZ NZ-CHAT POLAND PORTUGAL PRC PST8PDT "
    "ROC ROK SINGAPORE TURKEY UCT UNIVERSAL UTC W-SU WET Z ZULU"
).split()  # the IANA database's names without a slash (zoneinfo.available_timezones()), and Z


def unknown_zone_name(text: str) -> str:
    """SQL true when the text value ``text`` ends in a zone name that is not one of
    :data:`ZONE_NAMES_WITHOUT_SLASH` (an abbreviation several zones share)."""
    name = f"regexp_extract({text}, {quote_literal(ZONE_NAME_AT_END)}, 1)"
    known = ", ".join(quote_literal(n) for n in ZONE_NAMES_WITHOUT_SLASH)
    return f"({name} <> '' AND UPPER({name}) NOT IN ({known}))"


def register_views(con: duckdb.DuckDBPyConnection, dataset: Dataset) -> None:
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute(
            f"SELECT timezone({quote_literal(dataset.timezone)}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        ).fetchall()
    except duckdb.Error:
        raise ConfigError(f"time zone {dataset.timezone!r} is not known to DuckDB; use an IANA name") from None
    attached = False
    forgetting = register_tombstones(con, dataset)  # forgotten customers: portrait.forget
    for table in contract.TABLES:
        source = dataset.sources.get(table.name)
        if source is None:
            continue
        if source.frame is not None:
            con.register(f"_frame_{table.name}", source.frame)
        if source.duckdb_file is not None and not attached:
            con.execute(f"ATTACH {quote_literal(str(source.duckdb_file))} AS source_db (READ_ONLY)")
            attached = True
        try:
            _register_table(con, table, source, dataset.timezone, forgetting)
        except duckdb.Error as exc:
            raise ContractError(f"cannot read {source.describe()}: {read_error_reason(exc)}", table=table.name) from exc
    if forgetting:
        finish_tombstones(con, dataset, list(dataset.sources))
    _register_final_views(con, dataset)


def source_columns(con: duckdb.DuckDBPyConnection, source: TableSource) -> dict[str, str]:
    source.check_header_decodes()
    scan = source.scan_sql(f"_frame_{source.table}", keep_rejects=True)
    rows = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
    return {row[0]: row[1] for row in rows}


def type_problem(column: contract.Column, source_type: str) -> str | None:
    """Why a column stored as ``source_type`` cannot be read as its kind, or None if it can.
    Text is always accepted (each value is parsed and bad ones are quarantined); a typed column
    must have a type whose every value means the same in the contract."""
    t = source_type.upper()
    if is_nested_type(t):  # DOUBLE[] starts like DOUBLE: a cast error deep in a read, not this message
        return f"is stored as {t} (lists, structs or maps), not one value per row; is this the right column?"
    if t in ("VARCHAR", _ALL_MISSING) or column.kind == "text":
        return None
    if column.kind == "id":
        if t.startswith(_INTEGER_TYPES) or t == "UUID" or (t.startswith("DECIMAL") and t.endswith(",0)")):
            return None
        if t.startswith(_FLOAT_TYPES) or t.startswith("DECIMAL"):
            return (
                f"is stored as {t}; ids must be text or whole numbers: a float id 1.0 would become the "
                "text '1.0' and no longer match '1' in other tables (write the column as text or integer)"
            )
        return f"is stored as {t}; ids must be text or whole numbers"
    if column.kind == "number":
        if t.startswith(NUMERIC_TYPES):
            return None
        if t == "BOOLEAN":
            return "is stored as BOOLEAN, not a number: true/false would become 1.0/0.0; is this the right column?"
        return f"is stored as {t}, not a number; is this the right column?"
    if column.kind == "timestamp":
        if t.startswith(("TIMESTAMP", "DATE")):
            return None
        return f"is stored as {t}, not a timestamp or a date; write timestamps as such or as ISO text"
    raise AssertionError(column.kind)


def clean_exprs(table: contract.Table, types: dict[str, str], trim: bool) -> dict[str, str]:
    """The trimmed text of each text-typed timestamp column, computed once (``cleaned_*``) and
    read several times by :func:`parse_expr`."""
    exprs = {}
    for column in table.columns:
        if column.kind == "timestamp" and types[column.name] == "VARCHAR":
            ident = quote_ident(column.name)
            text = f"NULLIF(TRIM({ident}), '')" if trim else f"NULLIF({ident}, '')"
            exprs[CLEAN + column.name] = _without_missing_words(text, column.kind, trim, ident)
    return exprs


def _register_table(con, table: contract.Table, source: TableSource, timezone: str, forgetting: bool = False) -> None:
    empty = [f for f in source.files if f.stat().st_size == 0]
    if empty:
        what = " (not even a header line)" if source.is_csv else ": 0 bytes, no Parquet file (an interrupted copy?)"
        raise ContractError(f"{empty[0]} is empty{what}", table=table.name)
    available = source_columns(con, source)
    selected, types, extras = select_columns(table, source, available)
    scan = source.scan_sql(f"_frame_{table.name}", keep_rejects=True, timezone=timezone)
    raw = f"SELECT {', '.join(selected)} FROM {scan}"
    if forgetting:  # rows of forgotten customers never reach a view past this one
        keys = {
            c.name: parse_expr(c, types[c.name], None, source.is_csv) for c in table.columns if c.name in KEY_COLUMNS
        }
        raw = exclude_forgotten(con, table.name, raw, keys)
    con.execute(f"CREATE OR REPLACE VIEW raw_{table.name} AS {raw}")
    read_all = [*table.column_names, *extras] if source.is_csv else []
    header = header_names(source, table, types)
    for name, sql in checked_views(
        table, types, extras, source.timestamp_format, source.is_csv, timezone, read_all, source.decimal, header
    ):
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    # A file or frame is read once here for its repeated keys (see _register_deduplicated); a
    # CSV is not, since each read of it adds its malformed lines to the rejects table again.
    _register_deduplicated(con, table, settle=not source.is_csv)


def mapped_column(source: TableSource, contract_name: str, available: dict[str, str]) -> str | None:
    """The source column read as ``contract_name``: ``portrait.toml``'s mapping applied, an
    exact name first, then case-insensitively; None when the source has none."""
    wanted = source.columns.get(contract_name, contract_name)
    if wanted in available:
        return wanted
    return next((name for name in available if name.lower() == wanted.lower()), None)


def select_columns(
    table: contract.Table, source: TableSource, available: dict[str, str]
) -> tuple[list[str], dict[str, str], list[str]]:
    """The source's columns under their contract names (``portrait.toml``'s mapping applied,
    case-insensitive; an absent optional column as NULL), each one's source type, and the extra
    columns the table keeps. ``available`` maps each source column to its DuckDB type name (the
    Spark engine gives the same names). Raises :class:`ContractError` for a missing required
    column or a type its kind cannot take."""
    refuse_values_as_names(available, source, table)
    selected: list[str] = []
    types: dict[str, str] = {}
    readers: dict[str, str] = {}  # contract column -> the source column read as it
    repeated = source.repeated_header_names
    for column in table.columns:
        wanted = source.columns.get(column.name, column.name)
        # Two columns that could be this one: taking either would silently drop the other.
        alike = [name for name in available if name.lower() == wanted.lower()]
        if wanted.lower() in repeated or (len(alike) > 1 and wanted not in available):
            copies = "appears twice in the header" if wanted.lower() in repeated else f"is {' and '.join(alike)}"
            raise ContractError(
                f"column {wanted!r} {copies} of {source.describe()}: which one is {column.name}? "
                "Rename the other (or map it in portrait.toml)",
                table=table.name,
                column=column.name,
            )
        actual = mapped_column(source, column.name, available)
        if actual is None:
            if column.required:
                renamed = f" (renamed from {wanted!r} in the config)" if wanted != column.name else ""
                contract_names = {c.name.lower() for c in table.columns}
                others = [name for name in sorted(available) if name.lower() not in contract_names]
                likely = difflib.get_close_matches(column.name, others, n=1, cutoff=0.5) or others
                hint = (
                    f"; if one of {others} is it, name it in the folder's portrait.toml: "
                    f'[tables.{table.name}.columns] {column.name} = "{likely[0]}"'
                    if others and not renamed
                    else ""
                )
                if renamed:  # a typo in the mapping: the header's name closest to it (as for an optional column)
                    close = difflib.get_close_matches(wanted, list(available), n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]!r}? (the mapping in portrait.toml)" if close else ""
                one = next(iter(available)) if len(available) == 1 else ""
                seen = [d for d in ",;\t|" if d in one]
                if seen:  # the whole header read as one name: the file is split by another character
                    hint = (
                        f"; the header was read as one column: is the file separated by {seen[0]!r}? "
                        f"(delimiter in [tables.{table.name}] of portrait.toml)"
                    )
                if any(name.strip().lower().startswith("sep=") for name in available):
                    # Excel's first line naming the separator: read as the header, the real one a row
                    hint = (
                        "; the file starts with Excel's 'sep=' line, read as its header: delete that first line "
                        "so that the header is the first line (and name the separator as delimiter in "
                        f"[tables.{table.name}] of portrait.toml if it is not a comma)"
                    )
                raise ContractError(
                    f"required column {column.name!r}{renamed} is missing from "
                    f"{source.describe()}; its columns are {sorted(available)}{hint}",
                    table=table.name,
                    column=column.name,
                )
            if wanted != column.name:  # mapped on purpose: a typo would silently read it as absent
                close = difflib.get_close_matches(wanted, list(available), n=1, cutoff=0.6)
                raise ContractError(
                    f"column {column.name!r} is mapped to {wanted!r} in portrait.toml, which is not a column of "
                    f"{source.describe()}"
                    + (f"; did you mean {close[0]!r}?" if close else ".")
                    + f" Its columns are {sorted(available)} (remove the mapping if the export has no {column.name})",
                    table=table.name,
                    column=column.name,
                )
            selected.append(f"CAST(NULL AS VARCHAR) AS {quote_ident(column.name)}")
            types[column.name] = "VARCHAR"
            continue
        if len(source.files) > 1:  # each file: merged, their types hide a float part among text ones
            for path, file_type in source.parquet_types(actual).items():
                if file_type != '"NULL"' and (problem := type_problem(column, file_type)):
                    renamed = f" (from {actual!r})" if actual != column.name else ""
                    raise ContractError(
                        f"column{renamed} in {source.part_name(path)}, one of {source.describe()}, {problem}",
                        table=table.name,
                        column=column.name,
                    )
        problem = type_problem(column, available[actual])
        if problem:
            renamed = f" (from {actual!r})" if actual != column.name else ""
            raise ContractError(
                f"column{renamed} in {source.describe()} {problem}", table=table.name, column=column.name
            )
        if column.kind == "timestamp":
            refuse_mixed_zones(source, table.name, column.name, actual)
        if actual in readers.values():  # one export column read as two contract columns: one is wrong
            other = next(name for name, source_name in readers.items() if source_name == actual)
            raise ContractError(
                f"column {actual!r} of {source.describe()} would be read as both {other} and {column.name}; "
                "map each contract column to its own column in portrait.toml",
                table=table.name,
                column=column.name,
            )
        lacking = source.files_without(actual) if column.required else []
        if lacking:  # every row of those files would be quarantined for it, the rest read
            read_names = {source.columns.get(c.name, c.name).lower() for c in table.columns}
            unread = sorted({n for p in lacking for n in source.file_headers[p] if n and n not in read_names})
            raise ContractError(
                f"required column {actual!r} is in the header of some files of {table.name} but not of "
                f"{some_files(lacking)}"
                + (f" (other columns in their headers: {unread[:6]})" if unread else "")
                + f": all of their rows would miss {column.name}. Give every file the same column names "
                "(portrait.toml maps one name for all the files of a table)",
                table=table.name,
                column=column.name,
            )
        readers[column.name] = actual
        selected.append(f"{quote_ident(actual)} AS {quote_ident(column.name)}")
        types[column.name] = available[actual].upper()
    extras: list[str] = []
    if table.keeps_extra_columns:
        extras = [name for name in available if name not in readers.values() and not PANDAS_INDEX.fullmatch(name)]
        # A name twice in a CSV header: DuckDB reads the second copy as name_1 (Spark as the name with
        # its position), an attribute named by no column of the export. From the header itself, so
        # that both engines refuse it (two names that differ only by spaces are told apart:
        # catalogue's clash check).
        contract_names = {source.columns.get(c.name, c.name).strip().lower() for c in table.columns}
        # (a CSV's header: a frame's or Parquet file's columns are the caller's, read by name)
        twice = sorted(repeated - contract_names) if source.is_csv else []
        if twice:
            in_headers = {n for names in source.file_headers.values() for n in names}
            renamed = [
                name
                for name in extras
                if name.strip().lower() not in in_headers and re.sub(r"_[0-9]+$", "", name.strip().lower()) == twice[0]
            ]
            raise ContractError(
                f"column {twice[0]!r} appears twice in the header of {source.describe()} (compared without case"
                + (f"; the second was read as {renamed[0]!r}" if renamed else "")
                + "): rename one of them in the export",
                table=table.name,
                column=twice[0],
            )
        for name in extras:  # a customers attribute such as signup_date: read as a time too
            if available[name].upper().startswith("TIMESTAMP"):
                refuse_mixed_zones(source, table.name, name, name)
        selected += [quote_ident(name) for name in extras]
    return selected, types, extras


def refuse_mixed_zones(source: TableSource, table: str, column: str, actual: str) -> None:
    """Parquet parts of one table storing a timestamp column with a time zone in some files and
    without one in others: read together, the times without one would be taken as UTC (moved by
    the data set's offset, and reported as converted), so the table is refused."""
    zones = source.parquet_zones(actual)
    aware = sorted(name for name, zone in zones.items() if zone is not None)
    naive = sorted(name for name, zone in zones.items() if zone is None)  # or dates (moved whole days)
    if aware and naive:
        raise ContractError(
            f"column {actual!r} is stored with a time zone in {some_files(aware)} and without one (or as dates) in {some_files(naive)} "
            f"({source.describe()}): read together, the times without one would be moved as if they were UTC; "
            "write every part the same way (all with a zone, or all without one in the data set's timezone)",
            table=table,
            column=column,
        )


def some_files(paths: list[str]) -> str:
    """Up to three files' names, then how many more."""
    names = [Path(p).name for p in paths]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


REPEATED_HEADER = "repeated_header"  # a line that repeats the file's header (quarantined, counted)


def checked_views(
    table: contract.Table,
    types: dict[str, str],
    extras: list[str],
    timestamp_format: str | None,
    trim: bool,
    timezone: str,
    read_all: list[str],
    decimal: str = ".",
    header: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """``(name, SELECT)`` of ``cleaned_t``, ``checked_t`` and ``typed_t`` over ``raw_t``: the
    row rules of the module docstring, in SQL both engines run (the Spark engine transpiles it).
    ``header``: the CSV header's name of each column read from it (:func:`header_names`), to
    quarantine a line that repeats the header (``repeated_header``)."""
    name = table.name
    cleaned = clean_exprs(table, types, trim)
    cleaned_columns = "".join(f", {expr} AS {quote_ident(n)}" for n, expr in cleaned.items())
    parsed = {c.name: parse_expr(c, types[c.name], timestamp_format, trim, timezone, decimal) for c in table.columns}
    parsed_columns = ", ".join(f"{expr} AS {quote_ident(PARSED + n)}" for n, expr in parsed.items())
    reasons = _reason_cases(table, types, trim, read_all=read_all, header=header)
    typed_columns = [f"{quote_ident(PARSED + c.name)} AS {quote_ident(c.name)}" for c in table.columns]
    typed_columns += [quote_ident(n) for n in extras]
    return [
        (f"cleaned_{name}", f"SELECT *{cleaned_columns} FROM raw_{name}"),
        # Each value is parsed once, in the inner query; reasons and typed columns reuse it.
        (
            f"checked_{name}",
            f"SELECT *, {reasons} AS {REASON} FROM (SELECT *, {parsed_columns} FROM cleaned_{name}) parsed",
        ),
        (f"typed_{name}", f"SELECT {', '.join(typed_columns)} FROM checked_{name} WHERE {REASON} IS NULL"),
    ]


def parse_expr(
    column: contract.Column,
    source_type: str,
    timestamp_format: str | None,
    trim: bool,
    timezone: str = "UTC",
    decimal: str = ".",
) -> str:
    """SQL parsing a raw value into the column's kind; NULL when missing or unparseable. Reads
    ``cleaned_*`` (the raw columns plus the trimmed text of text timestamps).

    ``trim``: strip spaces from text first (CSV exports pad values; Parquet and frames are
    written by programs and are taken as they are, which saves a pass over every string).
    ``decimal``: the separator of a number written as text. With ``","`` a number is digits
    with at most one comma (``12,50``, ``-3``): a point, a thousands separator (``1.234,50``)
    or an exponent does not parse, rather than be guessed.
    """
    ident = quote_ident(column.name)
    is_text = source_type == "VARCHAR"
    cleaned = (f"NULLIF(TRIM({ident}), '')" if trim else f"NULLIF({ident}, '')") if is_text else ident
    if source_type == _ALL_MISSING:
        return f"CAST(NULL AS {contract.SQL_TYPE[column.kind]})"
    if column.kind in ("id", "text"):
        if not is_text:
            return f"CAST({ident} AS VARCHAR)"
        # an optional id (a product, a store) written \N is no store; a required one is quarantined
        kind = "text" if column.kind == "text" or not column.required else "id"
        return _without_missing_words(cleaned, kind, trim, ident)
    if column.kind == "number":
        if source_type in _FLOAT_TYPES:
            return f"CASE WHEN NOT isnan({ident}) THEN CAST({ident} AS DOUBLE) END"
        if source_type.startswith(NUMERIC_TYPES):
            return f"CAST({ident} AS DOUBLE)"
        return text_number(_without_missing_words(cleaned, column.kind, trim, ident), decimal)
    if column.kind == "timestamp":
        zone = quote_literal(timezone)
        if is_text:
            text = quote_ident(CLEAN + column.name)
            if timestamp_format:
                value = f"TRY_STRPTIME({text}, {quote_literal(timestamp_format)})"
                if _format_has_zone(timestamp_format):
                    # No offset a place uses (+2500) is read as one, as in ISO text; the test reads
                    # the value's end, so only where the format puts the offset there.
                    impossible = (
                        f"AND NOT regexp_matches({text}, {quote_literal(IMPOSSIBLE_OFFSET)}) "
                        if timestamp_format.rstrip().endswith("%z")
                        else ""
                    )
                    value = f"CASE WHEN NOT {unknown_zone_name(text)} {impossible}THEN timezone({zone}, {value}) END"
                if "%Y" in timestamp_format:  # %Y also takes 2 digits: 24-01-05 would be the year 24
                    value = f"CASE WHEN {value} >= TIMESTAMP '1000-01-01' THEN {value} END"
                return value
            return iso_text_timestamp(text, timezone)
        return stored_timestamp(ident, source_type, timezone)
    raise AssertionError(column.kind)


def stored_timestamp(value: str, source_type: str, timezone: str) -> str:
    """SQL reading ``value``, stored as the timestamp or date type ``source_type``, as a time in
    the data set's ``timezone``: an instant (stored with a zone) converted, a wall-clock time or a
    date (its midnight) taken as in it. Nanoseconds are cut to microseconds, not rounded (DuckDB's
    cast rounds: 23:59:59.9999995 became the next midnight, the cutoff, on the wrong side of it)."""
    t = source_type.upper()
    if t in ("TIMESTAMP_NS", "TIMESTAMPTZ_NS"):
        nanos = f"epoch_ns({value})"
        value = f"make_timestamp(({nanos} - (({nanos} % 1000) + 1000) % 1000) // 1000)"  # floor, before 1970 too
        if t == "TIMESTAMP_NS":
            return value
        value = f"timezone('UTC', {value})"
    if zone_aware(t):
        return f"timezone({quote_literal(timezone)}, CAST({value} AS TIMESTAMPTZ))"
    if t == "TIMESTAMP":
        return value
    return f"TRY_CAST({value} AS TIMESTAMP)"


def text_number(text: str, decimal: str = ".") -> str:
    """SQL reading the text ``text`` (an SQL expression) as a number written with ``decimal``
    for its decimal separator (:func:`parse_expr`'s rule), NULL when it is not one."""
    if decimal == ",":
        return (
            f"TRY_CAST(CASE WHEN regexp_matches({text}, '^[+-]?[0-9]*,?[0-9]+$') "
            f"THEN REPLACE({text}, ',', '.') END AS DOUBLE)"
        )
    # DuckDB reads '1_000' as 1000 and '1_2.5_0' as 12.5 (digit separators, as in its SQL):
    # no export writes that, so such text is not a number, as with decimal = ","
    return f"TRY_CAST(CASE WHEN strpos({text}, '_') = 0 THEN {text} END AS DOUBLE)"


def iso_text_timestamp(text: str, timezone: str) -> str:
    """SQL reading the text ``text`` (an SQL expression, trimmed) as an ISO timestamp with a
    four-digit year: one with an offset or zone converted to ``timezone``, one without taken as
    already in it; NULL when it does not parse (an impossible offset, an ambiguous zone
    abbreviation). Written without back-references (Spark's replacement syntax differs): the
    offset is cut off the end and put back after the rest, right-trimmed."""
    zone = quote_literal(timezone)
    offset = f"regexp_extract({text}, {quote_literal(OFFSET_AT_END)}, 1)"
    joined = f"rtrim(substr({text}, 1, length({text}) - length({offset}))) || {offset}"
    return (
        f"CASE WHEN strpos({text}, '-') <> 5 THEN NULL "
        f"WHEN regexp_matches({text}, {quote_literal(ZONE_PATTERN)}) "
        f"THEN CASE WHEN regexp_matches({text}, {quote_literal(IMPOSSIBLE_OFFSET)}) THEN NULL "
        f"WHEN {unknown_zone_name(text)} THEN NULL "
        f"ELSE timezone({zone}, TRY_CAST({joined} AS TIMESTAMPTZ)) END "
        f"ELSE TRY_CAST({text} AS TIMESTAMP) END"
    )


def zone_expr(column: contract.Column, source_type: str, timestamp_format: str | None) -> str | None:
    """SQL true when a timestamp value carried an offset or zone (and was converted to the data
    set's zone); None when the column cannot carry one. Reads ``cleaned_*``."""
    if column.kind != "timestamp":
        return None
    if zone_aware(source_type):
        return f"{quote_ident(column.name)} IS NOT NULL"
    if source_type != "VARCHAR":
        return None
    text = quote_ident(CLEAN + column.name)
    if timestamp_format:
        return f"{text} IS NOT NULL" if _format_has_zone(timestamp_format) else None
    return f"regexp_matches({text}, {quote_literal(ZONE_PATTERN)})"


def _format_has_zone(timestamp_format: str) -> bool:
    return "%z" in timestamp_format or "%Z" in timestamp_format


def present_expr(column_name: str, source_type: str, trim: bool, kind: str | None = None) -> str:
    """SQL that is true when a raw value is there: not null, not blank, not a float NaN (pandas
    and numpy write NaN for a missing number), and in a CSV not a word for no value
    (:func:`missing_words` of the column's ``kind``)."""
    ident = quote_ident(column_name)
    if source_type in ("DOUBLE", "FLOAT", "REAL"):
        return f"({ident} IS NOT NULL AND NOT isnan({ident}))"
    if source_type == "VARCHAR":
        present = f"{'NULLIF(TRIM(' + ident + '), ' if trim else 'NULLIF(' + ident + ', '}'') IS NOT NULL"
        words = missing_words(kind, trim)
        return f"({present} AND NOT {contract.placeholder_word_expr(ident, words)})" if words else present
    return f"{ident} IS NOT NULL"


def missing_words(kind: str | None, trim: bool) -> tuple[str, ...] | None:
    """The words a CSV writes for no value in a column of ``kind``: MySQL's ``\\N`` (its
    ``SELECT ... INTO OUTFILE``), ``NULL``, ``N/A`` (:data:`portrait.contract.NULL_MARKERS`: not
    "None" or "Nil", which can be a brand's or a category's name; in numbers and times all of
    :data:`~portrait.contract.MISSING_NUMBER_WORDS`, R's ``NA`` and a dash too). Read as missing, not as a value: a
    discount of ``\\N`` was a non-numeric value, its row quarantined (600 of 3,000 rows of a
    MySQL dump), a store ``\\N`` a store (optional ids take the words of text). Required ids
    have their own rule (``placeholder_<column>``); Parquet and frames hold real nulls (``trim``
    is False for them)."""
    if not trim or kind not in ("text", "number", "timestamp"):
        return None
    return contract.NULL_MARKERS if kind == "text" else contract.MISSING_NUMBER_WORDS


def _without_missing_words(text: str, kind: str, trim: bool, raw: str) -> str:
    """``text`` (SQL: the cleaned value), NULL where the ``raw`` column's value is one of
    :func:`missing_words` (tested on the raw column: the cleaned expression written once more
    per test would be computed again)."""
    words = missing_words(kind, trim)
    return f"CASE WHEN {contract.placeholder_word_expr(raw, words)} THEN NULL ELSE {text} END" if words else text


def header_columns(source: TableSource, table: contract.Table, types: dict[str, str]) -> dict[str, str]:
    """Each column of ``types`` (the table's, and its extra columns) read from the source's files,
    with its header's name (lower case, trimmed): empty without a header to compare with."""
    names = {n for header in source.file_headers.values() for n in header if n}
    own = {c.name: source.columns.get(c.name, c.name).strip().lower() for c in table.columns if c.name in types}
    own |= {c: c.strip().lower() for c in types if c not in table.column_names}
    return {c: n for c, n in own.items() if n in names}


def header_names(source: TableSource, table: contract.Table, types: dict[str, str]) -> dict[str, str]:
    """:func:`header_columns` of a CSV source's text columns, for the ``repeated_header`` rule;
    empty when fewer than two are (a line of two names is not told from data)."""
    present = {c: n for c, n in header_columns(source, table, types).items() if types[c] == "VARCHAR"}
    return present if source.is_csv and len(present) >= 2 else {}


def _reason_cases(
    table: contract.Table, types: dict[str, str], trim: bool, read_all: list[str], header: dict[str, str] | None = None
) -> str:
    """The first rule a row breaks, from its parsed values; ``present`` is only evaluated for
    the few rows whose value did not parse, to tell *missing* from *unparseable*.

    ``read_all``: CSV columns to reference even when no rule needs them. DuckDB checks a value's
    encoding only when the column is read, so a line with a bad byte in, say, ``brand`` would be
    rejected by a query reading ``brand`` and kept by one that does not; reading every column
    makes every query see the same good rows."""
    cases: list[str] = []
    if header:  # two exports pasted into one file: the second's header is a line, not a purchase
        same = " AND ".join(f"LOWER(TRIM({quote_ident(c)})) = {quote_literal(n)}" for c, n in header.items())
        cases.append(f"WHEN {same} THEN '{REPEATED_HEADER}'")
    for column in table.columns:
        value = quote_ident(PARSED + column.name)
        present = present_expr(column.name, types[column.name], trim, column.kind)
        if column.required:
            cases.append(f"WHEN {value} IS NULL AND NOT ({present}) THEN 'missing_{column.name}'")
        if column.kind == "timestamp":
            cases.append(f"WHEN {value} IS NULL AND {present} THEN 'unparseable_{column.name}'")
        if column.kind == "number":
            cases.append(
                f"WHEN ({value} IS NULL AND {present}) OR NOT ({value} BETWEEN -{_FINITE} AND {_FINITE}) "
                f"THEN 'non_numeric_{column.name}'"
            )
            cases.append(f"WHEN ABS({value}) >= {IMPLAUSIBLE_NUMBER:.0e} THEN 'implausible_{column.name}'")
            if column.non_negative:
                cases.append(f"WHEN {value} < 0 THEN 'negative_{column.name}'")
        if column.identifier:
            cases.append(f"WHEN {contract.placeholder_expr(value)} THEN 'placeholder_id_value'")
        elif column.kind == "id" and column.required and types[column.name] == "VARCHAR":  # a number is no word
            blank = contract.placeholder_word_expr(value, longest=contract.PLACEHOLDER_ID_LENGTH)
            cases.append(f"WHEN {blank} THEN 'placeholder_{column.name}'")
    for count, money in table.returns_with_money_paid:
        a, b = quote_ident(PARSED + count), quote_ident(PARSED + money)
        cases.append(f"WHEN {a} < 0 AND {b} > 0 THEN 'negative_{count}_positive_{money}'")
    if read_all:
        never = " OR ".join(f"strlen({quote_ident(name)}) < 0" for name in read_all)
        cases.append(f"WHEN {never} THEN 'unreadable'")
    if not cases:
        return "CAST(NULL AS VARCHAR)"
    return "CASE " + " ".join(cases) + " ELSE NULL END"


# Columns that every exact copy of a row shares and that few distinct rows share: a table listed
# here is de-duplicated by :func:`_register_deduplicated` without grouping all its rows.
_CANDIDATE_KEYS = {"purchases": ("order_id", "product_id", "line_id", "ts")}


def _key_hash(columns) -> str:
    return f"hash({', '.join(quote_ident(c) for c in columns)})"


def _register_deduplicated(con, table: contract.Table, by_key: bool = True, settle: bool = False) -> None:
    """``clean_t`` (good rows, one copy each) and ``duplicates_t`` (what was dropped, counted).
    ``by_key``: find purchases' copies through their candidate key (a DuckDB speed-up, below);
    without it (the Spark engine, whose ``hash`` and global sort differ) by the plain
    ``DISTINCT``, which keeps the same rows. ``settle``: find the repeated keys now, once, into
    a table (one read of the key columns), rather than in every read of ``clean_t``; when there
    are none, ``clean_t`` is the typed rows as they are, one read of the source instead of two."""
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
    elif table.check_duplicates and by_key and name in _CANDIDATE_KEYS:
        # Exact copies share every column, so in particular the candidate key: only rows whose
        # key occurs more than once can have a copy, and only those go through the all-columns
        # DISTINCT (which treats NULLs as equal, as before); every other row passes as it is.
        # The repeated keys are found by sorting one hash per row, far cheaper than grouping
        # the whole rows (which nearly all differ); a hash collision only adds candidates. The
        # hashes are of the parsed values of every row, before the quarantine's filter: a
        # superset of the good rows' keys, for a cheaper read.
        parsed_key = _key_hash(PARSED + c for c in _CANDIDATE_KEYS[name])
        typed_key = _key_hash(_CANDIDATE_KEYS[name])
        repeated_keys = f"""SELECT DISTINCT _key FROM (
                SELECT _key, LAG(_key) OVER (ORDER BY _key) AS _previous
                FROM (SELECT {parsed_key} AS _key FROM checked_{name}) k
            ) s WHERE _key = _previous"""
        if settle:
            con.execute(f"CREATE OR REPLACE TEMP TABLE _repeated_keys_{name} AS {repeated_keys}")
            none_repeated = con.execute(f"SELECT COUNT(*) = 0 FROM _repeated_keys_{name}").fetchall()[0][0]
        else:
            con.execute(f"CREATE OR REPLACE VIEW _repeated_keys_{name} AS {repeated_keys}")
            none_repeated = False
        if none_repeated:  # nothing can have a copy (the keys of every row were checked)
            con.execute(f"CREATE OR REPLACE VIEW clean_{name} AS SELECT * FROM typed_{name}")
        else:
            con.execute(
                f"""CREATE OR REPLACE VIEW clean_{name} AS
                WITH repeated AS MATERIALIZED (SELECT _key FROM _repeated_keys_{name})
                SELECT * FROM typed_{name} WHERE {typed_key} NOT IN (SELECT _key FROM repeated)
                UNION ALL
                SELECT DISTINCT * FROM typed_{name} WHERE {typed_key} IN (SELECT _key FROM repeated)"""
            )
        con.execute(
            f"""CREATE OR REPLACE VIEW duplicates_{name} AS
            SELECT *, 'duplicate_line' AS _reject_reason, COUNT(*) - 1 AS _rows
            FROM typed_{name} WHERE {typed_key} IN (SELECT _key FROM _repeated_keys_{name})
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


# (customer_id, person_id) for every id merged into another person's id; empty without
# identities, so that SQL written with :func:`by_person` reads the same either way.
REMAP = "customer_remap"
_REAGGREGATE = {"SUM", "MAX", "MIN"}


def by_person(inner: str, reaggregate: list[tuple[str, str]] | tuple = ()) -> str:
    """SQL with one row per person (``customer_id`` as in the final views) from ``inner``, a
    query over ``clean_<table>`` (rows under the ids as written) grouped by ``customer_id``.

    Each id is mapped to its person and every ``(column, function)`` of ``reaggregate`` is
    aggregated again over the person's ids: ``SUM`` for sums and counts, ``MAX`` for maxima,
    ``MIN`` for minima (the only aggregates whose result over a person's rows is the same
    aggregate of its per-id results). Grouping first and mapping the ~1M grouped ids costs far
    less than mapping each of 100M rows (what the ``events`` view does) and gives the same
    answer. The map is empty when no id is merged, so the SQL is the same with or without
    identities.
    """
    columns = ""
    for column, function in reaggregate:
        if function.upper() not in _REAGGREGATE:
            raise ValueError(f"cannot aggregate per-id {function} results again; use one of {sorted(_REAGGREGATE)}")
        columns += f", {function.upper()}(g.{quote_ident(column)}) AS {quote_ident(column)}"
    return (
        f"SELECT COALESCE(m.person_id, g.customer_id) AS customer_id{columns} "
        f"FROM ({inner}) g LEFT JOIN {REMAP} m ON g.customer_id = m.customer_id GROUP BY 1"
    )


def _register_final_views(con, dataset: Dataset) -> None:
    """The views features read: clean rows with customer ids unified through identities."""
    from portrait.identity import register_identity_map

    has_map = dataset.has("identities") and register_identity_map(con)
    if has_map:
        con.execute(f"CREATE OR REPLACE VIEW {REMAP} AS SELECT customer_id, person_id FROM identity_remap")
    else:
        con.execute(
            f"CREATE OR REPLACE VIEW {REMAP} AS SELECT CAST(NULL AS VARCHAR) AS customer_id, "
            "CAST(NULL AS VARCHAR) AS person_id WHERE FALSE"
        )
    for table in contract.TABLES:
        if not dataset.has(table.name) or table.name == "identities":
            continue
        if not has_map:
            con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM clean_{table.name}")
            continue
        con.execute(
            f"CREATE OR REPLACE VIEW {table.name} AS {merged_view(table.name, _columns(con, f'clean_{table.name}'))}"
        )


def merged_view(name: str, columns: list[str]) -> str:
    """SQL of the final view of table ``name`` (whose ``clean_`` view has ``columns``) with
    customer ids mapped to their person through ``identity_remap``."""
    others = ", ".join(f"t.{quote_ident(c)}" for c in columns if c != "customer_id")
    mapped = (
        f"SELECT COALESCE(m.person_id, t.customer_id) AS customer_id"
        f"{', ' + others if others else ''}, t.customer_id AS _source_customer_id "
        f"FROM clean_{name} t LEFT JOIN identity_remap m ON t.customer_id = m.customer_id"
    )
    listed = ", ".join(quote_ident(c) for c in columns)
    if name == "customers":
        # Several merged ids may each have a customers row: keep the person's own row,
        # else the smallest id's, so the attributes chosen never depend on file order.
        return f"""SELECT {listed} FROM (
            SELECT *, ROW_NUMBER() OVER (
                PARTITION BY customer_id
                ORDER BY CASE WHEN _source_customer_id = customer_id THEN 0 ELSE 1 END,
                         _source_customer_id) AS _rank
            FROM ({mapped}) merged) ranked WHERE _rank = 1"""
    return f"SELECT {listed} FROM ({mapped}) m"


def compute_once(con: duckdb.DuckDBPyConnection, view: str) -> None:
    """Compute ``view`` once into a temporary table and shadow the view with one reading it,
    for a connection that reads the view several times: a feature build reads ``customers``
    four times (the attribute kinds twice, the signups, the attributes), and each read would
    repeat its de-duplication, conflict check and identity ranking. The rows are the view's as
    of the first call; later calls change nothing."""
    table = f"_computed_{view}"
    if con.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()[0][0]:
        return
    con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM {quote_ident(view)}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_ident(view)} AS SELECT * FROM {table}")


def identity_map_ready(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` has ``identity_map`` (the data set has identities); when it has, the
    view is computed once into a table (:func:`compute_once`) for a reader that reads it
    several times (a profile, the profile material): each read of the view would repeat the
    identities' scan."""
    if not has_identity_map(con):
        return False
    compute_once(con, "identity_map")
    return True


def _columns(con, view: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]
