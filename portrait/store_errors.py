"""The MLflow store's database errors as one line for the person running the command (MLflow
lets SQLAlchemy's and sqlite3's errors through, or wraps them in its own). Imports nothing
heavy: the command line reads it at start."""

from __future__ import annotations

import re
import sys

from portrait.errors import TRY_AGAIN_LATER, Busy, first_line


def shown_store() -> str:
    """The current MLflow tracking URI as messages show it: without a user name, password or
    token (``postgresql://mlflow:s3cret@db/...`` is shown ``postgresql://db/...``)."""
    mlflow = sys.modules.get("mlflow")
    return without_credentials(mlflow.get_tracking_uri()) if mlflow is not None else "(MLFLOW_TRACKING_URI)"


def without_credentials(text: str) -> str:
    """``text`` (a URI, or a message holding some) without the user and password of each URI's
    authority part."""
    return re.sub(r"\b([A-Za-z][\w+.-]*://)[^/@\s]*@", r"\1", text)


def tracking_store_problem(exc: BaseException) -> tuple[str, int] | None:
    """One line for an MLflow store's database that cannot be used (MLflow lets SQLAlchemy's and
    sqlite3's errors through), and the exit code: locked by another command (75: run again
    later), or damaged (2). None for anything else."""
    module = type(exc).__module__.split(".")[0]
    schema = re.search(r"database schema \(found version (\w+), but expected (\w+)\)", str(exc))
    if module == "mlflow" and schema is not None:  # a store another MLflow version wrote: a traceback was all
        mlflow = sys.modules.get("mlflow")
        store = shown_store()
        version = getattr(mlflow, "__version__", "?")
        return (
            f"the MLflow store {store} cannot be used: its schema is {schema.group(1)}, and this MLflow ({version}) "
            f"reads {schema.group(2)}: a store written by a newer MLflow needs that MLflow here; an older store "
            "is brought up to date by `mlflow db upgrade URI` (back it up first)",
            2,
        )
    wrapped = re.search(r"\(sqlite3\.\w+\) ([^\n\[]+)", str(exc)) if module == "mlflow" else None
    if module not in ("sqlalchemy", "sqlite3") and wrapped is None:  # MLflow wraps some of them
        return None
    if wrapped is not None:
        reason = wrapped.group(1).strip()
    else:
        reason = first_line(getattr(exc, "orig", None) or exc)
    store = shown_store()
    code = 2
    if "locked" in reason:
        hint = "another command is writing to it, a training, a promotion or a refresh: run this again when it has finished"
        code = TRY_AGAIN_LATER
    elif "not a database" in reason or "malformed" in reason:
        hint = "the file is damaged: restore it from a backup, or point MLFLOW_TRACKING_URI at another store"
    else:
        hint = "check the store, or point MLFLOW_TRACKING_URI at another one"
    return f"the MLflow store {store} cannot be used: {reason} ({hint})", code


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another process holds what was needed (a lock, a locked MLflow
    store): the same command can simply run again later (exit 75)."""
    problem = tracking_store_problem(exc)
    return isinstance(exc, Busy) or (problem is not None and problem[1] == TRY_AGAIN_LATER)
