"""``portrait tags ...``, ``portrait rfm`` and ``portrait segment ...``, registered by ``portrait.cli``."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from portrait.errors import PortraitError

DataOption = Annotated[Path, typer.Option("--data", help="Data set folder or DuckDB file.")]
AsOfOption = Annotated[str, typer.Option("--as-of", help="As of this date (YYYY-MM-DD): only data before it is used.")]
ScoresOption = Annotated[
    Path | None, typer.Option("--scores", help="Scores folder (portrait score --out) for model conditions.")
]
TagsFileOption = Annotated[
    Path | None, typer.Option("--file", help="Tag library TOML (default: the shipped retail template).")
]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Manual tag store (default tags/manual.parquet or $PORTRAIT_MANUAL_TAGS)."),
]
SegmentsOption = Annotated[
    Path | None, typer.Option("--segments", help="Segments folder (default segments/ or $PORTRAIT_SEGMENTS).")
]


@contextmanager
def _progress(console, title: str):
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task(title, total=None)
        yield lambda message: progress.update(task, description=message)


def _population(dataset: Path, as_of: str, scores: Path | None, say):
    from marketing.population import Population
    from portrait.dataset import open_dataset

    if scores is not None and not scores.is_dir():
        raise PortraitError(f"scores folder {scores} does not exist")
    return Population(open_dataset(dataset), as_of, scores_dir=scores, progress=say)


def _manual_store(store: Path | None) -> Path:
    from marketing.manual import default_store

    return store or default_store()


def register_tags(app: typer.Typer, out, console) -> None:
    @app.command("list")
    def list_command(file: TagsFileOption = None) -> None:
        """The tag library as a tree: groups, tags, their kind and definition."""
        from marketing.tags import load_library

        library = load_library(file)
        tree = Tree(f"[bold]tag library[/bold] {library.source}")

        def add(node, path: str) -> None:
            group = library.groups[path]
            text = f"[bold]{path}[/bold]" + (f" — {group.description}" if group.description else "")
            if group.exclusive:
                text += f"  [cyan](exclusive: {group.exclusive})[/cyan]"
            branch = node.add(text)
            if group.exclusive == "levels":
                cuts = (
                    f"quantiles {list(group.quantiles)} of positive {group.feature}"
                    if group.quantiles
                    else f"{group.feature} up to {list(group.bounds)}"
                )
                branch.add(f"values {', '.join(group.values)} by {cuts}; '{group.no_purchase}' without a purchase")
            elif group.exclusive == "rfm":
                branch.add("RFM groups: portrait rfm (rules in docs/rfm.md)")
            for tag in (t for t in library.tags if t.group == path):
                branch.add(f"{tag.name} [dim]({tag.kind})[/dim]: {tag.definition()}", highlight=False)
            for child in library.children(path):
                add(branch, child)

        for root in library.children(None):
            add(tree, root)
        out.print(tree)

    @app.command("apply")
    def apply_command(
        dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
        as_of: AsOfOption,
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for tags_<date>.parquet and its summary.")],
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
    ) -> None:
        """Tag every customer as of a date; write the tags table and a summary."""
        from marketing.tags import apply_tags, load_library, movement, previous_tags, tags_file, with_since
        from portrait.files import atomic_write, atomic_write_text

        started = time.perf_counter()
        library = load_library(file)
        with _progress(console, "tagging") as say, _population(dataset, as_of, scores, say) as population:
            applied = apply_tags(library, population, manual_store=_manual_store(store))
            as_of_date = population.as_of
        previous, previous_date = previous_tags(out_dir, as_of_date)
        tags = with_since(applied.tags, previous)
        moves = movement(tags, previous)
        summary = {
            "as_of": as_of_date.isoformat(),
            "library": library.source,
            "customers": applied.customers,
            "previous_run": previous_date.isoformat() if previous_date else None,
            "tags": {
                row.tag: {
                    "customers": int(row.customers),
                    "entered": None if previous is None else int(row.entered),
                    "left": None if previous is None else int(row.left),
                }
                for row in moves.itertuples()
            },
            "exclusive_groups": applied.coverage,
            "notes": applied.notes,
            "duration_seconds": round(time.perf_counter() - started, 2),
        }
        target = tags_file(out_dir, as_of_date)
        atomic_write(tags, target)
        atomic_write_text(json.dumps(summary, indent=2, default=str), target.with_suffix(".summary.json"))
        table = Table(title=f"tags as of {as_of_date} ({applied.customers:,} customers)")
        for column in ("tag", "customers", "share", "entered", "left"):
            table.add_column(column, justify="left" if column == "tag" else "right")
        for row in moves.sort_values("tag").itertuples():
            table.add_row(
                row.tag,
                f"{row.customers:,}",
                f"{row.customers / max(applied.customers, 1):.1%}",
                "-" if previous is None else f"{row.entered:,}",
                "-" if previous is None else f"{row.left:,}",
            )
        out.print(table)
        for group, info in applied.coverage.items():
            covered = sum(info["values"].values())
            out.print(f"exclusive group {group}: {covered:,} of {info['customers']:,} customers, one value each")
        for note in applied.notes:
            out.print(f"[yellow]note:[/yellow] {note}")
        out.print(f"tags: {target}\nsummary: {target.with_suffix('.summary.json')} ({summary['duration_seconds']} s)")

    def _manual(tag_name: str, file: Path | None):
        from marketing.tags import load_library

        library = load_library(file)
        tag = library.tag(tag_name)
        if tag.kind != "manual":
            raise PortraitError(
                f"tag {tag_name!r} is a {tag.kind} tag: its members come from its condition, not by hand; "
                f"manual tags: {[t.name for t in library.tags if t.kind == 'manual']}"
            )
        return tag

    def _resolve(dataset: Path, ids_file: Path, rejected: Path | None):
        from marketing.manual import read_ids, resolve_ids
        from portrait.dataset import open_dataset
        from portrait.files import atomic_write

        ids = read_ids(ids_file)
        blank = ids == ""
        con = open_dataset(dataset).connect()
        try:
            resolved = resolve_ids(con, ids[~blank].drop_duplicates())
        finally:
            con.close()
        unknown = resolved[~resolved["known"].astype(bool)]
        rejected_count = int(len(unknown) + blank.sum())
        if rejected_count:
            target = rejected or ids_file.with_name(ids_file.stem + ".rejected.csv")
            reasons = unknown.assign(reason="not a customer in the data set")[["given_id", "reason"]]
            if blank.any():
                blank_row = pd.DataFrame({"given_id": [""], "reason": [f"{int(blank.sum())} blank id(s)"]})
                reasons = pd.concat([reasons, blank_row], ignore_index=True)
            atomic_write(reasons.rename(columns={"given_id": "customer_id"}), target, csv=True)
            out.print(f"[yellow]{rejected_count:,} id(s) rejected[/yellow] (unknown or blank) -> {target}")
        return resolved[resolved["known"].astype(bool)]

    @app.command("assign")
    def assign_command(
        tag: Annotated[str, typer.Argument(help="A manual tag of the library.")],
        ids: Annotated[Path, typer.Option("--ids", help="CSV with a customer_id column (or one column of ids).")],
        data: DataOption,
        expires: Annotated[str | None, typer.Option("--expires", help="First day it no longer holds.")] = None,
        note: Annotated[str | None, typer.Option("--note", help="Why; kept with the assignment.")] = None,
        by: Annotated[str | None, typer.Option("--by", help="Who assigns (default: the system user).")] = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        rejected: Annotated[Path | None, typer.Option("--rejected", help="Where rejected ids go.")] = None,
    ) -> None:
        """Assign a manual tag to listed customers (unknown ids are counted and written out)."""
        from marketing.manual import record

        _manual(tag, file)
        expiry = _date(expires, "--expires") if expires else None
        if expiry is not None and expiry <= dt.date.today():
            raise PortraitError(f"--expires {expiry} is not in the future")
        known = _resolve(data, ids, rejected)
        target = _manual_store(store)
        written = record(
            target, "assign", tag, known["given_id"], known["customer_id"], by=by, note=note, expires=expiry
        )
        out.print(f"assigned {tag!r} to {written:,} customer(s) -> {target}")

    @app.command("remove")
    def remove_command(
        tag: Annotated[str, typer.Argument(help="A manual tag of the library.")],
        ids: Annotated[Path, typer.Option("--ids", help="CSV with a customer_id column (or one column of ids).")],
        data: DataOption,
        by: Annotated[str | None, typer.Option("--by", help="Who removes (default: the system user).")] = None,
        note: Annotated[str | None, typer.Option("--note")] = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        rejected: Annotated[Path | None, typer.Option("--rejected", help="Where rejected ids go.")] = None,
    ) -> None:
        """Remove a manual tag from listed customers (the history is kept)."""
        from marketing.manual import record

        _manual(tag, file)
        known = _resolve(data, ids, rejected)
        target = _manual_store(store)
        written = record(target, "remove", tag, known["given_id"], known["customer_id"], by=by, note=note)
        out.print(f"removed {tag!r} from {written:,} customer(s) -> {target}")


def _date(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PortraitError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def register_rfm(app: typer.Typer, out, console) -> None:
    @app.command("rfm")
    def rfm_command(
        dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
        as_of: AsOfOption,
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for the RFM tables.")],
        previous: Annotated[
            str | None, typer.Option("--previous", help="An earlier date: also write the migration between them.")
        ] = None,
    ) -> None:
        """RFM scores (1-5) and value groups of every customer; summary; migration."""
        from marketing.population import Population
        from marketing.rfm import group_summary, migration, top_share_of_revenue
        from portrait.dataset import open_dataset
        from portrait.files import atomic_write, atomic_write_text

        ds = open_dataset(dataset)
        value_columns = ["days_since_last_purchase", "orders_lifetime", "spend_lifetime"]
        with _progress(console, "RFM") as say:
            with Population(ds, as_of, progress=say) as population:
                frame = population.frame(columns=value_columns)
                as_of_date = population.as_of
            earlier = None
            if previous:
                with Population(ds, previous, progress=say) as before:
                    if before.as_of >= as_of_date:
                        raise PortraitError(f"--previous {before.as_of} must be before --as-of {as_of_date}")
                    earlier = before.frame(columns=value_columns)
        rfm = frame[["customer_id", *value_columns, "rfm_r", "rfm_f", "rfm_m", "rfm_fm", "rfm_group"]]
        summary = group_summary(frame, frame)
        top = top_share_of_revenue(frame)
        stem = out_dir / f"rfm_{as_of_date.isoformat()}"
        atomic_write(rfm, stem.with_suffix(".parquet"))
        atomic_write(summary, out_dir / f"rfm_{as_of_date.isoformat()}_groups.csv", csv=True)
        facts = {"as_of": as_of_date.isoformat(), "customers": len(frame), "top_20pct_share_of_revenue": top}
        table = Table(title=f"RFM groups as of {as_of_date} ({len(frame):,} customers)")
        for column in ("group", "customers", "share", "share of revenue", "mean recency", "mean orders", "mean spend"):
            table.add_column(column, justify="left" if column == "group" else "right")
        for row in summary.itertuples():
            table.add_row(
                str(row.rfm_group),
                f"{row.customers:,}",
                f"{row.share_of_customers:.1%}",
                f"{row.share_of_revenue:.1%}",
                _fmt(row.mean_recency_days, "{:.0f} d"),
                _fmt(row.mean_frequency, "{:.1f}"),
                _fmt(row.mean_monetary, "{:,.2f}"),
            )
        out.print(table)
        out.print(f"the top 20% of buyers bring {top:.1%} of revenue")
        if earlier is not None:
            moves = migration(earlier, frame)
            path = out_dir / f"rfm_migration_{previous}_{as_of_date.isoformat()}.csv"
            atomic_write(moves.reset_index(), path, csv=True)
            facts["migration_file"] = str(path)
            out.print(f"migration {previous} -> {as_of_date}: {path}")
        atomic_write_text(json.dumps(facts, indent=2, default=str), stem.with_suffix(".summary.json"))
        out.print(
            f"scores: {stem.with_suffix('.parquet')}\ngroups: {out_dir / f'rfm_{as_of_date.isoformat()}_groups.csv'}"
        )


def _fmt(value, pattern: str) -> str:
    return "-" if value is None or value != value else pattern.format(value)


def register_segments(app: typer.Typer, out, console) -> None:
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

        return SegmentEvaluator(population, SegmentStore(segments_dir), load_library(file), _manual_store(store))

    def _static_check(segment, segments_dir, file) -> None:
        """Checks that need no data: names, tags, references, cycles, the condition's grammar
        against the catalogue (per-value features and scores are checked when evaluated)."""
        from features.catalogue import describe
        from marketing.filters import NUMBER, TEXT, Schema, parse_condition
        from marketing.population import RFM_KINDS, SCORE_SUFFIXES
        from marketing.segments import SegmentStore, check_graph
        from marketing.tags import load_library

        library = load_library(file)
        names = library.names()
        for tag in (*segment.tags, *segment.not_tags):
            if tag not in names and not any(tag.startswith(f"{t.name}: ") for t in library.tags if t.each):
                close = difflib.get_close_matches(tag, names, n=5)
                raise PortraitError(
                    f"no tag {tag!r} in {library.source}" + (f"; did you mean {close}?" if close else "")
                )
        segments = SegmentStore(segments_dir).all()
        segments[segment.name] = segment
        check_graph(segments)
        if segment.where:

            def resolve(name: str) -> str | None:
                if name in RFM_KINDS:
                    return RFM_KINDS[name]
                if name.endswith(SCORE_SUFFIXES) or name == "persona_id":
                    return NUMBER
                if name == "persona_name":
                    return TEXT
                found = describe([name]).get(name)
                return None if found is None else (TEXT if found.scale == "category" else NUMBER)

            from features.catalogue import catalogue

            known = {f.name: (TEXT if f.scale == "category" else NUMBER) for f in catalogue(attributes={})}
            parse_condition(segment.where, Schema({**known, **RFM_KINDS}, resolve), behaviour=True)

    @app.command("create")
    def create_command(
        name: Annotated[str, typer.Argument(help="Segment name: lower-case letters, digits, - and _.")],
        where: Annotated[str | None, typer.Option("--where", help="Condition over features and behaviour.")] = None,
        tag: Annotated[list[str] | None, typer.Option("--tag", help="Must hold this tag (repeatable).")] = None,
        not_tag: Annotated[list[str] | None, typer.Option("--not-tag", help="Must not hold this tag.")] = None,
        persona: Annotated[str | None, typer.Option("--persona", help="Persona name or id.")] = None,
        include: Annotated[list[str] | None, typer.Option("--include", help="Add this segment's members.")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Remove this segment's members.")] = None,
        description: Annotated[str | None, typer.Option("--description")] = None,
        replace: Annotated[bool, typer.Option("--replace", help="Overwrite a segment of that name.")] = False,
        data: Annotated[Path | None, typer.Option("--data", help="Also count it on this data set.")] = None,
        as_of: Annotated[str | None, typer.Option("--as-of", help="Count as of this date (with --data).")] = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
    ) -> None:
        """Save a segment (checked first; nothing is written if a check fails)."""
        from marketing.segments import SegmentStore

        segment = _definition(name, where, tag, not_tag, persona, include, exclude, description)
        _static_check(segment, segments_dir, file)
        if data is not None:
            if not as_of:
                raise PortraitError("--data needs --as-of to count the segment")
            _count(segment, data, as_of, scores, file, store, segments_dir, save_first=True, replace=replace)
            return
        path = SegmentStore(segments_dir).save(segment, replace=replace)
        out.print(f"saved segment {name!r}: {segment.definition()} -> {path}")

    def _count(segment, data, as_of, scores, file, store, segments_dir, save_first=False, replace=False):
        from marketing.segments import SegmentStore

        with _progress(console, "counting") as say, _population(data, as_of, scores, say) as population:
            evaluator = _evaluator(population, segments_dir, file, store)
            evaluator.check(segment)
            if save_first:
                SegmentStore(segments_dir).save(segment, replace=replace)
            result = evaluator.evaluate(segment)
        if save_first:
            out.print(f"saved segment {segment.name!r}: {segment.definition()}")
        out.print(
            f"{segment.name}: {len(result.members):,} customers, {result.share:.1%} of {result.base:,} as of {result.as_of}"
        )
        if not len(result.members):
            out.print(f"[yellow]warning:[/yellow] segment {segment.name!r} has no customers as of {result.as_of}")
        return result

    @app.command("count")
    def count_command(
        data: DataOption,
        as_of: AsOfOption,
        where: Annotated[str | None, typer.Option("--where")] = None,
        tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
        not_tag: Annotated[list[str] | None, typer.Option("--not-tag")] = None,
        persona: Annotated[str | None, typer.Option("--persona")] = None,
        include: Annotated[list[str] | None, typer.Option("--include")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude")] = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
    ) -> None:
        """Preview a segment's size without saving it."""
        from marketing.segments import SegmentStore, check_graph

        segment = _definition("preview", where, tag, not_tag, persona, include, exclude, None)
        segments = SegmentStore(segments_dir).all()
        segments.pop("preview", None)
        check_graph({**segments, "preview": segment})
        _count(segment, data, as_of, scores, file, store, segments_dir)

    @app.command("list")
    def list_command(segments_dir: SegmentsOption = None) -> None:
        """Saved segments with their definition and last refreshed size."""
        from marketing.segments import SegmentStore

        store = SegmentStore(segments_dir)
        table = Table(title=f"segments in {store.folder}/")
        for column in ("name", "definition", "customers", "share", "as of"):
            table.add_column(column, justify="right" if column in ("customers", "share") else "left")
        for name, segment in store.all().items():
            history = store.history(name)
            last = history.iloc[-1] if len(history) else None
            table.add_row(
                name,
                segment.definition(),
                "-" if last is None else f"{int(last['customers']):,}",
                "-" if last is None else f"{float(last['share']):.1%}",
                "never refreshed" if last is None else str(last["as_of"]),
            )
        out.print(table)

    @app.command("show")
    def show_command(name: str, segments_dir: SegmentsOption = None) -> None:
        """A segment's definition, size, share of the base and refresh history."""
        from marketing.segments import SegmentStore

        store = SegmentStore(segments_dir)
        segment = store.load(name)
        out.print(f"[bold]{name}[/bold]" + (f" — {segment.description}" if segment.description else ""))
        out.print(f"definition: {segment.definition()}", highlight=False)
        history = store.history(name)
        if not len(history):
            out.print("never refreshed: portrait segment refresh --data DATASET --as-of DATE")
            return
        last = history.iloc[-1]
        out.print(
            f"size: {int(last['customers']):,} customers, {float(last['share']):.1%} of {int(last['base']):,} "
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
        data: DataOption,
        as_of: AsOfOption,
        names: Annotated[list[str] | None, typer.Argument(help="Segments to refresh (default: all).")] = None,
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        segments_dir: SegmentsOption = None,
    ) -> None:
        """Recompute segments as of a date; record size, entered and left."""
        from marketing.segments import SegmentStore, record_refresh

        segment_store = SegmentStore(segments_dir)
        chosen = [segment_store.load(n) for n in (names or segment_store.names())]
        if not chosen:
            raise PortraitError(f"no segments in {segment_store.folder}/ (portrait segment create)")
        started = time.perf_counter()
        with _progress(console, "refreshing") as say, _population(data, as_of, scores, say) as population:
            evaluator = _evaluator(population, segments_dir, file, store)
            evaluator.prepare(chosen)
            results = [evaluator.evaluate(segment) for segment in chosen]
        table = Table(title=f"segments as of {results[0].as_of} ({time.perf_counter() - started:.1f} s)")
        for column in ("segment", "customers", "share", "entered", "left"):
            table.add_column(column, justify="left" if column == "segment" else "right")
        for result in results:
            row = record_refresh(segment_store, result)
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
                out.print(f"[yellow]warning:[/yellow] segment {result.name!r} has no customers as of {result.as_of}")

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
        """Write a segment's customers as of a date (ranked by a model's score if asked)."""
        from marketing.segments import SegmentStore
        from portrait.files import atomic_write

        segment = SegmentStore(segments_dir).load(name)
        wanted = [c.strip() for c in (columns or "").split(",") if c.strip()]
        if rank_by:
            if scores is None:
                raise PortraitError("--rank-by needs --scores DIR")
            wanted = [*wanted, f"{rank_by}_score", f"{rank_by}_percentile"]
        with _progress(console, "exporting") as say, _population(data, as_of, scores, say) as population:
            evaluator = _evaluator(population, segments_dir, file, store)
            result = evaluator.evaluate(segment)
            if rank_by and f"{rank_by}_score" not in (
                population.scores.columns if population.scores is not None else []
            ):
                scored = sorted(c.removesuffix("_score") for c in population.scores.columns if c.endswith("_score"))
                raise PortraitError(f"the scores have no model {rank_by!r}; scored models: {scored}")
            table = evaluator.columns(result.members, list(dict.fromkeys(wanted)))
        if rank_by:
            table = table.sort_values([f"{rank_by}_score", "customer_id"], ascending=[False, True], kind="stable")
        else:
            table = table.sort_values("customer_id", kind="stable")
        atomic_write(table, out_file, csv=out_file.suffix != ".parquet")
        out.print(f"{len(table):,} customers of {name!r} as of {result.as_of} -> {out_file}")
        if not len(table):
            out.print(f"[yellow]warning:[/yellow] segment {name!r} has no customers as of {result.as_of}")

    @app.command("delete")
    def delete_command(name: str, segments_dir: SegmentsOption = None) -> None:
        """Delete a saved segment (refused while another segment includes or excludes it)."""
        from marketing.segments import SegmentStore

        SegmentStore(segments_dir).delete(name)
        out.print(f"deleted segment {name!r}")


def _count_text(value) -> str:
    return "-" if value is None or value != value else f"{int(value):,}"
