"""The whole profile of one customer: attributes, merged identities, tags, segments, RFM,
persona, every model's score with reasons, the score history and the latest orders and events.

:func:`build_profile` answers ``portrait profile ID`` and the API's ``GET /customers/{id}``.
It reads only the one person's rows:

- **The data set.** The person's customer ids are found first, by following shared
  identifiers from the asked id through the identities table (each step one filtered read).
  Then the raw rows of those ids, and only those, are read from every table (a filtered scan:
  Parquet skips what its statistics exclude) and the data set's own views are built over them
  (:mod:`portrait.views`: parsing, quarantine, de-duplication, identity merging, the
  customers row chosen for a merged person), so a profile applies exactly the rules every
  other command applies. A data set with CSV tables is read whole through the same views
  (CSV has no statistics to skip by and is trimmed as it is read); convert it to Parquet for
  speed.
- **Stored outputs** (scores, features, tags, RFM, segment members) are read with
  ``WHERE customer_id IN (...)`` and bound parameters: DuckDB pushes the filter into the
  Parquet scan.

Which outputs: with ``runs`` (a ``portrait refresh`` root) the run ``LATEST`` names, or with
an as-of date the newest run on or before it; otherwise the newest scores, tags and RFM tables
on or before the as-of date in their folders. Later outputs are never used: they would show
the future next to the past. Orders and events are those strictly before the as-of date
(by default the scores' date; without scores, all of them).

Nothing personal is shown: personal-data columns are withheld where the data set is read
(:mod:`portrait.privacy`); identities appear as types, counts and customer ids, never values;
``include_sensitive=False`` also leaves out the data set's ``sensitive_columns``. A piece that
is not there (no run yet, no tags folder, no RFM for the date) is ``null`` with a note in
``notes``; a folder that does not exist is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from portrait import connections
from portrait.errors import PortraitError
from portrait.forget import forgotten_among
from portrait.identity import WIDELY_HELD
from portrait.outputs import MANIFEST
from portrait.privacy import personal_values, withheld_list_sql, withheld_sql
from portrait.resources import MATERIAL_MEMORY_SHARE, duckdb_memory_limit
from portrait.sql import quote_ident, quote_literal
from portrait.views import identity_map_ready

KEY_FEATURES = (
    "days_since_last_purchase",
    "orders_lifetime",
    "spend_lifetime",
    "avg_order_value",
    "orders_90d",
    "spend_365d",
    "favourite_category",
    "favourite_channel",
    "promo_share_365d",
    "event_count_90d",
    "campaign_response_rate",
)
LAST_ORDERS = 10
LAST_EVENTS = 20
_RFM_FILE = re.compile(r"rfm_(\d{4}-\d{2}-\d{2})\.parquet")
_MANY = 1_000  # more ids or identifiers than this are matched by a join instead of bound parameters
# Rounds of following shared identifiers one hop at a time (two small queries each) before the
# rest of a person is found in one pass over the identities: a person chained through 1,500
# ids took 1,500 rounds: 8.8 s alone (18-34 s in the test suite), against 0.43-0.9 s now
# (2026-12-07, /tmp probe of build_profile); most persons end in two or three rounds.
_HOP_ROUNDS = 8


class UnknownCustomer(PortraitError):
    """No table of the data set and no stored output knows the customer id."""

    status_code = 404


# ---------------------------------------------------------------- what is asked


class ProfileSources(BaseModel):
    """Where a profile is read from. Every folder given must exist."""

    model_config = ConfigDict(frozen=True)

    data: Path | None = Field(
        None, description="The data set folder (or DuckDB file): orders, events, attributes, identities."
    )
    runs: Path | None = Field(
        None,
        description=(
            "A `portrait refresh` output root: the run LATEST names (or, with as_of, the newest run on or "
            "before it) gives scores, RFM, tags and segment members; every run under runs/ gives the score "
            "history. Not together with scores, tags or rfm."
        ),
    )
    scores: Path | None = Field(
        None,
        description="Without runs: a `portrait score --out` folder (its LATEST, or the newest on or before as_of).",
    )
    tags: Path | None = Field(
        None, description="Without runs: a `portrait tags apply --out` folder (newest tags table on or before as_of)."
    )
    segments: Path | None = Field(
        None,
        description=(
            "A saved segments folder: membership from each segment's last refresh (when no run with "
            "segment members is read; a run's members come from the same refresh as its scores)."
        ),
    )
    rfm: Path | None = Field(
        None, description="Without runs: a `portrait rfm --out` folder (newest RFM table on or before as_of)."
    )
    as_of: dt.date | None = Field(
        None,
        description=(
            "Orders and events strictly before this date, and outputs of this date or earlier; default: "
            "the run's or the scores' as-of date, else all history and the newest outputs."
        ),
    )


# ---------------------------------------------------------------- the answer


class SectionNote(BaseModel):
    section: str = Field(description="The part of the profile concerned, e.g. tags, rfm, score_history.")
    note: str = Field(description="Why it is absent or partial, in words.")


class Attribute(BaseModel):
    name: str = Field(description="Column of the customers table (personal-data columns are never shown).")
    value: str | None = Field(description="Its value as text; null when not recorded.")


class Attributes(BaseModel):
    values: list[Attribute] = Field(description="The person's customers row, column by column.")
    from_customer_id: str | None = Field(
        description="The customer id whose customers row this is (the person's own, else the smallest merged id's)."
    )
    sensitive_left_out: int = Field(
        0, description="How many columns marked sensitive ([privacy] sensitive_columns) were left out for this role."
    )


class IdentityType(BaseModel):
    id_type: str = Field(description="Kind of identifier: phone_hash, email_hash, account, device, ...")
    identifiers: int = Field(description="How many distinct identifiers of this kind the person's ids hold.")


class SharedIdentifier(BaseModel):
    id_type: str = Field(description="Kind of identifier the ids share.")
    customer_ids: list[str] = Field(description="The customer ids that share them.")
    identifiers: int = Field(description="How many identifiers of this kind they share (never their values).")


class Identities(BaseModel):
    customer_ids: list[str] = Field(description="Every customer id merged into this person, sorted.")
    types: list[IdentityType] = Field(description="Identifiers held, by kind, as counts.")
    shared: list[SharedIdentifier] = Field(description="Which shared identifiers joined the ids (kind and count).")


class Tag(BaseModel):
    tag: str = Field(description="Tag name from the tag library.")
    group: str = Field(description="Group of the tag in the library's tree.")
    kind: str = Field(description="rule, model or manual.")
    since: dt.date | None = Field(description="Date the person has held the tag since (carried over between runs).")


class Tags(BaseModel):
    as_of: dt.date = Field(description="Date of the tags table read.")
    source: str = Field(description="The tags table read.")
    tags: list[Tag] = Field(description="The person's tags, by group then name.")


class SegmentMembership(BaseModel):
    name: str = Field(description="Saved segment name.")
    as_of: dt.date | None = Field(description="As-of date of the refresh the membership comes from.")


class Segments(BaseModel):
    source: str = Field(description="Where membership was read: a run's segments folder or a saved segments folder.")
    checked: list[str] = Field(description="The segments whose members were looked at.")
    member_of: list[SegmentMembership] = Field(description="The segments the person belongs to.")


class Rfm(BaseModel):
    as_of: dt.date = Field(description="Date of the RFM table read.")
    r: int | None = Field(description="Recency score 1-5 (5: most recent); null without a purchase.")
    f: int | None = Field(description="Frequency score 1-5; null without a purchase.")
    m: int | None = Field(description="Monetary score 1-5; null without a purchase.")
    fm: int | None = Field(description="Mean of F and M rounded half up; null without a purchase.")
    group: str = Field(description="Value group (Champions, Loyal, ..., No purchase yet).")
    days_since_last_purchase: float | None = Field(description="Recency input, in days.")
    orders_lifetime: float | None = Field(description="Frequency input: purchase orders before the date.")
    spend_lifetime: float | None = Field(description="Monetary input: net spend before the date.")


class Persona(BaseModel):
    id: int | None = Field(description="Persona id of the registered personas model.")
    name: str | None = Field(description="Persona name.")
    version: str | None = Field(description="Version of the personas model that assigned it.")


class ModelScore(BaseModel):
    model: str = Field(description="Registered model name.")
    score: float | None = Field(description="Probability (propensity models) or predicted amount (spend models).")
    percentile: float | None = Field(description="Percentile among all customers scored that day, 0-100.")
    decile: int | None = Field(description="Decile, 10 = top.")
    version: str | None = Field(description="Model version that scored.")
    reasons: list[str] | None = Field(description="Top reasons pushing the score up; null when unavailable.")
    reasons_note: str | None = Field(None, description="Where the reasons come from, or why there are none.")


class Scores(BaseModel):
    as_of: dt.date = Field(description="Date of the scores table read.")
    source: str = Field(description="The scores table read.")
    scored_as: str = Field(description="The customer id the row is stored under (the person id unless noted).")
    models: list[ModelScore] = Field(description="Every model's score, by model name.")


class HistoryScore(BaseModel):
    model: str = Field(description="Registered model name.")
    score: float | None = Field(description="Score that day.")
    percentile: float | None = Field(description="Percentile that day, 0-100.")
    version: str | None = Field(None, description="The model version that scored it; null when not stored.")


class HistoryPoint(BaseModel):
    as_of: dt.date = Field(description="As-of date of the stored run (or scores table).")
    scored_as: str = Field(description="The customer id the row is stored under.")
    models: list[HistoryScore] = Field(description="Each model's score and percentile that day.")


class ScoreHistory(BaseModel):
    source: str = Field(description="Where the history comes from: runs under a refresh root, or a scores folder.")
    points: list[HistoryPoint] = Field(description="One point per stored run the person was scored in, oldest first.")
    runs_without_person: int = Field(0, description="Stored runs (on or before as-of) that did not score the person.")


class KeyFeature(BaseModel):
    name: str = Field(description="Feature name (portrait features list).")
    label: str = Field(description="What it means, from the feature catalogue.")
    value: float | str | None = Field(description="The value as stored in the scores' feature table.")
    shown: str = Field(description="The value as a person reads it (money, days, shares...).")


def _cents(money) -> float:
    """Money to the cent; + 0.0: refunds that cancel give 0.0, not -0.0."""
    return round(float(money), 2) + 0.0


class Order(BaseModel):
    order_id: str = Field(description="Order (basket) id.")
    ts: dt.datetime = Field(description="When the order was placed (its first line before as-of).")
    amount: float = Field(description="Net amount: the sum of its lines' amounts, refunds deducted.")
    lines: int = Field(description="Purchase lines in the order.")
    categories: list[str] = Field(description="Distinct categories bought, sorted.")
    channel: str | None = Field(description="Channel of its lines (several joined by ', ').")


class Orders(BaseModel):
    total: int = Field(description="Orders before as-of, all of them.")
    spend: float = Field(description="Net spend over all those orders.")
    last: list[Order] = Field(description=f"The last {LAST_ORDERS} orders, newest first.")


class Event(BaseModel):
    ts: dt.datetime = Field(description="When it happened.")
    event_type: str = Field(description="view, search, add_to_cart, campaign_received, ...")
    channel: str | None = Field(description="Where it happened.")
    category: str | None = Field(description="Product category concerned.")
    value: float | None = Field(description="Any amount attached (coupon value, rating...).")


class Events(BaseModel):
    total: int = Field(description="Events before as-of, all of them.")
    last: list[Event] = Field(description=f"The last {LAST_EVENTS} events, newest first.")


class CustomerProfile(BaseModel):
    customer_id: str = Field(description="The person's id: the smallest of their merged customer ids.")
    resolved_from: str | None = Field(
        description="The id asked for, when it is another of the person's merged ids; null when asked by the person id."
    )
    as_of: dt.date | None = Field(description="Orders and events are strictly before this date; null: all history.")
    as_of_from: str = Field(description="Where the as-of date comes from: given, run, scores, or none.")
    attributes: Attributes | None = Field(description="The customers row; null without a data set or a row.")
    identities: Identities | None = Field(description="Merged ids and identifier counts; null without a data set.")
    tags: Tags | None = Field(description="Tags from the tags table; null when none is available.")
    segments: Segments | None = Field(description="Saved segment membership; null when none is available.")
    rfm: Rfm | None = Field(description="RFM scores and group; null when no RFM table is available.")
    persona: Persona | None = Field(description="Persona from the scores; null when no personas model was scored.")
    scores: Scores | None = Field(description="Every model's latest score; null when no scores are available.")
    score_history: ScoreHistory | None = Field(description="Scores across stored runs; null without stored runs.")
    key_features: list[KeyFeature] | None = Field(
        description="Key features from the scores' feature table; null when it is not available."
    )
    orders: Orders | None = Field(description="Order summary and the latest orders; null without a data set.")
    events: Events | None = Field(description="Event count and the latest events; null without a data set or events.")
    timezone: str | None = Field(
        None,
        description="The data set's time zone: order and event times are local times in it (timestamps with an "
        "offset were converted to it); null without a data set.",
    )
    notes: list[SectionNote] = Field(description="What is absent or partial, and why.")


# ---------------------------------------------------------------- building it


ModelLoader = Callable[[str], Any]


def build_profile(
    customer_id: str,
    sources: ProfileSources,
    *,
    include_sensitive: bool = True,
    compute_reasons: bool = True,
    model_loader: ModelLoader | None = None,
    in_memory: bool = False,
) -> CustomerProfile:
    """The profile of the person ``customer_id`` belongs to (see the module docstring).

    When ``sources.runs`` names a run with profile material (written by the refresh's
    ``profiles`` step) and the as-of date is the run's, the data-set part comes from that
    material by point reads instead of the data set (the same answer: see
    :func:`write_profile_material`). ``in_memory`` (the API) holds the run's tables in memory
    in this process, loaded once per run, so a profile reads no file.

    ``include_sensitive=False`` leaves out attributes marked sensitive (the marketing role).
    ``compute_reasons``: when the scores hold no reasons, compute them for this one row with
    the model that scored it, loaded by ``model_loader`` (name to a loaded model; by default
    the ``champion`` from the registry, cached per process); a model that cannot be loaded,
    or whose champion is no longer the version that scored, gives no reasons and a note.
    Raises :class:`UnknownCustomer` when nothing knows the id, :class:`PortraitError` for a
    folder that does not exist or contradictory sources."""
    asked = str(customer_id)
    customer_id = asked.strip()  # as the data's ids are read: "A1 " and "A1" are one id
    if not customer_id:
        raise PortraitError("give a customer id")
    _check_sources(sources)
    notes: list[SectionNote] = []

    def note(section: str, text: str) -> None:
        notes.append(SectionNote(section=section, note=text))

    if asked != customer_id:
        note("customer_id", f"the id was read without the spaces around it, as {customer_id!r}")

    memory = in_memory and sources.runs is not None
    reader = None
    if memory:
        from serving.refresh import current_run

        # a published run's files never change (a re-run replaces the folder): what is found in
        # it is found once per run and process
        reader = memory_reader(sources.runs, current_run(sources.runs))
        key = ("located", sources.model_dump_json())
        if key not in reader.memo:
            found: list[SectionNote] = []
            located = _Outputs.locate(
                sources, lambda section, text: found.append(SectionNote(section=section, note=text))
            )
            reader.memo[key] = (located, found, material_of(located.run, sources.as_of, sources.data))
        located, found, chosen = reader.memo[key]
        outputs = dataclasses.replace(located)
        notes.extend(found)
    else:
        outputs = _Outputs.locate(sources, note)
        chosen = material_of(outputs.run, sources.as_of, sources.data)
    as_of, as_of_from = sources.as_of, "given"
    if as_of is None:
        as_of, as_of_from = (outputs.date, outputs.date_from) if outputs.date else (None, "none")
    # The run's material and older runs' scores were written before a forget: the tombstone, not
    # what a folder still holds, decides (a user's test showed the whole profile of a forgotten
    # person through --runs), also without --data (the run's data set, from its manifest); said
    # as any unknown id is, so that an answer does not tell that someone asked to be forgotten.
    tombstones_of = sources.data if sources.data is not None else _run_data_set(outputs.run)
    if tombstones_of is not None and forgotten_among(tombstones_of, [customer_id]):
        if sources.data is not None:
            raise _unknown_in_data(customer_id, sources, outputs, from_material=chosen[0] is not None)
        raise _unknown_in_outputs(customer_id, outputs)

    with contextlib.nullcontext() if memory else connections.connect() as con:
        outputs.reader = reader if memory else _FileReader(con)
        person = _Person(customer_id, None)
        data = None
        if sources.data is not None:
            material, summary, why = chosen
            if why:
                note("data", why)
            if material is not None:
                data = _PersonMaterial(material, summary, customer_id, outputs.reader, sources.data)
            else:
                data = _PersonData.read(sources.data, customer_id)
            person = _Person(data.person_id, customer_id if data.person_id != customer_id else None)
            ids = data.customer_ids
        else:
            ids = [customer_id]
            note("data", "no data set given: attributes, identities, orders and events are not shown")
        lookup = [person.customer_id, *[i for i in ids if i != person.customer_id]]
        scores_row = outputs.scores_row(con, lookup)
        tags = outputs.tags_of(con, lookup, note)
        segments = outputs.segments_of(con, lookup, as_of, note)
        rfm = outputs.rfm_of(con, lookup, note)
        history = outputs.history_of(con, lookup, as_of, note)
        key_features = outputs.key_features_of(con, scores_row, note)
        known_elsewhere = scores_row is not None or bool(tags and tags.tags) or rfm is not None
        known_elsewhere = known_elsewhere or bool(segments and segments.member_of) or bool(history and history.points)
        if data is not None and not data.known and not known_elsewhere:
            raise _unknown_in_data(customer_id, sources, outputs, from_material=isinstance(data, _PersonMaterial))
        if data is None and not known_elsewhere:
            raise _unknown_in_outputs(customer_id, outputs)
        if data is not None and not data.known:
            note("data", f"the data set {sources.data} has no rows for {customer_id!r}; shown from stored outputs only")
        privacy = privacy_now(sources.data) if sources.data is not None else None
        scores, persona = outputs.scores_of(
            scores_row, compute_reasons, model_loader, con, note, privacy=privacy, include_sensitive=include_sensitive
        )
        if privacy is not None and not include_sensitive:
            tags, segments = _memberships_without_sensitive(tags, segments, outputs, privacy, note)
        if scores_row is not None and scores_row["customer_id"] != person.customer_id:
            note(
                "scores", f"the scores hold the person under {scores_row['customer_id']!r}, not {person.customer_id!r}"
            )

        attributes = identities = orders = events = timezone = None
        if data is not None:
            try:
                timezone = data.timezone
                attributes = data.attributes(include_sensitive, note)
                if attributes is not None and (joined := _signed_up_after(attributes, as_of, timezone or "UTC")):
                    note("attributes", f"signed up on {joined}, after the as-of date {as_of}: not yet a customer then")
                    attributes = None
                identities = data.identities()
                orders = data.orders(as_of)
                events = data.events(as_of, note)
            finally:
                data.close()
    return CustomerProfile(
        customer_id=person.customer_id,
        resolved_from=person.resolved_from,
        as_of=as_of,
        as_of_from=as_of_from,
        attributes=attributes,
        identities=identities,
        tags=tags,
        segments=segments,
        rfm=rfm,
        persona=persona,
        scores=scores,
        score_history=history,
        key_features=key_features,
        orders=orders,
        events=events,
        timezone=timezone,
        notes=notes,
    )


def _memberships_without_sensitive(tags, segments, outputs: _Outputs, privacy, note):
    """``tags`` and ``segments`` less those computed from a sensitive attribute: that a person
    holds one tells their value of it (a segment of ``attr_age_band = '65+'`` tells the age).
    The notes count such tags and segments among all there are, never among the person's: a
    count of the person's own would tell the same thing."""
    from marketing.segments import SegmentStore
    from marketing.tags import RecordedReads, shipped_library
    from portrait.privacy import sensitive_terms
    from serving.routes.segments import read_run_segments, run_reads
    from serving.score import sensitive_attribute_features

    sensitive = [feature.name for feature in sensitive_attribute_features(privacy)]
    if not sensitive:
        return tags, segments
    # Tags tables written before their summaries recorded what each tag reads: the shipped library's.
    recorded = RecordedReads.beside(outputs.tags_file, fallback=shipped_library())
    if tags is not None:
        hidden = {name for name in recorded.names() if sensitive_terms(recorded.reads(name), sensitive)}
        kept = [t for t in tags.tags if not sensitive_terms(recorded.reads(t.tag), sensitive)]
        if hidden or len(kept) < len(tags.tags):
            note("tags", "tags computed from sensitive attributes are never shown here, whoever holds them")
            tags = tags.model_copy(update={"tags": kept})
    if segments is not None:
        folder = outputs.segments_folder
        # a run's members: what the run recorded, and the saved folder it refreshed as it is now
        run_summary = read_run_segments(folder) if folder is not None else {}
        saved = run_summary.get("folder")
        stores = [SegmentStore(f) for f in (folder, saved) if f is not None and Path(f).is_dir()]

        def reads(name: str) -> str:
            text = run_reads(folder, name)
            for store in stores:
                if store.exists(name):
                    with contextlib.suppress(PortraitError):
                        text += " " + store.reads(name, recorded)
            return text

        everyone = set(run_summary.get("segments") or {}) | {m.name for m in segments.member_of}
        for store in stores:
            everyone |= set(store.names())
        hidden = {name for name in everyone if sensitive_terms(reads(name), sensitive)}
        if hidden:
            note(
                "segments",
                f"{len(hidden)} segment(s) computed from sensitive attributes are never shown here, whoever is in them",
            )
            segments = segments.model_copy(
                update={"member_of": [m for m in segments.member_of if m.name not in hidden]}
            )
    return tags, segments


@dataclasses.dataclass(frozen=True)
class _Person:
    customer_id: str
    resolved_from: str | None


def _unknown_in_data(customer_id: str, sources: ProfileSources, outputs, from_material: bool) -> UnknownCustomer:
    """An id neither the data set (or the run's copy of it) nor a stored output knows."""
    where = f"the data set {sources.data}"
    if from_material:  # the run's copy: ids added since are not in it
        where += (
            f" as the run of {outputs.date} read it (an id added since is found after the next "
            "refresh, or in a profile read from the data set rather than a run)"
        )
    return UnknownCustomer(
        f"unknown customer id {customer_id!r}: not in {where} (customers, purchases, events, identities)"
        + (" nor in the stored scores, tags or RFM" if outputs.any else "")
    )


def _unknown_in_outputs(customer_id: str, outputs) -> UnknownCustomer:
    """An id no stored output knows (no data set given)."""
    return UnknownCustomer(
        f"unknown customer id {customer_id!r}: not in the stored scores, tags, RFM or segments"
        + ("" if outputs.any else " (none were given)")
        + "; give the data set (--data) to find merged ids and customers without outputs"
    )


def _run_data_set(run: Path | None) -> Path | None:
    """The data set a refresh run read, as its manifest names it (None when unknown or gone)."""
    if run is None:
        return None
    try:
        named = json.loads((Path(run) / MANIFEST).read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(named) if isinstance(named, str) and Path(named).is_absolute() and Path(named).exists() else None


def _check_sources(sources: ProfileSources) -> None:
    given = {name: getattr(sources, name) for name in ("data", "runs", "scores", "tags", "segments", "rfm")}
    for name, path in given.items():
        if path is not None and not Path(path).exists():
            raise PortraitError(f"{name} folder {path} does not exist")
    for name in ("runs", "scores", "tags", "segments", "rfm"):
        if given[name] is not None and not Path(given[name]).is_dir():
            raise PortraitError(f"{name} {given[name]} is not a folder")
    mixed = [name for name in ("scores", "tags", "rfm") if given[name] is not None]
    if sources.runs is not None and mixed:
        raise PortraitError(
            f"give either runs (a refresh root: scores, tags and RFM of one run) or {', '.join(mixed)}, not both"
        )


# ---------------------------------------------------------------- stored outputs


def _placeholders(values: Sequence) -> str:
    return ", ".join("?" for _ in values)


def _rows(con: duckdb.DuckDBPyConnection, files: Path | list[Path], ids: list[str], columns: str = "*") -> pd.DataFrame:
    """The rows of ``ids`` in Parquet ``files``, the filter pushed into the scan."""
    paths = [str(files)] if isinstance(files, Path) else [str(p) for p in files]
    scan = f"SELECT {columns} FROM read_parquet(?, filename = true, union_by_name = true) WHERE CAST(customer_id AS VARCHAR)"
    if len(ids) <= _MANY:
        return con.execute(f"{scan} IN ({_placeholders(ids)})", [paths, *ids]).df()
    con.register("_wanted_ids", pd.DataFrame({"customer_id": ids}))
    try:
        return con.execute(f"{scan} IN (SELECT customer_id FROM _wanted_ids)", [paths]).df()
    finally:
        con.unregister("_wanted_ids")


def _first_of(rows: list[dict], ids: list[str]) -> dict | None:
    """The row stored under the earliest of ``ids`` (the person id first)."""
    if not rows:
        return None
    order = {customer: i for i, customer in enumerate(ids)}
    row = dict(min(rows, key=lambda r: order.get(str(r["customer_id"]), len(order))))
    row["customer_id"] = str(row["customer_id"])
    return row


def _dated(folder: Path, pattern: re.Pattern, as_of: dt.date | None) -> tuple[dt.date | None, list[dt.date]]:
    """The newest date in ``folder``'s file names matching ``pattern`` on or before ``as_of``
    (any, without it), and every date found."""
    found = sorted(dt.date.fromisoformat(m[1]) for p in folder.iterdir() if (m := pattern.fullmatch(p.name)))
    usable = [d for d in found if as_of is None or d <= as_of]
    return (usable[-1] if usable else None), found


def _iso(text: str, where: Path) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PortraitError(f"{where}: {text!r} is not a date (YYYY-MM-DD); is this a run or scores folder?") from None


def _missing_note(kind: str, folder: Path, as_of: dt.date | None, found: list[dt.date]) -> str:
    if not found:
        return f"no {kind} table in {folder}"
    return (
        f"no {kind} table in {folder} as of {as_of} or earlier (it has {', '.join(map(str, found[-3:]))}: "
        "later tables would show the future)"
    )


def _plain(value: Any) -> Any:
    """A stored value as JSON takes it: numpy scalars as Python ones, NaN and NA as None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _int(value: Any) -> int | None:
    value = _plain(value)
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    value = _plain(value)
    return None if value is None else float(value)


def _date(value: Any) -> dt.date | None:
    value = _plain(value)
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return pd.Timestamp(value).date()


def _members_date(path: Path) -> dt.date | None:
    """The refresh date of a segment's members file, which every row carries (``as_of``): from
    the Parquet statistics, without reading the rows; for a file without rows, as
    :func:`marketing.segments.members_as_of` finds it; None when none is stored."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    if "as_of" not in metadata.schema.names:
        return None
    if not metadata.num_rows:
        from marketing.segments import members_as_of

        stated = members_as_of(path)
        return _date(stated) if stated else None
    column = metadata.schema.names.index("as_of")
    found = None
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if statistics is None or not statistics.has_min_max:
            return _date(pq.read_table(path, columns=["as_of"])["as_of"][0].as_py()) if metadata.num_rows else None
        found = statistics.max if found is None else max(found, statistics.max)
    return _date(found)


@dataclasses.dataclass
class _Outputs:
    """The stored output files chosen for a profile (see the module docstring)."""

    date: dt.date | None = None  # the run's or the scores' as-of date
    date_from: str = "none"
    as_of: dt.date | None = None  # the profile's as-of (given or the date above)
    scores_file: Path | None = None
    features_file: Path | None = None
    tags_file: Path | None = None
    tags_date: dt.date | None = None
    rfm_file: Path | None = None
    rfm_date: dt.date | None = None
    segment_files: dict[str, Path] = dataclasses.field(default_factory=dict)
    segments_source: str | None = None
    segments_folder: Path | None = None  # a run's segments/ or a saved segments folder
    segments_date: dt.date | None = None  # a run's date (a folder's members carry their own)
    history_files: list[tuple[dt.date, Path]] = dataclasses.field(default_factory=list)
    history_source: str | None = None
    any: bool = False
    run: Path | None = None  # the refresh run read (with runs)
    reader: Any = None  # point reads of stored tables: _FileReader, or _MemoryReader when serving

    @classmethod
    def locate(cls, sources: ProfileSources, note: Callable[[str, str], None]) -> _Outputs:
        from marketing.tags import tags_dates, tags_file
        from portrait.outputs import LATEST, features_path, scores_dates, scores_path
        from serving.refresh import current_run, run_dates

        found = cls()
        as_of = sources.as_of
        scores_dir = tags_dir = rfm_dir = None
        if sources.runs is not None:
            found.any = True
            dates = [_iso(d, sources.runs / "runs" / d) for d in run_dates(sources.runs)]
            run = None
            if as_of is None:
                run = current_run(sources.runs)
                if run is None:
                    note("run", f"no published run in {sources.runs} yet (no LATEST): scores, tags and RFM absent")
                elif not run.is_dir():
                    note("run", f"LATEST in {sources.runs} names {run.name}, which is not there any more")
                    run = None
            else:
                usable = [d for d in dates if d <= as_of]
                if usable:
                    run = sources.runs / "runs" / usable[-1].isoformat()
                else:
                    note("run", _missing_note("run", sources.runs / "runs", as_of, dates))
            if run is not None:
                found.run = run
                found.date, found.date_from = _iso(run.name, sources.runs / "LATEST"), "run"
                scores_dir, tags_dir, rfm_dir = run / "scores", run / "tags", run / "rfm"
                members = sorted((run / "segments").glob("*.parquet")) if (run / "segments").is_dir() else []
                if members:
                    found.segment_files = {p.stem: p for p in members}
                    found.segments_source = f"run {run.name} ({run / 'segments'})"
                    found.segments_folder = run / "segments"
                    found.segments_date = found.date
            limit = as_of or found.date
            found.history_files = [
                (d, sources.runs / "runs" / d.isoformat() / "scores" / scores_path(Path(), d).name)
                for d in dates
                if limit is None or d <= limit
            ]
            found.history_source = f"runs in {sources.runs / 'runs'}"
        else:
            scores_dir, tags_dir, rfm_dir = sources.scores, sources.tags, sources.rfm
            found.any = any(p is not None for p in (scores_dir, tags_dir, rfm_dir, sources.segments))
        if scores_dir is not None and scores_dir.is_dir():
            dates = scores_dates(scores_dir)
            if as_of is None and (scores_dir / LATEST).exists():
                name = (scores_dir / LATEST).read_text().strip()
                chosen = _iso(name.removeprefix("scores_").removesuffix(".parquet"), scores_dir / LATEST)
            else:
                usable = [d for d in dates if as_of is None or d <= as_of]
                chosen = usable[-1] if usable else None
            if chosen is None:
                note("scores", _missing_note("scores", scores_dir, as_of, dates))
            else:
                found.scores_file = scores_path(scores_dir, chosen)
                found.features_file = features_path(scores_dir, chosen)
                if found.date is None:
                    found.date, found.date_from = chosen, "scores"
                elif chosen != found.date:
                    note("scores", f"the run of {found.date} holds scores as of {chosen}")
            if sources.runs is None:
                limit = as_of or chosen
                found.history_files = [(d, scores_path(scores_dir, d)) for d in dates if limit is None or d <= limit]
                found.history_source = f"scores tables in {scores_dir}"
        elif scores_dir is None and sources.runs is None:
            note("scores", "no scores folder given (--scores or --runs)")
        elif scores_dir is not None:
            note("scores", f"the run has no scores folder ({scores_dir})")
        found.as_of = as_of or found.date
        if tags_dir is not None and tags_dir.is_dir():
            dates = tags_dates(tags_dir)
            usable = [d for d in dates if found.as_of is None or d <= found.as_of]
            if usable:
                found.tags_date, found.tags_file = usable[-1], tags_file(tags_dir, usable[-1])
            else:
                note("tags", _missing_note("tags", tags_dir, found.as_of, dates))
        elif tags_dir is None and sources.runs is None:
            note("tags", "no tags folder given (--tags or --runs)")
        elif tags_dir is not None:
            note("tags", f"the run has no tags folder ({tags_dir})")
        if rfm_dir is not None and rfm_dir.is_dir():
            chosen, dates = _dated(rfm_dir, _RFM_FILE, found.as_of)
            if chosen is None:
                note("rfm", _missing_note("RFM", rfm_dir, found.as_of, dates))
            else:
                found.rfm_date, found.rfm_file = chosen, rfm_dir / f"rfm_{chosen.isoformat()}.parquet"
        elif rfm_dir is None and sources.runs is None:
            note("rfm", "no RFM folder given (--rfm or --runs)")
        elif rfm_dir is not None:
            note("rfm", f"the run has no RFM folder ({rfm_dir})")
        if sources.segments is not None and found.segments_source is not None:
            note(
                "segments", f"membership from the run, which refreshed every saved segment; {sources.segments} not read"
            )
        elif sources.segments is not None:
            from marketing.segments import SegmentStore

            store = SegmentStore(sources.segments)
            names = store.names()
            found.segment_files = {n: store.members_path(n) for n in names if store.members_path(n).exists()}
            found.segments_source = f"saved segments in {sources.segments}"
            found.segments_folder = Path(sources.segments)
            never = [n for n in names if n not in found.segment_files]
            if never:
                note("segments", f"not refreshed yet, so not checked: {', '.join(never)}")
        elif found.segments_source is None:
            note("segments", "no saved segments read: no run with members, and no segments folder (--segments)")
        return found

    # -------------------------------------------------------- readers

    def scores_row(self, con, ids: list[str]) -> pd.Series | None:
        if self.scores_file is None:
            return None
        if not self.scores_file.exists():
            raise PortraitError(f"{self.scores_file} is missing (its folder's LATEST names it)")
        return _first_of(self.reader.records_of(self.scores_file, ids), ids)

    def scores_of(
        self, row, compute_reasons, model_loader, con, note, privacy=None, include_sensitive: bool = True
    ) -> tuple[Scores | None, Persona | None]:
        if self.scores_file is None:
            return None, None
        if row is None:
            note("scores", f"the person is not in {self.scores_file}")
            return None, None
        persona = None
        if "persona_name" in row:
            persona = Persona(
                id=_int(row.get("persona_id")),
                name=_plain(row.get("persona_name")),
                version=None if _plain(row.get("personas_version")) is None else str(row.get("personas_version")),
            )
        else:
            note("persona", f"no personas model was scored in {self.scores_file}")
        names = sorted(c.removesuffix("_score") for c in row if c.endswith("_score"))
        models = []
        features = None
        for name in names:
            version = _plain(row.get(f"{name}_version"))
            stored = [f"{name}_reason_{k}" for k in (1, 2, 3) if f"{name}_reason_{k}" in row]
            reasons, reasons_note = None, None
            if stored:
                reasons = [r for r in (_plain(row[c]) for c in stored) if isinstance(r, str)]
                reasons_note = "stored with the scores"
                reasons = _without_sensitive(reasons, privacy)  # scored before reasons left them out
            elif compute_reasons:
                if features is None:
                    features = self._feature_row(con, row["customer_id"])
                reasons, reasons_note = _computed_reasons(name, version, features, model_loader, privacy)
            else:
                reasons_note = "not stored with the scores (portrait score --reasons) and not computed"
            models.append(
                ModelScore(
                    model=name,
                    score=_float(row.get(f"{name}_score")),
                    percentile=_float(row.get(f"{name}_percentile")),
                    decile=_int(row.get(f"{name}_decile")),
                    version=None if version is None else str(version),
                    reasons=reasons,
                    reasons_note=reasons_note,
                )
            )
        scores = Scores(
            as_of=_date(row.get("as_of")) or self.date,
            source=str(self.scores_file),
            scored_as=row["customer_id"],
            models=models,
        )
        return scores, persona

    def _feature_row(self, con, customer: str) -> pd.DataFrame | None:
        if self.features_file is None or not self.features_file.exists():
            return None
        from portrait.files import read_parquet

        # pyarrow's reader (with the same pushdown) gives the dtypes the models were fed in scoring
        frame = read_parquet(self.features_file, filters=[("customer_id", "==", customer)])
        return frame.reset_index(drop=True) if len(frame) else None

    def key_features_of(self, con, scores_row, note) -> list[KeyFeature] | None:
        if self.features_file is None:
            return None
        if not self.features_file.exists():
            note("key_features", f"{self.features_file} is missing")
            return None
        if scores_row is None:
            return None
        from features.catalogue import describe, label_of
        from models.reasons import format_value

        present = self.reader.columns(self.features_file)
        wanted = [c for c in KEY_FEATURES if c in present]
        if not wanted:
            note("key_features", f"{self.features_file} has none of the key features")
            return None
        columns = ", ".join(quote_ident(c) for c in ["customer_id", *wanted])
        rows = self.reader.records_of(self.features_file, [scores_row["customer_id"]], columns)
        if not rows:
            note("key_features", f"the person is not in {self.features_file}")
            return None
        row = rows[0]
        meanings = describe(wanted)
        result = []
        for name in wanted:
            value = _plain(row[name])
            scale = meanings[name].scale if name in meanings else "number"
            result.append(
                KeyFeature(
                    name=name,
                    label=label_of(name, meanings),
                    value=value if value is None or isinstance(value, str) else float(value),
                    shown=format_value(value, scale),
                )
            )
        return result

    def tags_of(self, con, ids: list[str], note) -> Tags | None:
        if self.tags_file is None:
            return None
        rows = self.reader.records_of(self.tags_file, ids)
        if rows:
            chosen = _first_of(rows, ids)["customer_id"]
            rows = sorted((r for r in rows if str(r["customer_id"]) == chosen), key=lambda r: (r["group"], r["tag"]))
        return Tags(
            as_of=self.tags_date,
            source=str(self.tags_file),
            tags=[Tag(tag=r["tag"], group=r["group"], kind=r["kind"], since=_date(r["since"])) for r in rows],
        )

    def rfm_of(self, con, ids: list[str], note) -> Rfm | None:
        if self.rfm_file is None:
            return None
        row = _first_of(self.reader.records_of(self.rfm_file, ids), ids)
        if row is None:
            note("rfm", f"the person is not in {self.rfm_file}")
            return None
        return Rfm(
            as_of=self.rfm_date,
            r=_int(row.get("rfm_r")),
            f=_int(row.get("rfm_f")),
            m=_int(row.get("rfm_m")),
            fm=_int(row.get("rfm_fm")),
            group=str(row.get("rfm_group")),
            days_since_last_purchase=_float(row.get("days_since_last_purchase")),
            orders_lifetime=_float(row.get("orders_lifetime")),
            spend_lifetime=_float(row.get("spend_lifetime")),
        )

    def segments_of(self, con, ids: list[str], as_of: dt.date | None, note) -> Segments | None:
        if self.segments_source is None:
            return None
        names = sorted(self.segment_files)
        member_of = []
        if names:
            # Each segment's refresh date, whoever is asked about: which segments were refreshed
            # after the profile's date must not depend on the person (telling only a later
            # member's profile would tell their later membership).
            dated = {n: _members_date(self.segment_files[n]) or self.segments_date for n in names}
            later = [n for n in names if as_of is not None and dated[n] is not None and dated[n] > as_of]
            names = [n for n in names if n not in later]
            if later:
                note(
                    "segments",
                    f"refreshed after {as_of}, so not checked: " + ", ".join(f"{n} ({dated[n]})" for n in later),
                )
            rows = self.reader.records_of([self.segment_files[n] for n in names], ids) if names else []
            by_file = {str(self.segment_files[n]): n for n in names}
            held = sorted({by_file[row["filename"]] for row in rows})
            member_of = [SegmentMembership(name=name, as_of=dated[name]) for name in held]
        else:
            note("segments", f"no segment members in {self.segments_source}")
        return Segments(source=self.segments_source, checked=names, member_of=member_of)

    def history_of(self, con, ids: list[str], as_of: dt.date | None, note) -> ScoreHistory | None:
        if not self.history_files:
            if self.history_source is not None:
                note("score_history", f"no stored scores in {self.history_source}")
            return None
        present = [(d, p) for d, p in self.history_files if p.exists()]
        missing = len(self.history_files) - len(present)
        if missing:
            note("score_history", f"{missing} stored run(s) without a scores table")
        points = []
        if present:
            rows = self.reader.records_of([p for _, p in present], ids)
            date_of = {str(p): d for d, p in present}
            by_path: dict[str, list[dict]] = {}
            for row in rows:
                by_path.setdefault(row["filename"], []).append(row)
            for path, group in by_path.items():
                row = _first_of(group, ids)
                models = sorted(
                    c.removesuffix("_score") for c in row if c.endswith("_score") and _plain(row[c]) is not None
                )
                points.append(
                    HistoryPoint(
                        as_of=date_of[path],
                        scored_as=row["customer_id"],
                        models=[
                            HistoryScore(
                                model=m,
                                score=_float(row[f"{m}_score"]),
                                percentile=_float(row.get(f"{m}_percentile")),
                                version=None if _plain(row.get(f"{m}_version")) is None else str(row[f"{m}_version"]),
                            )
                            for m in models
                        ],
                    )
                )
        points.sort(key=lambda p: p.as_of)
        return ScoreHistory(source=self.history_source, points=points, runs_without_person=len(present) - len(points))


@functools.lru_cache(maxsize=32)
def _champion(name: str):
    from serving.registry import load_model

    return load_model(name, "champion")


_USED_ATTRIBUTES: dict[tuple, frozenset[str]] = {}
_USED_ATTRIBUTES_LOCK = threading.Lock()


def _used_attributes(dataset, con=None) -> frozenset[str]:
    """The customers columns ``dataset`` (the whole data set, never a copy narrowed to one
    person, on which every column would be one value per customer) reads as attributes
    (:func:`features.build.attribute_kinds`): once per version of its files and portrait.toml
    in this process. ``con``: a connection with the whole data set's views; without one, its
    customers table alone is read on a connection of its own (no identity merging: a narrowed
    profile stays quick)."""
    from features.build import attribute_kinds

    key = (str(dataset.root), dataset.fingerprint()) if dataset.root is not None else None
    with _USED_ATTRIBUTES_LOCK:
        if key is not None and key in _USED_ATTRIBUTES:
            return _USED_ATTRIBUTES[key]
    if con is not None:
        used = frozenset(attribute_kinds(con))
    else:
        source = dataset.sources["customers"]
        own = source.connection("_frame_customers")
        try:
            own.execute(f"CREATE TEMP VIEW customers AS SELECT * FROM {source.scan_sql('_frame_customers')}")
            used = frozenset(attribute_kinds(own))
        finally:
            own.close()
    if key is not None:
        with _USED_ATTRIBUTES_LOCK:
            if len(_USED_ATTRIBUTES) > 8:  # a few data sets' versions are plenty
                _USED_ATTRIBUTES.clear()
            _USED_ATTRIBUTES[key] = used
    return used


def _signed_up_after(attributes: Attributes, as_of: dt.date | None, timezone: str) -> str | None:
    """The day of the ``signup_date`` attribute when it is on or after ``as_of`` (the customers
    row is today's, and a profile as of an earlier date must not show someone who had not
    joined), read from its text as the features read a signup (:func:`features.build.
    attribute_instant`: an offset or zone converted to the data set's ``timezone``, a day-first
    date not guessed). pandas' own reading made a New York signup at 22:00 the evening before
    the as-of date one after it, hiding the attributes the features used, and read 12/10/2017 as
    10 December. On one shared in-memory connection: no read of the data set."""
    from features.build import attribute_instant

    value = next((a.value for a in attributes.values if a.name.lower() == "signup_date"), None)
    if as_of is None or value is None:
        return None
    instant = attribute_instant("v", "VARCHAR", timezone)
    cursor = _evaluator().cursor()
    try:
        found = cursor.execute(
            f"SELECT CAST({instant} AS DATE) FROM (SELECT CAST(? AS VARCHAR) AS v) WHERE {instant} >= ?",
            [value, dt.datetime.combine(as_of, dt.time())],
        ).fetchall()
    finally:
        cursor.close()
    return found[0][0].isoformat() if found and found[0][0] is not None else None


_EVALUATOR: duckdb.DuckDBPyConnection | None = None
_EVALUATOR_LOCK = threading.Lock()


def _evaluator() -> duckdb.DuckDBPyConnection:
    """One in-memory connection for small computations on values already read (a cursor each)."""
    global _EVALUATOR
    with _EVALUATOR_LOCK:
        if _EVALUATOR is None:
            _EVALUATOR = connections.connect()
        return _EVALUATOR


def _without_sensitive(reasons: list[str], privacy) -> list[str]:
    """``reasons`` less those phrased on a sensitive attribute (``"age band: 35-44"``)."""
    from serving.score import without_sensitive_reasons

    if not reasons:
        return reasons
    kept = without_sensitive_reasons(pd.DataFrame([reasons]), privacy).iloc[0]
    return [reason for reason in kept if isinstance(reason, str)]


def _computed_reasons(
    name: str, version: Any, features: pd.DataFrame | None, model_loader: ModelLoader | None, privacy=None
) -> tuple[list[str] | None, str]:
    """Reasons for one row with the model that scored it; never raises (a note instead)."""
    from serving.score import reasons_for

    if features is None:
        return None, "unavailable: the scores' feature table does not hold the person"
    try:
        model = (model_loader or _champion)(name)
    except PortraitError as exc:
        return None, f"unavailable: {exc}"
    except Exception as exc:  # a registry that cannot be reached is not the profile's failure
        return None, f"unavailable: model {name} could not be loaded ({type(exc).__name__})"
    if getattr(model, "is_personas", False):
        return None, "not applicable"
    if version is not None and str(model.version) != str(version):
        return None, (f"unavailable: the scores are from {name} v{version}, the model loaded now is v{model.version}")
    missing = [c for c in model.features if c not in features.columns]
    if missing:
        return None, f"unavailable: the stored feature table lacks {len(missing)} feature(s) {name} needs"
    reasons = reasons_for(model, features, privacy=privacy).iloc[0]
    return [r for r in reasons if isinstance(r, str)], f"computed with {name} v{model.version}"


# ---------------------------------------------------------------- the data set


def _text(value: Any) -> str | None:
    value = _plain(value)
    if value is None:
        return None
    if isinstance(value, bool):  # as the features read a flag (attr_is_vip = 'true'), not Python's True
        return "true" if value else "false"
    if isinstance(value, dt.datetime):  # an instant keeps its offset, also at midnight (it is no date)
        plain = value.time() == dt.time() and value.tzinfo is None
        return value.date().isoformat() if plain else value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _PersonData:
    """The person's rows of a data set on one DuckDB connection with the data set's views."""

    def __init__(self, dataset, con, asked: str, fast: bool, whole=None) -> None:
        self.dataset = dataset
        self.timezone: str | None = dataset.timezone
        self.whole = whole if whole is not None else dataset  # the data set before narrowing
        self.con = con
        self.asked = asked
        self.fast = fast
        self.has_map = dataset.has("identities") and identity_map_ready(con)
        self.person_id, self.customer_ids = self._resolve()
        self.known = self._known()

    @classmethod
    def read(cls, path: Path, customer_id: str) -> _PersonData:
        dataset = _opened(path)
        if any(source.is_csv for source in dataset.sources.values()):
            return cls(dataset, dataset.connect(), customer_id, fast=False)
        narrowed = _narrowed(dataset, customer_id)
        return cls(narrowed, narrowed.connect(), customer_id, fast=True, whole=dataset)

    def close(self) -> None:
        self.con.close()

    def _resolve(self) -> tuple[str, list[str]]:
        if not self.has_map:
            return self.asked, [self.asked]
        found = self.con.execute(
            "SELECT person_id FROM identity_map WHERE customer_id = ? LIMIT 1", [self.asked]
        ).fetchall()
        if not found:
            return self.asked, [self.asked]
        person = found[0][0]
        members = [
            r[0]
            for r in self.con.execute(
                "SELECT customer_id FROM identity_map WHERE person_id = ? ORDER BY customer_id", [person]
            ).fetchall()
        ]
        return person, members

    def _known(self) -> bool:
        if self.has_map and self.person_id != self.asked or len(self.customer_ids) > 1:
            return True
        if (
            self.has_map
            and self.con.execute("SELECT 1 FROM identity_map WHERE customer_id = ? LIMIT 1", [self.asked]).fetchall()
        ):
            return True
        for table in ("customers", "purchases", "events"):
            if (
                self.dataset.has(table)
                and self.con.execute(
                    f"SELECT 1 FROM {table} WHERE customer_id = ? LIMIT 1", [self.person_id]
                ).fetchall()
            ):
                return True
        return False

    def attributes(self, include_sensitive: bool, note) -> Attributes | None:
        from portrait.contract import is_missing_word
        from portrait.privacy import safe_attribute_columns

        if not self.dataset.has("customers"):
            note("attributes", "the data set has no customers table")
            return None
        cursor = self.con.execute("SELECT * FROM customers WHERE customer_id = ?", [self.person_id])
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        if not rows:
            note("attributes", "no customers row for the person")
            return None
        row = dict(zip(columns, rows[0], strict=True))
        shown = safe_attribute_columns(columns, self.dataset)
        # Only the columns the product reads as attributes: one of nearly one value per
        # customer (free text such as notes, an identifier) or of nested values may name people
        # in ways no check recognises, so it is not shown, as it is not used.
        used = _used_attributes(self.whole, self.con if self.whole is self.dataset else None)
        unused = [c for c in shown if c not in used]
        if unused:
            note(
                "attributes",
                f"{len(unused)} column(s) not shown: nearly one value per customer (an identifier or free text) "
                "or nested values, which the product does not use",
            )
            shown = [c for c in shown if c in used]
        hidden = [c for c in shown if self.dataset.privacy.is_sensitive(c)]
        if not include_sensitive:
            shown = [c for c in shown if c not in hidden]
        source = self.person_id
        if self.has_map:
            # whose row the customers view chose (the person's own, else the smallest id's)
            chosen = self.con.execute(
                "SELECT MIN(customer_id) FILTER (WHERE customer_id = ?), MIN(customer_id) FROM clean_customers "
                f"WHERE customer_id IN ({_placeholders(self.customer_ids)}) AND customer_id NOT IN "
                "(SELECT customer_id FROM _conflicting_customer_ids)",
                [self.person_id, *self.customer_ids],
            ).fetchall()[0]
            source = chosen[0] or chosen[1] or self.person_id
        return Attributes(
            # a word for no value ("N/A", "NULL") is shown as none, as the features read it
            values=[Attribute(name=c, value=None if is_missing_word(row[c]) else _text(row[c])) for c in shown],
            from_customer_id=source,
            sensitive_left_out=0 if include_sensitive else len(hidden),
        )

    def identities(self) -> Identities:
        from portrait.identity import explain

        if (
            not self.has_map
            or not self.con.execute("SELECT 1 FROM identity_map WHERE customer_id = ? LIMIT 1", [self.asked]).fetchall()
        ):
            return Identities(customer_ids=[self.person_id], types=[], shared=[])
        explained = explain(self.con, self.asked)
        counts = self.con.execute(
            f"""SELECT id_type, COUNT(DISTINCT id_value) FROM clean_identities
            WHERE customer_id IN ({_placeholders(self.customer_ids)}) GROUP BY id_type ORDER BY id_type""",
            self.customer_ids,
        ).fetchall()
        return Identities(
            customer_ids=explained["customer_ids"],
            types=[IdentityType(id_type=t, identifiers=n) for t, n in counts],
            shared=[
                SharedIdentifier(id_type=s["id_type"], customer_ids=s["customer_ids"], identifiers=s["identifiers"])
                for s in explained["shared_identifiers"]
            ],
        )

    def _before(self, as_of: dt.date | None) -> tuple[str, list]:
        if as_of is None:
            return "", []
        return " AND ts < CAST(? AS TIMESTAMP)", [dt.datetime.combine(as_of, dt.time())]

    def orders(self, as_of: dt.date | None) -> Orders:
        before, args = self._before(as_of)
        shown, channel = withheld_sql("category"), withheld_sql("channel")  # one person's lines: judged as read
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _profile_orders AS
            SELECT order_id, MIN(ts) AS ts, ROUND(SUM(amount), 9) AS amount, COUNT(*) AS lines,
                   list(DISTINCT {shown} ORDER BY {shown}) FILTER (WHERE category IS NOT NULL) AS categories,
                   string_agg(DISTINCT {channel}, ', ' ORDER BY {channel}) AS channel
            FROM purchases WHERE customer_id = ?{before} GROUP BY order_id""",
            [self.person_id, *args],
        )
        total, spend = self.con.execute("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM _profile_orders").fetchall()[0]
        last = self.con.execute(
            f"SELECT * FROM _profile_orders ORDER BY ts DESC, order_id DESC LIMIT {LAST_ORDERS}"
        ).fetchall()
        return Orders(
            total=int(total),
            spend=_cents(spend),
            last=[
                Order(
                    order_id=str(o[0]),
                    ts=o[1],
                    amount=_cents(o[2]),
                    lines=int(o[3]),
                    categories=list(o[4] or []),
                    channel=o[5],
                )
                for o in last
            ],
        )

    def events(self, as_of: dt.date | None, note) -> Events | None:
        if not self.dataset.has("events"):
            note("events", "the data set has no events table")
            return None
        before, args = self._before(as_of)
        total = self.con.execute(
            f"SELECT COUNT(*) FROM events WHERE customer_id = ?{before}", [self.person_id, *args]
        ).fetchall()[0][0]
        last = self.con.execute(
            f"""SELECT ts, {withheld_sql("event_type")}, {withheld_sql("channel")}, {withheld_sql("category")}, value
            FROM events WHERE customer_id = ?{before}
            ORDER BY ts DESC, event_type DESC LIMIT {LAST_EVENTS}""",
            [self.person_id, *args],
        ).fetchall()
        return Events(
            total=int(total),
            last=[Event(ts=e[0], event_type=e[1], channel=e[2], category=e[3], value=_float(e[4])) for e in last],
        )


# Data sets opened by profiles in this process, by folder: reused while their files and settings
# are unchanged, so each profile does not read the tables' column names again.
_OPENED: dict[str, tuple[tuple, Any]] = {}
_COLUMN_TYPES: dict[tuple[int, str], dict[str, str]] = {}
_OPENED_LOCK = threading.Lock()


def _opened(path: Path):
    """``open_dataset(path)``, the same object again while the data set's files (names, sizes,
    modification times) and its ``portrait.toml`` are unchanged."""
    from portrait.dataset import CONFIG_FILE, open_dataset

    dataset = open_dataset(path)
    config = Path(path) / CONFIG_FILE
    stamp = (config.stat().st_size, config.stat().st_mtime_ns) if config.is_file() else None
    version = (dataset.fingerprint(), stamp)
    key = str(Path(path).resolve())
    with _OPENED_LOCK:
        cached = _OPENED.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        if cached is not None:
            for name in cached[1].sources:
                _COLUMN_TYPES.pop((id(cached[1]), name), None)
        _OPENED[key] = (version, dataset)
    return dataset


def _narrowed(dataset, customer_id: str):
    """The data set reduced to the rows of the person ``customer_id`` belongs to: the same
    settings, each table an in-memory copy of its raw rows for the person's customer ids, found
    by following shared identifiers from ``customer_id`` (every row that could join it, so the
    identity map computed on the copy gives the person the full data set gives)."""
    from portrait.dataset import Dataset

    con = connections.connect()
    try:
        scans: dict[str, tuple[str, dict[str, str]]] = {}
        for name, source in dataset.sources.items():
            if source.frame is not None:
                con.register(f"_frame_{name}", source.frame)
            if source.duckdb_file is not None and not scans.get("_attached"):
                con.execute(f"ATTACH {quote_literal(str(source.duckdb_file))} AS source_db (READ_ONLY)")
                scans["_attached"] = ("", {})
            scan = source.scan_sql(f"_frame_{name}")
            types = _COLUMN_TYPES.get((id(dataset), name)) if dataset.root is not None else None
            if types is None:
                types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
                if dataset.root is not None:
                    _COLUMN_TYPES[(id(dataset), name)] = types
            scans[name] = (scan, types)
        scans.pop("_attached", None)

        def column(table: str, contract_name: str) -> str | None:
            """The source column holding ``contract_name``, as SQL comparable with text."""
            _, types = scans[table]
            wanted = dataset.sources[table].columns.get(contract_name, contract_name)
            by_lower = {c.lower(): c for c in types}
            actual = wanted if wanted in types else by_lower.get(wanted.lower())
            if actual is None:
                return None
            ident = quote_ident(actual)
            return ident if types[actual].upper() == "VARCHAR" else f"CAST({ident} AS VARCHAR)"

        def matching(table: str, contract_name: str, values: Sequence[str]):
            scan, _ = scans[table]
            where = column(table, contract_name)
            if where is None or not values:
                return con.sql(f"SELECT * FROM {scan} LIMIT 0").to_arrow_table()
            if len(values) > _MANY:  # a huge merged person: a join, not thousands of parameters
                con.register("_wanted", pd.DataFrame({"value": list(values)}))
                try:
                    return con.sql(
                        f"SELECT * FROM {scan} WHERE {where} IN (SELECT value FROM _wanted)"
                    ).to_arrow_table()
                finally:
                    con.unregister("_wanted")
            return con.sql(
                f"SELECT * FROM {scan} WHERE {where} IN ({_placeholders(values)})", params=list(values)
            ).to_arrow_table()

        ids = {customer_id}
        if "identities" in scans and column("identities", "id_value") and column("identities", "id_type"):
            seen_values: set[str] = set()
            frontier = {customer_id}
            id_column = dataset.sources["identities"].columns.get("customer_id", "customer_id")
            value_column = dataset.sources["identities"].columns.get("id_value", "id_value")
            for _ in range(_HOP_ROUNDS):
                if not frontier:
                    break
                linked = matching("identities", "customer_id", sorted(frontier)).to_pandas()
                values = _column_values(linked, value_column) - seen_values
                seen_values |= values
                sharing = matching("identities", "id_value", sorted(values)).to_pandas() if values else linked
                frontier = _column_values(sharing, id_column) - ids
                ids |= frontier
            else:
                if frontier:  # a long chain: the rest at once
                    links = con.sql(
                        f"SELECT {column('identities', 'customer_id')} AS customer_id, "
                        f"{column('identities', 'id_value')} AS id_value FROM {scans['identities'][0]}"
                    ).df()
                    ids = _linked_ids(links, customer_id)
        ordered = sorted(ids)
        frames = {name: matching(name, "customer_id", ordered) for name in scans}
    finally:
        con.close()
    sources = {
        name: dataclasses.replace(
            source, files=(), frame=frames[name], duckdb_file=None, csv_files=(), encodings=(), guard=None
        )
        for name, source in dataset.sources.items()
    }
    # The data set's root stays: its tombstones (portrait.forget) filter the copied rows as they
    # filter the files, so a forgotten person is as unknown here as in every other read.
    return Dataset(
        name=dataset.name, sources=sources, root=dataset.root, timezone=dataset.timezone, privacy=dataset.privacy
    )


def _linked_ids(links: pd.DataFrame, customer_id: str) -> set[str]:
    """The customer ids reached from ``customer_id`` by following shared identifier values in
    ``links`` (customer_id, id_value as text), any number of hops: what the rounds of
    :func:`_narrowed` reach, in one pass (the identity merge's connected components, over values
    of any type). Empty and missing ids and values link nothing, as in the rounds."""
    from portrait.identity import resolve

    links = links[links["customer_id"].notna() & links["id_value"].notna()]
    links = links[(links["customer_id"] != "") & (links["id_value"] != "")]
    persons = resolve(links.assign(id_type=""))
    person = persons.loc[persons["customer_id"] == customer_id, "person_id"]
    if person.empty:
        return {customer_id}
    return set(persons.loc[persons["person_id"] == person.iloc[0], "customer_id"]) | {customer_id}


def _column_values(frame: pd.DataFrame, name: str) -> set[str]:
    """The non-empty values of column ``name`` (any case) as text."""
    by_lower = {str(c).lower(): c for c in frame.columns}
    actual = name if name in frame.columns else by_lower.get(name.lower())
    if actual is None:
        return set()
    values = frame[actual].dropna().astype("str")
    return set(values[values != ""])


# ---------------------------------------------------------------- the nightly profile material

MATERIAL = "profiles"  # folder of a refresh run holding the per-person profile material
MATERIAL_SUMMARY = "summary.json"
# Bumped when what is stored changes; older material is not read (a profile reads the data set
# until the next refresh writes it anew). 2: values holding personal data withheld.
MATERIAL_FORMAT = 2
MATERIAL_ROW_GROUP = 16_384  # rows per Parquet row group: a point read decodes one small group


def write_profile_material(
    con: duckdb.DuckDBPyConnection, dataset, as_of: dt.date, folder: Path, progress: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Write what :func:`build_profile` reads of the data set for every person at once, into
    ``folder`` (a refresh run's ``profiles/``): whole-table SQL over ``con``, a connection of
    ``dataset`` with its views (the same validated, merged views the features read). Orders and
    events are those strictly before ``as_of``. Each table is Parquet sorted by ``customer_id``
    (the person id; the ids table by the asked id) in row groups of
    :data:`MATERIAL_ROW_GROUP`, written through the atomic writer:

    - ``ids``: every customer id the data set knows (identities, customers, purchases, events,
      any date, as the slow path's "unknown id" check) and its person id;
    - ``people``: per person, the merged ids, the order count and net spend, the event count
      and whose customers row the attributes are;
    - ``attributes``: the customers row without personal-data columns (the sensitive ones are
      kept and named in ``summary.json``, so a role that may not see them drops them);
    - ``identity_types`` and ``shared``: identifier counts by kind, and which kinds joined which
      ids (counts only: no identifier value is written);
    - ``orders`` (the last :data:`LAST_ORDERS`) and ``events`` (the last :data:`LAST_EVENTS`).

    Returns the row count of each table. DuckDB works within :data:`MATERIAL_MEMORY_SHARE`
    of the machine's memory meanwhile (spilling beyond it)."""
    with duckdb_memory_limit(con, MATERIAL_MEMORY_SHARE):
        return _write_profile_material(con, dataset, as_of, folder, progress)


def _write_profile_material(
    con: duckdb.DuckDBPyConnection, dataset, as_of: dt.date, folder: Path, progress: Callable[[str], None] | None
) -> dict[str, int]:
    from features.build import attribute_kinds
    from portrait.files import atomic_target, atomic_write_text
    from portrait.privacy import safe_attribute_columns

    say = progress or (lambda message: None)
    folder = Path(folder)
    before = dt.datetime.combine(as_of, dt.time())
    has_map = dataset.has("identities") and identity_map_ready(con)
    has_events = dataset.has("events")
    has_customers = dataset.has("customers")
    counts: dict[str, int] = {}

    def write(name: str, sql: str, params: list | None = None) -> None:
        say(f"writing {name}")
        with atomic_target(folder / f"{name}.parquet") as tmp:
            con.execute(
                f"COPY ({sql}) TO {quote_literal(str(tmp))} (FORMAT PARQUET, ROW_GROUP_SIZE {MATERIAL_ROW_GROUP}, USE_TMP_FILE false)",
                params or [],
            )
        counts[name] = int(
            con.execute("SELECT COUNT(*) FROM read_parquet(?)", [str(folder / f"{name}.parquet")]).fetchall()[0][0]
        )

    # One read of each large view: purchases grouped into orders (lines before the date counted;
    # an order with none only says the id exists), events ranked newest first with the count
    # before the date (rows on or after it rank last and are kept only to say the id exists).
    cut = "ts < CAST($before AS TIMESTAMP)"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _profile_orders AS
        SELECT CAST(customer_id AS VARCHAR) AS customer_id, order_id, MIN(ts) FILTER (WHERE {cut}) AS ts,
               -- rounded as the totals are: a float sum's last bits follow the order DuckDB's threads
               -- add the lines in, and a re-run of a date wrote other bits (a fresh clone's test)
               ROUND(SUM(amount) FILTER (WHERE {cut}), 9) AS amount, COUNT(*) FILTER (WHERE {cut}) AS lines,
               list(DISTINCT category ORDER BY category) FILTER (WHERE category IS NOT NULL AND {cut}) AS categories,
               list(DISTINCT channel ORDER BY channel) FILTER (WHERE channel IS NOT NULL AND {cut}) AS channels
        FROM purchases GROUP BY ALL""",
        {"before": before},
    )
    if has_events:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _profile_events AS
            SELECT * FROM (
                SELECT CAST(customer_id AS VARCHAR) AS customer_id, ts, event_type, channel, category,
                       CAST(value AS DOUBLE) AS value, {cut} AS before_date,
                       ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY {cut} DESC, ts DESC, event_type DESC) AS rn,
                       COUNT(*) FILTER (WHERE {cut}) OVER (PARTITION BY customer_id) AS total
                FROM events)
            WHERE rn <= {LAST_EVENTS}""",
            {"before": before},
        )
    known = " UNION ".join(
        [
            *(["SELECT CAST(customer_id AS VARCHAR) AS customer_id FROM customers"] if has_customers else []),
            "SELECT customer_id FROM _profile_orders",
            *(["SELECT customer_id FROM _profile_events"] if has_events else []),
        ]
    )
    mapped = "SELECT customer_id, person_id FROM identity_map" if has_map else None
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _profile_ids AS "
        + (f"SELECT customer_id, person_id, TRUE AS in_map FROM ({mapped}) UNION ALL " if mapped else "")
        + f"SELECT customer_id, customer_id AS person_id, FALSE AS in_map FROM ({known}) k"
        + (" WHERE customer_id NOT IN (SELECT customer_id FROM identity_map)" if mapped else "")
    )
    try:
        write("ids", "SELECT customer_id, person_id, in_map FROM _profile_ids ORDER BY customer_id")
        con.execute("DELETE FROM _profile_orders WHERE lines = 0")
        # Texts holding an e-mail address or a phone number are withheld as in a profile read
        # from the data set: found among the orders' distinct values (no second read of the
        # purchases), and the orders' lists made again without them.
        categories, channels = (
            withheld_list_sql(c, personal_values(con, f"SELECT unnest({c}) FROM _profile_orders"))
            for c in ("categories", "channels")
        )
        write(
            "orders",
            f"""SELECT customer_id, order_id, ts, amount, lines, {categories} AS categories,
            array_to_string({channels}, ', ') AS channel FROM _profile_orders
            QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ts DESC, order_id DESC) <= {LAST_ORDERS}
            ORDER BY customer_id, ts DESC, order_id DESC""",
        )
        if has_events:
            texts = {
                c: withheld_sql(c, personal_values(con, f"SELECT {c} FROM _profile_events WHERE before_date"))
                for c in ("event_type", "channel", "category")
            }
            write(
                "events",
                f"""SELECT customer_id, ts, {texts["event_type"]} AS event_type, {texts["channel"]} AS channel,
                {texts["category"]} AS category, value FROM _profile_events WHERE before_date ORDER BY customer_id, rn""",
            )
            event_totals = "SELECT customer_id, MAX(total) AS events_total FROM _profile_events GROUP BY 1"
        else:
            event_totals = (
                "SELECT CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS BIGINT) AS events_total WHERE FALSE"
            )
        members = (
            "SELECT person_id, list(customer_id ORDER BY customer_id) AS customer_ids FROM identity_map GROUP BY 1"
            if has_map
            else "SELECT CAST(NULL AS VARCHAR) AS person_id, CAST(NULL AS VARCHAR[]) AS customer_ids WHERE FALSE"
        )
        # whose customers row the customers view chose: the person's own, else the smallest merged id's
        chosen = (
            """SELECT m.person_id, COALESCE(MIN(c.customer_id) FILTER (WHERE c.customer_id = m.person_id),
                      MIN(c.customer_id)) AS attributes_from
            FROM identity_map m JOIN (SELECT CAST(customer_id AS VARCHAR) AS customer_id FROM clean_customers
                 WHERE customer_id NOT IN (SELECT customer_id FROM _conflicting_customer_ids)) c
              ON c.customer_id = m.customer_id GROUP BY 1"""
            if has_map and has_customers
            else "SELECT CAST(NULL AS VARCHAR) AS person_id, CAST(NULL AS VARCHAR) AS attributes_from WHERE FALSE"
        )
        write(
            "people",
            f"""WITH persons AS (SELECT DISTINCT person_id FROM _profile_ids),
                -- rounded as the features are: a parallel sum differs in its last bits from run to
                -- run, and a re-run of a date writes the same material (tests/test_refresh.py)
                totals AS (SELECT customer_id, COUNT(*) AS orders_total, ROUND(SUM(amount), 9) AS orders_spend
                           FROM _profile_orders GROUP BY 1),
                events_totals AS ({event_totals}),
                members AS ({members}),
                chosen AS ({chosen})
            SELECT p.person_id AS customer_id, COALESCE(m.customer_ids, [p.person_id]) AS customer_ids,
                   COALESCE(t.orders_total, 0) AS orders_total, COALESCE(t.orders_spend, 0) AS orders_spend,
                   COALESCE(e.events_total, 0) AS events_total,
                   COALESCE(c.attributes_from, p.person_id) AS attributes_from
            FROM persons p LEFT JOIN totals t ON t.customer_id = p.person_id
            LEFT JOIN events_totals e ON e.customer_id = p.person_id
            LEFT JOIN members m ON m.person_id = p.person_id
            LEFT JOIN chosen c ON c.person_id = p.person_id
            ORDER BY 1""",
        )
        if has_map:
            links = """SELECT DISTINCT i.id_type, i.id_value, m.customer_id, m.person_id FROM clean_identities i
                JOIN identity_map m ON CAST(i.customer_id AS VARCHAR) = m.customer_id"""
            write(
                "identity_types",
                f"""SELECT person_id AS customer_id, id_type, COUNT(DISTINCT id_value) AS identifiers
                FROM ({links}) GROUP BY ALL ORDER BY 1, 2""",
            )
            write(
                "shared",
                f"""WITH wide AS ({WIDELY_HELD}),
                per_value AS (
                    SELECT person_id, id_type, id_value, list(customer_id ORDER BY customer_id) AS customer_ids
                    FROM ({links}) WHERE (id_type, id_value) NOT IN (SELECT id_type, id_value FROM wide)
                    GROUP BY ALL HAVING COUNT(*) > 1)
                SELECT person_id AS customer_id, id_type, customer_ids, COUNT(*) AS identifiers
                FROM per_value GROUP BY ALL ORDER BY 1, 2, 3""",
            )
        attribute_columns: list[str] = []
        sensitive: list[str] = []
        if has_customers:
            columns = [r[0] for r in con.execute("DESCRIBE SELECT * FROM customers").fetchall()]
            # only the columns used as attributes (free text and identifiers are not: see _PersonData)
            used = attribute_kinds(con)
            attribute_columns = [c for c in safe_attribute_columns(columns, dataset) if c in used]
            sensitive = [c for c in attribute_columns if dataset.privacy.is_sensitive(c)]
            selected = ", ".join(quote_ident(c) for c in ["customer_id", *attribute_columns])
            write("attributes", f"SELECT {selected} FROM customers ORDER BY customer_id")
    finally:
        for table in ("_profile_ids", "_profile_orders", "_profile_events"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
    summary = {
        "format": MATERIAL_FORMAT,
        "as_of": as_of.isoformat(),
        "data": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) is not None else None,
        "timezone": dataset.timezone,
        "has_identities": has_map,
        "has_customers": has_customers,
        "has_events": has_events,
        "attribute_columns": attribute_columns,
        "sensitive_columns": sensitive,
        "rows": counts,
    }
    atomic_write_text(json.dumps(summary, indent=2), folder / MATERIAL_SUMMARY)
    return counts


def material_of(
    run: Path | None, as_of: dt.date | None, data: Path | None
) -> tuple[Path | None, dict | None, str | None]:
    """The run's profile material folder and its summary when a profile may be built from it:
    the run has one, the profile's as-of date is the run's, and it was built from the data set
    ``data``. Else None and, when the run has material that cannot be used, why (a note)."""
    if run is None or data is None:
        return None, None, None
    folder = run / MATERIAL
    try:
        summary = json.loads((folder / MATERIAL_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None, None
    if as_of is not None and summary.get("as_of") != as_of.isoformat():
        return None, None, None  # another date: the data set is read (orders and events before that date)
    if summary.get("format") != MATERIAL_FORMAT:
        return None, None, "the run's profile material was written by another version: read from the data set"
    if summary.get("data") != str(Path(data).resolve()):
        why = f"the run's profile material was built from {summary.get('data')}, not {data}: read from the data set"
        return None, None, why
    return folder, summary, None


_PRIVACY: dict[str, tuple[tuple, Any]] = {}


def privacy_now(data: Path):
    """The ``[privacy]`` settings in the data set's ``portrait.toml`` now (read again when the
    file changes; none without the file)."""
    import tomllib

    from portrait.dataset import CONFIG_FILE
    from portrait.privacy import PrivacySettings

    config = Path(data) / CONFIG_FILE
    try:
        stat = config.stat()
    except OSError:
        return _with_withheld(PrivacySettings(), data)
    stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    held = _PRIVACY.get(str(config))
    if held is None or held[0] != stamp:
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PortraitError(f"{config}: {exc}") from None
        held = (stamp, PrivacySettings.from_config(raw.get("privacy", {}), config, Path(data)))
        _PRIVACY[str(config)] = held
    return _with_withheld(held[1], data)


_WITHHELD: dict[str, tuple[tuple, tuple[str, ...]]] = {}


def _with_withheld(privacy, data: Path):
    """``privacy`` with the customers columns the data set withholds now among its
    ``pii_columns`` (:func:`portrait.privacy.with_withheld_columns`). The data set is opened
    again only when its folder's files change (names, sizes, times: one listing per call);
    one that cannot be opened adds nothing."""
    from portrait.privacy import with_pii_columns

    folder = Path(data)
    try:
        stamp = tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)))
    except OSError:
        return privacy
    held = _WITHHELD.get(str(folder))
    if held is None or held[0] != stamp:
        try:
            source = _opened(folder).sources.get("customers")
            withheld = tuple(source.withheld) if source is not None else ()
        except PortraitError:
            withheld = ()
        held = (stamp, withheld)
        _WITHHELD[str(folder)] = held
    return with_pii_columns(privacy, held[1])


class _PersonMaterial:
    """The person's data-set part from a run's profile material (see
    :func:`write_profile_material`): the same answers as :class:`_PersonData`, by point reads."""

    fast = True

    def __init__(self, folder: Path, summary: dict, asked: str, reader, data: Path) -> None:
        self.folder = folder
        self.data = data
        self.asked = asked
        self.reader = reader
        self.summary = summary
        self.timezone: str | None = summary.get("timezone")  # material written before it was recorded: None
        found = reader.records(folder / "ids.parquet", asked)
        self.known = bool(found)
        self.person_id = found[0]["person_id"] if found else asked
        people = reader.records(folder / "people.parquet", self.person_id)
        self.person = people[0] if people else None
        self.customer_ids = list(self.person["customer_ids"]) if self.person else [self.asked]
        self.in_map = bool(found and found[0]["in_map"])

    def close(self) -> None:
        pass

    def attributes(self, include_sensitive: bool, note) -> Attributes | None:
        from portrait.contract import is_missing_word

        if not self.summary.get("has_customers"):
            note("attributes", "the data set has no customers table")
            return None
        rows = self.reader.records(self.folder / "attributes.parquet", self.person_id)
        if not rows:
            note("attributes", "no customers row for the person")
            return None
        # the data set's [privacy] settings now, besides those the material was written with: a
        # column marked personal or sensitive since the run is withheld at once
        privacy = privacy_now(self.data)
        blocked = {c.lower() for c in privacy.pii_columns}
        shown = [c for c in self.summary["attribute_columns"] if c.lower() not in blocked]
        marked = set(self.summary["sensitive_columns"])
        hidden = [c for c in shown if c in marked or privacy.is_sensitive(c)]
        if not include_sensitive:
            shown = [c for c in shown if c not in hidden]
        return Attributes(
            values=[
                Attribute(name=c, value=None if is_missing_word(rows[0].get(c)) else _text(rows[0].get(c)))
                for c in shown
            ],
            from_customer_id=self.person["attributes_from"] if self.person else self.person_id,
            sensitive_left_out=0 if include_sensitive else len(hidden),
        )

    def identities(self) -> Identities:
        if not self.in_map:
            return Identities(customer_ids=[self.person_id], types=[], shared=[])
        types = self.reader.records(self.folder / "identity_types.parquet", self.person_id)
        shared = self.reader.records(self.folder / "shared.parquet", self.person_id)
        shared = sorted(shared, key=lambda s: (s["id_type"], tuple(s["customer_ids"])))
        return Identities(
            customer_ids=self.customer_ids,
            types=[IdentityType(id_type=t["id_type"], identifiers=int(t["identifiers"])) for t in types],
            shared=[
                SharedIdentifier(
                    id_type=s["id_type"], customer_ids=list(s["customer_ids"]), identifiers=s["identifiers"]
                )
                for s in shared
            ],
        )

    def orders(self, as_of: dt.date | None) -> Orders:
        last = self.reader.records(self.folder / "orders.parquet", self.person_id)
        return Orders(
            total=int(self.person["orders_total"]) if self.person else 0,
            spend=_cents(self.person["orders_spend"]) if self.person else 0.0,
            last=[
                Order(
                    order_id=str(o["order_id"]),
                    ts=o["ts"],
                    amount=_cents(o["amount"]),
                    lines=int(o["lines"]),
                    categories=list(o["categories"] or []),
                    channel=o["channel"],
                )
                for o in last
            ],
        )

    def events(self, as_of: dt.date | None, note) -> Events | None:
        if not self.summary.get("has_events"):
            note("events", "the data set has no events table")
            return None
        last = self.reader.records(self.folder / "events.parquet", self.person_id)
        return Events(
            total=int(self.person["events_total"]) if self.person else 0,
            last=[
                Event(
                    ts=e["ts"],
                    event_type=e["event_type"],
                    channel=e["channel"],
                    category=e["category"],
                    value=_float(e["value"]),
                )
                for e in last
            ],
        )


# ---------------------------------------------------------------- point reads of sorted tables


class _FileReader:
    """Point reads of Parquet files by customer id, each a filtered DuckDB scan (the profile
    material is sorted by id, so row-group statistics skip all but one group)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def records_of(self, files: Path | list[Path], ids: list[str], columns: str = "*") -> list[dict]:
        """The rows of ``ids`` in ``files`` as dicts, each with the ``filename`` it came from."""
        frame = _rows(self.con, files, ids, columns)
        if columns != "*":
            paths = [files] if isinstance(files, Path) else files
            frame["filename"] = str(paths[0])
        return frame.to_dict("records")

    def columns(self, file: Path) -> list[str]:
        return [r[0] for r in self.con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(file)]).fetchall()]

    def records(self, file: Path, customer_id: str) -> list[dict]:
        if not file.exists():
            return []
        cursor = self.con.execute("SELECT * FROM read_parquet(?) WHERE customer_id = ?", [str(file), customer_id])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class _Indexed:
    """One Parquet file in memory, sorted by customer id, with the start of each id's rows:
    a point read is a binary search and a slice (no file I/O)."""

    def __init__(self, path: Path, columns: list[str] | None) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        # text columns other than ids repeat a few values (event types, channels, tags): held
        # dictionary-encoded; the customer id is held once per customer (keys), not per row
        schema = pq.read_schema(path)
        repeated = [
            f.name
            for f in schema
            if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            and f.name not in ("customer_id", "order_id")
            and (columns is None or f.name in columns)
        ]
        table = pq.read_table(path, columns=columns, read_dictionary=repeated)
        keys = table["customer_id"].cast("string")
        table = table.set_column(table.schema.get_field_index("customer_id"), "customer_id", keys)
        if len(table) and not pc.all(pc.greater_equal(keys.slice(1), keys.slice(0, len(keys) - 1))).as_py():
            table = table.sort_by("customer_id")
        table = table.combine_chunks()
        self.names = table.column_names
        if len(table):
            runs = pc.run_end_encode(table["customer_id"].combine_chunks())
            self.keys = runs.values.to_numpy(zero_copy_only=False).astype(str)
            self.ends = runs.run_ends.to_numpy()
        else:
            self.keys = np.array([], dtype=str)
            self.ends = np.array([], dtype=np.int64)
        self.table = table.drop_columns(["customer_id"])
        self.nbytes = self.table.nbytes + self.keys.nbytes + self.ends.nbytes

    def rows(self, customer_id: str) -> list[dict]:
        """The rows of ``customer_id`` as dicts (with their ``customer_id``)."""
        a, b = self.span(customer_id)
        if b <= a:
            return []
        rows = self.table.slice(a, b - a).to_pylist()
        for row in rows:
            row["customer_id"] = customer_id
        return rows

    def span(self, customer_id: str) -> tuple[int, int]:
        i = int(np.searchsorted(self.keys, customer_id))
        if i >= len(self.keys) or self.keys[i] != customer_id:
            return 0, 0
        return (int(self.ends[i - 1]) if i else 0), int(self.ends[i])


class _MemoryReader:
    """Point reads from files held in memory (:class:`_Indexed`), loaded on first use. One reader
    per served run (a published run's files never change: a re-run replaces the whole folder),
    replaced, and the old run's tables freed, when LATEST names another run or the folder was
    replaced."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, tuple[str, ...] | None], _Indexed] = {}
        self._schemas: dict[str, list[str]] = {}
        self.memo: dict = {}  # what build_profile found in the run (its files, notes, material)
        self.ready = False  # every table a profile reads is loaded (see in_memory_ready)
        self.warming: threading.Thread | None = None
        self._lock = threading.Lock()

    def _indexed(self, file: Path, columns: list[str] | None = None) -> _Indexed | None:
        key = (str(file), tuple(columns) if columns else None)
        held = self._tables.get(key)
        if held is not None:
            return held
        with self._lock:
            held = self._tables.get(key)
            if held is None:
                if not file.exists():
                    return None
                held = self._tables[key] = _Indexed(file, columns)
        return held

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._tables.values())

    def warm(self, files: list[Path]) -> None:
        for file in files:
            self._indexed(file)

    def records_of(self, files: Path | list[Path], ids: list[str], columns: str = "*") -> list[dict]:
        """The rows of ``ids`` in ``files`` as dicts, each with the ``filename`` it came from."""
        paths = [files] if isinstance(files, Path) else list(files)
        wanted = None if columns == "*" else [c.strip().strip('"') for c in columns.split(",")]
        found = []
        for path in paths:
            indexed = self._indexed(path, wanted)
            if indexed is None:
                raise PortraitError(f"{path} cannot be read")
            name = str(path)
            for customer in ids:
                for row in indexed.rows(customer):
                    row["filename"] = name
                    found.append(row)
        return found

    def columns(self, file: Path) -> list[str]:
        import pyarrow.parquet as pq

        names = self._schemas.get(str(file))
        if names is None:
            try:
                names = self._schemas[str(file)] = pq.read_schema(file).names
            except OSError:
                raise PortraitError(f"{file} cannot be read") from None
        return list(names)

    def records(self, file: Path, customer_id: str) -> list[dict]:
        indexed = self._indexed(file)
        if indexed is None:
            return []
        return indexed.rows(customer_id)


_MEMORY: dict[str, tuple[str, _MemoryReader]] = {}
_MEMORY_LOCK = threading.Lock()


def memory_reader(root: Path, run: Path | None) -> _MemoryReader:
    """The in-memory reader of the run ``run`` of the refresh root ``root`` in this process:
    the same one while ``run`` and the runs beside it (their folders' identities: the score
    history reads every kept run) are unchanged, a fresh one (the old tables freed) when LATEST
    names another run, a run was re-made, or a backfill added or removed one."""
    ident = ""
    if run is not None:
        from portrait.outputs import RUNS

        folders = [run, *sorted(p for p in (Path(root) / RUNS).glob("*") if p.is_dir())]
        ident = ";".join(_folder_identity(folder) for folder in folders)
    key = str(root)
    with _MEMORY_LOCK:
        held = _MEMORY.get(key)
        if held is None or held[0] != ident:
            held = (ident, _MemoryReader())
            _MEMORY[key] = held
        return held[1]


def _folder_identity(folder: Path) -> str:
    try:
        stat = folder.stat()
        return f"{folder}:{stat.st_ino}:{stat.st_mtime_ns}"
    except OSError:
        return str(folder)


def memory_loaded(root: Path) -> bool:
    """Whether this process holds the tables of the run LATEST under ``root`` names now (no
    loading started: see :func:`in_memory_ready`)."""
    from serving.refresh import current_run

    return memory_reader(root, current_run(root)).ready


def in_memory_ready(sources: ProfileSources) -> bool:
    """Whether profiles of ``sources`` (a refresh root) can be answered from memory now. When the
    served run's tables are not loaded yet in this process, their loading starts in a
    background thread (once per run) and False is returned: the caller answers this request
    from the files (:func:`build_profile` without ``in_memory``) instead of making it wait for
    the whole run to load."""
    from serving.refresh import current_run

    if sources.runs is None:
        return False
    run = current_run(sources.runs)
    reader = memory_reader(sources.runs, run)
    if reader.ready:
        return True
    with reader._lock:
        if reader.warming is None:
            reader.warming = threading.Thread(target=_warm, args=(sources, run, reader), daemon=True)
            reader.warming.start()
    return False


def _warm(sources: ProfileSources, run: Path | None, reader: _MemoryReader) -> None:
    """Load every table a profile of ``run`` reads, by building one profile of a known id."""
    try:
        customer = _some_customer(run)
        if customer is not None:
            build_profile(customer, sources, compute_reasons=False, in_memory=True)
    except PortraitError:
        pass  # a profile's error is its request's to report; the tables loaded so far stay
    finally:
        reader.ready = True


def _some_customer(run: Path | None) -> str | None:
    """A customer id the run knows: the first of its profile material's ids, else of its scores."""
    import pyarrow.parquet as pq

    if run is None:
        return None
    for path in (run / MATERIAL / "ids.parquet", *sorted((run / "scores").glob("scores_*.parquet"))):
        if path.exists():
            column = pq.ParquetFile(path).read_row_group(0, columns=["customer_id"])["customer_id"]
            if len(column):
                return str(column[0])
    return None


def profile_json(profile: CustomerProfile) -> str:
    """The profile as indented JSON (what ``portrait profile --json`` prints)."""
    return json.dumps(profile.model_dump(mode="json"), indent=2, ensure_ascii=False)
