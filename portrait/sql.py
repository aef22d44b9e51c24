"""Quoting names and text for SQL pasted together as strings (DuckDB's dialect, which Spark SQL
reads the same way after sqlglot). A value a user gives is bound as a parameter where the
engine allows it; these are for identifiers, file paths and literals built into statements."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
