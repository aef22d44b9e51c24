"""Where MLflow runs and models live: a local SQLite store and artifact folder unless
MLFLOW_TRACKING_URI says otherwise. Called by CLI entries, never at import; shared by training
and serving (which must not import training). MLflow itself is imported by the functions that
use it: it takes about 1.8 s to import, which every command (and --help) paid when the CLI
registered the commands that import this module."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from portrait.errors import PortraitError, Unavailable, Unreachable, first_line
from portrait.store_errors import shown_store

DEFAULT_STORE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
_SQLITE = "sqlite:///"


def setup_tracking(workdir: Path | None = None) -> str:
    """Point MLflow at ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<workdir>/mlflow.db``; a SQLite
    store's file that is there but empty is refused now (:func:`empty_store`), before any work."""
    # MLflow and Optuna configure their loggers when imported; quiet them once they are.
    import logging

    import mlflow
    import optuna

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        workdir = (workdir or Path.cwd()).resolve()
        uri = f"sqlite:///{workdir / DEFAULT_STORE}"
    database = _sqlite_file(uri)
    if database is not None and (problem := empty_store(database)):
        raise PortraitError(problem)
    check_server_answers(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


SERVER_ATTEMPTS = 3  # a tracking server's port tried this many times, SERVER_WAIT_SECONDS apart
SERVER_WAIT_SECONDS = 2.0
SERVER_TIMEOUT_SECONDS = 5.0


def check_server_answers(uri: str) -> None:
    """Refuse an ``http(s)`` tracking URI whose server does not take a connection, tried
    :data:`SERVER_ATTEMPTS` times: MLflow's own retries (with back-off) took about 4 minutes to
    fail on a server that was down, after the command's first work. Not checked through a proxy
    (the connection goes to the proxy, which MLflow's requests will use)."""
    import socket
    import time
    from urllib.parse import urlparse
    from urllib.request import getproxies, proxy_bypass

    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    proxies = getproxies()
    if (parsed.scheme in proxies or "all" in proxies) and not proxy_bypass(parsed.hostname):
        return
    shown = f"{parsed.scheme}://{parsed.hostname}"  # no user or token
    try:
        given = parsed.port
    except ValueError:
        raise PortraitError(f"MLFLOW_TRACKING_URI={shown}:...: the port is not a number from 0 to 65535") from None
    shown += f":{given}" if given else ""
    port = given or (443 if parsed.scheme == "https" else 80)
    for attempt in range(SERVER_ATTEMPTS):
        try:
            with socket.create_connection((parsed.hostname, port), timeout=SERVER_TIMEOUT_SECONDS):
                return
        except OSError as exc:
            problem = exc
        if attempt + 1 < SERVER_ATTEMPTS:
            time.sleep(SERVER_WAIT_SECONDS)
    raise Unreachable(
        f"the MLflow tracking server at {shown} does not answer ({first_line(problem)}; "
        f"tried {SERVER_ATTEMPTS} times): start it, or point MLFLOW_TRACKING_URI at the store the models are in"
    )


def ensure_store() -> None:
    """Create (or upgrade) the current SQLite store now, one process at a time.

    MLflow creates a store's tables on first use; two first runs starting together would both
    run the schema migrations and the second would fail half-way ("duplicate column name").
    Writers (training) call this before their first use of the store; a store that exists
    already is only opened, which the first use would do anyway."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if problem := folder_store(uri):
        raise PortraitError(problem)
    database = _sqlite_file(uri)
    if database is None:
        return
    if problem := empty_store(database):
        raise PortraitError(problem)
    with _exclusive(_init_lock(database)):
        mlflow.tracking.MlflowClient(uri).search_experiments(max_results=1)


def _init_lock(database: Path) -> Path:
    """The lock a first run holds while it creates the store ``database`` (:func:`ensure_store`)."""
    return database.with_name(f".{database.name}.init-lock")


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store's URI (None for any other store, or one in memory)."""
    if not uri.startswith(_SQLITE) or ":memory:" in uri:
        return None
    return Path(uri[len(_SQLITE) :].split("?", 1)[0])


def folder_store(uri: str) -> str | None:
    """Why ``uri`` cannot be used, when it names a folder (``./mlruns``, ``file:///...``):
    MLflow 3 keeps folder stores in maintenance mode and refuses to write them, which failed a
    training run with a traceback after all its fitting (a user's test)."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    if uri in ("databricks", "databricks-uc"):  # MLflow's names of a workspace's store, not folders
        return None
    if scheme not in ("", "file") and len(scheme) != 1:  # C:\\mlruns parses as the scheme "c"
        return None
    return (
        f"MLFLOW_TRACKING_URI={uri} is a folder store, which MLflow 3 keeps read-only (maintenance mode): "
        "use a database store, e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow.db (mlflow migrate-filestore moves "
        "the folder's runs into one)"
    )


def missing_store() -> str | None:
    """Why the current registry cannot be read, when it is a SQLite file that does not exist or
    is empty (:func:`empty_store`), or a folder (:func:`folder_store`): readers (score, refresh,
    serve, promote) say so, where MLflow would create an empty store and answer that no model
    is registered."""
    import mlflow

    if problem := folder_store(mlflow.get_tracking_uri()):
        return problem
    database = _sqlite_file(mlflow.get_tracking_uri())
    if database is None:
        return None
    if database.is_file():
        return empty_store(database)
    return (
        f"the model registry {database} does not exist (MLFLOW_TRACKING_URI, or mlflow.db in the working folder "
        "by default): point MLFLOW_TRACKING_URI at the store the models were trained into, or train them "
        "(portrait train); nothing was created"
    )


def require_store() -> None:
    """For a command that only reads the registry (promote, personas show): the store must be
    there (:func:`missing_store`), not created empty by the first read."""
    if problem := missing_store():
        raise PortraitError(problem)


def empty_store(database: Path) -> str | None:
    """Why a SQLite store's file cannot be used when it is empty (0 bytes): what a full disk or
    a stray ``> mlflow.db`` leaves. MLflow would make a new store in it, and every command after
    would answer that no model is registered, or train into a history that is gone; a new store
    is the user's choice (remove the file), never made in its place."""
    if _size(database) != 0:
        return None
    # A first run creating the store holds its init lock while the file is still empty: wait for
    # it (a second run starting at the same moment refused the store being made), then look again.
    try:
        with _exclusive(_init_lock(database)):
            if _size(database) != 0:
                return None
    except OSError:  # no lock can be taken beside it (a read-only folder): nobody is creating it
        pass
    return (
        f"the MLflow store {database} is empty (0 bytes; a full disk or an overwrite?): restore it from a backup, "
        "or remove it to start a new store; nothing was written"
    )


def _size(database: Path) -> int | None:
    """The file's size; None when it is not there (a new store) or not readable (MLflow's
    error says which)."""
    try:
        return database.stat().st_size
    except OSError:
        return None


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An advisory lock held by one process at a time (released if the process dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def registry_unreachable(exc: Exception) -> Unavailable:
    """The registry itself could not be read (a server down, a store busy or broken), said as
    such: not as a model that does not exist."""
    import mlflow  # noqa: F401  (loaded, so that shown_store names its current store)

    return Unavailable(f"cannot read the model registry at {shown_store()}: {first_line(exc)}")


def load_version(name: str, version: str) -> tuple[object, dict]:
    """A registered version's python model (the pyfunc unwrapped) and its card (``meta.json``
    as stored). MLflow's and the file system's errors pass through for the caller to word."""
    import json

    import mlflow

    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return pyfunc.unwrap_python_model(), json.loads((folder / "artifacts" / "meta.json").read_text())
