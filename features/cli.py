"""``portrait features ...`` commands, registered on the CLI by ``portrait.cli``."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from features.catalogue import FAMILIES, catalogue
from features.config import FeatureConfig
from portrait.errors import ConfigError


def load_feature_config(path: Path | None) -> FeatureConfig:
    """A ``[features]`` table from a TOML file (or the whole file), or the defaults."""
    if path is None:
        return FeatureConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return FeatureConfig.from_dict(data.get("features", data))


def catalogue_markdown() -> str:
    """The catalogue with templates for data-dependent names, as in docs/features.md."""
    lines = ["| name | family | window | description |", "| --- | --- | --- | --- |"]
    for family in FAMILIES:
        for feature in catalogue():
            if feature.family == family:
                window = f"{feature.window}d" if feature.window else "all history"
                lines.append(f"| `{feature.name}` | {family} | {window} | {feature.description} |")
    return "\n".join(lines)


def register(app: typer.Typer, out, console) -> None:
    @app.command("list")
    def list_command(
        markdown: Annotated[bool, typer.Option("--markdown", help="Print as a Markdown table.")] = False,
    ) -> None:
        """The feature catalogue: name, family, window, description."""
        if markdown:
            out.print(catalogue_markdown(), soft_wrap=True, highlight=False, markup=False)
            return
        table = Table(title="feature catalogue (names in <> depend on the data)")
        for column in ("name", "family", "window", "description"):
            table.add_column(column)
        for family in FAMILIES:
            for feature in catalogue():
                if feature.family == family:
                    window = f"{feature.window}d" if feature.window else "all"
                    table.add_row(feature.name, family, window, feature.description)
        out.print(table)

    @app.command("build")
    def build_command(
        dataset: Annotated[Path, typer.Argument(help="Data set folder or DuckDB file.")],
        as_of: Annotated[str, typer.Option("--as-of", help="Cutoff date (YYYY-MM-DD): only data before it is used.")],
        out_file: Annotated[Path, typer.Option("--out", help="Feature table to write (Parquet).")],
        config_file: Annotated[Path | None, typer.Option("--config", help="TOML with a [features] table.")] = None,
    ) -> None:
        """Build one feature row per customer as of a cutoff."""
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from features.build import build_features, parse_cutoff
        from portrait.dataset import open_dataset

        config = load_feature_config(config_file)
        cutoff = parse_cutoff(as_of)
        ds = open_dataset(dataset)
        started = time.perf_counter()
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        ) as progress:
            progress.add_task(f"building features as of {cutoff}", total=None)
            frame = build_features(ds, cutoff, config)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_file.with_name(out_file.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(out_file)
        out.print(
            f"{len(frame):,} customers x {frame.shape[1] - 1} features as of {cutoff} "
            f"in {time.perf_counter() - started:.1f} s -> {out_file}"
        )
