"""The product's DuckDB connections, each one known so that a stop can interrupt it.

DuckDB's Python client interrupts a running query on SIGINT (Ctrl-C) by itself, but not on
SIGTERM: a Python handler for SIGTERM runs only once the query returns, which on a large data
set can be minutes after a scheduler asked the job to stop (and then killed it, with no record
of why). Every connection the product opens goes through :func:`connect`, so that a stop can
call :func:`interrupt_all` from another thread while the main one waits in a query.
"""

from __future__ import annotations

import weakref

import duckdb

_LIVE: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A new DuckDB connection (in memory unless ``database`` names a file), known to
    :func:`interrupt_all` for as long as it lives."""
    con = duckdb.connect(database, read_only=read_only)
    _LIVE.add(con)
    return con


def interrupt_all() -> int:
    """Interrupt the query each live connection is running (none: nothing happens); the query
    raises DuckDB's interrupt error in the thread that runs it. Returns how many connections
    were asked. Safe to call from any thread."""
    asked = 0
    for con in list(_LIVE):
        try:
            con.interrupt()
            asked += 1
        except duckdb.Error:  # closed meanwhile: nothing to interrupt
            continue
    return asked


def is_interruption(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB stopping a query for Ctrl-C (its Python client turns the
    KeyboardInterrupt into a RuntimeError) or for :func:`interrupt_all`."""
    return isinstance(exc, duckdb.InterruptException) or (
        isinstance(exc, RuntimeError) and str(exc).startswith("Query interrupted")
    )
