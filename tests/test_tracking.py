"""The MLflow store's checks before any work (portrait/tracking.py)."""

from __future__ import annotations

import socket

import pytest

from portrait import tracking
from portrait.errors import TRY_AGAIN_LATER, Unreachable


def _closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tracking_server_that_does_not_answer_is_said_at_once(monkeypatch):
    """MLflow's retries took about 4 minutes to fail on a server that was down."""
    waits = []
    monkeypatch.setattr("time.sleep", waits.append)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(
        Unreachable, match=rf"^the MLflow tracking server at {uri} does not answer \(.*refused; tried 3 times\)"
    ):
        tracking.check_server_answers(uri)
    assert waits == [2.0, 2.0] and Unreachable.exit_code == TRY_AGAIN_LATER
    with pytest.raises(Exception, match="the port is not a number"):
        tracking.check_server_answers("http://127.0.0.1:99999")
    # a URI's user and token never reach the message (a log, a scheduler's mail)
    port = _closed_port()
    with pytest.raises(Unreachable) as said:
        tracking.check_server_answers(f"http://alice:s3cret-token@127.0.0.1:{port}/mlflow")
    assert f"at http://127.0.0.1:{port} does not answer" in str(said.value) and "s3cret" not in str(said.value)


def test_a_tracking_server_that_answers_or_a_store_that_is_no_server_passes(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        tracking.check_server_answers(f"http://127.0.0.1:{server.getsockname()[1]}")
    for uri in ("sqlite:///mlflow.db", "databricks", "./mlruns"):
        tracking.check_server_answers(uri)  # nothing to connect to
    monkeypatch.setenv("all_proxy", "socks5://proxy.invalid:1080")  # ALL_PROXY alone is a proxy too
    tracking.check_server_answers(f"http://10.255.255.1:{_closed_port()}")
    monkeypatch.delenv("all_proxy")
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")  # the proxy connects, not this machine
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    tracking.check_server_answers(f"http://10.255.255.1:{_closed_port()}")
