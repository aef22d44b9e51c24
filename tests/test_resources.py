"""portrait/resources.py: DuckDB's memory limit for a stretch of work (the refresh's profile
material), and the limit text it reads."""

from __future__ import annotations

import duckdb
import pytest

from portrait.resources import duckdb_memory_limit, size_bytes


def test_duckdb_memory_limit_is_lowered_within_and_put_back_after():
    assert size_bytes("18.8 GiB") == pytest.approx(18.8 * 2**30)
    assert size_bytes("500MB") == 500e6 and size_bytes("unreadable") == float("inf")
    con = duckdb.connect()
    con.execute("SET memory_limit = '1000GB'")

    def limit() -> float:
        return size_bytes(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])

    with duckdb_memory_limit(con, 0.001):
        assert limit() < 1000e9 / 2  # lowered (to at least 1 GiB)
    assert limit() == pytest.approx(1000e9, rel=0.01)  # put back
    con.execute("SET memory_limit = '1GB'")
    with duckdb_memory_limit(con, 0.5):
        assert limit() == pytest.approx(1e9, rel=0.01)  # never raised


def test_a_connection_closed_inside_the_limit_ends_it_quietly():
    """A stopped refresh closes its connections while the crowd material is inside the limit:
    putting it back raised 'Connection already closed' as a traceback after the one-line error."""
    con = duckdb.connect()
    con.execute("SET memory_limit = '1000GB'")
    with duckdb_memory_limit(con, 0.001):
        con.close()
