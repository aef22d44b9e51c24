"""Saved segments: named definitions, evaluated point-in-time, with a refresh history.

A segment is ``segments/NAME.toml`` (the folder is ``PORTRAIT_SEGMENTS`` or ``--segments``):

    description = "Dairy buyers who have gone quiet"
    where = "purchased(category = 'dairy', within_days = 90) >= 2 and not purchased(within_days = 14)"
    tags = ["loyal repurchaser"]        # must hold every tag listed
    not_tags = ["complained"]           # must hold none of these
    persona = "Promotion hunters"       # persona name or id (needs a scores folder)
    include = ["vip_list"]              # plus every member of these segments
    exclude = ["churned"]               # minus every member of these segments

Members are the customers meeting every condition (``where``, ``tags``, ``not_tags``,
``persona``), plus the members of each ``include``d segment, minus the members of each
``exclude``d one. A segment with only includes is their union. Conditions are evaluated as of
a date from data before it (see :mod:`marketing.population`).

Each refresh writes the members to ``NAME.members.parquet`` and appends a row (as-of, size,
share of the base, entered, left) to ``NAME.history.csv``; both through the atomic writer.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from marketing.filters import Condition, FilterError, Schema, evaluate, parse_condition, withheld_as_personal
from marketing.population import Population, persona_named
from marketing.tags import Applied, Library, apply_tags, check_conditions, tag_columns, unheld_tags
from portrait.errors import ConfigError, PortraitError, Unavailable, first_line
from portrait.files import atomic_write, atomic_write_text, exclusive_lock, parquet_attrs, read_parquet
from portrait.outputs import SEGMENT_RECORD_LOCK, SEGMENT_RECORD_WAIT_SECONDS
from portrait.privacy import refuse_personal_text

SEGMENTS_ENV = "PORTRAIT_SEGMENTS"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_DESCRIPTION = 500  # characters: what the segment is for (a campaign's brief), not a document

HISTORY_COLUMNS = ("as_of", "refreshed_at", "customers", "base", "share", "entered", "left")


def default_folder() -> Path:
    return Path(os.environ.get(SEGMENTS_ENV) or "segments")


@dataclass
class Segment:
    name: str
    description: str = ""
    where: str | None = None
    tags: list[str] = field(default_factory=list)
    not_tags: list[str] = field(default_factory=list)
    persona: str | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    created_at: str = ""
    created_by: str = ""

    @property
    def has_conditions(self) -> bool:
        return bool(self.where or self.tags or self.not_tags or self.persona)

    @property
    def everyone_but(self) -> bool:
        """Only excludes: everyone but their members ("all but the beer buyers")."""
        return bool(self.exclude) and not self.has_conditions and not self.include

    def definition(self) -> str:
        parts = []
        if self.where:
            parts.append(self.where)
        parts += [f"tag {t!r}" for t in self.tags] + [f"not tag {t!r}" for t in self.not_tags]
        if self.persona:
            parts.append(f"persona {self.persona!r}")
        text = " and ".join(parts)
        if self.include:
            text = " + ".join(([f"({text})"] if text else []) + [f"segment {s!r}" for s in self.include])
        if self.exclude:
            text = (text or "everyone") + "".join(f" - segment {s!r}" for s in self.exclude)
        return text

    def to_toml(self) -> str:
        lines = []
        for key, value in asdict(self).items():
            if key == "name" or value in (None, "", []):
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


_LIST_KEYS = {"tags", "not_tags", "include", "exclude"}  # the rest of a segment's keys are text


class BrokenSegment(ConfigError, Unavailable):
    """A saved segment's file cannot be used as it is (edited by hand: not TOML, a key of the
    wrong type, a cycle): through the API a 503, for the server's operator to fix."""


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # TOML basic strings share JSON's escapes for quotes, backslashes and control characters.
    return json.dumps(str(value), ensure_ascii=False)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = (
            repr(name)
            if not isinstance(name, str) or len(name) <= 80
            else f"{name[:64]!r}... ({len(name):,} characters)"
        )
        raise ConfigError(
            f"segment name {shown}: use 1-64 of a-z, 0-9, '-' and '_' (ASCII: it names a file), starting with a letter or digit"
        )
    return name


class SegmentStore:
    """The segment files in one folder."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else default_folder()

    def path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.toml"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.toml") if _NAME.fullmatch(p.stem))

    def where(self) -> str:
        """The folder as a message names it: whole, and where segments are read from when it
        does not exist (the demo saves them in outputs/segments, not segments/)."""
        if self.folder.is_dir():
            return f"{self.folder.resolve()}/"
        return (
            f"{self.folder.resolve()}/: no such folder (segments are read from --segments DIR, else "
            "$PORTRAIT_SEGMENTS, else segments/)"
        )

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> Segment:
        path = self.path(name)
        if not path.is_file():
            close = difflib.get_close_matches(name, self.names(), n=5)
            raise PortraitError(
                f"no segment {name!r} in {self.where()}" + (f"; did you mean {close}?" if close else "")
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise BrokenSegment(f"{path}: not UTF-8 text; save the segment file as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise BrokenSegment(f"{path}: not valid TOML: {exc}") from None
        known = set(Segment.__dataclass_fields__) - {"name"}
        if unknown := set(raw) - known:
            raise BrokenSegment(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for key, value in raw.items():  # a hand-edited file: include = "x" would read as x's letters
            if key in _LIST_KEYS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise BrokenSegment(f'{path}: {key} must be a list of names, {key} = ["..."] (got {value!r})')
            # TOML reads persona = 2 as a number and an unquoted date as a date: both as meant
            if key == "persona" and isinstance(value, int) and not isinstance(value, bool):
                raw[key] = str(value)
            elif key == "created_at" and isinstance(value, dt.date | dt.datetime):
                raw[key] = value.isoformat()
            elif key not in _LIST_KEYS and not isinstance(value, str):
                raise BrokenSegment(f'{path}: {key} must be text, {key} = "..." (got {value!r})')
        return Segment(name=name, **raw)

    def all(self) -> dict[str, Segment]:
        return {name: self.load(name) for name in self.names()}

    def check_save(self, segment: Segment, *, replace: bool = False) -> None:
        """Raise what :meth:`save` would refuse (a bad name, a name taken, references, cycles)."""
        check_name(segment.name)
        # served to every key and shown on every page: what the segment is for, not who is in it
        refuse_personal_text(
            segment.description,
            "--description",
            MAX_DESCRIPTION,
            "served to every API key and report reader",
            "what the segment is for (a campaign's brief)",
        )
        if self.exists(segment.name) and not replace:
            raise ConfigError(f"segment {segment.name!r} exists already (delete it first, or use --replace)")
        segments = self.all()
        segments[segment.name] = segment
        check_graph(segments)

    def save(self, segment: Segment, *, replace: bool = False) -> Path:
        """Check the references and cycles first; nothing is written if a check fails. A
        replaced definition that chooses differently drops the previous one's members and
        history (:meth:`refreshes_replaced`): they were shown as the new definition's size until
        the next refresh, which then counted everyone who moved between the two as entered or left."""
        self.check_save(segment, replace=replace)
        self.folder.mkdir(parents=True, exist_ok=True)
        # under the recording lock: a refresh recording meanwhile sees either the old definition
        # with its history or the new one without it (it checks the definition it evaluated)
        with self.recording():
            dropped = self.refreshes_replaced(segment)
            atomic_write_text(segment.to_toml(), self.path(segment.name))
            if dropped is not None:
                for path in (self.members_path(segment.name), self.history_path(segment.name)):
                    path.unlink(missing_ok=True)
        return self.path(segment.name)

    def refreshes_replaced(self, segment: Segment) -> int | None:
        """How many refreshes of the saved segment of that name ``segment`` would drop (its
        history's rows, maybe 0), when it is saved and chooses by another definition; None
        when nothing is saved under the name or the definition is the same (a new description)."""
        if not self.exists(segment.name):
            return None
        if self.load(segment.name).definition() == segment.definition():
            return None
        return len(self.history(segment.name))

    def delete(self, name: str) -> None:
        self.load(name)
        users = [s.name for s in self.all().values() if name in s.include or name in s.exclude]
        if users:
            raise ConfigError(f"segment {name!r} is used by {users}; change those first")
        for path in (self.path(name), self.members_path(name), self.history_path(name)):
            path.unlink(missing_ok=True)

    def reads(self, name: str, library: Library, _seen: frozenset[str] = frozenset()) -> str:
        """The text of everything segment ``name`` is computed from: its condition, what its
        tags are computed from, and the same for the segments it includes or excludes (a
        segment's members tell each one's value of whatever it reads)."""
        segment = self.load(name)
        parts = [segment.where or ""] + [library.reads(t) for t in (*segment.tags, *segment.not_tags)]
        for other in (*segment.include, *segment.exclude):
            if other not in _seen and self.exists(other):
                parts.append(self.reads(other, library, _seen | {name}))
        return " ".join(part for part in parts if part)

    def recording(self):
        """The lock of recording refreshes into this folder (members and history, read and
        written): two refreshes at once each wrote the history they had read, and one's rows were
        lost. The second waits for the first to record (its evaluation runs meanwhile)."""
        return exclusive_lock(
            self.folder / SEGMENT_RECORD_LOCK,
            f"a segment refresh recording into {self.folder}",
            wait=SEGMENT_RECORD_WAIT_SECONDS,
        )

    def members_path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.members.parquet"

    def history_path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.history.csv"

    def history(self, name: str) -> pd.DataFrame:
        path = self.history_path(name)
        if not path.exists():
            return pd.DataFrame(columns=list(HISTORY_COLUMNS))
        return pd.read_csv(path, dtype={"as_of": "str", "refreshed_at": "str"})

    def members(self, name: str) -> pd.DataFrame:
        """The members of the latest refresh: ``customer_id`` and ``as_of``."""
        path = self.members_path(name)
        if not path.exists():
            raise PortraitError(f"segment {name!r} has not been refreshed yet (portrait segment refresh)")
        return read_parquet(path)


def check_without_data(segment: Segment, library, unchecked: list[str] | None = None, where: bool = True) -> None:
    """The checks a segment's definition takes without data (``segment create``, a refresh
    before its steps): its tags are the library's, and (``where``) its condition's grammar and
    columns are the catalogue's, scores' and RFM's (:func:`marketing.population.dataless_schema`);
    the customers attributes it names, whose kind only the data tells, go to ``unchecked``."""
    from marketing.population import dataless_schema

    for tag in (*segment.tags, *segment.not_tags):
        library.check_tag(tag)
    if segment.where and where:
        parse_condition(segment.where, dataless_schema(unchecked), behaviour=True)


def check_graph(segments: dict[str, Segment]) -> None:
    """Every include/exclude names a saved segment and no segment reaches itself."""
    for segment in segments.values():
        for other in (*segment.include, *segment.exclude):
            if other not in segments:
                raise ConfigError(f"segment {segment.name!r} refers to segment {other!r}, which does not exist")
        if not segment.has_conditions and not segment.include and not segment.exclude:
            raise ConfigError(f"segment {segment.name!r} has no condition and includes or excludes nothing")
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name) :] + [name]
            raise ConfigError(f"segments include or exclude each other in a cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for other in (*segments[name].include, *segments[name].exclude):
            visit(other, [*path, name])
        state[name] = 2

    for name in segments:
        visit(name, [])


# ---------------------------------------------------------------- evaluation


@dataclass
class Evaluated:
    name: str
    members: pd.Series  # customer ids
    base: int
    as_of: dt.date

    @property
    def share(self) -> float:
        return len(self.members) / self.base if self.base else 0.0


class SegmentEvaluator:
    """Evaluates segments (and their includes) on one :class:`Population`, sharing one build
    of features and behaviour terms and one application of the tag library."""

    def __init__(
        self,
        population: Population,
        store: SegmentStore,
        library: Library,
        manual_store: Path | None = None,
        applied: Applied | None = None,
    ):
        """``applied``: the library already applied to this population (saves applying it again)."""
        self.population = population
        self.store = store
        self.library = library
        self.manual_store = manual_store
        self._applied = applied
        self._frame: pd.DataFrame | None = None
        self._conditions: dict[str, Condition] = {}
        self._memo: dict[str, np.ndarray] = {}
        self._index: pd.Index | None = None

    @property
    def _tags(self) -> pd.DataFrame | None:
        """The tags of the library applied (None before they are)."""
        return self._applied.tags if self._applied is not None else None

    def schema(self) -> Schema:
        return self.population.schema(models=self.population.scores_dir is not None)

    def check(self, segment: Segment) -> Condition | None:
        """Parse the segment's where (and check its tags and persona) without building data."""
        for tag in (*segment.tags, *segment.not_tags):
            self.library.check_tag(tag)
        if segment.persona and self.population.scores_dir is None:
            raise PortraitError(f"segment {segment.name!r}: a persona condition needs a scores folder (--scores DIR)")
        if not segment.where:
            return None
        try:
            return parse_condition(segment.where, self.schema(), behaviour=True)
        except FilterError as exc:
            raise FilterError(f"segment {segment.name!r}: {exc}") from None

    def prepare(self, segments: list[Segment]) -> None:
        """Build, in one pass, every column the segments and their includes need."""
        closure = self._closure(segments)
        conditions = dict(self._conditions)  # kept only once the frame is built: a failed
        for segment in closure:  # segment's condition must not break the next prepare
            if (condition := self.check(segment)) is not None:
                conditions[segment.name] = condition
        needs_tags = self._tags is None and any(s.tags or s.not_tags for s in closure)
        columns: list[str] = []
        if needs_tags:  # one feature build for the segments and the tag library together
            with_models = self.population.scores_dir is not None
            columns = tag_columns(self.library, check_conditions(self.library, self.schema(), with_models))
        self._frame = self.population.frame(conditions.values(), columns=columns)
        self._conditions = conditions
        self._index, self._memo = None, {}
        if needs_tags:
            self._applied = apply_tags(self.library, self.population, manual_store=self.manual_store)

    def _closure(self, segments: list[Segment]) -> list[Segment]:
        seen: dict[str, Segment] = {}
        stack = list(segments)
        while stack:
            segment = stack.pop()
            if segment.name in seen:
                continue
            seen[segment.name] = segment
            stack += [self.store.load(n) for n in (*segment.include, *segment.exclude) if n not in seen]
        return list(seen.values())

    def evaluate(self, segment: Segment) -> Evaluated:
        if self._frame is None or self._unprepared(segment):
            self.prepare([segment])
        mask = self._mask(segment)
        ids = self._frame["customer_id"].astype("str")
        return Evaluated(segment.name, ids[mask].reset_index(drop=True), len(ids), self.population.as_of)

    def tags_nobody_holds(self, segment: Segment) -> dict[str, list[str]]:
        """The tags ``segment`` asks for that nobody holds as of the date (a misspelt value of
        an ``each`` tag, most often), each with the closest tags that someone holds."""
        if self._tags is None:
            return {}
        return unheld_tags(self._tags, (*segment.tags, *segment.not_tags))

    def _unprepared(self, segment: Segment) -> bool:
        """Whether ``segment`` or a segment it includes needs what the frame lacks: a where
        not built yet, or tags not applied yet (an evaluation of another segment before)."""
        closure = self._closure([segment])
        return any(s.where and s.name not in self._conditions for s in closure) or (
            self._tags is None and any(s.tags or s.not_tags for s in closure)
        )

    def _mask(self, segment: Segment, _path: tuple[str, ...] = ()) -> np.ndarray:
        if segment.name in self._memo:
            return self._memo[segment.name]
        if segment.name in _path:  # a file edited by hand can include itself; saving checks it
            cycle = " -> ".join([*_path[_path.index(segment.name) :], segment.name])
            raise BrokenSegment(f"segments include or exclude each other in a cycle: {cycle}")
        _path = (*_path, segment.name)
        frame = self._frame
        chosen = segment.has_conditions or segment.everyone_but
        mask = np.ones(len(frame), bool) if chosen else np.zeros(len(frame), bool)
        if segment.has_conditions:
            if self._applied is not None:
                self._applied.refuse_unscored((*segment.tags, *segment.not_tags), f"segment {segment.name!r}")
            if segment.name in self._conditions:
                mask &= evaluate(self._conditions[segment.name], frame).to_numpy()
            for tag in segment.tags:
                mask &= self._rows(self._tags.loc[self._tags["tag"] == tag, "customer_id"])
            for tag in segment.not_tags:
                mask &= ~self._rows(self._tags.loc[self._tags["tag"] == tag, "customer_id"])
            if segment.persona:
                mask &= self._persona_mask(segment)
        for name in segment.include:
            mask |= self._mask(self.store.load(name), _path)
        for name in segment.exclude:
            mask &= ~self._mask(self.store.load(name), _path)
        self._memo[segment.name] = mask
        return mask

    def _rows(self, ids) -> np.ndarray:
        """A mask of the population's rows whose id is in ``ids`` (one hash lookup per id)."""
        if self._index is None:
            self._index = pd.Index(self._frame["customer_id"].astype("str"))
        where = self._index.get_indexer(pd.Index(ids).astype("str"))
        mask = np.zeros(len(self._index), bool)
        mask[where[where >= 0]] = True
        return mask

    def _persona_mask(self, segment: Segment) -> np.ndarray:
        scores, persona = self.population.scores, segment.persona
        if scores is None:
            raise PortraitError(f"segment {segment.name!r}: a persona condition needs a scores folder (--scores DIR)")
        if "persona_name" not in scores.columns:  # scored without the personas model
            raise PortraitError(
                f"segment {segment.name!r}: persona {persona!r} is a persona condition, and the scores hold "
                "no personas (score with the personas model)"
            )
        name = persona_named(scores, persona)  # a name, or a persona's id
        if name is None:
            names = sorted(scores["persona_name"].dropna().astype(str).unique())
            raise PortraitError(f"segment {segment.name!r}: no persona {persona!r} in the scores; personas: {names}")
        return self._rows(scores.loc[scores["persona_name"] == name, "customer_id"])

    def columns(self, members: pd.Series, columns: list[str]) -> pd.DataFrame:
        """Members with the requested feature, RFM or score columns (built if needed)."""
        schema = self.schema()
        unknown = [c for c in columns if schema.kind(c) is None]
        if unknown:
            personal = withheld_as_personal(unknown[0])
            raise FilterError(
                f"unknown column(s) {unknown}"
                + (personal or f"; e.g. {schema.closest(unknown[0]) or sorted(schema.kinds)[:8]}")
            )
        frame = self.population.frame(columns=columns)
        chosen = frame[frame["customer_id"].astype("str").isin(set(members))]
        return chosen[["customer_id", *[c for c in columns if c != "customer_id"]]].reset_index(drop=True)


def entered_and_left(current: pd.Index, previous: pd.Index) -> tuple[int, int]:
    """Members of ``current`` not in ``previous``, and of ``previous`` not in ``current`` (both
    unique ids; hash lookups, no Python sets)."""
    stayed = int((current.get_indexer(previous) >= 0).sum())
    return len(current) - stayed, len(previous) - stayed


def record_refresh(store: SegmentStore, result: Evaluated) -> dict:
    """Write the members and add the size, entered and left to the segment's history (kept in
    the order of the as-of dates, one row per date). Entered and left compare with the stored
    members when they are of an earlier date. A re-run of the stored members' date replaces
    that date's row: it keeps its entered and left when the members are the same, and has none
    when they differ (the members of the date before are not kept). A backfill (a date before
    the stored members') is added without entered and left and leaves the newer stored members
    as they are."""
    current = pd.Index(result.members.astype("str")).unique()
    entered = left = None
    backfill = False
    history = store.history(result.name)
    same_day = history[history["as_of"].astype(str) == result.as_of.isoformat()] if len(history) else history
    if store.members_path(result.name).exists():
        stored = store.members(result.name)
        stored_as_of = members_as_of(store.members_path(result.name), stored)
        backfill = stored_as_of is not None and stored_as_of > result.as_of.isoformat()
        if not backfill:
            entered, left = entered_and_left(current, pd.Index(stored["customer_id"].astype("str")).unique())
            if stored_as_of == result.as_of.isoformat():  # a re-run of that date
                unchanged = entered == 0 and left == 0 and len(same_day)
                entered, left = (_count(same_day, "entered"), _count(same_day, "left")) if unchanged else (None, None)
    row = {
        "as_of": result.as_of.isoformat(),
        "refreshed_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "customers": len(current),
        "base": result.base,
        "share": round(result.share, 6),
        "entered": entered,
        "left": left,
    }
    if len(history):
        history = history[history["as_of"].astype(str) != result.as_of.isoformat()]
    history = pd.concat([history, pd.DataFrame([row])], ignore_index=True) if len(history) else pd.DataFrame([row])
    history = history.sort_values("as_of", kind="stable").reset_index(drop=True)
    # whole numbers, blank where unknown (a column holding a blank was written as 127.0)
    history = history.astype({column: "Int64" for column in ("customers", "base", "entered", "left")})
    # The history first: stopped between the two writes, the members are still the earlier
    # date's, and a re-run of this date compares with them again; written the other way round,
    # the re-run found its own members stored and its row lost entered and left for good.
    atomic_write(history, store.history_path(result.name), csv=True)
    if not backfill:
        members = pd.DataFrame(
            {"customer_id": result.members.reset_index(drop=True), "as_of": result.as_of.isoformat()}
        )
        members.attrs[MEMBERS_AS_OF] = result.as_of.isoformat()  # said by the file even without rows
        atomic_write(members, store.members_path(result.name))
    return row


def record_refreshes(
    store: SegmentStore,
    results: list[Evaluated],
    evaluated: dict[str, str],
    before_recording: Callable[[], None] | None = None,
    errors: dict[str, str] | None = None,
) -> tuple[list[Evaluated], list[dict], list[str]]:
    """Record each of ``results`` (:func:`record_refresh`) under the folder's recording lock,
    but for those whose definition was replaced or deleted since it was evaluated
    (``evaluated``: each name's :meth:`Segment.definition` then): a replacement cleared the
    history, which the previous definition's members must not start again. ``before_recording``
    runs first under the lock (and may raise to record nothing). Returns the recorded results,
    their history rows, and the names not recorded for that. With ``errors``, a segment whose
    files cannot be read or written (a history edited by hand) is left out with its message put
    there, and the others are recorded; without, its error is raised. ``portrait segment
    refresh`` and the nightly refresh record alike."""
    with store.recording():
        if before_recording is not None:
            before_recording()
        replaced = [
            r.name for r in results if not store.exists(r.name) or store.load(r.name).definition() != evaluated[r.name]
        ]
        recorded, rows = [], []
        for result in results:
            if result.name in replaced:
                continue
            try:
                rows.append(record_refresh(store, result))
            except Exception as exc:
                if errors is None:
                    raise
                errors[result.name] = first_line(exc)
                continue
            recorded.append(result)
    return recorded, rows, replaced


MEMBERS_AS_OF = "as_of"  # the members file's attribute (Parquet metadata): its refresh date


def members_as_of(path: Path, members: pd.DataFrame | None = None) -> str | None:
    """The refresh date (ISO) of a segment's members file (``members``: its rows, when read
    already): its rows', else its own attribute (a segment refreshed to no one), else, for a
    file written empty before the attribute (2026-12-06), the latest date of the history beside
    it: members are only ever replaced by a refresh of a later date (a backfill leaves them).
    Without it an empty segment's later refresh passed for an earlier one: a profile of an
    earlier date counted it as checked, and a backfill replaced its newer (empty) members."""
    if members is None:
        members = read_parquet(path, columns=["as_of"])
    if len(members):
        return str(members["as_of"].iloc[0])
    stated = parquet_attrs(path).get(MEMBERS_AS_OF)
    if stated:
        return str(stated)
    history = path.with_name(path.name.removesuffix(".members.parquet") + ".history.csv")
    if history.is_file():
        dates = pd.read_csv(history, dtype={"as_of": "str"})["as_of"].dropna()
        return str(dates.max()) if len(dates) else None
    return None


def _count(rows: pd.DataFrame, column: str) -> int | None:
    """The last of ``rows``' ``column`` as a count, None where it was empty."""
    value = rows[column].iloc[-1]
    return None if pd.isna(value) else int(value)


def evaluate_each(evaluator: SegmentEvaluator, chosen: list[Segment]) -> tuple[list[Evaluated], list[tuple[str, str]]]:
    """Every segment evaluated in one pass; when that pass fails (a segment names a value the
    data does not hold yet), each segment on its own, so that one segment's error neither stops
    the others nor goes unnamed. Returns the results and the (name, error) of those that failed."""
    try:
        evaluator.prepare(chosen)
        return [evaluator.evaluate(segment) for segment in chosen], []
    except PortraitError:
        pass
    results, failed = [], []
    for segment in chosen:
        try:
            evaluator.prepare([segment])
            results.append(evaluator.evaluate(segment))
        except PortraitError as exc:
            failed.append((segment.name, str(exc)))
    return results, failed


def failures_message(failed: list[tuple[str, str]]) -> str:
    """The segments :func:`evaluate_each` could not evaluate, each named with its error."""
    # a condition's own error already names its segment ("segment 'x': unknown column ...")
    return "; ".join(
        message if message.startswith(f"segment {name!r}: ") else f"segment {name!r}: {message}"
        for name, message in failed
    )
