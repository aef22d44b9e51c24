"""The product's DuckDB connections, each one known so that a stop can interrupt it.

A Python signal handler runs only when the main thread next runs Python code. DuckDB's Python
client checks for Ctrl-C now and then, but in measured runs it often did not notice it (nor a
SIGTERM) until the query ended: minutes on a large data set, past a scheduler's grace period.
Every connection the product opens goes through :func:`connect`, so that
:func:`interrupting_queries` can interrupt them from another thread as soon as the signal
arrives, while the main thread waits in a query.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import duckdb

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()  # a copy of the set while another thread adds to it raises
# Other engines' ways to stop their running work (a Spark session's job cancelling), by name.
_STOPPERS: dict[str, Callable[[], None]] = {}


def on_interrupt(name: str, stop: Callable[[], None]) -> None:
    """Have :func:`interrupt_all` also call ``stop`` (from its thread), e.g. to cancel a Spark
    session's jobs; a later call under the same ``name`` replaces it."""
    _STOPPERS[name] = stop


def connect(database: str = ":memory:", read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A new DuckDB connection (in memory unless ``database`` names a file), known to
    :func:`interrupt_all` for as long as it lives."""
    con = duckdb.connect(database, read_only=read_only)
    with _LIVE_LOCK:
        _LIVE.add(con)
    return con


def interrupt_all() -> int:
    """Interrupt the query each live connection is running (none: nothing happens), and call
    every :func:`on_interrupt` stopper; the query raises DuckDB's interrupt error in the thread
    that runs it. Returns how many were asked. Safe to call from any thread."""
    asked = 0
    with _LIVE_LOCK:
        live = list(_LIVE)
    for con in live:
        try:
            con.interrupt()
            asked += 1
        except duckdb.Error:  # closed meanwhile: nothing to interrupt
            continue
    for stop in list(_STOPPERS.values()):
        stop()
        asked += 1
    return asked


def is_interruption(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB stopping a query for Ctrl-C (its Python client turns the
    KeyboardInterrupt into a RuntimeError) or for :func:`interrupt_all`."""
    return isinstance(exc, duckdb.InterruptException) or (
        isinstance(exc, RuntimeError) and str(exc).startswith("Query interrupted")
    )


# After a stop, the live connections are interrupted again every REPEAT_EVERY seconds for
# REPEAT_FOR seconds (the stopped command does not start new work meanwhile).
REPEAT_EVERY, REPEAT_FOR = 0.1, 3.0
# ... and for at most FINISHED_REPEAT_FOR seconds once the command has ended: it waits for them,
# and a connection still open then (one the failure's traceback holds until it is reported)
# made every such stop 3 s long.
FINISHED_REPEAT_FOR = 1.5


@contextlib.contextmanager
def interrupting_queries(interrupts: Callable[[int], bool]) -> Iterator[None]:
    """While it lasts, a thread calls :func:`interrupt_all` as soon as a signal arrives for which
    ``interrupts(signal number)`` is true (a signal with a Python handler: SIGINT's default one,
    or one the caller installed). Python's C-level handler writes the signal's number to a
    wakeup socket at once, even while the main thread waits in a query; the Python handler
    still runs afterwards, in the main thread, as usual. Outside the main thread it does
    nothing (a wakeup socket belongs to the main thread); nested, the inner one watches until it
    ends and the outer one watches again after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    finished = threading.Event()
    finished_by = [float("inf")]  # when the repeats end at the latest, once the command has ended
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        stopping: bytes = b""  # the signals of a stop under way, and until when to repeat it
        until = 0.0
        asked = 0  # the connections (and stoppers) the last round interrupted
        while True:
            reader.settimeout(REPEAT_EVERY if stopping else None)
            try:
                received = reader.recv(64)
            except TimeoutError:
                received = None
            if received == b"":
                return
            if received and any(interrupts(number) for number in received):
                stopping, until = received, time.monotonic() + REPEAT_FOR
            if stopping and any(interrupts(number) for number in stopping):
                # again for a moment: a query another thread was about to start when the signal
                # came (an interrupt then finds nothing to stop) would run to its end otherwise
                try:
                    asked = interrupt_all()
                except Exception:  # noqa: BLE001 - the watcher outlives one failed round
                    log.exception("interrupting the running queries failed")
            if stopping and time.monotonic() >= until:
                stopping = b""
            # Finished (the command ended, often at once on the stop): only after the signals
            # received are acted on (the stop's byte and the end's can come in one read, and the
            # stop was then dropped), and a stop under way is repeated to its end first (a query
            # another thread started a moment after the signal ran on otherwise, past a minute)
            # while a connection is open to start one, for at most FINISHED_REPEAT_FOR; with none
            # open the command ends at once (it waited the whole REPEAT_FOR, 3 s, on every stop).
            if finished.is_set() and (not stopping or not asked or time.monotonic() >= finished_by[0]):
                return

    watcher = threading.Thread(target=watch, name="portrait-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        finished_by[0] = time.monotonic() + FINISHED_REPEAT_FOR
        finished.set()
        writer.send(b"\0")
        watcher.join(timeout=5)
        reader.close()
        writer.close()
