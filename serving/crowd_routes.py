"""The crowd report route, mounted on its own (``serving/routes/crowds.py`` holds it)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from serving.routes.crowds import CrowdPortrait, CrowdSources, build_crowds_router

__all__ = ["CrowdPortrait", "build_crowd_router"]


def build_crowd_router(
    data: Path | None,
    default_as_of: str | None,
    *,
    scores_dir: Path | None,
    segments_dir: Path | None,
    tags_library: Path | None,
    least_cell: int | None = None,
) -> APIRouter:
    """``/crowds/report`` over fixed sources (``build_app`` gives the served run's per request)."""
    fixed = CrowdSources(data, default_as_of, scores_dir)
    return build_crowds_router(
        lambda: fixed, segments_dir=segments_dir, tags_library=tags_library, least_cell=least_cell
    )
