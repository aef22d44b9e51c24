"""Where SQL runs: the engine seam between the feature plan and DuckDB or Spark.

Every stage above this module writes its SQL once, in DuckDB's dialect (the plan in
:mod:`features.plan`, the views in :mod:`portrait.views`). An :class:`Engine` runs that SQL:

- :class:`DuckDBEngine`, the embedded default, runs it as it is on a DuckDB connection (the
  statements it issues are the ones the feature build issued before the seam existed);
- :class:`SparkEngine` (``portrait.spark_engine``, imported only when Spark is asked for)
  transpiles each statement to Spark SQL with sqlglot and runs it on a ``SparkSession``.

The operations are the few a build needs: register a table from a small pandas frame (a
vocabulary), create a view, materialise a step as a table (DuckDB: a temporary table; Spark: a
checkpointed or cached temporary view, freed once the build is done with it), drop it, read
rows or a frame back, describe a query's columns, and write a query's rows to Parquet. Nothing here imports a package above ``portrait``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import duckdb
import pandas as pd
import pyarrow as pa

from portrait.errors import PortraitError
from portrait.files import atomic_target
from portrait.sql import quote_literal

ENGINES = ("duckdb", "spark")


@runtime_checkable
class Engine(Protocol):
    """Runs DuckDB-dialect SQL on some engine; see the module docstring."""

    name: str

    def register_frame(self, name: str, frame: pd.DataFrame) -> None: ...

    def create_view(self, name: str, sql: str) -> None: ...

    def materialize(self, name: str, sql: str) -> None: ...

    def drop(self, name: str) -> None: ...

    def has_relation(self, name: str) -> bool: ...

    def rows(self, sql: str, params: list | None = None) -> list[tuple]: ...

    def frame(self, sql: str, params: list | None = None) -> pd.DataFrame: ...

    def wide_frame(self, sql: str, release: Callable[[], None] | None = None) -> pd.DataFrame: ...

    def steps_mark(self) -> int: ...

    def free_dropped_since(self, mark: int) -> None: ...

    def columns(self, sql: str) -> list[tuple[str, str]]: ...

    def write_parquet(self, sql: str, path: str | Path) -> None: ...


class DuckDBEngine:
    """The embedded engine: today's statements on a DuckDB connection (``con``)."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def register_frame(self, name: str, frame: pd.DataFrame) -> None:
        self.con.register(f"_{name}_frame", frame)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _{name}_frame")
        self.con.unregister(f"_{name}_frame")

    def create_view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")

    def materialize(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def has_relation(self, name: str) -> bool:
        """Whether a view or table of that name is there (a data set's table is a view)."""
        found = self.con.execute(
            "SELECT COUNT(*) FROM (SELECT view_name AS name FROM duckdb_views() WHERE NOT internal "
            "UNION ALL SELECT table_name FROM duckdb_tables()) r WHERE name = ?",
            [name],
        ).fetchall()
        return bool(found[0][0])

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params).fetchall()

    def frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params).df()

    def wide_frame(self, sql: str, release: Callable[[], None] | None = None) -> pd.DataFrame:
        """:meth:`frame` for a result of many number and text columns only (a feature table),
        with the same dtypes: fetched through Arrow into one block per column, which for 150
        columns of 1M rows takes about 1 s against 3-6 s for ``df()`` (measured here). Not for
        dates or decimals, which Arrow hands to pandas as Python objects. The columns are
        allocated by the system allocator: pyarrow's default (mimalloc) spent 2.6-3.0 s of system
        time on them at 1M x 160 on this machine, against 1.0 s (``to_pandas`` 2.8-3.4 s against
        1.2 s). ``release`` runs once the result is fetched, before it is converted: the tables
        the query read can be dropped there, so that the conversion reuses their memory rather
        than adding to the peak."""
        table = self.con.sql(sql).to_arrow_table()
        if release is not None:
            release()
        return table.to_pandas(split_blocks=True, self_destruct=True, memory_pool=pa.system_memory_pool())

    def steps_mark(self) -> int:
        """Nothing to mark: a dropped table is freed at once (the Spark engine's keeps a
        checkpoint until its build is done with it)."""
        return 0

    def free_dropped_since(self, mark: int) -> None:
        """Nothing to free: see :meth:`steps_mark`."""

    def columns(self, sql: str) -> list[tuple[str, str]]:
        return [(row[0], row[1]) for row in self.con.execute(f"DESCRIBE {sql}").fetchall()]

    def write_parquet(self, sql: str, path: str | Path) -> None:
        with atomic_target(Path(path)) as tmp:
            self.con.execute(f"COPY ({sql}) TO {quote_literal(str(tmp))} (FORMAT parquet, USE_TMP_FILE false)")


def as_engine(con: duckdb.DuckDBPyConnection | Engine) -> Engine:
    """``con`` as an engine: a DuckDB connection is wrapped, an engine returned as it is."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        return DuckDBEngine(con)
    if isinstance(con, Engine):
        return con
    raise TypeError(f"expected a DuckDB connection or an Engine, got {type(con).__name__}")


def check_engine_name(name: str) -> str:
    if name not in ENGINES:
        raise PortraitError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return name
