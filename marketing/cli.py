"""``portrait tags ...`` and ``portrait rfm``, registered by ``portrait_cli.main`` (segments: ``segment_cli``)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from features.cli import EngineOption, SparkMasterOption
from features.options import checked_date
from portrait.errors import PortraitError
from portrait.progress import spinner

DataOption = Annotated[Path, typer.Option("--data", help="Data set folder or DuckDB file.")]
AsOfOption = Annotated[
    str,
    typer.Option("--as-of", callback=checked_date, help="As of this date (YYYY-MM-DD): only data before it is used."),
]
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
# The commands that can run their SQL (features, behaviour terms) on Spark take the data set as
# text: a Path would turn s3a://bucket/x into s3a:/bucket/x.
EngineDataOption = Annotated[
    str, typer.Option("--data", help="Data set folder or DuckDB file (Spark: also hdfs://, s3a://, abfss:// paths).")
]


@contextmanager
def open_population(
    dataset: str | Path, as_of: str, scores: Path | None, say, engine: str = "duckdb", spark_master: str | None = None
):
    """A :class:`~marketing.population.Population` of the data set, on DuckDB or on Spark
    (``engine``); closed, with its Spark session's caches, when the block ends."""
    from marketing.population import Population
    from portrait.engine import check_engine_name
    from portrait.validate import open_checked

    if scores is not None and not scores.is_dir():
        raise PortraitError(f"scores folder {scores} does not exist")
    if check_engine_name(engine) != "spark":
        if spark_master:
            raise PortraitError("--spark-master is an option of --engine spark")
        with Population(open_checked(Path(dataset), say), as_of, scores_dir=scores, progress=say) as population:
            yield population
        return
    from portrait.spark_engine import spark_dataset, spark_errors, spark_session

    with spark_errors():
        say("starting Spark")
        spark_engine, ds = spark_dataset(spark_session(spark_master), str(dataset))
        try:
            with Population(ds, as_of, scores_dir=scores, progress=say, con=spark_engine) as population:
                yield population
        finally:
            spark_engine.close()


def manual_store_path(store: Path | None) -> Path:
    from marketing.manual import default_store

    return store or default_store()


def register_tags(app: typer.Typer, out, console) -> None:
    @app.command("list")
    def list_command(file: TagsFileOption = None) -> None:
        """The tag library as a tree: groups, tags, their kind and definition; conditions checked first.

        Every condition is checked against the catalogue, as `tags apply` checks it (a customers
        attribute's kind and a per-value feature's value are the data's to tell)."""
        from marketing.population import dataless_schema
        from marketing.tags import check_conditions, load_library

        library = load_library(file)
        check_conditions(library, dataless_schema(), with_models=True)
        tree = Tree(Text().append("tag library", style="bold").append(f" {library.source}"))

        def add(node, path: str) -> None:
            group = library.groups[path]
            text = Text().append(path, style="bold").append(f" — {group.description}" if group.description else "")
            if group.exclusive:
                text.append(f"  (exclusive: {group.exclusive})", style="cyan")
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
                branch.add(
                    Text().append(tag.name).append(f" ({tag.kind})", style="dim").append(f": {tag.definition()}")
                )
            for child in library.children(path):
                add(branch, child)

        for root in library.children(None):
            add(tree, root)
        out.print(tree, soft_wrap=False)  # wrapped to the width; soft wrap would crop a tree

    @app.command("apply")
    def apply_command(
        dataset: Annotated[
            str, typer.Argument(help="Data set folder or DuckDB file (Spark: also hdfs://, s3a://, abfss:// paths).")
        ],
        as_of: AsOfOption,
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for tags_<date>.parquet and its summary.")],
        scores: ScoresOption = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        engine: EngineOption = "duckdb",
        spark_master: SparkMasterOption = None,
    ) -> None:
        """Tag every customer as of a date; write the tags table and a summary."""
        from features.build import nobody_before
        from marketing.tags import apply_tags, load_library, write_tags

        started = time.perf_counter()
        library = load_library(file)
        with (
            spinner(console, "tagging") as say,
            open_population(dataset, as_of, scores, say, engine, spark_master) as population,
        ):
            applied = apply_tags(library, population, manual_store=manual_store_path(store))
            as_of_date = population.as_of
        if not applied.customers:  # as rfm and features build: an empty table is no answer
            raise PortraitError(nobody_before(as_of_date, "no customers to tag") + "; nothing written")
        _, summary, target = write_tags(
            library,
            applied,
            as_of_date,
            out_dir,
            out_dir,
            extra={"duration_seconds": round(time.perf_counter() - started, 2)},
        )
        table = Table(title=f"tags as of {as_of_date} ({applied.customers:,} customers)")
        for column in ("tag", "customers", "share", "entered", "left"):
            table.add_column(column, justify="left" if column == "tag" else "right")
        for tag, info in sorted(summary["tags"].items()):
            table.add_row(
                tag,
                f"{info['customers']:,}",
                f"{info['customers'] / max(applied.customers, 1):.1%}",
                "-" if info["entered"] is None else f"{info['entered']:,}",  # none to compare with
                "-" if info["left"] is None else f"{info['left']:,}",
            )
        out.print(table)
        for group, info in applied.coverage.items():
            covered = sum(info["values"].values())
            out.print(f"exclusive group {group}: {covered:,} of {info['customers']:,} customers, one value each")
        for note in summary["notes"]:
            out.print(f"[yellow]note:[/yellow] {escape(note)}", markup=True)
        out.print(f"tags: {target}\nsummary: {target.with_suffix('.summary.json')} ({summary['duration_seconds']} s)")

    def _manual(tag_name: str, file: Path | None):
        from marketing.tags import load_library

        library = load_library(file)
        manual = [t.name for t in library.tags if t.kind == "manual"]
        if tag_name not in {t.name for t in library.tags} and tag_name in library.names():
            # a group's tag ("RFM: Lost", a level): the message said there was no such tag
            raise PortraitError(
                f"tag {tag_name!r} is one of a group's tags: its members come from the group's rule, not by hand; "
                f"manual tags: {manual}"
            )
        tag = library.tag(tag_name)
        if tag.kind != "manual":
            raise PortraitError(
                f"tag {tag_name!r} is a {tag.kind} tag: its members come from its condition, not by hand; "
                f"manual tags: {manual}"
            )
        return tag

    def _resolve(dataset: Path, ids_file: Path, rejected: Path | None):
        from marketing.manual import read_ids, resolve_ids
        from portrait.files import atomic_write
        from portrait.validate import open_checked

        ids = read_ids(ids_file)
        blank = ids == ""
        con = open_checked(dataset, note=lambda text: out.print(f"note: {text}", highlight=False)).connect()
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
            out.print(
                f"[yellow]{rejected_count:,} id(s) rejected[/yellow] (unknown or blank) -> {escape(str(target))}",
                markup=True,
            )
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
        from marketing.manual import check_note, record
        from portrait.dataset import today_in_zone_of

        _manual(tag, file)
        check_note(note)  # before the ids are resolved and the rejected ones written
        expiry = _date(expires, "--expires") if expires else None
        today = today_in_zone_of(data)  # in the data set's zone, where its tags hold, not the server's
        if expiry is not None and expiry <= today:
            raise PortraitError(f"--expires {expiry} is not in the future (today is {today} in the data set's zone)")
        known = _resolve(data, ids, rejected)
        target = manual_store_path(store)
        written = record(
            target, "assign", tag, known["given_id"], known["customer_id"], by=by, note=note, expires=expiry
        )
        out.print(f"assigned {tag!r} to {_people(known, written)} -> {target}")

    @app.command("remove")
    def remove_command(
        tag: Annotated[str, typer.Argument(help="A manual tag of the library.")],
        ids: Annotated[Path, typer.Option("--ids", help="CSV with a customer_id column (or one column of ids).")],
        data: DataOption,
        by: Annotated[str | None, typer.Option("--by", help="Who removes (default: the system user).")] = None,
        note: Annotated[str | None, typer.Option("--note", help="Why; kept with the removal.")] = None,
        file: TagsFileOption = None,
        store: StoreOption = None,
        rejected: Annotated[Path | None, typer.Option("--rejected", help="Where rejected ids go.")] = None,
    ) -> None:
        """Remove a manual tag from listed customers (the history is kept)."""
        from marketing.manual import check_note, holders, record

        _manual(tag, file)
        check_note(note)  # before the ids are resolved and the rejected ones written
        known = _resolve(data, ids, rejected)
        target = manual_store_path(store)
        # only those who hold it now: "removed from 40" for 40 who never had it was not so
        from portrait.dataset import dataset_timezone, today_in_zone_of

        zone = dataset_timezone(data)
        today = today_in_zone_of(data)
        held = set(holders(target, today, [tag], zone)["customer_id"])
        holding = known[known["customer_id"].astype("str").isin(held)]
        others = int(known.loc[~known.index.isin(holding.index), "customer_id"].nunique())
        not_held = f"{others:,} listed customer{'' if others == 1 else 's'} did not hold it (nothing recorded for them)"
        if holding.empty:
            out.print(f"nobody listed holds {tag!r}: {not_held}; {target} unchanged")
            return
        written = record(target, "remove", tag, holding["given_id"], holding["customer_id"], by=by, note=note)
        out.print(f"removed {tag!r} from {_people(holding, written)} -> {target}" + (f"; {not_held}" if others else ""))


def _date(text: str, option: str) -> dt.date:
    """A date written YYYY-MM-DD, nothing else: Python also reads 2027-W18 and 20270501 as dates."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            raise ValueError(text)
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise PortraitError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def register_rfm(app: typer.Typer, out, console) -> None:
    @app.command("rfm")
    def rfm_command(
        dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
        as_of: AsOfOption,
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for the RFM tables.")],
        previous: Annotated[
            str | None,
            typer.Option(
                "--previous", callback=checked_date, help="An earlier date: also write the migration between them."
            ),
        ] = None,
    ) -> None:
        """RFM scores (1-5) and value groups of every customer; summary; migration."""
        from features.build import late_as_of_note, nobody_before
        from marketing.population import Population
        from marketing.rfm import group_summary, migration, top_share_of_revenue
        from portrait.files import atomic_write, atomic_write_text, check_targets
        from portrait.validate import open_checked

        ds = open_checked(dataset)
        value_columns = ["days_since_last_purchase", "orders_lifetime", "spend_lifetime"]
        with spinner(console, "RFM") as say:
            with Population(ds, as_of, progress=say) as population:
                frame = population.frame(columns=value_columns)
                as_of_date = population.as_of
            earlier, previous_date = None, None
            if previous:
                with Population(ds, previous, progress=say) as before:
                    if before.as_of >= as_of_date:
                        raise PortraitError(f"--previous {before.as_of} must be before --as-of {as_of_date}")
                    earlier, previous_date = before.frame(columns=value_columns), before.as_of
        if frame.empty:  # as features build and score: an empty table is no answer
            raise PortraitError(nobody_before(as_of_date, "no RFM scores to compute") + "; nothing written")
        rfm = frame[["customer_id", *value_columns, "rfm_r", "rfm_f", "rfm_m", "rfm_fm", "rfm_group"]]
        summary = group_summary(frame, frame)
        top = top_share_of_revenue(frame)
        stem = out_dir / f"rfm_{as_of_date.isoformat()}"
        check_targets(
            [stem.with_suffix(".parquet"), stem.with_suffix(".summary.json"), out_dir / f"{stem.name}_groups.csv"]
            + ([out_dir / f"rfm_migration_{previous_date}_{as_of_date.isoformat()}.csv"] if earlier is not None else [])
        )
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
        if pd.isna(top):
            facts["top_20pct_share_of_revenue"] = None  # JSON has no NaN
            out.print(f"note: no customer has revenue before {as_of_date}: no share of revenue to show")
        else:
            out.print(f"the top 20% of buyers bring {top:.1%} of revenue")
        late = late_as_of_note(frame, as_of_date, "recency is measured from the as-of date")
        if late:
            out.print(f"note: {late}")
        if earlier is not None:
            moves = migration(earlier, frame)
            path = out_dir / f"rfm_migration_{previous_date}_{as_of_date.isoformat()}.csv"
            atomic_write(moves.reset_index(), path, csv=True)
            facts["migration_file"] = str(path)
            out.print(f"migration {previous_date} -> {as_of_date}: {path}")
        atomic_write_text(json.dumps(facts, indent=2, default=str), stem.with_suffix(".summary.json"))
        out.print(
            f"scores: {stem.with_suffix('.parquet')}\ngroups: {out_dir / f'rfm_{as_of_date.isoformat()}_groups.csv'}"
        )


def _fmt(value, pattern: str) -> str:
    return "-" if value is None or value != value else pattern.format(value)


def _people(known: pd.DataFrame, ids: int) -> str:
    """How many people the listed ids are (merged ids of one person count once)."""
    persons = int(known["customer_id"].nunique())
    text = f"{persons:,} customer{'' if persons == 1 else 's'}"
    return text if persons == ids else f"{text} ({ids:,} ids listed)"
