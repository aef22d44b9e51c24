"""``GET /crowds/report``: the portrait of a segment, tag or persona as JSON, suppressed as the
files are (counts under ``min_cell`` as ``"<N"``, figures from them blank). ``GET
/crowds/customers``: the drill-down of one report cell (``cell=DIM = VALUE``) into its customer
ids, a page at a time, less those the consent rules leave out, recorded in the audit log like
every export (``portrait crowd export`` is the same from the command line).

A portrait is computed on request, as of the scores' date unless ``as_of`` is given
(point-in-time: data before that date only), and the last few answers are kept in memory.
Served from a refresh root (``--runs``), the run's crowd material answers for the run's date
(marketing/crowd_material.py): a mask and a few group-bys. Otherwise, or for another date, it
is computed from the data set, and on a large one the first answer for a crowd takes as long as
``portrait crowd report``. A report holds counts, never ids, so it
is not an export and not in the audit log; a drill-down is both.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from portrait.audit import record_export
from portrait.errors import NotFound, PortraitError, Unavailable
from serving.keys import Caller
from serving.routes.access import Access, refuse_sensitive_terms
from serving.routes.errors import ProductErrorRoute, error_answers
from serving.settings import MAX_OFFSET

log = logging.getLogger(__name__)

CACHED = 8
# Why a served run's crowd material could not answer, each said once (every answer is then
# computed from the data set: about a minute at 1M customers).
_SAID_PROBLEMS: set[str] = set()
UNKNOWN_CROWD = ("no saved segment", "no tag", "no persona")


@dataclass(frozen=True)
class CrowdSources:
    """What one request's report is computed from."""

    data: Path | None
    default_as_of: str | None
    scores_dir: Path | None
    run: Path | None = None  # a refresh run: its crowd material answers for its own date


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


class CellCustomers(BaseModel):
    crowd: str
    cell: str = Field(description="The drilled-down cell, DIMENSION = VALUE")
    as_of: str
    total: int = Field(description="Customers of the crowd in the cell who may be contacted")
    offset: int
    limit: int
    left_out: dict[str, int] = Field(description="Customers left out by the consent rules, by reason")
    customer_ids: list[str]


def build_crowds_router(
    sources: Callable[[], CrowdSources],
    *,
    segments_dir: Path | None,
    tags_library: Path | None,
    access: Access | None = None,
    audit_log: Path | None = None,
    least_cell: int | None = None,
) -> APIRouter:
    """``audit_log``: where drill-downs are recorded (None: not recorded, for a router mounted
    alone); ``least_cell``: the smallest ``min_cell`` a caller may ask for (default the reports'
    own, :data:`marketing.crowd_report.DEFAULT_MIN_CELL`; hand-written test data asks for less)."""
    from marketing.crowd_report import DEFAULT_MIN_CELL

    least_cell = DEFAULT_MIN_CELL if least_cell is None else least_cell
    router = APIRouter(route_class=ProductErrorRoute, responses=error_answers(), tags=["crowds"])
    cache: OrderedDict[tuple, dict] = OrderedDict()
    cells: OrderedDict[tuple, tuple[list[str], dict[str, int]]] = OrderedDict()  # drill-downs
    lock = threading.Lock()
    access = access or Access()

    def cached(store: OrderedDict, key: tuple, compute: Callable[[], Any]) -> Any:
        """The answer kept for ``key``, else computed (an unknown crowd is a 404) and kept (the
        last :data:`CACHED` answers)."""
        with lock:
            if key in store:
                store.move_to_end(key)
                return store[key]
        with _unknown_crowd_not_found():
            answer = compute()
        with lock:
            store[key] = answer
            while len(store) > CACHED:
                store.popitem(last=False)
        return answer

    def crowd_and_date(segment, tag, persona, as_of):
        from marketing.crowd import crowd_from_options

        try:
            crowd = crowd_from_options(segment=segment, tag=tag, persona=persona)
        except PortraitError:
            raise PortraitError("give one of segment=, tag= or persona=") from None
        current = sources()
        if current.data is None:
            raise Unavailable("crowd reports need the data set: start portrait serve --data")
        _check_named(crowd, segments_dir, tags_library)
        date = as_of or current.default_as_of
        if date is None:
            raise PortraitError("give as_of=YYYY-MM-DD (no scores date to default to)")
        return crowd, date, current

    @router.get("/crowds/customers", response_model=CellCustomers)
    def crowd_cell_customers(
        caller: Annotated[Caller, Depends(access.caller)],
        cell: str = Query(..., max_length=300, description="DIMENSION = VALUE, as in the report"),
        segment: str | None = Query(None, max_length=64, description="A saved segment"),
        tag: str | None = Query(None, max_length=200, description="A tag of the library"),
        persona: str | None = Query(None, max_length=200, description="A persona name"),
        as_of: str | None = Query(None, max_length=32, description="YYYY-MM-DD; default: the scores' as-of date"),
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ) -> CellCustomers:
        """A page of the customers of one report cell who may be contacted; recorded in the audit log."""
        crowd, date, current = crowd_and_date(segment, tag, persona, as_of)
        sensitive = _sensitive_dimensions(current)
        refuse_sensitive_terms(caller, cell.split("=")[0].strip(), sensitive, "drill into report cells by")
        refuse_sensitive_terms(
            caller,
            _crowd_reads(segment, tag, segments_dir, tags_library, current.run),
            sensitive,
            "drill into a crowd computed from",
        )
        ids, left_out, described = cached(
            cells,
            (
                crowd,
                cell,
                date,
                current,
                _freshness(current),
                _definitions(segments_dir, tags_library, current.scores_dir),
            ),
            lambda: _cell_ids(current, date, crowd, cell, segments_dir, tags_library),
        )
        page = ids[offset : offset + limit]
        if audit_log is not None:
            record_export(
                audit_log,
                caller.name,
                "GET /crowds/customers",
                {"crowd": described, "cell": cell, "as_of": date, "offset": offset, "limit": limit},
                len(page),
                via="api",
                left_out=left_out,
            )
        return CellCustomers(
            crowd=described,
            cell=cell,
            as_of=date,
            total=len(ids),
            offset=offset,
            limit=limit,
            left_out=left_out,
            customer_ids=page,
        )

    @router.get("/crowds/report", response_model=CrowdPortrait)
    def crowd_report_route(
        segment: str | None = Query(None, max_length=64, description="A saved segment"),
        tag: str | None = Query(None, max_length=200, description="A tag of the library"),
        persona: str | None = Query(None, max_length=200, description="A persona name"),
        as_of: str | None = Query(None, max_length=32, description="YYYY-MM-DD; default: the scores' as-of date"),
        min_cell: int = Query(
            least_cell,
            ge=least_cell,  # a caller may hide more, never less: small cells identify people
            le=1000,
            description=f"Counts under this are shown as '<N' (at least {least_cell})",
        ),
    ) -> CrowdPortrait:
        """The crowd's portrait against all customers, small cells suppressed."""
        crowd, date, current = crowd_and_date(segment, tag, persona, as_of)
        answer = cached(
            cache,
            (
                crowd,
                date,
                min_cell,
                current,
                _freshness(current),
                _definitions(segments_dir, tags_library, current.scores_dir),
            ),
            lambda: _compute(current, date, crowd, min_cell, segments_dir, tags_library),
        )
        return CrowdPortrait(**answer)

    return router


def _check_named(crowd, segments_dir: Path | None, tags_library: Path | None) -> None:
    """An unknown segment or tag is a 404 (a name no segment can have a 422) before anything is
    computed."""
    from marketing.crowd import check_crowd_named
    from marketing.segments import SegmentStore, check_name
    from marketing.tags import load_library

    if crowd.kind == "segment":
        check_name(crowd.value)
    if crowd.kind in ("segment", "tag"):
        with _unknown_crowd_not_found():
            check_crowd_named(crowd, SegmentStore(segments_dir), load_library(tags_library))


@contextmanager
def _unknown_crowd_not_found() -> Iterator[None]:
    """A crowd the request names that does not exist (no such segment, tag or persona) is a 404."""
    try:
        yield
    except PortraitError as exc:
        if str(exc).startswith(UNKNOWN_CROWD):
            raise NotFound(str(exc)) from None
        raise


def _crowd_reads(
    segment: str | None,
    tag: str | None,
    segments_dir: Path | None,
    tags_library: Path | None,
    run: Path | None = None,
) -> str:
    """What a segment's or a tag's crowd is computed from (empty for a persona): its members'
    ids tell each one's value of it. With a served ``run``, a segment's members may be that
    run's, so what the run recorded it was computed from counts too."""
    from marketing.segments import SegmentStore
    from marketing.tags import RecordedReads, load_library
    from serving.routes.segments import run_reads

    if segment is None and tag is None:
        return ""
    library = load_library(tags_library)
    if segment is None:  # with a run, its tags may be another library's: what the run recorded too
        tables = sorted((run / "tags").glob("tags_*.parquet")) if run is not None else []
        recorded = RecordedReads.beside(tables[-1] if tables else None)
        return f"{library.reads(tag)} {recorded.reads(tag)}"
    store = SegmentStore(segments_dir)
    recorded = run_reads(run / "segments", segment) if run is not None else ""
    # An unknown segment is answered later, as a 404 naming the saved ones.
    return f"{store.reads(segment, library)} {recorded}" if store.exists(segment) else recorded


def _sensitive_dimensions(sources: CrowdSources) -> list[str]:
    """The report dimensions (a value, or quintile bands of a number) and the attribute
    features of the data set's sensitive columns."""
    from marketing.crowd import attribute_dimension_names
    from serving.profile import privacy_now
    from serving.score import sensitive_attribute_features

    privacy = privacy_now(sources.data)
    features = [feature.name for feature in sensitive_attribute_features(privacy)]
    # and each column's own name, which a report cell may name its dimension by ("género = f")
    own = list(privacy.sensitive_columns)
    return features + own + [name for c in privacy.sensitive_columns for name in attribute_dimension_names(c)]


def _definitions(segments_dir: Path | None, tags_library: Path | None, scores_dir: Path | None) -> tuple:
    """The saved segments', the tag library's and the stored scores' files as they are now
    (:func:`portrait.files.file_stamp`): part of every cache key, so an answer is never one of
    an earlier definition or scoring. A segment edited to another condition answered from the
    cache with its old members: a drill-down the sensitive-attribute check had just allowed for
    the new definition gave the ids of the old one (a user's test); a date scored again (a new
    personas model) answered with the personas before."""
    from marketing.segments import SegmentStore
    from marketing.tags import template_path
    from portrait.files import file_stamp

    files = [tags_library or template_path()]
    folder = SegmentStore(segments_dir).folder
    if folder.is_dir():
        files += sorted(folder.glob("*.toml"))
    if scores_dir is not None and scores_dir.is_dir():
        files += sorted(scores_dir.glob("scores_*.parquet"))
    return tuple((path.name, file_stamp(path)) for path in files)


def _freshness(sources: CrowdSources) -> tuple[str, int]:
    """Changes whenever a kept answer could be stale: the data set's files or tombstones
    (a correction, a `portrait forget`), its consent rules or suppression file, or the run's
    files (forget rewrites them and touches the run's folder). Part of every cache key, so a
    new opt-out or a forgotten person is out of the very next answer, on every worker."""
    from portrait.dataset import open_dataset
    from portrait.privacy import consent_version

    run_time = 0
    if sources.run is not None:
        try:
            run_time = sources.run.stat().st_mtime_ns
        except OSError:
            run_time = -1
    return consent_version(open_dataset(sources.data)), run_time


@contextmanager
def _crowd_data(sources: CrowdSources, as_of: str, segments_dir, tags_library) -> Iterator:
    """The crowds as of ``as_of``: from the served run's crowd material when it holds that date
    (and the same tag library and data set), else computed from the data set."""
    from features.build import parse_cutoff
    from marketing.crowd import CrowdData
    from marketing.crowd_material import FOLDER, StoredCrowdData, material_problem
    from marketing.population import Population
    from marketing.segments import SegmentStore
    from marketing.tags import load_library
    from portrait.dataset import open_dataset
    from portrait.outputs import scores_dates

    library = load_library(tags_library)
    segments = SegmentStore(segments_dir)
    dataset = open_dataset(sources.data)
    date = parse_cutoff(as_of)
    problem = material_problem(sources.run / FOLDER, library, date, dataset.fingerprint()) if sources.run else None
    if sources.run is not None and problem is None:
        crowds = StoredCrowdData(sources.run, sources.data, library, segments=segments)
        try:
            yield crowds
        finally:
            crowds.close()
        return
    if problem is not None and problem not in _SAID_PROBLEMS:  # once per reason: each answer is slower
        _SAID_PROBLEMS.add(problem)
        log.warning("crowds: computed from the data set, not the served run's material: %s", problem)
    scores_dir = sources.scores_dir
    if scores_dir is not None and not any(d <= date for d in scores_dates(scores_dir)):
        # a date before every stored score: the report of what the data holds then, without
        # personas and scores, as the command computes it without --scores (it was a 422
        # "no scores as of ..." even for a segment of attributes); a persona crowd says it needs them
        scores_dir = None
    with Population(dataset, date, scores_dir=scores_dir) as population:
        crowds = CrowdData(population, library, segments=segments)
        crowds.check_as_of()
        yield crowds


def _compute(sources: CrowdSources, as_of, crowd, min_cell, segments_dir, tags_library) -> dict:
    from marketing.crowd import Crowd
    from marketing.crowd_report import crowd_report, report_json

    with _crowd_data(sources, as_of, segments_dir, tags_library) as crowds:
        crowd = crowds.named(crowd)
        mask = crowds.mask(crowd)
        report = crowd_report(
            crowds,
            mask,
            crowds.mask(Crowd("all")),
            crowd_name=crowd.describe(),
            base_name="all customers",
            min_cell=min_cell,
        )
        unheld = crowds.unheld_tag(crowd)  # a misspelt tag: said, as the command says it
        if unheld:
            report.notes.append(unheld)
    answer = report_json(report)
    for row in answer["top_categories"] + answer["top_brands"]:
        row["buyers"] = str(row["buyers"])
    for row in answer["activity"]:
        row["reach"] = str(row["reach"])
    return answer


def _cell_ids(
    sources: CrowdSources, as_of, crowd, cell, segments_dir, tags_library
) -> tuple[list[str], dict[str, int], str]:
    """The ids of the crowd's customers in ``cell``, less those the consent rules leave out,
    how many were, and the crowd as the answer and the audit log name it (a persona given by its
    id, by its name, as the report names it)."""
    import pandas as pd

    from marketing.crowd import cell_mask

    with _crowd_data(sources, as_of, segments_dir, tags_library) as crowds:
        crowd = crowds.named(crowd)
        mask = crowds.mask(crowd) & cell_mask(crowds, cell)
        frame = pd.DataFrame({"customer_id": crowds.ids[mask].to_numpy()})
        kept, left_out = crowds.apply_consent(frame)
    return kept["customer_id"].astype("str").tolist(), dict(left_out), crowd.describe()
