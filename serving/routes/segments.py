"""``/segments``: saved segments with their latest refresh, and a segment's members page by
page, without those the consent rules leave out; every page pulled is recorded in the audit log.

The API never evaluates segments: it serves what ``portrait segment refresh`` stored (the
segments folder's history and members) or, with ``--runs``, the members of the run served."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from marketing.segments import BrokenSegment, SegmentStore, check_name
from marketing.tags import Library
from portrait.audit import record_export
from portrait.errors import NotFound, PortraitError, Unavailable
from portrait.files import read_parquet
from portrait.privacy import Consent
from serving.keys import Caller
from serving.routes.access import Access, refuse_sensitive_terms
from serving.routes.errors import ProductErrorRoute, error_answers, without_server_paths
from serving.settings import MAX_OFFSET


class SegmentInfo(BaseModel):
    name: str
    description: str = ""
    definition: str = Field(description="The segment's conditions, as portrait segment show prints them")
    customers: int | None = Field(None, description="Members at the latest refresh")
    share: float | None = Field(None, description="Share of all customers at the latest refresh")
    as_of: str | None = Field(None, description="As-of date of the latest refresh")
    entered: int | None = Field(None, description="Members new since the refresh before")
    left: int | None = Field(None, description="Members gone since the refresh before")
    refreshed_reads: str | None = Field(
        None,
        description=(
            "What the segment read when the served run refreshed it, given only where its saved definition has "
            "changed since: the members and counts are that run's, not today's definition's"
        ),
    )


class SegmentList(BaseModel):
    segments: list[SegmentInfo]
    unreadable: list[str] = Field(
        default_factory=list, description="Saved segment files that cannot be read, each with why (for the operator)."
    )


class SegmentMembers(BaseModel):
    name: str
    as_of: str
    total: int = Field(description="Members who may be contacted (the consent rules applied)")
    offset: int
    limit: int
    left_out: dict[str, int] = Field(
        default_factory=dict,
        description="Members left out per reason: no_consent (opted out or none recorded), suppressed",
    )
    customer_ids: list[str]


def read_run_segments(folder: Path) -> dict:
    """A run's ``segments/summary.json`` (sizes per segment and the as-of date), or {}."""
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_reads(folder: Path | None, name: str) -> str:
    """What segment ``name`` was computed from when the run whose members are in ``folder``
    refreshed it (its ``summary.json``; empty when not recorded): the members served are that
    run's, so the privacy check reads this beside today's definition."""
    if folder is None:
        return ""
    recorded = read_run_segments(folder).get("segments", {}).get(name) or {}
    return str(recorded.get("reads") or "")


def run_segments_folder(runs: Path | None) -> Path | None:
    """The saved segments folder the refresh of the run ``LATEST`` names refreshed (recorded
    in its ``segments/summary.json``), when it still exists: what ``serve --runs`` serves
    without ``--segments``."""
    from serving.refresh import current_run

    run = current_run(runs) if runs is not None else None
    folder = read_run_segments(run / "segments").get("folder") if run is not None else None
    return Path(folder) if folder and Path(folder).is_dir() else None


def _load(store: SegmentStore, name: str):
    check_name(name)  # a name no segment can have is a bad request (422), as crowd reports say
    try:
        return store.load(name)
    except BrokenSegment:  # an Unavailable (503): the operator's to fix, not an unknown name
        raise
    except PortraitError as exc:
        raise NotFound(str(exc)) from None


def segment_info(
    store: SegmentStore, name: str, run_members: Path | None = None, library: Library | None = None
) -> SegmentInfo:
    segment = _load(store, name)
    info = SegmentInfo(name=name, description=segment.description, definition=segment.definition())
    if run_members is not None:
        summary = read_run_segments(run_members)
        size = summary.get("segments", {}).get(name)
        if size is not None:
            info.customers, info.share, info.as_of = int(size["customers"]), float(size["share"]), summary["as_of"]
            info.entered, info.left = size.get("entered"), size.get("left")  # runs before 2026-12-07: none
            # a definition edited after the run (Homeowner -> Renter) was shown beside the run's
            # 504 homeowners: what the run read is given where it differs
            then = run_reads(run_members, name)
            if then and library is not None and then != store.reads(name, library):
                info.refreshed_reads = then
        return info
    history = store.history(name)
    if len(history):
        last = history.iloc[-1]
        info.customers, info.share, info.as_of = int(last["customers"]), float(last["share"]), str(last["as_of"])
        info.entered = None if pd.isna(last["entered"]) else int(last["entered"])
        info.left = None if pd.isna(last["left"]) else int(last["left"])
    return info


def build_segments_router(
    store: SegmentStore,
    *,
    run_members: Callable[[], Path | None] = lambda: None,
    consent: Callable[[], Consent] | None = None,
    access: Access | None = None,
    audit_log: Path | None = None,
    library: Library | None = None,
    sensitive: Callable[[], list[str]] = lambda: [],
) -> APIRouter:
    """``run_members`` gives the folder of a run's members for this request (None: the
    segments folder's own); ``consent`` the current consent rules (None: no rules);
    ``audit_log`` where pulls are recorded (None: not recorded, for a router mounted alone);
    ``library`` the tag library segments' tags come from and ``sensitive`` the data set's
    sensitive attribute features: a marketing key may not pull the members of a segment
    computed from one (the list would tell each member's value)."""
    router = APIRouter(route_class=ProductErrorRoute, responses=error_answers(), tags=["segments"])
    access = access or Access()

    @router.get("/segments", response_model=SegmentList)
    def list_segments() -> SegmentList:
        """Every saved segment with its size at the latest refresh."""
        folder = run_members()
        listed, unreadable = [], []
        for name in store.names():  # one file edited by hand does not take the listing down
            try:
                listed.append(segment_info(store, name, folder, library))
            except Unavailable as exc:
                unreadable.append(without_server_paths(str(exc)))
        return SegmentList(segments=listed, unreadable=unreadable)

    @router.get("/segments/{name}", response_model=SegmentInfo)
    def segment(name: str) -> SegmentInfo:
        """One saved segment: its definition and latest refresh."""
        return segment_info(store, name, run_members(), library)

    @router.get("/segments/{name}/customers", response_model=SegmentMembers)
    def segment_customers(
        name: str,
        caller: Annotated[Caller, Depends(access.caller)],
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ) -> SegmentMembers:
        """A page of the segment's members who may be contacted; recorded in the audit log."""
        _load(store, name)
        folder = run_members()
        if library is not None:
            reads = f"{store.reads(name, library)} {run_reads(folder, name)}"
            refuse_sensitive_terms(caller, reads, sensitive(), "pull the members of a segment computed from")
        if folder is not None:
            path = folder / f"{name}.parquet"
            if not path.exists():
                raise NotFound(f"segment {name!r} was not refreshed in the run served ({folder.parent.name})")
            members = read_parquet(path)
            as_of = str(read_run_segments(folder).get("as_of") or folder.parent.name)
        else:
            try:
                members = store.members(name)
            except PortraitError as exc:
                raise NotFound(str(exc)) from None
            as_of = str(members["as_of"].iloc[0]) if len(members) else (segment_info(store, name).as_of or "")
        left_out: dict[str, int] = {}
        if consent is not None:
            members, left_out = consent().apply(members)
        ids = members["customer_id"].astype("str")
        page = ids.iloc[offset : offset + limit].tolist()
        if audit_log is not None:
            record_export(
                audit_log,
                caller.name,
                "GET /segments/{name}/customers",
                {"segment": name, "as_of": as_of, "offset": offset, "limit": limit},
                len(page),
                via="api",
                left_out=left_out,
            )
        return SegmentMembers(
            name=name, as_of=as_of, total=len(ids), offset=offset, limit=limit, left_out=left_out, customer_ids=page
        )

    return router
