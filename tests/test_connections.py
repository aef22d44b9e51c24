"""Stopping the product's DuckDB queries from another thread (portrait/connections.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import duckdb

from portrait import connections


def _long_query(con, ended: list, after: float = 0.0) -> None:
    """Minutes of work on ``con`` (40 billion rows), started ``after`` seconds; how it ended goes
    to ``ended``."""
    time.sleep(after)
    try:
        con.execute("SELECT SUM(hash(i) % 7) FROM range(40000000000) t(i)").fetchall()
        ended.append("completed")
    except duckdb.InterruptException:
        ended.append("interrupted")


def test_a_query_started_just_after_a_stop_is_interrupted_too():
    """A stop interrupted the queries running when it came: one another thread started a moment
    later (a refresh's step starting under load) ran to its end, minutes at scale. For a moment
    after a stop the live connections are interrupted again."""
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: None)  # a Python handler: the wakeup fd hears it
    ended = []
    try:
        with connections.interrupting_queries(lambda number: number == signal.SIGUSR1):
            con = connections.connect()
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.5)  # the stop has been heard: nothing was running then

            worker = threading.Thread(target=_long_query, args=(con, ended), daemon=True)
            worker.start()
            worker.join(timeout=30)
            assert ended == ["interrupted"]
            assert connections.REPEAT_FOR > 0.5
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_stop_is_repeated_to_its_end_after_the_command_ends():
    """The command ends at once on a stop (its handler raises), which ended the repeats too: a
    query another thread started a moment later ran on (a refresh test under load, past a minute)."""
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: None)
    ended = []
    con = connections.connect()

    worker = threading.Thread(target=_long_query, args=(con, ended, 0.5), daemon=True)  # after the command ends
    try:
        with connections.interrupting_queries(lambda number: number == signal.SIGUSR1):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.1)  # the stop is heard; the command ends now
            worker.start()
        worker.join(timeout=30)
        assert ended == ["interrupted"]
    finally:
        con.interrupt()
        signal.signal(signal.SIGUSR1, previous)


def test_interrupting_while_other_threads_open_connections_does_not_fail():
    """The watcher copies the set of live connections while commands open more: unguarded, the
    copy raised "Set changed size during iteration" and the watcher died."""
    failures, stop = [], threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                connections.interrupt_all()
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                failures.append(exc)

    worker = threading.Thread(target=hammer, daemon=True)
    worker.start()
    try:
        for _ in range(300):
            connections.connect().close()
    finally:
        stop.set()
        worker.join(timeout=10)
    assert failures == []


def test_a_stopped_command_with_no_connection_left_open_ends_without_waiting_for_the_repeats(monkeypatch):
    """Every stop took REPEAT_FOR (3 s) more, also when the command had closed its connections
    and nothing could start another query (the README's "within a second")."""
    monkeypatch.setattr(connections, "REPEAT_FOR", 60.0)
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: None)
    try:
        started = time.monotonic()
        with connections.interrupting_queries(lambda number: number == signal.SIGUSR1):
            connections.connect().close()  # the command's connection, closed as it stops
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.3)  # the stop is heard; the command ends now
        assert time.monotonic() - started < 3  # not the 60 s of repeats, nor the 5 s the exit waits for them at most
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_connection_left_open_holds_a_stopped_command_for_the_finished_repeats_only(monkeypatch):
    """A connection the failure's traceback still held kept the repeats, and the command, going
    for the whole REPEAT_FOR (3 s) after every stop of a refresh at its features step."""
    monkeypatch.setattr(connections, "REPEAT_FOR", 60.0)
    monkeypatch.setattr(connections, "FINISHED_REPEAT_FOR", 0.5)
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: None)
    con = connections.connect()  # open, running nothing
    try:
        with connections.interrupting_queries(lambda number: number == signal.SIGUSR1):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.3)
            ending = time.monotonic()
        ended = time.monotonic()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        con.close()
    assert ended - ending < 3  # 0.5 s of repeats, not the 5 s the exit waits for them at most


def test_a_data_set_connection_whose_views_fail_is_closed(monkeypatch, tmp_path):
    """A stop while the views were registered left the connection open, held by the failure's
    traceback until it was reported: the stop's interrupts went on for it (a refresh stopped
    at its features step took 3 s more)."""
    import pandas as pd
    import pytest

    import portrait.dataset as dataset_module
    from portrait.dataset import open_dataset

    pd.DataFrame({"order_id": ["o1"], "customer_id": ["c1"], "ts": ["2024-01-01"], "amount": [1.0]}).to_csv(
        tmp_path / "purchases.csv", index=False
    )
    opened, real_connect = [], connections.connect

    def recorded(*args, **kwargs):
        opened.append(real_connect(*args, **kwargs))
        return opened[-1]

    def stopped(con, dataset):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_module.connections, "connect", recorded)
    monkeypatch.setattr(dataset_module, "register_views", stopped)
    with pytest.raises(KeyboardInterrupt):
        open_dataset(tmp_path).connect()
    with pytest.raises(duckdb.ConnectionException):
        opened[0].execute("SELECT 1")
