"""``GET /customers/{id}``: the whole profile of a customer (``serving/profile.py``), read from
the served scores (or run), the data set and the stored tags, segments and RFM. A marketing key
gets it without the attributes the data set marks sensitive; an analyst key in full.

Served from a refresh root (``--runs``), the run's tables (scores, features' key columns, tags,
RFM, segment members, the score history and the run's profile material) are held in memory per
worker, loaded in the background from the first request of each run (requests meanwhile read
the files), so a profile reads no file; reasons are the stored ones unless ``?reasons=true``."""

# No `from __future__ import annotations` here: FastAPI must evaluate the
# Annotated[..., Depends(access.caller)] parameters, which name a local of the builder.
import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParameter
from fastapi.concurrency import run_in_threadpool

from portrait.errors import Unavailable
from serving.keys import Caller, Role
from serving.profile import CustomerProfile, ProfileSources, build_profile, in_memory_ready
from serving.routes.access import Access
from serving.routes.errors import ProductErrorRoute, error_answers, last_part, without_server_paths
from serving.state import ServeState


def profile_sources(state: ServeState) -> ProfileSources:
    """What a profile is read from now: the served run (or scores, tags and RFM folders), the
    saved segments, and the data set (``--data``, else the one the scores were computed from)."""
    settings = state.settings
    published = state.published()
    data = state.data(state.snapshot(published))
    if data is not None and not Path(data).exists():
        raise Unavailable(
            f"the data set {data} the scores were computed from no longer exists; start portrait serve with --data"
        )
    if settings.runs is not None:
        return ProfileSources(data=data, runs=settings.runs)  # the run's own segment members
    segments = state.segments_folder()
    return ProfileSources(data=data, scores=published.scores, tags=settings.tags, rfm=settings.rfm, segments=segments)


_SOURCE = re.compile(r'("source":")([^"]*)(")')


def _without_server_paths(profile: CustomerProfile) -> str:
    """The profile as JSON, its sections' sources and its notes naming files and folders by
    their last part, as error answers do (the customer's values are left as they are)."""
    text = _SOURCE.sub(lambda m: m[1] + last_part(m[2]) + m[3], profile.model_dump_json())
    return without_server_paths(text)


def build_customers_router(state: ServeState, access: Access) -> APIRouter:
    router = APIRouter(route_class=ProductErrorRoute, responses=error_answers(), tags=["customers"])

    @router.get("/customers/{customer_id:path}", response_model=CustomerProfile)  # an id may hold a "/"
    async def customer(
        customer_id: Annotated[
            str, PathParameter(min_length=1, max_length=200, description="A customer id (or a merged id)")
        ],
        caller: Annotated[Caller, Depends(access.caller)],
        request: Request,
        reasons: bool = Query(
            False,
            description=(
                "Compute each model's reasons for this person when the scores store none (TreeSHAP, several "
                "ms per model); stored reasons are always given"
            ),
        ),
    ) -> Response:
        """Attributes, identities (types, counts, merged ids), tags, segments, RFM, persona,
        every model's score with reasons, score history, key features, the last orders and
        events. A merged secondary id answers with the person's profile (``resolved_from``)."""

        # A trailing slash written as such is the URL's, as the route without ":path" redirected it
        # (/customers/C1/); one sent as %2F is the id's (Starlette decodes both before routing).
        raw = request.scope.get("raw_path", b"").split(b"?", 1)[0]
        url_slash = raw.endswith(b"/") and len(customer_id) > 1
        asked = customer_id[:-1] if url_slash and customer_id.endswith("/") else customer_id

        def answer() -> Response:
            sources = profile_sources(state)
            profile = build_profile(
                asked,
                sources,
                include_sensitive=caller.role is Role.ANALYST,
                compute_reasons=reasons,
                model_loader=state.model,
                # from memory once this worker has loaded the served run (in the background,
                # started by the first profile of the run); from the files until then
                in_memory=state.settings.runs is not None and in_memory_ready(sources),
            )
            # Serialised once by pydantic: handing FastAPI the model would dump, validate and
            # encode it again (the response model above still documents every field).
            return Response(_without_server_paths(profile), media_type="application/json")

        # A profile from the run in memory is a few look-ups (well under a millisecond of CPU):
        # answered on the event loop. Anything that may read files, load a published run or
        # compute reasons goes to the thread pool, so it never holds up other requests.
        if state.settings.runs is not None and not reasons and state.run_loaded():
            return answer()
        return await run_in_threadpool(answer)

    return router
