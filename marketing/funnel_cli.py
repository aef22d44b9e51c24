"""``portrait funnel``: customers reaching each step in order within a window; CSV and chart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from marketing.cli import AsOfOption, ScoresOption, SegmentsOption
from portrait.progress import spinner


def register_funnel(app: typer.Typer, out, console) -> None:
    @app.command("funnel")
    def funnel_command(
        dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
        as_of: AsOfOption,
        steps: Annotated[
            str,
            typer.Option(
                "--steps",
                help="Steps in order, comma-separated: event types of the events table, purchase, repurchase.",
            ),
        ],
        within_days: Annotated[
            int, typer.Option("--within-days", help="Window: the N days before the as-of date (midnight).")
        ],
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for funnel.csv and funnel.png.")],
        by: Annotated[
            str | None, typer.Option("--by", help="Also per group: persona (needs --scores), segment or tag.")
        ] = None,
        scores: ScoresOption = None,
        segments_dir: SegmentsOption = None,
        tags_file: Annotated[
            Path | None,
            typer.Option(
                "--tags-file", help="For --by tag: a tags_<date>.parquet of portrait tags apply (or its folder)."
            ),
        ] = None,
        min_cell: Annotated[
            int, typer.Option("--min-cell", help="Counts below this are written as '<N' (and rates from them).")
        ] = 10,
    ) -> None:
        """Customers reaching each step in order within the window: conversion, drop-off, median time."""
        from features.build import parse_cutoff
        from marketing.funnel import (
            ALL_CUSTOMERS,
            GROUP_BY,
            FunnelError,
            check_inputs,
            check_window,
            compute_funnel,
            funnel_chart,
            parse_steps,
            persona_groups,
            segment_groups,
            suppress,
            tag_groups,
        )
        from portrait.files import atomic_write, check_targets
        from portrait.validate import open_checked

        started = time.perf_counter()
        # Checks that need no data come first, so a typo costs nothing.
        names = parse_steps(steps)
        check_window(within_days)
        if min_cell < 1:
            raise FunnelError(f"--min-cell must be a whole number of at least 1, got {min_cell}")
        if by is not None and by not in GROUP_BY:
            raise FunnelError(f"--by {by!r}: choose one of {list(GROUP_BY)}")
        if by == "persona" and scores is None:
            raise FunnelError("--by persona needs --scores DIR (a portrait score folder with personas)")
        if by == "tag" and tags_file is None:
            raise FunnelError("--by tag needs --tags-file F (tags_<date>.parquet written by portrait tags apply)")
        as_of_date = parse_cutoff(as_of)
        ds = open_checked(dataset)
        notes = []
        with spinner(console, "funnel") as say:
            groups = None
            if by == "persona":
                groups, date = persona_groups(scores, as_of_date)
                notes.append(f"personas from the scores of {date}")
            elif by == "tag":
                groups, date = tag_groups(tags_file, as_of_date)
                if date is not None:
                    notes.append(f"tags as of {date}")
            con = ds.connect()
            try:
                say("checking the as-of date against the data")
                check_inputs(con, as_of_date, names, within_days)
                if by == "segment":
                    from marketing.population import Population

                    say("evaluating the saved segments")
                    with Population(ds, as_of_date, scores_dir=scores, progress=say) as population:
                        groups = segment_groups(population, segments_dir)
                say("counting the steps")
                funnel = compute_funnel(
                    con, as_of_date, names, within_days, groups=groups, by=by, check_range=False, timezone=ds.timezone
                )
            finally:
                con.close()
            say("writing")
            shown = suppress(funnel.table, min_cell)
            csv_path, png_path = out_dir / "funnel.csv", out_dir / "funnel.png"
            check_targets([csv_path, png_path])
            atomic_write(shown, csv_path, csv=True)
            note = funnel_chart(funnel, min_cell, png_path)
        if note:
            notes.append(note)

        table = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            title=f"funnel as of {funnel.as_of}, within {funnel.within_days} days ({funnel.start} to the day before)",
        )
        for column in ("step", "customers", "of prev.", "of first", "drop-off", "wait"):
            table.add_column(column, justify="left" if column == "step" else "right", no_wrap=True)
        everyone = shown[shown["group"] == ALL_CUSTOMERS]
        for number, row in enumerate(everyone.itertuples(), start=1):
            table.add_row(
                f"{number}. {row.step}",
                _count(row.customers),
                _rate(row.conversion_from_previous),
                _rate(row.conversion_from_first),
                _count(row.drop_off),
                _hours(row.median_hours_from_previous),
            )
        out.print(table)
        out.print("wait: the median time from the previous step to this one")
        if by:
            last = funnel.steps[-1]
            per_group = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"by {by}: {len(funnel.groups) - 1} groups")
            for column in ("group", f"1. {funnel.steps[0]}", f"{len(funnel.steps)}. {last}", "from first"):
                per_group.add_column(
                    column, justify="left" if column == "group" else "right", no_wrap=column != "group"
                )
            firsts = shown.groupby("group", sort=False).first()
            lasts = shown.groupby("group", sort=False).last()
            for group in funnel.groups[1:]:
                per_group.add_row(
                    group,
                    _count(firsts.loc[group, "customers"]),
                    _count(lasts.loc[group, "customers"]),
                    _rate(lasts.loc[group, "conversion_from_first"]),
                )
            out.print(per_group)
        for text in notes:
            out.print(f"[yellow]note:[/yellow] {escape(text)}", markup=True)
        out.print(f"funnel: {csv_path}\nchart: {png_path} ({time.perf_counter() - started:.1f} s)")


def _count(value) -> str:
    return value if isinstance(value, str) else f"{value:,}"


def _rate(value) -> str:
    return value if isinstance(value, str) else f"{value:.1%}"


def _hours(value) -> str:
    from marketing.funnel import wait_text

    return value if isinstance(value, str) else wait_text(value)
