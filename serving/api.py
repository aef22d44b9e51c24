"""The HTTP API: ``build_app(settings)`` puts one router per resource together.

| router | routes | who |
| --- | --- | --- |
| ``serving/routes/health.py`` | ``GET /health`` | anyone, no key |
| ``serving/routes/customers.py`` | ``GET /customers/{id}`` | any key |
| ``serving/routes/lists.py`` | ``GET /lists/{model}`` (audited) | any key |
| ``serving/routes/segments.py`` | ``GET /segments``, ``/segments/{name}``, ``/segments/{name}/customers`` (audited) | any key |
| ``serving/routes/tags.py`` | ``GET /tags`` | any key |
| ``serving/routes/crowds.py`` | ``GET /crowds/report``, ``/crowds/customers`` (drill-down, audited) | any key |
| ``serving/routes/scores.py`` | ``POST /score`` | analyst |
| ``serving/routes/models.py`` | ``GET /models`` | analyst |
| ``serving/routes/docs.py`` | ``/docs``, ``/redoc``, ``/openapi.json`` | any key |

Keys and roles: ``serving/routes/access.py``; the product's errors become 4xx answers in one
place, ``serving/routes/errors.py``. Endpoints are plain ``def`` (FastAPI runs them in its
thread pool), since prediction is CPU work. Request bodies over ``MAX_BODY_BYTES`` are refused
with 413 before they are parsed.
"""

from __future__ import annotations

import socket

from fastapi import Depends, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from marketing.segments import SegmentStore
from marketing.tags import load_library
from portrait.audit import audit_log_path
from portrait.errors import PortraitError
from serving.keys import KeyRing
from serving.routes.access import Access
from serving.routes.crowds import CrowdSources, build_crowds_router
from serving.routes.customers import build_customers_router
from serving.routes.docs import build_docs_router
from serving.routes.errors import gone_file, product_error, refuse_unknown_query, validation_error
from serving.routes.health import build_health_router
from serving.routes.lists import build_lists_router
from serving.routes.models import build_models_router
from serving.routes.scores import MAX_BODY_BYTES, MAX_SCORE_ROWS, build_scores_router
from serving.routes.segments import build_segments_router, run_segments_folder
from serving.routes.tags import build_tags_router
from serving.score import sensitive_attribute_features
from serving.settings import ServeSettings
from serving.state import ServeState

__all__ = ["MAX_BODY_BYTES", "MAX_SCORE_ROWS", "BodyLimit", "NoDelayHTTPProtocol", "app_from_environment", "build_app"]


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body over {limit // 2**20} MB ({limit} bytes): split the rows over several requests",
        )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before anything parses them: at once
    when Content-Length says so, otherwise as soon as the bytes received pass the limit (a
    chunked body has no Content-Length)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # an HTTPException: FastAPI's body reading passes it on to its handler (413)
                    raise _BodyTooLarge(self.limit)
            return message

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        error = _BodyTooLarge(self.limit)
        await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)


class NoDelayHTTPProtocol(AutoHTTPProtocol):
    """uvicorn's HTTP protocol with Nagle's algorithm turned off on every connection.

    With ``--workers N`` uvicorn binds the listening socket itself with ``proto`` 0, so asyncio
    does not set TCP_NODELAY on accepted connections, and every keep-alive request after the
    first waits ~40 ms for the client's delayed ACK (uvicorn issue #3149; measured here: 44 ms
    per request instead of 2.5 ms). ``portrait serve`` starts several workers with this one."""

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def build_app(settings: ServeSettings) -> FastAPI:
    """The API over ``settings``. The scores (and, with ``runs``, the run) are read here once,
    and the tag library and keys file checked, so a missing folder or a bad file stops the
    server at start with its message rather than failing requests."""
    keys = KeyRing(settings.keys) if settings.keys is not None else None
    access = Access(keys, None if keys is not None else settings.key)
    state = ServeState(settings, audit_log_path(settings.audit))
    state.snapshot()
    library = load_library(settings.tags_library)
    # With --runs and no --segments: the folder the served run's refresh refreshed.
    store = SegmentStore(settings.segments or run_segments_folder(settings.runs))

    def crowd_sources() -> CrowdSources:
        published = state.published()
        snap = state.snapshot(published)
        return CrowdSources(state.data(snap), snap.as_of, published.scores, published.run)

    def sensitive_now() -> list[str]:
        # Every feature a sensitive column can become, not only those in the served features
        # file: a segment reads its own features (the crowds route checks the same names).
        return [feature.name for feature in sensitive_attribute_features(state.privacy(state.snapshot()))]

    # Docs and schema are routes of their own (serving/routes/docs.py), behind the key.
    app = FastAPI(
        title="customer-portrait",
        description="Customer profiles, personas and propensity scores, lists, segments, tags and crowd reports.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(PortraitError, product_error)
    app.add_exception_handler(FileNotFoundError, gone_file)
    # A query parameter no route takes is refused after the key is checked: the refusal names
    # the route's parameters, which a caller without a key is not told.
    known_query = Depends(refuse_unknown_query)
    any_key = [Depends(access.caller), known_query]
    app.include_router(build_health_router(state, keys), dependencies=[known_query])
    app.include_router(build_customers_router(state, access), dependencies=any_key)
    app.include_router(build_scores_router(state, access), dependencies=any_key)
    app.include_router(build_lists_router(state, access), dependencies=any_key)
    app.include_router(build_models_router(access), dependencies=any_key)
    app.include_router(
        build_segments_router(
            store,
            run_members=lambda: state.published().segment_members,
            consent=lambda: state.consent(state.snapshot()),
            access=access,
            audit_log=state.audit_log,
            library=library,
            sensitive=sensitive_now,
        ),
        dependencies=any_key,
    )
    app.include_router(build_tags_router(library, lambda: state.published().tags), dependencies=any_key)
    app.include_router(
        build_crowds_router(
            crowd_sources,
            segments_dir=store.folder,
            tags_library=settings.tags_library,
            access=access,
            audit_log=state.audit_log,
        ),
        dependencies=any_key,
    )
    app.include_router(build_docs_router(app, access))
    app.state.serve = state
    return app


def app_from_environment() -> FastAPI:
    """The app each worker of ``portrait serve --workers N`` builds (uvicorn starts workers
    from an import string): the settings come in ``PORTRAIT_SERVE_SETTINGS`` (JSON), the key
    in ``PORTRAIT_API_KEY``."""
    from portrait.tracking import setup_tracking

    setup_tracking()
    return build_app(ServeSettings.from_environment())
