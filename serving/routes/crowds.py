"""``GET /crowds/report``: the portrait of a segment, tag or persona as JSON, suppressed as the
files are (counts under ``min_cell`` as ``"<N"``, figures from them blank).

Unlike the stored tables the other routes serve, a portrait is computed on request from the
data set, as of the scores' date unless ``as_of`` is given (point-in-time: data before that
date only), and the last few answers are kept in memory. On a large data set the first answer
for a crowd takes as long as ``portrait crowd report``. A report holds counts, never ids, so it
is not an export and not in the audit log.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from portrait.errors import NotFound, PortraitError, Unavailable
from serving.routes.errors import ProductErrorRoute

CACHED = 8
UNKNOWN_CROWD = ("no saved segment", "no tag", "no persona")


@dataclass(frozen=True)
class CrowdSources:
    """What one request's report is computed from."""

    data: Path | None
    default_as_of: str | None
    scores_dir: Path | None


class Figure(BaseModel):
    measure: str
    crowd: float | str | None = Field(description="The crowd's figure; '<N' or null when suppressed")
    base: float | str | None = Field(description="The comparison base's figure")


class DimensionRow(BaseModel):
    dimension: str = Field(description="Stable snake_case dimension name, e.g. spending_power")
    value: str
    count: str = Field(description="Customers of the crowd with this value, or '<N' when fewer than min_cell")
    share: str = Field(description="Share of the crowd (blank when suppressed)")
    base_share: str = Field(description="Share of the base (blank when suppressed)")
    tgi: str = Field(description="100 x share / base share (blank when suppressed or the base has none)")


class LineRow(BaseModel):
    value: str = Field(description="Category or brand")
    spend: float | None = None
    share_of_spend: float | None = None
    buyers: str = Field(description="Crowd customers who bought it, or '<N'")
    penetration: float | None = None
    base_penetration: float | None = None
    avg_unit_price: float | None = None
    tgi: float | None = None


class CrossSell(BaseModel):
    orders: int | None = None
    rate: float | None = Field(None, description="Share of the crowd's orders with more than one category")
    base_orders: int | None = None
    base_rate: float | None = None


class ActivityRow(BaseModel):
    measure: str
    label: str
    reach: str = Field(description="Crowd customers with any, or '<N'")
    base_reach: int
    mean: float | None = None
    base_mean: float | None = None
    reach_share: float | None = None
    base_reach_share: float | None = None
    index: float | None = None


class CrowdPortrait(BaseModel):
    crowd: str
    base: str
    as_of: str
    min_cell: int
    customers: int | str = Field(description="Crowd size, or '<N' when fewer than min_cell")
    figures: list[Figure]
    dimensions: list[DimensionRow]
    top_categories: list[LineRow]
    top_brands: list[LineRow]
    cross_sell: CrossSell
    activity: list[ActivityRow]
    notes: list[str]


def build_crowds_router(
    sources: Callable[[], CrowdSources], *, segments_dir: Path | None, tags_library: Path | None
) -> APIRouter:
    router = APIRouter(route_class=ProductErrorRoute, tags=["crowds"])
    cache: OrderedDict[tuple, dict] = OrderedDict()
    lock = threading.Lock()

    @router.get("/crowds/report", response_model=CrowdPortrait)
    def crowd_report_route(
        segment: str | None = Query(None, max_length=64, description="A saved segment"),
        tag: str | None = Query(None, max_length=200, description="A tag of the library"),
        persona: str | None = Query(None, max_length=200, description="A persona name"),
        as_of: str | None = Query(None, description="YYYY-MM-DD; default: the scores' as-of date"),
        min_cell: int = Query(10, ge=1, le=1000, description="Counts under this are shown as '<N'"),
    ) -> CrowdPortrait:
        """The crowd's portrait against all customers, small cells suppressed."""
        from marketing.crowd import crowd_from_options

        try:
            crowd = crowd_from_options(segment=segment, tag=tag, persona=persona)
        except PortraitError:
            raise PortraitError("give one of segment=, tag= or persona=") from None
        current = sources()
        if current.data is None:
            raise Unavailable("crowd reports need the data set: start portrait serve --data")
        date = as_of or current.default_as_of
        if date is None:
            raise PortraitError("give as_of=YYYY-MM-DD (no scores date to default to)")
        key = (crowd, date, min_cell, current)
        with lock:
            if key in cache:
                cache.move_to_end(key)
                return CrowdPortrait(**cache[key])
        try:
            answer = _compute(current.data, date, crowd, min_cell, current.scores_dir, segments_dir, tags_library)
        except PortraitError as exc:
            if str(exc).startswith(UNKNOWN_CROWD):
                raise NotFound(str(exc)) from None
            raise
        with lock:
            cache[key] = answer
            while len(cache) > CACHED:
                cache.popitem(last=False)
        return CrowdPortrait(**answer)

    return router


def _compute(data, as_of, crowd, min_cell, scores_dir, segments_dir, tags_library) -> dict:
    from marketing.crowd import Crowd, CrowdData
    from marketing.crowd_report import crowd_report, report_json
    from marketing.population import Population
    from marketing.segments import SegmentStore
    from marketing.tags import load_library
    from portrait.dataset import open_dataset

    library = load_library(tags_library)
    with Population(open_dataset(data), as_of, scores_dir=scores_dir) as population:
        crowds = CrowdData(population, library, segments=SegmentStore(segments_dir))
        crowds.check_as_of()
        mask = crowds.mask(crowd)
        report = crowd_report(
            crowds,
            mask,
            crowds.mask(Crowd("all")),
            crowd_name=crowd.describe(),
            base_name="all customers",
            min_cell=min_cell,
        )
    answer = report_json(report)
    for row in answer["top_categories"] + answer["top_brands"]:
        row["buyers"] = str(row["buyers"])
    for row in answer["activity"]:
        row["reach"] = str(row["reach"])
    return answer
