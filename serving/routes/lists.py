"""``GET /lists/{model}``: a ranked, filtered list for marketing, without the customers the
consent rules leave out; every pull is recorded in the audit log (``portrait.audit``)."""

# No `from __future__ import annotations` here: FastAPI must evaluate the
# Annotated[..., Depends(access.caller)] parameters, which name a local of the builder.
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from marketing.crowd_report import DEFAULT_MIN_CELL
from models.task import MODEL_NAME_LENGTH
from portrait.audit import record_export
from portrait.errors import Conflict
from serving.keys import Caller, Role
from serving.lists import build_list, list_filter, model_for_reasons
from serving.routes.access import Access, refuse_sensitive_terms
from serving.routes.errors import ProductErrorRoute, error_answers, without_server_paths
from serving.score import sensitive_features
from serving.settings import MAX_OFFSET
from serving.state import ServeState, plain

PAGE_ROWS = 1_000  # a list's rows per answer unless the caller asks for another page size
MAX_PAGE_ROWS = 10_000  # and at most this many: reasons (when the scores store none) are computed per page

# A query parameter's bound: a URL holds it (servers refuse request lines of about 8-16 KB); the
# commands read up to marketing.filters.MAX_LENGTH (20,000 characters).
API_WHERE_LENGTH = 2000


class ListedCustomer(BaseModel):
    """One row of the list; the columns the filter used follow the fixed ones."""

    model_config = ConfigDict(extra="allow")

    customer_id: str
    score: float = Field(description="The model's score")
    percentile: float = Field(description="Percentile among all customers scored, 0-100")
    persona: str | None = Field(None, description="Persona name, when personas were scored")
    reason_1: str | None = None
    reason_2: str | None = None
    reason_3: str | None = None


class MarketingList(BaseModel):
    model: str
    as_of: str | None = Field(description="As-of date of the scores")
    version: str = Field(
        description="The list's version (its scores file and consent rules): pass it with the next pages' requests"
    )
    total: int = Field(description="Customers in the whole list, every page")
    offset: int = Field(description="Rows of the list before this page")
    limit: int = Field(description="The page size asked for")
    count: int = Field(description="Customers in this page")
    next_offset: int | None = Field(description="The next page's offset; null on the last page")
    left_out: dict[str, int] = Field(
        description="Customers who matched but may not be contacted, per reason: no_consent, suppressed"
    )
    customers: list[ListedCustomer] = Field(description="Best score first")
    note: str | None = Field(None, description="Why the reasons are missing, when they are")


POOLED_REASONS = "other reasons"


def pooled_reasons(left_out: dict[str, int], least: int) -> tuple[dict[str, int], bool]:
    """``left_out`` with the reasons of fewer than ``least`` customers (none included) summed
    under :data:`POOLED_REASONS`, and whether any was: a reason given for one or two customers
    says why each of them may not be contacted."""
    kept = {reason: count for reason, count in left_out.items() if count >= least}
    pooled = sum(count for reason, count in left_out.items() if count < least)
    if pooled:
        kept[POOLED_REASONS] = pooled
    return kept, bool(pooled)


def build_lists_router(state: ServeState, access: Access) -> APIRouter:
    router = APIRouter(
        route_class=ProductErrorRoute, responses=error_answers(401, 403, 404, 409, 422, 503), tags=["lists"]
    )

    @router.get("/lists/{model_name}", response_model=MarketingList)
    def marketing_list(
        model_name: Annotated[str, Path(max_length=MODEL_NAME_LENGTH, description="A registered model's name")],
        caller: Annotated[Caller, Depends(access.caller)],
        top: int | None = Query(None, ge=1, le=1_000_000, description="At most this many, best first"),
        # NaN was "should be less than or equal to 100": said as not a finite number instead
        min_percentile: float | None = Query(None, ge=0, le=100, allow_inf_nan=False),
        min_score: float | None = Query(None, allow_inf_nan=False),
        persona: str | None = Query(None, max_length=200, description="Persona name or id"),
        where: str | None = Query(
            None,
            max_length=API_WHERE_LENGTH,
            description=f"A condition over features and scores (at most {API_WHERE_LENGTH:,} characters)",
        ),
        exclude_bought_within: int | None = Query(None, ge=1, description="Leave out who bought in the last DAYS"),
        offset: int = Query(0, ge=0, le=MAX_OFFSET, description="Rows of the list to skip: a page's start"),
        limit: int | None = Query(
            None,
            ge=1,
            le=MAX_PAGE_ROWS,
            description=f"Rows in this page; default: the whole top when it is at most {MAX_PAGE_ROWS:,}, else {PAGE_ROWS:,}",
        ),
        version: str | None = Query(
            None,
            pattern="^[0-9a-f]{16}$",  # as list_version writes it: anything else is no page's version (422)
            description="The first page's version: refused (409) if the list changed since",
        ),
    ) -> MarketingList:
        """Customers ranked by the model's score, filtered, one page at a time (``next_offset``);
        each page is recorded in the audit log."""
        snap = state.snapshot()
        consent, rules = state.consent_and_version(snap)
        now = state.list_version(snap, rules)
        if version is not None and version != now:
            raise Conflict(
                f"the list changed since its first page (its scores were replaced, now as of {snap.as_of}, or the "
                "consent rules changed): start again at offset 0"
            )
        if limit is None:
            limit = top if top is not None and top <= MAX_PAGE_ROWS else PAGE_ROWS
        privacy = state.privacy(snap)
        refuse_sensitive_terms(caller, where, sensitive_features(privacy, snap.features.columns), "filter by")
        columns = snap.scores.columns
        needs_reasons = f"{model_name}_score" in columns and f"{model_name}_reason_1" not in columns
        reasons_model, reasons_note = (
            model_for_reasons(model_name, lambda: state.model(model_name)) if needs_reasons else (None, None)
        )
        asked = {
            "top": top,
            "min_percentile": min_percentile,
            "min_score": min_score,
            "persona": persona,
            "where": where,
            "exclude_bought_within": exclude_bought_within,
        }
        rows = build_list(
            snap.scores,
            snap.features,
            model_name,
            **asked,
            reasons_model=reasons_model,
            reasons_note=reasons_note,
            consent=consent,
            privacy=privacy,
            offset=offset,
            limit=limit,
        )
        left_out = rows.attrs["left_out"]
        record_export(
            state.audit_log,
            caller.name,
            "GET /lists/{model}",
            list_filter(model_name, snap.as_of, **asked, offset=offset, limit=limit),
            len(rows),
            via="api",
            left_out=left_out,
        )
        note = rows.attrs.get("note")
        if caller.role is not Role.ANALYST:
            # By reason, a count of a few tells why those customers may not be contacted, and the
            # list's filter can name them (customer_id = '1', a score read off a profile): one id
            # at a time (a user's test). Reasons under the least cell are pooled for this role;
            # the audit log records them all.
            left_out, pooled = pooled_reasons(left_out, DEFAULT_MIN_CELL)
            if pooled:
                said = (
                    f"left_out pools the reasons fewer than {DEFAULT_MIN_CELL} customers were left out for: "
                    "a few could be told apart"
                )
                note = f"{note}; {said}" if note else said
        records = [{k: plain(v) for k, v in record.items()} for record in rows.to_dict("records")]
        total = rows.attrs["total"]
        return MarketingList(
            model=model_name,
            as_of=snap.as_of,
            version=now,
            total=total,
            offset=offset,
            limit=limit,
            count=len(records),
            next_offset=offset + len(records) if offset + len(records) < total else None,
            left_out=left_out,
            customers=[ListedCustomer(**record) for record in records],
            note=without_server_paths(note) if note else None,
        )

    return router
