"""``/tags`` and ``/segments``: the tag library with its latest counts, saved segments with
their latest refresh, and a segment's members page by page.

The API never computes tags or segments: it serves what ``portrait tags apply`` and
``portrait segment refresh`` stored, and says when that was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from marketing.segments import SegmentStore
from marketing.tags import Library, load_library, tags_dates, tags_file
from portrait.errors import PortraitError
from portrait.files import read_parquet
from portrait.privacy import Consent


class TagInfo(BaseModel):
    name: str = Field(description="Tag name, as used by --tag and in the tags table")
    group: str = Field(description="Group path, e.g. value/spending_power")
    kind: str = Field(description="rule, model or manual")
    definition: str = Field(description="The condition, or how it is assigned")
    description: str = ""
    customers: int | None = Field(None, description="Holders in the latest tags table, if one is stored")


class TagList(BaseModel):
    library: str
    as_of: str | None = Field(None, description="As-of date of the latest stored tags table")
    tags: list[TagInfo]


class SegmentInfo(BaseModel):
    name: str
    description: str = ""
    definition: str
    customers: int | None = Field(None, description="Members at the latest refresh")
    share: float | None = Field(None, description="Share of all customers at the latest refresh")
    as_of: str | None = Field(None, description="As-of date of the latest refresh")
    entered: int | None = None
    left: int | None = None


class SegmentList(BaseModel):
    segments: list[SegmentInfo]


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


def _latest_tags(tags_dir: Path | None) -> tuple[pd.DataFrame | None, str | None]:
    dates = tags_dates(tags_dir)
    if not dates:
        return None, None
    latest = dates[-1]
    return read_parquet(tags_file(tags_dir, latest), columns=["customer_id", "tag"]), latest.isoformat()


def _segment_info(store: SegmentStore, name: str) -> SegmentInfo:
    segment = store.load(name)
    history = store.history(name)
    info = SegmentInfo(name=name, description=segment.description, definition=segment.definition())
    if len(history):
        last = history.iloc[-1]
        info.customers, info.share, info.as_of = int(last["customers"]), float(last["share"]), str(last["as_of"])
        info.entered = None if pd.isna(last["entered"]) else int(last["entered"])
        info.left = None if pd.isna(last["left"]) else int(last["left"])
    return info


def build_router(
    segments_dir: Path | None,
    tags_dir: Path | None,
    tags_library: Path | None,
    consent: Callable[[], Consent] | None = None,
) -> APIRouter:
    """Routes over stored tags and segments; the tag library is read (and checked) once here,
    so a bad library stops the server at start rather than failing requests. ``consent`` gives
    the current consent rules, applied to a segment's customers (none: no rules)."""
    router = APIRouter()
    store = SegmentStore(segments_dir)
    loaded = load_library(tags_library)

    def library() -> Library:
        return loaded

    @router.get("/tags", response_model=TagList, tags=["tags"])
    def list_tags() -> TagList:
        lib = library()
        stored, as_of = _latest_tags(tags_dir)
        counts = stored["tag"].value_counts().to_dict() if stored is not None else {}
        entries = [
            TagInfo(
                name=t.name,
                group=t.group,
                kind=t.kind,
                definition=t.definition(),
                description=t.description,
                customers=counts.get(t.name, 0) if stored is not None else None,
            )
            for t in lib.tags
            if not t.each
        ]
        fixed = {t.name for t in lib.tags}
        for name, count in sorted(counts.items()):  # expanded and exclusive-group tags
            if name not in fixed:
                group = next((g for g in lib.groups.values() if name.startswith(f"{g.label}: ")), None)
                each = next((t for t in lib.tags if t.each and name.startswith(f"{t.name}: ")), None)
                entries.append(
                    TagInfo(
                        name=name,
                        group=group.path if group else (each.group if each else ""),
                        kind=each.kind if each else "rule",
                        definition=f"one value of {group.path}" if group else (each.definition() if each else ""),
                        customers=int(count),
                    )
                )
        return TagList(library=lib.source, as_of=as_of, tags=entries)

    @router.get("/segments", response_model=SegmentList, tags=["segments"])
    def list_segments() -> SegmentList:
        return SegmentList(segments=[_segment_info(store, name) for name in store.names()])

    @router.get("/segments/{name}", response_model=SegmentInfo, tags=["segments"])
    def segment(name: str) -> SegmentInfo:
        try:
            return _segment_info(store, name)
        except PortraitError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @router.get("/segments/{name}/customers", response_model=SegmentMembers, tags=["segments"])
    def segment_customers(
        name: str, limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0)
    ) -> SegmentMembers:
        try:
            store.load(name)
            members = store.members(name)
        except PortraitError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        as_of = str(members["as_of"].iloc[0]) if len(members) else (_segment_info(store, name).as_of or "")
        left_out: dict[str, int] = {}
        if consent is not None:
            members, left_out = consent().apply(members)
        ids = members["customer_id"].astype("str")
        page = ids.iloc[offset : offset + limit].tolist()
        return SegmentMembers(
            name=name, as_of=as_of, total=len(ids), offset=offset, limit=limit, left_out=left_out, customer_ids=page
        )

    return router
