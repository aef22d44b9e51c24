"""``GET /health``: open to anyone (no key), says what is served."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serving.routes.errors import ProductErrorRoute
from serving.state import ServeState


class Health(BaseModel):
    status: str = Field(description="ok")
    scores_as_of: str | None = Field(description="As-of date of the scores served")
    customers: int = Field(description="Customers in the scores served")
    models: list[str] = Field(description="Models in the scores served")
    run: str | None = Field(None, description="With --runs: the run folder served (runs/<as_of>)")


def build_health_router(state: ServeState) -> APIRouter:
    router = APIRouter(route_class=ProductErrorRoute, tags=["health"])

    @router.get("/health", response_model=Health)
    def health() -> Health:
        """Liveness and what is served; needs no key."""
        published = state.published()
        snap = state.snapshot(published)
        run = published.run.relative_to(state.settings.runs).as_posix() if published.run is not None else None
        return Health(
            status="ok", scores_as_of=snap.as_of, customers=len(snap.scores), models=snap.scored_models, run=run
        )

    return router
