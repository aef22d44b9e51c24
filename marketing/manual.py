"""Manual tag assignments: an append-only log of who assigned or removed which tag, when.

The store is one Parquet file (default ``tags/manual.parquet`` in the working folder,
``PORTRAIT_MANUAL_TAGS`` or ``--store`` to move it) with one row per action: ``action``
(assign or remove), ``tag``, ``customer_id`` (the person id after identity merging),
``given_id`` (the id as listed), ``at`` (UTC timestamp), ``by``, ``note`` and ``expires`` (an
ISO date, or empty).
Every change rewrites it through the atomic writer, so a reader sees the old log or the new one.
The log is only ever appended to, with one exception: :func:`forget_ids` (``portrait forget``)
removes a forgotten person's rows, history included.

A customer holds a manual tag as of a date when the latest action for that tag and customer
on or before that date is an assignment, and it has not expired by then (``expires`` is the
first day it no longer holds). Days are the data set's (its ``timezone``), as every as-of date:
a tag given at 00:30 in Berlin holds from that Berlin day, not from the UTC day before. The log
keeps the history, so earlier dates stay answerable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
from pathlib import Path

import pandas as pd

from portrait import contract
from portrait.errors import PortraitError
from portrait.files import atomic_write, exclusive_lock, read_parquet
from portrait.privacy import refuse_personal_text
from portrait.views import REMAP

STORE_ENV = "PORTRAIT_MANUAL_TAGS"
COLUMNS = ("action", "tag", "customer_id", "given_id", "at", "by", "note", "expires")
MAX_NOTE = 200  # characters of a note: why (a campaign, a ticket), not a customer's details


def check_note(note: str | None) -> None:
    """A note is kept in the log for every listed customer and read by whoever audits it: a
    reference, never a person's details (:func:`portrait.privacy.refuse_personal_text`)."""
    if note:
        refuse_personal_text(note, "--note", MAX_NOTE, "kept in the manual-tag log beside the customers")


def default_store() -> Path:
    return Path(os.environ.get(STORE_ENV) or "tags/manual.parquet")


def read_log(store: Path) -> pd.DataFrame:
    """The log in ``store``, checked: a file that is not a manual-tag log (another Parquet file,
    a data set's table, a CSV) is an error, never read as one nor appended to."""
    store = Path(store)
    if not store.exists():
        return pd.DataFrame({c: pd.Series(dtype="str") for c in COLUMNS}).astype({"at": "datetime64[us, UTC]"})
    if store.is_dir():
        raise PortraitError(f"the manual tags store {store} is a folder; give a .parquet file")
    try:
        log = read_parquet(store)
    except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors (ArrowInvalid)
        raise PortraitError(
            f"the manual tags store {store} is not a Parquet file ({str(exc).splitlines()[0][:120]}); "
            "give the manual tags log (default tags/manual.parquet) or a new file"
        ) from None
    missing = [c for c in COLUMNS if c not in log.columns]
    extra = [c for c in log.columns if c not in COLUMNS]
    if missing or extra:
        raise PortraitError(
            f"the manual tags store {store} is not a manual tags log (columns {list(log.columns)[:8]}; "
            f"a log has {list(COLUMNS)}): give the log or a new file"
        )
    if not isinstance(log["at"].dtype, pd.DatetimeTZDtype):
        raise PortraitError(f"the manual tags store {store} has an 'at' column that is not a UTC timestamp")
    return log


def read_ids(path: Path) -> pd.Series:
    """Customer ids from a CSV: its ``customer_id`` column (the first line is then the header),
    or, with one column and no such header, every line, the first included: a first line taken
    for a header would leave its id out without a word (a forget request half done). A header
    of another name is then read as an id, which the caller reports as unknown."""
    if not path.is_file():
        raise PortraitError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype="str", keep_default_na=False, header=None)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise PortraitError(f"{path}: cannot read the id list: {str(exc).splitlines()[0]}") from None
    header = [str(c).strip().lower() for c in frame.iloc[0]] if len(frame) else []
    if "customer_id" in header:
        ids = frame.iloc[1:, header.index("customer_id")]
    elif frame.shape[1] == 1:
        ids = frame.iloc[:, 0]
    else:
        raise PortraitError(  # the values are not shown: a headerless line may hold personal data
            f"{path}: expected a customer_id column or a single column (the first line has {frame.shape[1]} "
            "fields and no customer_id)"
        )
    ids = ids.str.strip().reset_index(drop=True)
    if not (ids != "").any():
        raise PortraitError(f"{path}: no customer ids in the file")
    return ids


def record(
    store: Path,
    action: str,
    tag: str,
    given_ids: pd.Series,
    person_ids: pd.Series,
    *,
    by: str | None = None,
    note: str | None = None,
    expires: dt.date | None = None,
) -> int:
    """Append one action for each id; returns how many rows were written."""
    if action not in ("assign", "remove"):
        raise ValueError(f"action must be assign or remove, got {action!r}")
    check_note(note)
    now = pd.Timestamp.now(tz="UTC").floor("us")
    rows = pd.DataFrame(
        {
            "action": action,
            "tag": tag,
            "customer_id": person_ids.astype("str").to_numpy(),
            "given_id": given_ids.astype("str").to_numpy(),
            "at": now,
            "by": by or _user(),
            "note": note,
            "expires": expires.isoformat() if expires else None,  # ISO text compares as dates do
        }
    )
    if Path(store).stem.lower() in contract.TABLES_BY_NAME:
        raise PortraitError(
            f"the manual tags store {store} is named like a data set table ({sorted(contract.TABLES_BY_NAME)}); "
            "give the manual tags log another name (default tags/manual.parquet)"
        )
    with store_lock(store):
        log = read_log(store)
        combined = pd.concat([log, rows], ignore_index=True) if len(log) else rows
        atomic_write(combined.astype({"at": "datetime64[us, UTC]"}), store)
    return len(rows)


# How long a write to the manual tags log waits for another one (an append takes well under a
# second; a forget rewriting a large log a few).
STORE_WAIT_SECONDS = 60.0


def store_lock(store: Path):
    """The one lock of ``store``'s read-append-write: without it two assignments at once each
    rewrote the log they had read, and one was lost (8 at once kept 20 of 40 rows), and an
    assignment read before a forget and written after it brought the forgotten person back."""
    store = Path(store)
    return exclusive_lock(
        store.parent / f".{store.name}.lock", f"a write to the manual tags log {store}", wait=STORE_WAIT_SECONDS
    )


def forget_ids(store: Path, ids: list[str], dry_run: bool = False) -> int:
    """Remove every row whose ``customer_id`` or ``given_id`` is one of ``ids`` (a forgotten
    person's merged ids), rewriting the store through the atomic writer: the one place the
    append-only log is rewritten without a row. Returns how many rows were (with ``dry_run``:
    would be) removed; a missing store or one without the person is left untouched."""
    store = Path(store)
    if not store.exists():
        return 0
    with store_lock(store) if not dry_run else contextlib.nullcontext():
        log = read_log(store)
        hit = log["customer_id"].astype("str").isin(ids) | log["given_id"].astype("str").isin(ids)
        removed = int(hit.sum())
        if removed and not dry_run:
            atomic_write(log[~hit.to_numpy()].reset_index(drop=True), store)
    return removed


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def assigned_later(store: Path, as_of: dt.date, tags: list[str] | None = None, timezone: str = "UTC") -> int:
    """How many assignments in ``store`` are dated after ``as_of``: they hold only from their
    own date, so tags as of an earlier one (a past date of a demo's data) do not show them."""
    log = read_log(store)
    if tags is not None:
        log = log[log["tag"].isin(tags)]
    # The latest action of each (tag, customer): an assignment later removed holds at no date.
    latest = log.sort_values("at", kind="stable").groupby(["tag", "customer_id"]).tail(1)
    later = latest["at"] >= _day_after(as_of, timezone)
    return int(((latest["action"] == "assign") & later).sum())


def _day_after(as_of: dt.date, timezone: str = "UTC") -> pd.Timestamp:
    """The first instant an action no longer counts as of ``as_of`` (the module's rule: an
    action on the as-of day itself holds on it): the next midnight in ``timezone``."""
    # a midnight that happens twice (clocks back from 01:00, Atlantic/Azores): the first
    midnight = pd.Timestamp(as_of + dt.timedelta(days=1)).tz_localize(
        timezone, ambiguous=True, nonexistent="shift_forward"
    )
    return midnight.tz_convert("UTC")


def holders(store: Path, as_of: dt.date, tags: list[str] | None = None, timezone: str = "UTC") -> pd.DataFrame:
    """``tag``, ``customer_id``, ``since`` (date assigned) for the manual tags that hold on
    ``as_of`` (see the module docstring)."""
    log = read_log(store)
    if tags is not None:
        log = log[log["tag"].isin(tags)]
    log = log[log["at"] < _day_after(as_of, timezone)]
    if log.empty:
        return pd.DataFrame({"tag": [], "customer_id": [], "since": []}, dtype="object")
    latest = log.sort_values("at", kind="stable").groupby(["tag", "customer_id"], as_index=False).tail(1)
    holding = latest[
        (latest["action"] == "assign") & (latest["expires"].isna() | (latest["expires"] > as_of.isoformat()))
    ]
    return pd.DataFrame(
        {
            "tag": holding["tag"].to_numpy(),
            "customer_id": holding["customer_id"].astype("str").to_numpy(),
            "since": holding["at"].dt.tz_convert(timezone).dt.date.to_numpy(),
        }
    )


def as_persons(con, held: pd.DataFrame) -> pd.DataFrame:
    """``held`` (:func:`holders`) with each stored id read as the person it belongs to now: an
    assignment is stored under the person of its day, and identities merged since (an
    identities table that arrived, a new shared identifier) put it under another person, whom
    the tags must follow (a VIP merged into another id lost the tag, and a "complained"
    exclusion stopped holding). One person holding a tag through two merged ids holds it once,
    since the first. ``con``: a connection or engine with the data set's views."""
    from portrait.engine import as_engine
    from portrait.views import REMAP

    engine = as_engine(con)
    if held.empty or not engine.has_relation(REMAP):
        return held
    engine.register_frame("_manual_ids", pd.DataFrame({"customer_id": pd.unique(held["customer_id"])}))
    try:
        moved = dict(
            engine.rows(
                f"SELECT customer_id, person_id FROM {REMAP} WHERE customer_id IN (SELECT customer_id FROM _manual_ids)"
            )
        )
    finally:
        engine.drop("_manual_ids")
    if not moved:
        return held
    persons = held["customer_id"].map(moved).fillna(held["customer_id"]).astype("str")
    merged = held.assign(customer_id=persons.to_numpy()).sort_values("since", kind="stable")
    return merged.drop_duplicates(["tag", "customer_id"]).reset_index(drop=True)


def resolve_ids(con, ids: pd.Series) -> pd.DataFrame:
    """``given_id``, ``customer_id`` (the person after identity merging) and ``known`` (the
    person has a purchase, event or customers row in the data set) for each listed id.

    Each table is read under its ids as written (``clean_<table>``) for the listed persons' ids
    only: a semi-join on a few ids, not the set of every person's id built through the identity
    map (12 s at 1M customers for one id)."""
    given = pd.DataFrame({"given_id": ids.astype("str").to_numpy()})
    con.register("_given_ids", given)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        seen = " UNION ALL ".join(
            f"SELECT customer_id FROM clean_{t} WHERE customer_id IN (SELECT raw_id FROM ids)"
            for t in ("purchases", "events", "customers")
            if f"clean_{t}" in views
        )
        return con.execute(
            f"""WITH persons AS (
                    SELECT g.given_id, COALESCE(m.person_id, g.given_id) AS customer_id
                    FROM _given_ids g LEFT JOIN {REMAP} m ON g.given_id = m.customer_id),
                ids AS (  -- every id written for a listed person: its own and those merged into it
                    SELECT customer_id AS raw_id, customer_id FROM persons
                    UNION SELECT m.customer_id, m.person_id FROM {REMAP} m
                    WHERE m.person_id IN (SELECT customer_id FROM persons)),
                known AS (SELECT DISTINCT i.customer_id FROM ids i JOIN ({seen}) s ON s.customer_id = i.raw_id)
                SELECT given_id, customer_id, customer_id IN (SELECT customer_id FROM known) AS known FROM persons"""
        ).df()
    finally:
        con.unregister("_given_ids")
