"""Writing a data set folder: each table to a temporary file first, then renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from portrait import contract
from portrait.errors import PortraitError
from portrait.files import atomic_target, atomic_write_text
from portrait.sql import quote_literal

SYNTHETIC = "sample-data"  # what check_target_folder calls a synthetic set (portrait.synthetic)


def check_target_folder(out_dir: Path, adapter: str) -> None:
    """Refuse to import into a folder holding another data set: the tables this import does not
    write would stay beside those it does (CDNOW's purchases next to the Complete Journey's
    events). A folder from the same adapter is imported again (its tables replaced)."""
    held = sorted(
        f"{table.name}{form or '/'}"
        for table in contract.TABLES
        for form in (*contract.TABLE_SUFFIXES, "")  # "": a folder of part files
        if (out_dir / f"{table.name}{form}").exists()
    )
    if _names_tables(out_dir / "portrait.toml"):  # its tables are files of any name ([tables.*] file)
        held.append("tables named in portrait.toml")
    if not held:
        return
    try:
        previous = json.loads((out_dir / contract.PROVENANCE_FILE).read_text()).get("adapter")
    except (OSError, ValueError, AttributeError):
        # a synthetic set has no SOURCE.json, but its planted truth
        previous = SYNTHETIC if (out_dir / "truth").is_dir() else None
    if previous != adapter:
        raise PortraitError(
            f"{out_dir} already holds a data set ({', '.join(held)}"
            f"{', imported by ' + str(previous) if previous else ''}): write into a new or empty folder; "
            "writing over it would mix two data sets"
        )


def _names_tables(config: Path) -> bool:
    """Whether a data set's ``portrait.toml`` maps tables to files ([tables.NAME] file = ...)."""
    import tomllib

    try:
        tables = tomllib.loads(config.read_text(encoding="utf-8")).get("tables", {})
    except (OSError, ValueError):
        return config.is_file()  # unreadable settings: not a folder to import into blindly
    return isinstance(tables, dict) and any(isinstance(t, dict) and t.get("file") for t in tables.values())


def copy_to_parquet(con: duckdb.DuckDBPyConnection, select_sql: str, target: Path) -> int:
    """Write the rows of ``select_sql`` to ``target`` atomically; return how many."""
    with atomic_target(target) as tmp:
        con.execute(f"COPY ({select_sql}) TO {quote_literal(str(tmp))} (FORMAT PARQUET, USE_TMP_FILE false)")
        rows = con.execute(f"SELECT COUNT(*) FROM read_parquet({quote_literal(str(tmp))})").fetchall()[0][0]
    return int(rows)


def write_provenance(out_dir: Path, info: dict) -> None:
    """The import's record, once every table is written (see :data:`contract.PROVENANCE_FILE`)."""
    atomic_write_text(json.dumps({**info, "complete": True}, indent=2, default=str), out_dir / contract.PROVENANCE_FILE)


def start_import(out_dir: Path, adapter: str) -> None:
    """Mark ``out_dir`` as being imported into, before its first table is written: stopped
    halfway, the import leaves a folder that reads as unfinished, not as a data set of some
    new tables beside old or missing ones (it looked finished)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"adapter": adapter, "complete": False}
    atomic_write_text(json.dumps(record, indent=2), out_dir / contract.PROVENANCE_FILE)
