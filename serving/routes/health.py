"""``GET /health``: open to anyone (no key), says what is served."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from portrait.errors import Unavailable
from serving.keys import KeyRing
from serving.routes.errors import ProductErrorRoute, error_answers
from serving.state import ServeState


class Health(BaseModel):
    status: str = Field(description="ok")
    scores_as_of: str | None = Field(description="As-of date of the scores served")
    customers: int = Field(description="Customers in the scores served")
    models: list[str] = Field(description="Models in the scores served")
    run: str | None = Field(None, description="With --runs: the run folder served (runs/<as_of>)")


def build_health_router(state: ServeState, keys: KeyRing | None = None) -> APIRouter:
    router = APIRouter(route_class=ProductErrorRoute, responses=error_answers(422, 503), tags=["health"])

    @router.get("/health", response_model=Health)
    def health() -> Health:
        """Liveness and what is served; needs no key. 503 when the keys file cannot be read (the
        server would refuse every caller, so a load balancer should not send it any)."""
        if keys is not None:
            try:
                keys.current()
            except Unavailable:  # why is for a caller with a key; this route is open to anyone
                raise Unavailable("the keys file cannot be used: nobody can be let in until it is fixed") from None
        published = state.published()
        snap = state.snapshot(published)
        run = published.run.relative_to(state.settings.runs).as_posix() if published.run is not None else None
        return Health(
            status="ok", scores_as_of=snap.as_of, customers=len(snap.scores), models=snap.scored_models, run=run
        )

    return router
