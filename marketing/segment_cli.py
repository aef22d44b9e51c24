"""``portrait segment ...``: create, count, list, show, refresh, export and delete saved segments."""

from __future__ import annotations

import datetime as dt
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from features.options import checked_date
from marketing.cli import (
    AsOfOption,
    DataOption,
    EngineDataOption,
    EngineOption,
    ScoresOption,
    SegmentsOption,
    SparkMasterOption,
    StoreOption,
    TagsFileOption,
    manual_store_path,
    open_population,
)
from portrait.errors import PortraitError
from portrait.progress import spinner

# A segment's definition, as create and count take it (one text for both commands' help).
WhereOption = Annotated[str | None, typer.Option("--where", help="Condition over features and behaviour.")]
TagOption = Annotated[list[str] | None, typer.Option("--tag", help="Must hold this tag (repeatable).")]
NotTagOption = Annotated[list[str] | None, typer.Option("--not-tag", help="Must not hold this tag.")]
PersonaOption = Annotated[str | None, typer.Option("--persona", help="Persona name or id.")]
IncludeOption = Annotated[list[str] | None, typer.Option("--include", help="Add this segment's members.")]
ExcludeOption = Annotated[list[str] | None, typer.Option("--exclude", help="Remove this segment's members.")]


def register_segments(app: typer.Typer, out, console) -> None:
    def _warn_empty(name: str, as_of) -> None:  # a warning, not an error: the segment is kept
        # on stderr, as every warning: n=$(portrait segment count ...) reads the count alone
        console.print(
            f"[yellow]warning:[/yellow] segment {escape(repr(name))} has no customers as of {as_of}", markup=True
        )

    def _refuse_nobody(population, consequence: str) -> None:
        """After a segment is evaluated (the frame it built is read, not built again), or when
        its evaluation failed: a date before the data is said as such, not as "no purchases row
        has category = ..." for a category there is."""
        from features.build import nobody_before

        if population.frame().empty:
            raise PortraitError(nobody_before(population.as_of, consequence) + "; nothing recorded")

    @contextmanager
    def _said_if_nobody(population, consequence: str):
        """Evaluate inside; then, or on a failure, refuse a population of nobody."""
        try:
            yield
        except PortraitError:
            _refuse_nobody(population, consequence)
            raise
        _refuse_nobody(population, consequence)

    def _late_note(population) -> str | None:  # read inside the population's block
        from features.build import late_as_of_note

        return late_as_of_note(population.frame(), population.as_of)

    def _definition(name, where, tag, not_tag, persona, include, exclude, description):
        from marketing.segments import Segment, check_name

        return Segment(
            name=check_name(name),
            description=description or "",
            where=where,
            tags=list(tag or []),
            not_tags=list(not_tag or []),
            persona=persona,
            include=list(include or []),
            exclude=list(exclude or []),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def _evaluator(population, segments_dir, file, store):
        from marketing.segments import SegmentEvaluator, SegmentStore
        from marketing.tags import load_library

        return SegmentEvaluator(population, SegmentStore(segments_dir), load_library(file), manual_store_path(store))

    def _static_check(segment, segments_dir, file, with_data: bool = False) -> list[str]:
        """Checks that need no data: names, tags, references, cycles, the condition's grammar
        against the catalogue (per-value features and scores are checked when evaluated).
        ``with_data``: the condition is checked against the data set's own columns next (a
        date attribute's ``days_since_signup_date`` is known there), so not here. Returns the
        customers attributes the condition names, whose kind only the data tells."""
        from marketing.segments import SegmentStore, check_graph, check_without_data
        from marketing.tags import load_library

        library = load_library(file)
        unchecked: list[str] = []
        check_without_data(segment, library, unchecked, where=False)  # the tags first
        segments = SegmentStore(segments_dir).all()
        segments[segment.name] = segment
        check_graph(segments)
        check_without_data(segment, library, unchecked, where=not with_data)
        return sorted(set(unchecked))

    @app.command("create")
    def create_command(
        name: Annotated[str, typer.Argument(help="Segment name: a-z, 0-9, - and _ (ASCII).")],
        where: WhereOption = None,
        tag: TagOption = None,
        not_tag: NotTagOption = None,
        persona: PersonaOption = None,
        include: IncludeOption = None,
        exclude: ExcludeOption = None,
        description: Annotated[str | None, typer.Option("--description")] = None,
        replace: Annotated[bool, typer.Option("--replace", help="Overwrite a segment of that name.")] = False,
        data: Annotated[
            str | None,
            typer.Option(
                "--data", help="Also count it on this data set (Spark: also hdfs://, s3a://, abfss:// paths)."
            ),
        ] = None,
        as_of: Annotated[
            str | None, typer.Option("--as-of", callback=checked_date, help="Count as of this date (with --data).")
        ] = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
        engine: EngineOption = "duckdb",
        spark_master: SparkMasterOption = None,
    ) -> None:
        """Save a segment (checked first; nothing is written if a check fails)."""
        from marketing.segments import SegmentStore

        segment = _definition(name, where, tag, not_tag, persona, include, exclude, description)
        unchecked = _static_check(segment, segments_dir, file, with_data=data is not None)
        if data is not None:
            if not as_of:
                raise PortraitError("--data needs --as-of to count the segment")
            _count(
                segment,
                data,
                as_of,
                scores,
                file,
                store,
                segments_dir,
                engine,
                spark_master,
                save_first=True,
                replace=replace,
            )
            return
        if engine != "duckdb" or spark_master is not None:
            raise PortraitError("--engine and --spark-master count the segment: give --data and --as-of too")
        segment_store = SegmentStore(segments_dir)
        dropped = segment_store.refreshes_replaced(segment) if replace else None
        path = segment_store.save(segment, replace=replace)
        out.print(f"saved segment {name!r}: {segment.definition()} -> {path}")
        if dropped:
            out.print(_dropped_note(dropped))
        if unchecked:  # a text attribute compared with a number would fail every refresh: said now
            out.print(
                f"note: whether {', '.join(unchecked)} {'is a number or text' if len(unchecked) == 1 else 'are numbers or text'} "
                "depends on the data: the condition is checked against it at refresh (give --data DIR --as-of DATE "
                "to check it now)"
            )
        if persona:  # a misspelt persona would fail every refresh of the folder: said now
            out.print(
                f"note: persona {persona!r} is looked up in the scores' personas at refresh (give --data DIR "
                "--as-of DATE --scores DIR to check it now)",
                highlight=False,
            )

    def _count(
        segment, data, as_of, scores, file, store, segments_dir, engine, spark_master, save_first=False, replace=False
    ):
        from marketing.segments import SegmentStore
        from marketing.tags import nobody_holds

        with (
            spinner(console, "counting") as say,
            open_population(data, as_of, scores, say, engine, spark_master) as population,
        ):
            evaluator = _evaluator(population, segments_dir, file, store)
            evaluator.check(segment)
            segment_store = SegmentStore(segments_dir)
            if save_first:
                segment_store.check_save(segment, replace=replace)  # before the data is read
            with _said_if_nobody(population, "no customers to count"):
                result = evaluator.evaluate(segment)  # a value no row has fails here: nothing saved
            late = _late_note(population)
            unheld = evaluator.tags_nobody_holds(segment)
            dropped = segment_store.refreshes_replaced(segment) if save_first and replace else None
            if save_first:
                segment_store.save(segment, replace=replace)
        if save_first:
            out.print(f"saved segment {segment.name!r}: {segment.definition()}")
            if dropped:
                out.print(_dropped_note(dropped))
        out.print(
            f"{segment.name}: {len(result.members):,} customer{'' if len(result.members) == 1 else 's'}, "
            f"{result.share:.1%} of {result.base:,} as of {result.as_of}"
        )
        if not len(result.members):
            _warn_empty(segment.name, result.as_of)
        for tag, close in unheld.items():  # "interest: FLUID MILK PRODUCTZ": a value no one has
            console.print(f"note: {nobody_holds(tag, result.as_of, close)}")
        if late:
            console.print(f"note: {late}")
        return result

    def _dropped_note(refreshes: int) -> str:
        return (
            f"note: the previous definition's {refreshes} refresh{'es' if refreshes != 1 else ''} (sizes, entered, "
            "left) and members were removed: they were of another definition; the next refresh starts its history"
        )

    @app.command("count")
    def count_command(
        data: EngineDataOption,
        as_of: AsOfOption,
        where: WhereOption = None,
        tag: TagOption = None,
        not_tag: NotTagOption = None,
        persona: PersonaOption = None,
        include: IncludeOption = None,
        exclude: ExcludeOption = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
        engine: EngineOption = "duckdb",
        spark_master: SparkMasterOption = None,
    ) -> None:
        """Preview a segment's size without saving it."""
        from marketing.segments import SegmentStore, check_graph

        segment = _definition(PREVIEW, where, tag, not_tag, persona, include, exclude, None)
        segments = SegmentStore(segments_dir).all()
        segments.pop(PREVIEW, None)
        try:
            check_graph({**segments, PREVIEW: segment})
            _count(segment, data, as_of, scores, file, store, segments_dir, engine, spark_master)
        except PortraitError as exc:  # the definition given has no name: its errors name none
            text = str(exc)
            if text.startswith(f"segment {PREVIEW!r}"):
                exc.args = (
                    text.replace(f"segment {PREVIEW!r}: ", "the definition: ", 1).replace(
                        f"segment {PREVIEW!r} ", "the definition ", 1
                    ),
                )
            raise

    @app.command("list")
    def list_command(segments_dir: SegmentsOption = None) -> None:
        """Saved segments with their definition and last refreshed size."""
        from marketing.segments import BrokenSegment, SegmentStore

        if segments_dir is not None and not segments_dir.is_dir():  # a typo read as "no segments"
            raise PortraitError(f"--segments {segments_dir}: no such folder")
        store = SegmentStore(segments_dir)
        columns = ("name", "definition", "customers", "share", "as of")
        rows, unreadable = [], []
        for name in store.names():  # one file edited by hand does not hide the others
            try:
                segment = store.load(name)
            except BrokenSegment as exc:
                unreadable.append(str(exc))
                continue
            history = store.history(name)
            last = history.iloc[-1] if len(history) else None
            rows.append(
                (
                    name,
                    segment.definition(),
                    "-" if last is None else f"{int(last['customers']):,}",
                    "-" if last is None else f"{float(last['share']):.1%}",
                    "never refreshed" if last is None else str(last["as_of"]),
                )
            )
        if not out.is_terminal:
            # piped: one tab-separated line per segment, whole (a table padded every row to its
            # longest definition, 7,000 characters a line in a log)
            def cell(value: str) -> str:  # a definition written over several lines stays on one
                return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")

            typer.echo("\n".join("\t".join(map(cell, row)) for row in [columns, *rows]))  # rich would expand tabs
        else:
            table = Table(title=f"segments in {store.folder}/")
            for column in columns:
                table.add_column(column, justify="right" if column in ("customers", "share") else "left")
            for row in rows:
                table.add_row(*row)
            out.print(table)
        if unreadable:
            raise PortraitError("; ".join(unreadable))

    @app.command("show")
    def show_command(name: str, segments_dir: SegmentsOption = None) -> None:
        """A segment's definition, size, share of the base and refresh history."""
        from marketing.segments import SegmentStore

        store = SegmentStore(segments_dir)
        segment = store.load(name)
        out.print(Text().append(name, style="bold").append(f" — {segment.description}" if segment.description else ""))
        out.print(f"definition: {segment.definition()}", highlight=False)
        history = store.history(name)
        if not len(history):
            out.print("never refreshed: portrait segment refresh --data DATASET --as-of DATE")
            return
        last = history.iloc[-1]
        out.print(
            f"size: {int(last['customers']):,} customer{'' if int(last['customers']) == 1 else 's'}, "
            f"{float(last['share']):.1%} of {int(last['base']):,} "
            f"as of {last['as_of']}"
        )
        table = Table(title="refreshes")
        for column in ("as of", "refreshed at", "customers", "share", "entered", "left"):
            table.add_column(column)
        for row in history.tail(12).itertuples():
            table.add_row(
                str(row.as_of),
                str(row.refreshed_at),
                f"{int(row.customers):,}",
                f"{float(row.share):.1%}",
                _count_text(row.entered),
                _count_text(row.left),
            )
        out.print(table)

    @app.command("refresh")
    def refresh_command(
        data: EngineDataOption,
        as_of: AsOfOption,
        names: Annotated[list[str] | None, typer.Argument(help="Segments to refresh (default: all).")] = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
        engine: EngineOption = "duckdb",
        spark_master: SparkMasterOption = None,
    ) -> None:
        """Recompute segments as of a date; record size, entered and left."""
        from marketing.segments import SegmentStore, evaluate_each, failures_message, record_refreshes
        from portrait.forget import tombstones_stamp

        segment_store = SegmentStore(segments_dir)
        chosen = [segment_store.load(n) for n in (names or segment_store.names())]
        if not chosen:
            raise PortraitError(f"no segments in {segment_store.folder}/ (portrait segment create)")
        started = time.perf_counter()
        forgotten = tombstones_stamp(data)  # before the data set is read
        with (
            spinner(console, "refreshing") as say,
            open_population(data, as_of, scores, say, engine, spark_master) as population,
        ):
            evaluator = _evaluator(population, segments_dir, file, store)
            with _said_if_nobody(population, "no segment to refresh"):  # each failure is kept, then said
                results, failed = evaluate_each(evaluator, chosen)
            late = _late_note(population)
        if not results:
            raise PortraitError(failures_message(failed))
        if late:  # nothing recorded: the members would all "leave" and the history would say so
            raise PortraitError(f"{late}; segments are not refreshed as of a date past the data")
        table = Table(title=f"segments as of {results[0].as_of} ({time.perf_counter() - started:.1f} s)")
        for column in ("segment", "customers", "share", "entered", "left"):
            table.add_column(column, justify="left" if column == "segment" else "right")

        def not_forgotten_meanwhile() -> None:
            if tombstones_stamp(data) != forgotten:
                # a forget ran meanwhile: the members evaluated before it may hold the person
                raise PortraitError(
                    "a customer was forgotten (portrait forget) while the segments were evaluated: nothing was "
                    "recorded, so that their rows are not written back; run the refresh again"
                )

        evaluated = {segment.name: segment.definition() for segment in chosen}
        results, rows, replaced = record_refreshes(segment_store, results, evaluated, not_forgotten_meanwhile)
        for name in replaced:
            failed.append((name, "its definition was replaced or deleted while it was evaluated: not recorded"))
        for result, row in zip(results, rows, strict=True):
            table.add_row(
                result.name,
                f"{row['customers']:,}",
                f"{row['share']:.1%}",
                _count_text(row["entered"]),
                _count_text(row["left"]),
            )
        out.print(table)
        for result in results:
            if not len(result.members):
                _warn_empty(result.name, result.as_of)
        if failed:  # the others are refreshed; these are said, and the exit is not 0
            raise PortraitError(f"{len(failed)} of {len(chosen)} segments not refreshed: {failures_message(failed)}")

    @app.command("export")
    def export_command(
        name: str,
        data: DataOption,
        as_of: AsOfOption,
        out_file: Annotated[Path, typer.Option("--out", help="CSV (or .parquet) to write.")],
        rank_by: Annotated[str | None, typer.Option("--rank-by", help="A model: order by its score.")] = None,
        columns: Annotated[
            str | None, typer.Option("--columns", help="Comma-separated feature, RFM or score columns to add.")
        ] = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
    ) -> None:
        """Write a segment's customers as of a date (ranked by a model's score if asked), without those who may not be contacted.

        The data set's consent rules (\\[privacy] in its portrait.toml) say who may not be."""
        from portrait.files import check_suffix

        check_suffix(out_file, (".csv", ".parquet"))
        from marketing.segments import SegmentStore
        from portrait.audit import os_user, record_export
        from portrait.files import atomic_write
        from portrait.privacy import apply_consent, export_note

        segment = SegmentStore(segments_dir).load(name)
        wanted = [c.strip() for c in (columns or "").split(",") if c.strip()]
        if rank_by:
            if scores is None:
                raise PortraitError("--rank-by needs --scores DIR")
            wanted = [*wanted, f"{rank_by}_score", f"{rank_by}_percentile"]
        with spinner(console, "exporting") as say, open_population(data, as_of, scores, say) as population:
            evaluator = _evaluator(population, segments_dir, file, store)
            with _said_if_nobody(population, "no customers to export"):
                result = evaluator.evaluate(segment)
            if rank_by and f"{rank_by}_score" not in (
                population.scores.columns if population.scores is not None else []
            ):
                scored = sorted(c.removesuffix("_score") for c in population.scores.columns if c.endswith("_score"))
                raise PortraitError(f"the scores have no model {rank_by!r}; scored models: {scored}")
            table = evaluator.columns(result.members, list(dict.fromkeys(wanted)))
            table, left_out = apply_consent(table, population.dataset, con=population.con)
            late = _late_note(population)
        if rank_by:
            table = table.sort_values([f"{rank_by}_score", "customer_id"], ascending=[False, True], kind="stable")
        else:
            table = table.sort_values("customer_id", kind="stable")

        def audited() -> None:  # recorded once the file is written whole, published once recorded
            record_export(
                None,
                os_user(),
                "portrait segment export",
                {
                    "segment": name,
                    "as_of": str(result.as_of),
                    "rank_by": rank_by,
                    "columns": wanted or None,
                    "out": str(out_file),
                },
                len(table),
                left_out=left_out,
            )

        atomic_write(table, out_file, csv=out_file.suffix != ".parquet", before_publish=audited)
        out.print(
            f"{len(table):,} customer{'' if len(table) == 1 else 's'} of {name!r} as of {result.as_of} -> {out_file}"
        )
        out.print(export_note(left_out))
        if not len(table):
            _warn_empty(name, result.as_of)
        if late:
            out.print(f"note: {late}")

    @app.command("delete")
    def delete_command(name: str, segments_dir: SegmentsOption = None) -> None:
        """Delete a saved segment (refused while another segment includes or excludes it)."""
        from marketing.segments import SegmentStore

        SegmentStore(segments_dir).delete(name)
        out.print(f"deleted segment {name!r}")


PREVIEW = "preview"  # the name of the unsaved definition segment count evaluates


def _count_text(value) -> str:
    return "-" if value is None or value != value else f"{int(value):,}"
