"""Quoting names and text for SQL pasted together as strings (DuckDB's dialect, which Spark SQL
reads the same way after sqlglot). A value a user gives is bound as a parameter where the
engine allows it; these are for identifiers, file paths and literals built into statements,
and for what a type's name says."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# DuckDB's names for a timestamp stored as an instant (with a time zone): in microseconds, or
# nanoseconds (TIMESTAMPTZ_NS: what pandas writes for a datetime64[ns, UTC] column). Taken for
# a wall-clock time, such a column was read as UTC in a Europe/Paris data set.
_ZONE_AWARE_TYPES = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMPTZ_NS")


def zone_aware(sql_type: str) -> bool:
    """Whether DuckDB's type ``sql_type`` is a timestamp stored with a time zone (an instant)."""
    return sql_type.upper() in _ZONE_AWARE_TYPES
