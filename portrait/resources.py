"""What a process uses: CPU seconds, peak memory, the machine's memory, and DuckDB's memory
limit for a stretch of work. Small and without imports above the foundation, so the feature
build's step log, the refresh's per-step meters and the profile material share one reading."""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
from pathlib import Path

import duckdb


def cpu_seconds() -> float:
    """User + system seconds of every thread of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> None:
    """Start this process's peak memory (VmHWM) afresh (Linux; elsewhere nothing happens)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started or since :func:`reset_peak_rss`
    (Linux's VmHWM; elsewhere the peak since the start)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_UNITS = {"": 1, "bytes": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def size_bytes(text: str) -> float:
    """DuckDB's memory limit text ("18.8 GiB", "500MB") in bytes; infinity when unreadable."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match[2].lower() not in _UNITS:
        return math.inf
    return float(match[1]) * _UNITS[match[2].lower()]


# DuckDB's memory for the refresh's whole-population writes (the profile and crowd material), as
# a share of the machine's memory; DuckDB spills beyond it. Ranking every customer's events
# (106M rows on the 1M benchmark) took 10.5 GB under DuckDB's default limit (80% of memory) and
# the refresh process peaked at 16.5 GB; with 6 GB on the 24 GB machine the same query spilled,
# peaked at 5.8 GB and ran faster (84.7 s against 99.3 s). The crowd material's sorted copy of
# every purchase line (21M) took the refresh to 13.35 GB before it was bounded the same way.
MATERIAL_MEMORY_SHARE = 0.25


@contextlib.contextmanager
def duckdb_memory_limit(con: duckdb.DuckDBPyConnection, share: float):
    """DuckDB's memory limit lowered to ``share`` of the machine's memory (at least 1 GiB, never
    raised) while inside, then put back; DuckDB spills to its temporary directory beyond it."""
    physical = physical_memory_bytes()
    previous = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    limit = max(2**30, int(physical * share)) if physical else math.inf
    if limit >= size_bytes(previous):
        yield  # unknown machine memory, or the connection's own limit is lower already
        return
    con.execute(f"SET memory_limit = '{limit // 2**20}MB'")
    try:
        yield
    finally:
        try:
            con.execute(f"SET memory_limit = '{previous}'")
        except duckdb.ConnectionException:  # closed meanwhile (a stopped refresh closes its connections)
            pass
