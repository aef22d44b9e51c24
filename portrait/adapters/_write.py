"""Writing a data set folder: each table to a temporary file first, then renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from portrait.files import atomic_target, atomic_write_text
from portrait.sql import quote_literal


def copy_to_parquet(con: duckdb.DuckDBPyConnection, select_sql: str, target: Path) -> int:
    """Write the rows of ``select_sql`` to ``target`` atomically; return how many."""
    with atomic_target(target) as tmp:
        con.execute(f"COPY ({select_sql}) TO {quote_literal(str(tmp))} (FORMAT PARQUET)")
        rows = con.execute(f"SELECT COUNT(*) FROM read_parquet({quote_literal(str(tmp))})").fetchall()[0][0]
    return int(rows)


def write_provenance(out_dir: Path, info: dict) -> None:
    atomic_write_text(json.dumps(info, indent=2, default=str), out_dir / "SOURCE.json")
