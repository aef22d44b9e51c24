"""``portrait features ...`` commands, registered on the CLI by ``portrait_cli.main``."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from features.catalogue import catalogue
from features.config import FeatureConfig
from features.options import checked_date
from portrait.errors import ConfigError, PortraitError

# The engine options of every command that can run its SQL on Spark (features build, score, tags
# apply, segment refresh), defined once.
EngineOption = Annotated[str, typer.Option("--engine", help="duckdb (embedded, default) or spark.")]
SparkMasterOption = Annotated[
    str | None,
    typer.Option("--spark-master", help="Spark master (default local[2], or the session spark-submit gives)."),
]


def load_feature_config(path: Path | None) -> FeatureConfig:
    """A ``[features]`` table from a TOML file (or the whole file), or the defaults."""
    if path is None:
        return FeatureConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return FeatureConfig.from_dict(data.get("features", data))


CATALOGUE_COLUMNS = ("name", "label", "family", "window", "scale", "unit", "description")


def catalogue_rows() -> list[tuple[str, ...]]:
    """The catalogue with templates for data-dependent names, one tuple of CATALOGUE_COLUMNS each."""
    return [
        (
            f.name,
            f.label,
            f.family,
            f"{f.window}d" if f.window else "all history",
            f.scale,
            f.unit or "-",
            f.description,
        )
        for f in catalogue()
    ]


def catalogue_markdown() -> str:
    """The catalogue as in docs/features.md."""
    lines = ["| " + " | ".join(CATALOGUE_COLUMNS) + " |", "|" + " --- |" * len(CATALOGUE_COLUMNS)]
    for name, *rest in catalogue_rows():
        lines.append(f"| `{name}` | " + " | ".join(rest) + " |")
    return "\n".join(lines)


def _build_on_spark(dataset, cutoff, out_file, config, table, spark_master, engine, out, console) -> None:
    from features.spark import write_features_spark
    from portrait.progress import spinner
    from portrait.spark_engine import parse_table_options

    if engine != "spark":
        raise PortraitError("--table and --spark-master are options of --engine spark")
    started = time.perf_counter()
    with spinner(console, "features") as say:
        say("starting Spark")
        rows, features = write_features_spark(
            str(dataset),
            cutoff,
            str(out_file),
            config,
            tables=parse_table_options(table),
            master=spark_master,
            progress=say,
        )
    out.print(
        f"{rows:,} customers x {features} features as of {cutoff} on Spark "
        f"in {time.perf_counter() - started:.1f} s -> {out_file}"
    )


def register(app: typer.Typer, out, console) -> None:
    @app.command("list")
    def list_command(
        markdown: Annotated[bool, typer.Option("--markdown", help="Print as a Markdown table.")] = False,
    ) -> None:
        """The feature catalogue: name, label, family, window, scale, unit, description.

        A table on a terminal; tab-separated lines when piped, so that grep and cut see whole names."""
        if markdown:
            out.print(catalogue_markdown(), soft_wrap=True, highlight=False, markup=False)
            return
        if not out.is_terminal:  # a table cut to 80 columns shortened the names (days_si...)
            lines = ["\t".join(CATALOGUE_COLUMNS), *("\t".join(row) for row in catalogue_rows())]
            typer.echo("\n".join(lines))  # as written: rich would expand the tabs
            return
        table = Table(title="feature catalogue (names in <> depend on the data)")
        for column in CATALOGUE_COLUMNS:
            table.add_column(column)
        for row in catalogue_rows():
            table.add_row(*row)
        out.print(table)

    @app.command("build")
    def build_command(
        dataset: Annotated[
            str, typer.Argument(help="Data set folder or DuckDB file (Spark: also hdfs://, s3a://, abfss:// paths).")
        ],
        as_of: Annotated[
            str,
            typer.Option(
                "--as-of", callback=checked_date, help="Cutoff date (YYYY-MM-DD): only data before it is used."
            ),
        ],
        out_file: Annotated[
            str, typer.Option("--out", help="Feature table to write (Parquet; Spark: a folder on an hdfs:// ... path).")
        ],
        config_file: Annotated[Path | None, typer.Option("--config", help="TOML with a \\[features] table.")] = None,
        engine: EngineOption = "duckdb",
        spark_master: SparkMasterOption = None,
        table: Annotated[
            list[str] | None,
            typer.Option("--table", help="Spark: read TABLE from the catalog, e.g. purchases=sales.order_lines."),
        ] = None,
    ) -> None:
        """Build one feature row per customer as of a cutoff."""
        from features.build import build_features, late_as_of_note, nobody_before, parse_cutoff
        from portrait.engine import check_engine_name
        from portrait.files import atomic_write, check_suffix
        from portrait.progress import spinner
        from portrait.validate import open_checked

        config = load_feature_config(config_file)
        cutoff = parse_cutoff(as_of)
        if check_engine_name(engine) == "spark" or table or spark_master:
            _build_on_spark(dataset, cutoff, out_file, config, table, spark_master, engine, out, console)
            return
        check_suffix(out_file, (".parquet",))
        started = time.perf_counter()
        with spinner(console, "features") as say:
            ds = open_checked(dataset, say, note=lambda text: out.print(f"note: {text}"))
            say(f"building features as of {cutoff}")
            frame = build_features(ds, cutoff, config, progress=say)
        if not len(frame):  # a date before the data, most often: an empty table is no answer
            raise PortraitError(nobody_before(cutoff, "no features to build") + "; nothing written")
        atomic_write(frame, Path(out_file), csv=False)
        out.print(
            f"{len(frame):,} customers x {frame.shape[1] - 1} features as of {cutoff} "
            f"in {time.perf_counter() - started:.1f} s -> {out_file}"
        )
        late = late_as_of_note(frame, cutoff)
        if late:
            out.print(f"note: {late}")
