"""``GET /tags``: the tag library with the counts of the latest stored tags table.

The API never computes tags: it serves what ``portrait tags apply`` (or ``portrait refresh``)
stored, and says when that was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from marketing.tags import Library, skipped_in, summary_beside, tags_dates, tags_file
from portrait.files import read_parquet
from serving.routes.errors import ProductErrorRoute, error_answers


class TagInfo(BaseModel):
    name: str = Field(description="Tag name, as used by --tag and in the tags table")
    group: str = Field(description="Group path, e.g. value/spending_power")
    kind: str = Field(description="rule, model or manual")
    definition: str = Field(description="The condition, or how it is assigned")
    description: str = ""
    customers: int | None = Field(
        None,
        description="Holders in the latest tags table, if one is stored; none for a tag that run skipped "
        "(a model tag whose scores were missing: see skipped)",
    )
    skipped: bool = Field(False, description="The latest tags run could not apply it (its model's scores were missing)")


class TagList(BaseModel):
    library: str = Field(
        description="The tag library's file name (retail.toml: the packaged template); not its folder on the server"
    )
    as_of: str | None = Field(None, description="As-of date of the latest stored tags table")
    tags: list[TagInfo]


def latest_tag_counts(tags_dir: Path | None) -> tuple[dict[str, int] | None, str | None, set[str]]:
    """Holders per tag in the latest stored tags table, its date (None, None without one), and
    the tags that run skipped (from its summary: a model tag without its scores holds nobody
    because it was not applied, not because nobody qualifies).
    Read from the summary written beside the table (a few KB) when it is the table's: of its
    date, and written after it (``portrait forget`` rewrites the table alone); otherwise the
    table is counted (0.3-0.5 s a request at a million customers)."""
    dates = tags_dates(tags_dir)
    if not dates:
        return None, None, set()
    latest = dates[-1]
    table = tags_file(tags_dir, latest)
    skipped = set(skipped_in(tags_dir, latest))  # the table's own record first (a run stopped before its summary)
    summary = summary_beside(table) if _written_after(table.with_suffix(".summary.json"), table) else {}
    recorded = summary.get("tags")
    if summary.get("as_of") == latest.isoformat() and isinstance(recorded, dict):
        try:
            counts = {str(tag): int(info["customers"]) for tag, info in recorded.items()}
            # the summary also lists the tags everyone left since the run before (0 holders)
            return {tag: n for tag, n in counts.items() if n > 0}, latest.isoformat(), skipped
        except (TypeError, KeyError, ValueError):
            pass  # a summary edited by hand: the table itself says
    counts = read_parquet(table, columns=["tag"])["tag"].value_counts()
    return {str(tag): int(n) for tag, n in counts.items()}, latest.isoformat(), skipped


def build_tags_router(library: Library, tags_dir: Callable[[], Path | None]) -> APIRouter:
    """``library`` is read (and checked) once by the caller, so a bad library stops the server
    at start; ``tags_dir`` gives the folder of stored tags tables for this request."""
    router = APIRouter(route_class=ProductErrorRoute, responses=error_answers(), tags=["tags"])

    @router.get("/tags", response_model=TagList)
    def list_tags() -> TagList:
        """Every tag of the library, with its holders in the latest stored tags table."""
        stored, as_of, skipped = latest_tag_counts(tags_dir())
        counts = stored or {}
        entries = [
            TagInfo(
                name=t.name,
                group=t.group,
                kind=t.kind,
                definition=t.definition(),
                description=t.description,
                customers=counts.get(t.name, 0) if stored is not None and t.name not in skipped else None,
                skipped=t.name in skipped,
            )
            for t in library.tags
            if not t.each
        ]
        fixed = {t.name for t in library.tags}
        for name, count in sorted(counts.items()):  # expanded and exclusive-group tags
            if name not in fixed:
                group = next((g for g in library.groups.values() if name.startswith(f"{g.label}: ")), None)
                each = next((t for t in library.tags if t.each and name.startswith(f"{t.name}: ")), None)
                entries.append(
                    TagInfo(
                        name=name,
                        group=group.path if group else (each.group if each else ""),
                        kind=each.kind if each else "rule",
                        definition=f"one value of {group.path}" if group else (each.definition() if each else ""),
                        customers=int(count),
                    )
                )
        return TagList(library=Path(library.source).name, as_of=as_of, tags=entries)

    return router


def _written_after(summary: Path, table: Path) -> bool:
    try:
        return summary.stat().st_mtime_ns >= table.stat().st_mtime_ns
    except OSError:
        return False
