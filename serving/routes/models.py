"""``GET /models``: the registered models, their versions, aliases and holdout metrics
(analyst keys only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from serving.registry import list_models
from serving.routes.access import Access
from serving.routes.errors import ProductErrorRoute, error_answers


class RegisteredModel(BaseModel):
    name: str
    versions: list[str] = Field(description="Every registered version")
    aliases: dict[str, str] = Field(description="Alias (champion, candidate) to version")
    metrics: dict[str, dict[str, float]] = Field(
        description="Per alias, the holdout (and persona) metrics of the run behind that version"
    )


def build_models_router(access: Access) -> APIRouter:
    router = APIRouter(
        route_class=ProductErrorRoute,
        responses=error_answers(),
        tags=["models"],
        dependencies=[Depends(access.analyst)],
    )

    @router.get("/models", response_model=list[RegisteredModel])
    def models() -> list[RegisteredModel]:
        """Registered models with their versions, aliases and metrics."""
        return [RegisteredModel(**entry) for entry in list_models()]

    return router
