"""``/docs``, ``/redoc`` and ``/openapi.json``, behind the same key rule as the data routes (a
key of any role when keys are configured): the schema names every route and field."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from serving.routes.access import Access
from serving.routes.errors import ProductErrorRoute


def build_docs_router(app: FastAPI, access: Access) -> APIRouter:
    router = APIRouter(route_class=ProductErrorRoute, dependencies=[Depends(access.caller)])

    @router.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @router.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    return router
