"""``portrait crowd ...``: the portrait of any crowd, cross-tabs, drill-down, comparison, trend."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from features.options import checked_date
from marketing.cli import (
    AsOfOption,
    DataOption,
    ScoresOption,
    SegmentsOption,
    StoreOption,
    TagsFileOption,
    manual_store_path,
    open_population,
)
from portrait.errors import PortraitError
from portrait.files import check_targets
from portrait.progress import spinner

SegmentOpt = Annotated[str | None, typer.Option("--segment", help="A saved segment.")]
TagOpt = Annotated[str | None, typer.Option("--tag", help="A tag of the library, e.g. 'spending power: high'.")]
PersonaOpt = Annotated[str | None, typer.Option("--persona", help="A persona name (needs --scores).")]
WhereOpt = Annotated[str | None, typer.Option("--where", help="A condition, as in segment create --where.")]
CategoryOpt = Annotated[str | None, typer.Option("--bought-category", help="Buyers of this category.")]
WithinOpt = Annotated[
    int | None, typer.Option("--within-days", help="With --bought-category: bought in the last N days.")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every customer.")]
MinCellOpt = Annotated[int, typer.Option("--min-cell", min=1, help="Counts under this many customers are shown as <N.")]
CompareOpt = Annotated[
    str,
    typer.Option("--compare-to", help="The base: 'all', a saved segment, or tag:NAME / persona:NAME."),
]


def _crowd(segment, tag, persona, where, bought_category, within_days, everyone):
    from marketing.crowd import crowd_from_options

    return crowd_from_options(
        segment=segment,
        tag=tag,
        persona=persona,
        where=where,
        bought_category=bought_category,
        within_days=within_days,
        everyone=everyone,
    )


def _base(text: str):
    from marketing.crowd import Crowd, parse_crowd

    if text == "all":
        return Crowd("all")
    if ":" in text:
        return parse_crowd(text)
    return Crowd("segment", text)


RunOpt = Annotated[
    Path | None,
    typer.Option(
        "--run",
        help="A refresh run folder, or a refresh root (its LATEST run): read the crowd material the "
        "refresh stored for its date instead of computing every dimension (--as-of must be the run's date).",
    ),
]


@contextmanager
def open_crowds(console, data, as_of, scores, segments_dir, file, store, run=None):
    from marketing.crowd import CrowdData
    from marketing.segments import SegmentStore
    from marketing.tags import load_library

    library = load_library(file)
    if run is not None:
        with spinner(console, "reading the crowd material") as say:
            crowds = _stored(run, data, as_of, library, SegmentStore(segments_dir), manual_store_path(store), say)
            try:
                yield crowds
            finally:
                crowds.close()
        return
    with spinner(console, "reading the data") as say, open_population(data, as_of, scores, say) as population:
        crowds = CrowdData(
            population, library, segments=SegmentStore(segments_dir), manual_store=manual_store_path(store), say=say
        )
        crowds.check_as_of()
        yield crowds


def _stored(run: Path, data: Path, as_of: str, library, segments, manual_store, say):
    from features.build import parse_cutoff
    from marketing.crowd_material import open_stored_crowds
    from serving.refresh import LATEST, current_run

    if not run.is_dir():
        raise PortraitError(f"run folder {run} does not exist")
    if (run / LATEST).is_file():
        run = current_run(run)
    return open_stored_crowds(
        run, data, library, as_of=parse_cutoff(as_of), segments=segments, manual_store=manual_store, say=say
    )


def register_crowd(app: typer.Typer, out, console) -> None:
    @app.command("report")
    def report_command(
        data: DataOption,
        as_of: AsOfOption,
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for crowd.csv, crowd.md and crowd.html.")],
        segment: SegmentOpt = None,
        tag: TagOpt = None,
        persona: PersonaOpt = None,
        where: WhereOpt = None,
        bought_category: CategoryOpt = None,
        within_days: WithinOpt = None,
        everyone: AllOpt = False,
        compare_to: CompareOpt = "all",
        min_cell: MinCellOpt = 10,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        run: RunOpt = None,
    ) -> None:
        """The portrait of one crowd against a base: every dimension with shares and TGI."""
        from marketing.crowd_page import report_paths, write_report

        check_targets(report_paths(out_dir).values())  # before any work
        from marketing.crowd_report import crowd_report

        started = time.perf_counter()
        crowd = _crowd(segment, tag, persona, where, bought_category, within_days, everyone)
        base = _base(compare_to)
        with open_crowds(console, data, as_of, scores, segments_dir, file, store, run) as crowds:
            crowd = crowds.named(crowd)
            crowds.say(f"finding {crowd.describe()}")
            mask, base_mask = crowds.mask(crowd), crowds.mask(base)
            report = crowd_report(
                crowds, mask, base_mask, crowd_name=crowd.describe(), base_name=base.describe(), min_cell=min_cell
            )
            unheld = crowds.unheld_tag(crowd)  # a misspelt tag: the report says so, not only "empty"
            if unheld:
                report.notes.append(unheld)
            paths = write_report(report, out_dir)
        # none is said as 0 (the report says the crowd is empty): "fewer than N" then "empty" read as two answers
        size = f"{report.size:,}" if report.size >= min_cell or not report.size else f"fewer than {min_cell}"
        base_size = (
            f"{report.base_size:,}"
            if report.base_size >= min_cell or not report.base_size
            else f"fewer than {min_cell}"
        )
        out.print(f"{crowd.describe()}: {size} customers against {base.describe()} ({base_size}) as of {report.as_of}")
        if report.empty:
            out.print(f"the crowd is empty as of {report.as_of}", style="yellow", end="")
            out.print(": the report says so")
        if unheld:
            console.print(f"note: {unheld}")
        out.print(f"wrote {paths['csv']}, {paths['md']}, {paths['html']} in {time.perf_counter() - started:.1f} s")

    @app.command("crosstab")
    def crosstab_command(
        data: DataOption,
        as_of: AsOfOption,
        rows: Annotated[str, typer.Option("--rows", help="Dimension down the side, e.g. age_band.")],
        cols: Annotated[str, typer.Option("--cols", help="Dimension across the top, e.g. favourite_payment.")],
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for crosstab.csv and crosstab.html.")],
        segment: SegmentOpt = None,
        tag: TagOpt = None,
        persona: PersonaOpt = None,
        where: WhereOpt = None,
        bought_category: CategoryOpt = None,
        within_days: WithinOpt = None,
        everyone: AllOpt = False,
        min_cell: MinCellOpt = 10,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        run: RunOpt = None,
    ) -> None:
        """Counts, row and column percentages of two dimensions within a crowd (everyone by default)."""
        from marketing.crowd import Crowd
        from marketing.crowd_compare import crosstab, crosstab_paths, write_crosstab

        check_targets(crosstab_paths(out_dir).values())  # before any work

        named = any(v is not None for v in (segment, tag, persona, where, bought_category)) or everyone
        crowd = _crowd(segment, tag, persona, where, bought_category, within_days, everyone) if named else Crowd("all")
        with open_crowds(console, data, as_of, scores, segments_dir, file, store, run) as crowds:
            crowd = crowds.named(crowd)
            rows, cols = crowds.check_dimension(rows), crowds.check_dimension(cols)
            table = crosstab(crowds, crowds.mask(crowd), rows, cols, min_cell)
            paths = write_crosstab(table, crowds, rows, cols, crowd.describe(), min_cell, out_dir)
        out.print(f"{crowd.describe()}: {rows} by {cols}; wrote {paths['csv']} and {paths['html']}")

    @app.command("export")
    def export_command(
        data: DataOption,
        as_of: AsOfOption,
        cell: Annotated[str, typer.Option("--cell", help='A report cell: "DIMENSION = VALUE".')],
        out_file: Annotated[Path, typer.Option("--out", help="CSV of the cell's customers.")],
        segment: SegmentOpt = None,
        tag: TagOpt = None,
        persona: PersonaOpt = None,
        where: WhereOpt = None,
        bought_category: CategoryOpt = None,
        within_days: WithinOpt = None,
        everyone: AllOpt = False,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        run: RunOpt = None,
    ) -> None:
        """The customers behind one report cell (a crowd and one dimension value)."""
        from portrait.files import check_suffix

        check_suffix(out_file, (".csv",))
        from marketing.crowd import cell_mask
        from marketing.crowd_compare import export_cell
        from portrait.audit import os_user, record_export

        crowd = _crowd(segment, tag, persona, where, bought_category, within_days, everyone)
        with open_crowds(console, data, as_of, scores, segments_dir, file, store, run) as crowds:
            crowd = crowds.named(crowd)
            mask = crowds.mask(crowd) & cell_mask(crowds, cell)
            written, notes, left_out = export_cell(crowds, mask, cell, out_file)
            as_of_text = crowds.as_of.isoformat()
        try:
            record_export(
                None,
                os_user(),
                "portrait crowd export",
                {"crowd": crowd.describe(), "cell": cell, "as_of": as_of_text, "out": str(out_file)},
                written,
                left_out=left_out,
            )
        except PortraitError:
            out_file.unlink(missing_ok=True)  # an export the audit log cannot account for does not stay
            raise
        for note in notes:
            out.print(note)
        out.print(f"{crowd.describe()}, {cell}: wrote {written:,} customer{'' if written == 1 else 's'} to {out_file}")

    @app.command("compare")
    def compare_command(
        crowds_named: Annotated[
            list[str], typer.Argument(help="2 to 6 crowds: segment:NAME, tag:NAME or persona:NAME.")
        ],
        data: DataOption,
        as_of: AsOfOption,
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for compare.csv, compare.md, compare.html.")],
        min_cell: MinCellOpt = 10,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        run: RunOpt = None,
    ) -> None:
        """Crowds side by side on every dimension, largest differences first, tested for significance."""
        from marketing.crowd import parse_crowd
        from marketing.crowd_compare import compare, compare_paths, suppressed_comparison, write_compare

        check_targets(compare_paths(out_dir).values())  # before any work

        if not 2 <= len(crowds_named) <= 6:
            raise PortraitError(f"compare takes 2 to 6 crowds, got {len(crowds_named)}")
        chosen = [parse_crowd(text) for text in crowds_named]
        if len(set(chosen)) != len(chosen):
            raise PortraitError("each crowd may be named once")
        with open_crowds(console, data, as_of, scores, segments_dir, file, store, run) as crowds:
            chosen = [crowds.named(c) for c in chosen]  # persona:4 and persona:NAME are one crowd
            if len(set(chosen)) != len(chosen):
                raise PortraitError("each crowd may be named once (a persona by its name or by its id)")
            masks = {c.describe(): crowds.mask(c) for c in chosen}
            result = compare(crowds, masks, min_cell)
            paths = write_compare(result, crowds, min_cell, out_dir)
        sizes = ", ".join(
            f"{name}: {n:,}" if n >= min_cell else f"{name}: <{min_cell}" for name, n in result.sizes.items()
        )
        # as the files show them: a significant difference in a row of hidden counts is not told
        shown = int((suppressed_comparison(result, min_cell)["significant"] == "yes").sum())
        out.print(f"{sizes}; {shown:,} significant differences shown")
        out.print(f"wrote {paths['csv']}, {paths['md']}, {paths['html']}")

    @app.command("trend")
    def trend_command(
        data: DataOption,
        start: Annotated[str, typer.Option("--from", callback=checked_date, help="First point (YYYY-MM-DD).")],
        end: Annotated[str, typer.Option("--to", callback=checked_date, help="Last point at most this date.")],
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for trend.csv, trend.png, trend.html.")],
        every: Annotated[str, typer.Option("--every", help="week or month.")] = "month",
        segment: SegmentOpt = None,
        tag: TagOpt = None,
        persona: PersonaOpt = None,
        where: WhereOpt = None,
        bought_category: CategoryOpt = None,
        within_days: WithinOpt = None,
        everyone: AllOpt = False,
        min_cell: MinCellOpt = 10,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
    ) -> None:
        """The crowd recomputed as of each date: size, share, revenue, mean spend, entered and left."""
        from marketing.crowd_trend import crowd_named, crowd_trend, trend_dates, trend_paths, write_trend

        check_targets(trend_paths(out_dir).values())  # before any work
        from marketing.segments import SegmentStore
        from marketing.tags import load_library
        from portrait.validate import open_checked

        started = time.perf_counter()
        crowd = _crowd(segment, tag, persona, where, bought_category, within_days, everyone)
        dates = trend_dates(start, end, every)
        library = load_library(file)
        with spinner(console, "trend") as say:
            table = crowd_trend(
                open_checked(data, say),
                crowd,
                dates,
                library,
                segments=SegmentStore(segments_dir),
                scores_dir=scores,
                manual_store=manual_store_path(store),
                say=say,
                every=every,
            )
        paths = write_trend(table, crowd, min_cell, out_dir)
        out.print(f"{crowd_named(table, crowd)}: {len(dates)} points from {dates[0]} to {dates[-1]}")
        out.print(f"wrote {paths['csv']}, {paths['png']}, {paths['html']} in {time.perf_counter() - started:.1f} s")

    @app.command("quadrant")
    def quadrant_command(
        data: DataOption,
        as_of: AsOfOption,
        out_dir: Annotated[
            Path, typer.Option("--out", help="Folder for quadrant.csv/html, potential_high_spenders.csv.")
        ],
        window: Annotated[int, typer.Option("--within-days", help="Window of both axes: 30, 90, 180 or 365.")] = 90,
        split: Annotated[float, typer.Option("--split", help="Percentile from which an axis is high.")] = 50.0,
        segment: SegmentOpt = None,
        tag: TagOpt = None,
        persona: PersonaOpt = None,
        where: WhereOpt = None,
        everyone: AllOpt = False,
        min_cell: MinCellOpt = 10,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        run: RunOpt = None,
    ) -> None:
        """Engagement against spend in four cells; exports the potential high spenders."""
        from marketing.crowd import Crowd
        from marketing.crowd_quadrant import POTENTIAL, columns_for, quadrant, quadrant_paths, write_quadrant

        check_targets(quadrant_paths(out_dir).values())  # before any work

        columns_for(window)
        named = any(v is not None for v in (segment, tag, persona, where)) or everyone
        crowd = _crowd(segment, tag, persona, where, None, None, everyone) if named else Crowd("all")
        from portrait.audit import os_user, record_export

        with open_crowds(console, data, as_of, scores, segments_dir, file, store, run) as crowds:
            crowd = crowds.named(crowd)
            result = quadrant(crowds, crowds.mask(crowd), window, split)
            asked = {"crowd": crowd.describe(), "cell": POTENTIAL, "within_days": window, "split": split}
            asked |= {"as_of": crowds.as_of.isoformat(), "out": str(out_dir / "potential_high_spenders.csv")}

            def audited(count: int, left_out: dict[str, int]) -> None:  # the ids file, before it is published
                record_export(None, os_user(), "portrait crowd quadrant", asked, count, left_out=left_out)

            paths, notes, written = write_quadrant(crowds, result, crowd.describe(), min_cell, out_dir, audited)
        for note in notes:
            out.print(note)
        out.print(
            f"{crowd.describe()}: wrote {written:,} potential high spenders to {paths['potential']}; "
            f"the quadrant in {paths['csv']}, {paths['html']}"
        )
