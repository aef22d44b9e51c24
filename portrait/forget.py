"""Forgetting a customer: the right to be forgotten.

:func:`forget` takes customer ids, resolves each through identity merging to the whole person
(every merged customer id and the person's identity values), then

1. records a **tombstone** in the data set (``DATASET/.portrait/tombstones.parquet``; for a
   DuckDB file, ``FILE.portrait/`` beside it): per customer id and identity value a salted
   SHA-256 hash, its kind (``customer_id`` or ``identity``), the request it came from, the time
   and a reason text; never the id or the value. The salt is created once, beside it
   (``tombstones.salt``; every reader of the data set needs it). Tombstones are only ever added: the file
   is rewritten whole, old rows plus new, through the atomic writer;
2. from then on every read of the data set leaves the person out (:func:`register_tombstones`,
   called where the views are built): rows whose customer id is tombstoned, and identities rows
   whose value is, are dropped from ``raw_<table>``, the first view, so validation, quarantine,
   identity merging, features, scores, tags, segments, lists and crowds never see them, and a
   later import of files that still hold the person leaves them out again. Validation counts
   them per table as ``forgotten`` (a count, never the ids). The Spark engine does the same at
   its ``raw_<table>`` (:mod:`portrait.spark_engine`), with the SHA-256 of the same key text
   (:func:`_keys`; Spark's ``sha2``) checked per row against the tombstones' hashes: it has no
   DuckDB hash, so no probes;
3. removes the person's rows from the stored outputs: every Parquet and CSV file under the
   given folders with a ``customer_id`` (or ``person_id``, ``given_id``) column, each rewritten
   through the atomic writer, files without the person untouched; and from the manual tag store
   through the caller's ``forget_manual_ids`` (the command passes :func:`marketing.manual.forget_ids`:
   this module imports nothing above ``portrait``).

The tombstone is written first, so a run that stops halfway is completed by running it again.

**Cost.** Checking a SHA-256 per row would cost ~8 s per 21M purchase lines; instead each
tombstone also has a *probe*: DuckDB's 64-bit ``hash(salt, kind, value)`` of the same key,
kept in ``tombstones.probes.json`` with a check value of the hash function. A read computes the
probe per row and anti-joins it with the handful of tombstone probes (measured +0.1-0.2 s per
21M rows). Should the probes be missing or the check differ (another DuckDB version hashing
otherwise), they are found again from the SHA-256 hashes of the data's distinct ids and
identity values (one pass over the tables), and stored again when the folder is writable.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from portrait.errors import PortraitError, first_line
from portrait.files import (
    atomic_target,
    atomic_write,
    atomic_write_text,
    clean_stale_temporaries,
    exclusive_lock,
    read_parquet,
)
from portrait.identity import MAX_IDS_PER_IDENTIFIER
from portrait.outputs import LOCK as REFRESH_LOCK
from portrait.outputs import RUNS, SEGMENT_RECORD_LOCK, SEGMENT_RECORD_WAIT_SECONDS, abandoned_runs
from portrait.privacy import has_identity_map, refuse_personal_text

if TYPE_CHECKING:
    import duckdb

    from portrait.dataset import Dataset

log = logging.getLogger(__name__)

FOLDER = ".portrait"
TOMBSTONES = "tombstones.parquet"
PROBES = "tombstones.probes.json"
SALT = "tombstones.salt"
LOCK = "forget.lock"
CUSTOMER = "customer_id"  # kinds of tombstone
IDENTITY = "identity"
TOMBSTONE_COLUMNS = ("hash", "kind", "request", "forgotten_at", "reason")
# Columns of stored outputs that hold customer ids: a row is the person's when any of them is.
ID_COLUMNS = ("customer_id", "person_id", "given_id")
# Columns of the contract a tombstone is checked against, per table.
KEY_COLUMNS = ("customer_id", "id_type", "id_value")
_SALT_VARIABLE = "portrait_forget_salt"
_PROBES_TABLE = "_forgotten_probes"
_PENDING_TABLE = "_forgotten_pending"
_CHECK_KEY = ("portrait-forget-check", CUSTOMER, "0")
_OUTPUT_SUFFIXES = (".parquet", ".csv")

# Set while the forget command reads the data set as it is, tombstoned rows included.
_unfiltered = contextvars.ContextVar("portrait_forget_unfiltered", default=False)


# ---------------------------------------------------------------- where and how


def folder_of(dataset: Dataset) -> Path | None:
    """Where the data set's tombstones live (None for in-memory frames)."""
    return None if dataset.root is None else _folder_at(Path(dataset.root))


def _folder_at(root: Path) -> Path:
    """The tombstones' folder of the data set at ``root``: in its folder, or beside its DuckDB file."""
    return root / FOLDER if root.is_dir() else root.with_name(root.name + FOLDER)


def tombstone_files(dataset: Dataset) -> list[Path]:
    """The tombstone file when there is one (for the data set's fingerprint)."""
    folder = folder_of(dataset)
    return [folder / TOMBSTONES] if folder is not None and (folder / TOMBSTONES).is_file() else []


def _key_sql(kind: str, parts: Sequence[str]) -> str:
    """SQL: the SHA-256 hex of a tombstone key (salt, kind, then the value's parts)."""
    joined = " || chr(31) || ".join(f"CAST({p} AS VARCHAR)" for p in parts)
    return f"sha256(getvariable('{_SALT_VARIABLE}') || chr(31) || '{kind}' || chr(31) || {joined})"


def _probe_sql(kind: str, parts: Sequence[str]) -> str:
    """SQL: the 64-bit probe of the same key (DuckDB's hash, cheap enough for every row)."""
    return f"hash(getvariable('{_SALT_VARIABLE}'), '{kind}', {', '.join(f'CAST({p} AS VARCHAR)' for p in parts)})"


def _keys(table: str, exprs: dict[str, str]) -> list[tuple[str, list[str]]]:
    """The tombstone keys a row of ``table`` has: (kind, SQL of its parts)."""
    keys = [(CUSTOMER, [exprs["customer_id"]])] if "customer_id" in exprs else []
    if table == "identities" and {"id_type", "id_value"} <= set(exprs):
        keys.append((IDENTITY, [exprs["id_type"], exprs["id_value"]]))
    return keys


# ---------------------------------------------------------------- the read side


def register_tombstones(con: duckdb.DuckDBPyConnection, dataset: Dataset) -> bool:
    """Load the data set's tombstones into ``con`` before its views are built; return whether
    there are any (then the views call :func:`exclude_forgotten`). No tombstone file: nothing
    is done and the views are as they always were."""
    folder = folder_of(dataset)
    if _unfiltered.get() or folder is None or not (folder / TOMBSTONES).is_file():
        return False
    salt = _read_salt(folder)
    if salt is None:
        raise missing_salt(folder / TOMBSTONES, folder / SALT)
    con.execute(f"SET VARIABLE {_SALT_VARIABLE} = ?", [salt])
    hashes = read_parquet(folder / TOMBSTONES, columns=["hash"])["hash"].astype("str")
    stored = _read_probes(folder, con)
    known = hashes[hashes.isin(list(stored["probes"]))]
    probes = pd.DataFrame({"probe": pd.Series([stored["probes"][h] for h in known], dtype="uint64")})
    pending = hashes[~hashes.isin(list(stored["probes"]))]
    if len(pending) and stored.get("unresolved_fingerprint") == dataset.fingerprint():
        pending = pending.iloc[:0]  # looked for in these very files already: not in them
    con.register("_forget_frame", probes)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_PROBES_TABLE} AS SELECT DISTINCT probe FROM _forget_frame")
    con.unregister("_forget_frame")
    con.register("_forget_frame", pd.DataFrame({"hash": pending.drop_duplicates().to_numpy()}))
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_PENDING_TABLE} AS SELECT CAST(hash AS VARCHAR) AS hash FROM _forget_frame"
    )
    con.unregister("_forget_frame")
    return True


def exclude_forgotten(con: duckdb.DuckDBPyConnection, table: str, raw_sql: str, exprs: dict[str, str]) -> str:
    """The query ``raw_<table>`` should be, given ``raw_sql`` (the table as read) and ``exprs``
    (SQL of the parsed text of its key columns, as the later views hold them): the rows
    whose customer id (identities: or identity value) is tombstoned left out. Also registers
    ``forgotten_<table>`` (those rows, for validation's count) and the table's distinct keys
    (to find probes again, see the module docstring)."""
    keys = _keys(table, exprs)
    if not keys:
        return raw_sql
    con.execute(f"CREATE OR REPLACE VIEW unfiltered_raw_{table} AS {raw_sql}")
    hit = " OR ".join(f"{_probe_sql(kind, parts)} IN (SELECT probe FROM {_PROBES_TABLE})" for kind, parts in keys)
    con.execute(f"CREATE OR REPLACE VIEW forgotten_{table} AS SELECT * FROM unfiltered_raw_{table} WHERE {hit}")
    distinct = " UNION ALL ".join(
        f"SELECT DISTINCT '{kind}' AS kind, {parts[0]} AS part1, "
        f"{parts[1] if len(parts) > 1 else 'CAST(NULL AS VARCHAR)'} AS part2 FROM unfiltered_raw_{table}"
        for kind, parts in keys
    )
    con.execute(f"CREATE OR REPLACE VIEW _forget_keys_{table} AS {distinct}")
    return f"SELECT * FROM unfiltered_raw_{table} WHERE NOT ({hit})"


def finish_tombstones(con: duckdb.DuckDBPyConnection, dataset: Dataset, tables: Sequence[str]) -> None:
    """After every table's views exist: find the probes of tombstones that have none (see the
    module docstring) from the distinct keys of ``tables``; nothing to do in the usual case."""
    if not con.execute(f"SELECT COUNT(*) FROM {_PENDING_TABLE}").fetchall()[0][0]:
        return
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    sources = [f"SELECT * FROM _forget_keys_{t}" for t in tables if f"_forget_keys_{t}" in views]
    if not sources:
        return
    # Distinct keys first, into a table, so SHA-256 runs once per id, never once per row.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _forget_candidates AS SELECT DISTINCT * FROM ({' UNION ALL '.join(sources)}) k"
    )
    found = con.execute(
        f"""SELECT hash, probe FROM (
            SELECT CASE kind WHEN '{CUSTOMER}' THEN {_key_sql(CUSTOMER, ["part1"])}
                             ELSE {_key_sql(IDENTITY, ["part1", "part2"])} END AS hash,
                   CASE kind WHEN '{CUSTOMER}' THEN {_probe_sql(CUSTOMER, ["part1"])}
                             ELSE {_probe_sql(IDENTITY, ["part1", "part2"])} END AS probe
            FROM _forget_candidates) c
        WHERE hash IN (SELECT hash FROM {_PENDING_TABLE})"""
    ).fetchall()
    con.execute("DROP TABLE _forget_candidates")
    con.executemany(f"INSERT INTO {_PROBES_TABLE} VALUES (?)", [[int(p)] for _, p in found])
    folder = folder_of(dataset)
    pending = {r[0] for r in con.execute(f"SELECT hash FROM {_PENDING_TABLE}").fetchall()}
    unresolved = pending - {h for h, _ in found}
    try:
        stored = _read_probes(folder, con)
        stored["probes"].update({h: int(p) for h, p in found})
        if unresolved:
            stored["unresolved_fingerprint"] = dataset.fingerprint()
        atomic_write_text(json.dumps(stored), folder / PROBES)
    except OSError as exc:  # a read-only data set: the probes are found again next time
        log.info("could not store the tombstone probes in %s: %s", folder, exc)


def forgotten_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """How many rows of ``table`` belong to forgotten customers (0 without tombstones)."""
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if f"forgotten_{table}" not in views:
        return 0
    return int(con.execute(f"SELECT COUNT(*) FROM forgotten_{table}").fetchall()[0][0])


def _check_value(con) -> int:
    return int(con.execute("SELECT hash(?, ?, ?)", list(_CHECK_KEY)).fetchall()[0][0])


def _read_probes(folder: Path, con) -> dict:
    """The stored probes ({hash: probe}), or none when missing, unreadable or made by a hash
    function that differs from this DuckDB's."""
    empty = {"check": _check_value(con), "probes": {}}
    try:
        stored = json.loads((folder / PROBES).read_text())
    except (OSError, ValueError):
        return empty
    if (
        not isinstance(stored, dict)
        or stored.get("check") != empty["check"]
        or not isinstance(stored.get("probes"), dict)
    ):
        return empty
    return stored


def _read_salt(folder: Path) -> str | None:
    try:
        text = (folder / SALT).read_text()
    except OSError:
        return None
    return valid_salt(text)


def valid_salt(text: str) -> str | None:
    """The salt a salt file's ``text`` holds, or None when it is damaged (the Spark engine
    reads the file of a remote data set itself)."""
    salt = text.strip()
    return salt if len(salt) == 64 and all(c in "0123456789abcdef" for c in salt) else None


def missing_salt(tombstones: Path | str, salt: Path | str) -> PortraitError:
    """The error of a tombstone file whose salt is missing or damaged (on either engine)."""
    return PortraitError(
        f"{tombstones} exists but its salt {salt} is missing or damaged: the forgotten "
        "customers cannot be recognised; restore the salt file from a backup"
    )


def _salt(folder: Path) -> str:
    """The data set's tombstone salt, created on first use. Every reader of the data set needs
    it, so it is as readable as the data; it protects a tombstone file copied without it."""
    salt = _read_salt(folder)
    if salt is not None:
        return salt
    if (folder / TOMBSTONES).exists():
        raise PortraitError(f"{folder / SALT} is missing or damaged but tombstones exist; restore it from a backup")
    salt = secrets.token_hex(32)
    atomic_write_text(salt + "\n", folder / SALT)
    return salt


@contextlib.contextmanager
def _reading_everything() -> Iterator[None]:
    token = _unfiltered.set(True)
    try:
        yield
    finally:
        _unfiltered.reset(token)


# ---------------------------------------------------------------- the command


@dataclass
class Person:
    given_id: str
    customer_ids: list[str]  # every merged id (never printed: only counted)
    identity_values: int
    already_forgotten: bool = False


@dataclass
class ForgetResult:
    persons: list[Person]
    tombstones_added: int
    tombstones_total: int
    tombstone_file: Path | None
    removed: list[tuple[Path, int]] = field(default_factory=list)  # file, rows removed
    checked_files: int = 0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    manual_store: Path | None = None
    manual_rows: int = 0
    dry_run: bool = False
    # folders a killed refresh left in a refresh root (runs being written): removed whole, as the
    # next refresh would (forget holds its lock), since they may hold the person's rows
    abandoned_runs: list[Path] = field(default_factory=list)


MAX_REASON = 120
# A person of more customer ids than one identifier may link (portrait.identity): forgotten only
# when asked for by --whole-person, after a look at how the ids were merged.
LARGE_PERSON = MAX_IDS_PER_IDENTIFIER


def large_persons(persons: list[Person]) -> list[Person]:
    """The persons (not already forgotten) of more than :data:`LARGE_PERSON` customer ids."""
    return [p for p in persons if not p.already_forgotten and len(p.customer_ids) > LARGE_PERSON]


def _refuse_large_persons(persons: list[Person]) -> None:
    large = large_persons(persons)
    if large:
        first = large[0]
        raise PortraitError(
            f"{first.given_id} is one person of {len(first.customer_ids):,} customer ids merged through identities "
            f"(more than {LARGE_PERSON}: often a shared or guest identifier chaining customers together), and "
            f"forgetting is for good; see how with `portrait identity explain {first.given_id} --data ...`, then "
            "run again with --whole-person to forget them all (--dry-run shows what would be removed); "
            "nothing was changed",
        )


def check_reason(reason: str) -> None:
    """A reason is kept for good with the tombstones (they are never rewritten): a reference
    such as a ticket number, never the person's details (:func:`portrait.privacy.refuse_personal_text`)."""
    refuse_personal_text(reason, "--reason", MAX_REASON, "kept for good with the tombstone")


def forget(
    dataset: Dataset,
    ids: Sequence[str],
    outputs: Sequence[Path] = (),
    manual_store: Path | None = None,
    reason: str = "",
    dry_run: bool = False,
    progress=None,
    forget_manual_ids: Callable[..., int] | None = None,
    whole_person: bool = False,
) -> ForgetResult:
    """Forget the people with customer ids ``ids`` (see the module docstring). Raises
    :class:`PortraitError`, before anything is written, when an id is not in the data set, and
    (unless ``whole_person`` or ``dry_run``) when an id's person holds more than
    :data:`LARGE_PERSON` customer ids: most often identifiers chaining unrelated customers
    together (a guest id sharing a value with each of 50 customers), and a tombstone is for good.
    With a ``manual_store``, ``forget_manual_ids(store, ids, dry_run=...)`` removes the
    person's rows from it and returns how many (:func:`marketing.manual.forget_ids`)."""
    if manual_store is not None and forget_manual_ids is None:
        raise TypeError("forget: a manual_store needs forget_manual_ids (marketing.manual.forget_ids)")
    check_reason(reason)
    say = progress or (lambda message: None)
    folder = folder_of(dataset)
    if folder is None:
        raise PortraitError("forget needs a data set folder or DuckDB file, not frames in memory")
    given = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))
    if not given:
        raise PortraitError("no customer id given")
    say("resolving the ids through identity merging")
    with _reading_everything():
        con = dataset.connect()
    try:
        salt = _read_salt(folder)
        if salt is not None:
            con.execute(f"SET VARIABLE {_SALT_VARIABLE} = ?", [salt])
        persons, keys = _resolve(con, dataset, given, folder if salt else None)  # raises before any write
        if not (whole_person or dry_run):
            _refuse_large_persons(persons)
        with contextlib.ExitStack() as locks:
            roots: list[Path] = _locked_folders(outputs)[0] if dry_run else []
            if not dry_run:
                locks.enter_context(exclusive_lock(folder / LOCK, f"portrait forget on {dataset.root}"))
                # A refresh writing into an output root meanwhile would keep the person's rows
                # in what it writes (a run failed by the new tombstone stayed as runs/<date>.failed):
                # its lock is held, before anything is written, so that none runs while forgetting.
                holder = f"portrait forget on {dataset.root}"
                roots, stores = _locked_folders(outputs)
                for root in roots:
                    locks.enter_context(
                        exclusive_lock(root / REFRESH_LOCK, f"portrait refresh of {root}", holder=holder)
                    )
                # A segment refresh recording meanwhile would write back members it evaluated
                # before the tombstone; it checks the tombstones under this lock, so that one
                # recording after this forget finds them changed and records nothing.
                for store in stores:
                    locks.enter_context(
                        exclusive_lock(
                            store / SEGMENT_RECORD_LOCK,
                            f"a segment refresh recording into {store}",
                            wait=SEGMENT_RECORD_WAIT_SECONDS,
                            holder=holder,
                        )
                    )
            if not dry_run:
                salt = _salt(folder)
                con.execute(f"SET VARIABLE {_SALT_VARIABLE} = ?", [salt])
            existing = _read_tombstones(folder)
            if salt is not None:
                keys = _hashed(con, keys)
                new = keys[~keys["hash"].isin(existing["hash"])].drop_duplicates("hash")
            else:  # a dry run on a data set without tombstones: every key is new
                new = keys.drop_duplicates(["kind", "part1", "part2"])
            if not dry_run and len(new):
                say("recording the tombstone")
                _record(folder, existing, new, reason, con)
            con.close()
            return _clean_outputs(
                persons, new, existing, folder, dataset, outputs, roots, manual_store, forget_manual_ids, dry_run, say
            )
    finally:
        con.close()


def _clean_outputs(
    persons: list[Person],
    new: pd.DataFrame,
    existing: pd.DataFrame,
    folder: Path,
    dataset: Dataset,
    outputs: Sequence[Path],
    refresh_roots: Sequence[Path],
    manual_store: Path | None,
    forget_manual_ids: Callable[..., int] | None,
    dry_run: bool,
    say,
) -> ForgetResult:
    """Step 3 (the caller holds the lock, and those of ``refresh_roots``): the person's rows out
    of every stored output."""
    members = sorted({c for p in persons for c in p.customer_ids})
    result = ForgetResult(
        persons=persons,
        tombstones_added=len(new),
        tombstones_total=len(existing) + len(new),  # after this run (a dry run: after a real one)
        tombstone_file=folder / TOMBSTONES,
        manual_store=manual_store,
        dry_run=dry_run,
    )
    if manual_store is not None:
        say("removing manual tags")
        result.manual_rows = forget_manual_ids(manual_store, members, dry_run=dry_run)
    for root in refresh_roots:  # the roots whose lock is held: a refresh found since is not touched
        for abandoned in abandoned_runs(root / RUNS):
            if not dry_run:
                say(f"removing {abandoned}")
                shutil.rmtree(abandoned, ignore_errors=True)
                if abandoned.exists():  # a file this user may not remove: said, as an unreadable file is
                    result.unreadable.append((abandoned, "a killed refresh's folder that could not be removed whole"))
                    continue
            result.abandoned_runs.append(abandoned)
    skip = {Path(manual_store).resolve()} if manual_store is not None else set()
    data_root = Path(dataset.root).resolve()
    for path in _output_files(outputs, clean=not dry_run):
        resolved = path.resolve()
        if resolved in skip or resolved == data_root or data_root in resolved.parents:
            continue  # the data set's own files stay as they are: the tombstone covers them
        say(f"checking {path}")
        result.checked_files += 1
        try:
            removed = _filter_file(path, members, write=not dry_run)
        except _Unreadable as exc:
            result.unreadable.append((path, str(exc)))
            continue
        if removed:
            result.removed.append((path, removed))
            if not dry_run:
                _mark_changed(path, outputs)
    return result


def _mark_changed(path: Path, outputs: Sequence[Path]) -> None:
    """A new modification time for each folder from ``path``'s up to the output folder holding
    it. Rewriting a file in place (an atomic rename) changes only its own folder's time, and a
    reader that keeps a whole run in memory (``portrait serve --runs``) knows the run by its
    folder's: without this it would go on answering with the forgotten person."""
    roots = [Path(o).resolve() for o in outputs]
    folder = path.resolve().parent
    while True:
        try:
            os.utime(folder)
        except OSError:
            return  # a folder this user may not touch: the files themselves are already clean
        if folder in roots or folder.parent == folder or not any(r in folder.parents for r in roots):
            return
        folder = folder.parent


def _resolve(con, dataset: Dataset, given: list[str], folder: Path | None) -> tuple[list[Person], pd.DataFrame]:
    """Each given id's person (all merged ids, identity values counted) and the tombstone keys
    (kind, part1, part2) of all of them. Unknown ids raise, listing them."""
    merged = has_identity_map(con)
    con.register("_forget_given", pd.DataFrame({"given_id": pd.Series(given, dtype="str")}))
    try:
        person = "COALESCE(m.person_id, g.given_id)" if merged else "g.given_id"
        join = "LEFT JOIN identity_map m ON m.customer_id = g.given_id" if merged else ""
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _forget_persons AS SELECT g.given_id, {person} AS person FROM _forget_given g {join}"
        )
        members_sql = (
            "SELECT p.given_id, COALESCE(m.customer_id, p.person) AS customer_id FROM _forget_persons p "
            "LEFT JOIN identity_map m ON m.person_id = p.person"
            if merged
            else "SELECT given_id, person AS customer_id FROM _forget_persons"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _forget_members AS SELECT DISTINCT * FROM ("
            f"{members_sql} UNION ALL SELECT given_id, person FROM _forget_persons "
            "UNION ALL SELECT given_id, given_id FROM _forget_persons) u"
        )
        # Known: a good row in some table (typed_*: before de-duplication, a cheaper read).
        present = [t for t in ("purchases", "events", "customers", "identities") if dataset.has(t)]
        seen = " UNION ".join(
            f"SELECT customer_id FROM typed_{t} WHERE customer_id IN (SELECT customer_id FROM _forget_members)"
            for t in present
        )
        known = {r[0] for r in con.execute(f"SELECT DISTINCT customer_id FROM ({seen}) s").fetchall()}
        members = con.execute("SELECT given_id, customer_id FROM _forget_members ORDER BY ALL").df()
        identity_rows = (
            con.execute(
                "SELECT DISTINCT f.given_id, i.id_type, i.id_value FROM clean_identities i "
                "JOIN _forget_members f ON i.customer_id = f.customer_id"
            ).df()
            if dataset.has("identities")
            else pd.DataFrame({"given_id": [], "id_type": [], "id_value": []}, dtype="str")
        )
    finally:
        con.unregister("_forget_given")
        con.execute("DROP TABLE IF EXISTS _forget_persons")
        con.execute("DROP TABLE IF EXISTS _forget_members")
    by_given = members.groupby("given_id")["customer_id"].agg(lambda ids: sorted(set(ids))).to_dict()
    value_counts = identity_rows.groupby("given_id").size().to_dict()
    forgotten_before = _forgotten_ids(con, folder, [g for g in given if not set(by_given[g]) & known])
    persons, unknown = [], []
    for given_id in given:  # the ids given (a request's few), not the customers of the data set
        if set(by_given[given_id]) & known:
            persons.append(Person(given_id, by_given[given_id], int(value_counts.get(given_id, 0))))
        elif given_id in forgotten_before:
            persons.append(Person(given_id, [given_id], 0, already_forgotten=True))
        else:
            unknown.append(given_id)
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else "")
        raise PortraitError(
            f"unknown customer id{'s' if len(unknown) != 1 else ''} {shown}: not in any table of {dataset.root} "
            "and never forgotten; nothing was changed"
        )
    ids = pd.DataFrame(
        [(CUSTOMER, c, None) for p in persons for c in p.customer_ids], columns=["kind", "part1", "part2"]
    )
    values = pd.DataFrame(
        {"kind": IDENTITY, "part1": identity_rows["id_type"].to_numpy(), "part2": identity_rows["id_value"].to_numpy()}
    )
    keys = pd.concat([ids, values], ignore_index=True) if len(values) else ids
    return persons, keys.astype({"kind": "str", "part1": "str"})


def _forgotten_ids(con, folder: Path | None, ids: list[str]) -> set[str]:
    """Which of ``ids`` (not in the data) are tombstoned: forgotten before, then dropped."""
    existing = _read_tombstones(folder) if folder is not None and ids else None
    if existing is None or existing.empty:
        return set()
    con.register("_forget_unknown", pd.DataFrame({"part1": pd.Series(ids, dtype="str")}))
    try:
        rows = con.execute(f"SELECT part1, {_key_sql(CUSTOMER, ['part1'])} AS hash FROM _forget_unknown").fetchall()
    finally:
        con.unregister("_forget_unknown")
    tombstoned = set(existing["hash"])
    return {given_id for given_id, digest in rows if digest in tombstoned}


def forgotten_among(root: str | Path, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the data set at ``root`` has forgotten (its tombstones): for a reader of
    stored outputs beside the data set (a profile from a refresh run's material, written before
    the forget), which the data set's own views do not filter. The tombstones are read once per
    version of their file (an API answers many profiles)."""
    folder = _folder_at(Path(root).resolve())
    stamp = tombstones_stamp(root)
    if not ids or stamp is None:
        return set()
    salt, hashes = _tombstone_hashes(folder, stamp)
    # the key's hash as _key_sql computes it in DuckDB (tests/test_forget.py compares the two)
    digest = {i: hashlib.sha256(f"{salt}\x1f{CUSTOMER}\x1f{i}".encode()).hexdigest() for i in ids}
    return {given_id for given_id, key in digest.items() if key in hashes}


@functools.lru_cache(maxsize=8)
def _tombstone_hashes(folder: Path, stamp: tuple[int, int]) -> tuple[str, frozenset[str]]:
    salt = _read_salt(folder)
    if salt is None:
        raise missing_salt(folder / TOMBSTONES, folder / SALT)
    return salt, frozenset(read_parquet(folder / TOMBSTONES, columns=["hash"])["hash"].astype("str"))


def _hashed(con, keys: pd.DataFrame) -> pd.DataFrame:
    """``keys`` with their SHA-256 ``hash`` and ``probe``, computed by DuckDB (the read side
    computes them there too, so both always agree)."""
    con.register("_forget_keys", keys)
    try:
        return con.execute(
            f"""SELECT kind,
                CASE kind WHEN '{CUSTOMER}' THEN {_key_sql(CUSTOMER, ["part1"])}
                          ELSE {_key_sql(IDENTITY, ["part1", "part2"])} END AS hash,
                CASE kind WHEN '{CUSTOMER}' THEN {_probe_sql(CUSTOMER, ["part1"])}
                          ELSE {_probe_sql(IDENTITY, ["part1", "part2"])} END AS probe
            FROM _forget_keys"""
        ).df()
    finally:
        con.unregister("_forget_keys")


def _read_tombstones(folder: Path) -> pd.DataFrame:
    path = folder / TOMBSTONES
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype="str") for c in TOMBSTONE_COLUMNS}).astype(
            {"forgotten_at": "datetime64[us, UTC]"}
        )
    return read_parquet(path)


def _record(folder: Path, existing: pd.DataFrame, new: pd.DataFrame, reason: str, con) -> None:
    """Append ``new`` tombstones (old rows plus new, one atomic rewrite), then their probes."""
    rows = pd.DataFrame(
        {
            "hash": new["hash"].astype("str").to_numpy(),
            "kind": new["kind"].astype("str").to_numpy(),
            "request": uuid.uuid4().hex,
            "forgotten_at": pd.Timestamp.now(tz="UTC").floor("us"),
            "reason": reason,
        }
    )
    combined = pd.concat([existing, rows], ignore_index=True) if len(existing) else rows
    atomic_write(combined.astype({"forgotten_at": "datetime64[us, UTC]"}), folder / TOMBSTONES)
    stored = _read_probes(folder, con)
    stored["probes"].update({h: int(p) for h, p in zip(new["hash"], new["probe"], strict=True)})
    atomic_write_text(json.dumps(stored), folder / PROBES)


# ---------------------------------------------------------------- stored outputs


class _Unreadable(Exception):
    pass


def _locked_folders(folders: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The refresh roots (a ``runs`` folder and the refresh's lock file) among ``folders``, above
    or under them, and the saved segments folders (members files or their recording lock)
    among and under them: each once, from one walk."""
    roots: dict[Path, None] = {}
    stores: dict[Path, None] = {}

    def is_root(path: Path) -> bool:
        return (path / REFRESH_LOCK).is_file() and (path / RUNS).is_dir()

    for folder in folders:
        folder = Path(folder).resolve()
        for candidate in (folder, *folder.parents):
            if is_root(candidate):
                roots[candidate] = None
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder):
            if RUNS in dirs and is_root(Path(root)):
                roots[Path(root)] = None
            if SEGMENT_RECORD_LOCK in files or any(name.endswith(".members.parquet") for name in files):
                stores[Path(root)] = None
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return list(roots), list(stores)


def tombstones_stamp(root: str | Path) -> tuple[int, int] | None:
    """The tombstone file's size and change time of the data set at ``root`` (a folder or a
    DuckDB file; None without one): a work that read the data set takes it before reading and
    compares it before writing what it computed, which a forget meanwhile would outdate."""
    try:
        stat = (_folder_at(Path(root).resolve()) / TOMBSTONES).stat()
    except OSError:  # none (or not a local path: a cluster's)
        return None
    return stat.st_size, stat.st_mtime_ns


def _output_files(folders: Sequence[Path], clean: bool = False) -> list[Path]:
    """Parquet and CSV files under ``folders``, hidden files and folders (temporaries, runs
    being written) left out, each once, in a stable order. ``clean``: each folder's abandoned
    temporaries (a killed writer's, which may hold the person's rows) are removed on the way."""
    found: dict[Path, None] = {}
    for folder in folders:
        folder = Path(folder)
        if folder.is_file() and folder.name.endswith(_OUTPUT_SUFFIXES):
            found[folder] = None
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if clean:
                clean_stale_temporaries(Path(root))
            for name in sorted(files):
                if not name.startswith(".") and name.endswith(_OUTPUT_SUFFIXES):
                    found[Path(root) / name] = None
    return list(found)


def _filter_file(path: Path, members: list[str], write: bool) -> int:
    """How many rows of ``path`` belong to ``members``; with ``write``, the file rewritten
    (atomically) without them when there are any. Files without an id column: 0."""
    if path.name.endswith(".parquet"):
        return _filter_parquet(path, members, write)
    return _filter_csv(path, members, write)


def _filter_parquet(path: Path, members: list[str], write: bool) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as handle:  # one handle: one version of the file, however often replaced
            parquet = pq.ParquetFile(handle)
            columns = [c for c in ID_COLUMNS if c in parquet.schema_arrow.names]
            if not columns:
                return 0
            ids = parquet.read(columns=columns)  # the id columns only, to see whether the person is there
            values = pa.array(members, type=pa.string())
            hit = None
            for column in columns:
                found = pc.fill_null(pc.is_in(pc.cast(ids[column], pa.string()), value_set=values), False)
                hit = found if hit is None else pc.or_(hit, found)
            removed = int(pc.sum(hit).as_py() or 0)
            table = parquet.read() if removed and write else None
    except (OSError, pa.ArrowException) as exc:
        raise _Unreadable(first_line(exc)) from None
    if table is not None:
        with atomic_target(path) as tmp:
            pq.write_table(table.filter(pc.invert(hit)), tmp)
    return removed


def _filter_csv(path: Path, members: list[str], write: bool) -> int:
    try:
        frame = pd.read_csv(path, dtype="str", keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        if isinstance(exc, pd.errors.EmptyDataError):
            return 0
        raise _Unreadable(first_line(exc)) from None
    columns = [c for c in ID_COLUMNS if c in frame.columns]
    if not columns:
        return 0
    hit = frame[columns].isin(members).any(axis=1)
    removed = int(hit.sum())
    if removed and write:
        with atomic_target(path) as tmp:
            frame[~hit.to_numpy()].to_csv(tmp, index=False)
    return removed
