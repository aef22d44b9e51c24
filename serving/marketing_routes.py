"""``/tags`` and ``/segments`` mounted together over fixed folders (``serving/routes/tags.py`` and
``serving/routes/segments.py`` hold them; ``build_app`` mounts them with the served run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter

from marketing.segments import SegmentStore
from marketing.tags import load_library
from portrait.privacy import Consent
from serving.routes.segments import SegmentInfo, SegmentList, SegmentMembers, build_segments_router
from serving.routes.tags import TagInfo, TagList, build_tags_router

__all__ = ["SegmentInfo", "SegmentList", "SegmentMembers", "TagInfo", "TagList", "build_router"]


def build_router(
    segments_dir: Path | None,
    tags_dir: Path | None,
    tags_library: Path | None,
    consent: Callable[[], Consent] | None = None,
) -> APIRouter:
    """Routes over stored tags and segments; the tag library is read (and checked) here.
    ``consent`` gives the current consent rules, applied to a segment's customers (none: no
    rules). Pulls are not audited here: ``build_app`` mounts the routers with the audit log."""
    router = APIRouter()
    router.include_router(build_tags_router(load_library(tags_library), lambda: tags_dir))
    router.include_router(build_segments_router(SegmentStore(segments_dir), consent=consent))
    return router
