"""``portrait refresh``: the nightly job (:mod:`serving.refresh`) with one line per step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from features.options import checked_date
from portrait.errors import PortraitError
from portrait.progress import spinner


def register(app: typer.Typer, out, console, retrainer=None) -> None:
    """``retrainer``: :data:`serving.refresh.Retrainer`, given by the caller (serving/ never
    imports training)."""

    @app.command("refresh")
    def refresh_command(
        settings: Annotated[Path, typer.Argument(help="Refresh settings (refresh.toml).")],
        as_of: Annotated[
            str | None,
            typer.Option("--as-of", callback=checked_date, help="As of this date (default: the file's, else today)."),
        ] = None,
        retrain_if_drift: Annotated[
            bool,
            typer.Option(
                "--retrain-if-drift",
                help="When scoring flags drift, train and promote the models the settings name under retrain, then score again.",
            ),
        ] = False,
    ) -> None:
        """Validate, build features, score, RFM, tag, refresh segments, store the crowd material and the profiles, write lists for one date.

        The run is published all at once (LATEST) only if every step succeeded; a saved segment that cannot be evaluated is left out of it (and its lists), said, and the exit is 2."""
        from portrait.tracking import setup_tracking
        from serving.refresh import STEPS, load_config, refresh

        config = load_config(settings, as_of)
        setup_tracking()
        out.print(f"refresh as of {config.as_of} of {config.data} into {config.out}")
        with spinner(console, "starting") as show:
            current = {"step": "validate"}

            def say(message: str) -> None:
                prefix = f"{current['step']}: "  # a feature build's messages already carry it
                show(message if message.startswith(prefix) else prefix + message)

            # Step lines go to stdout (the log); on a terminal through the spinner's console,
            # so the two do not overwrite each other.
            lines = console if out.is_terminal and console.is_terminal else out

            def on_step(record) -> None:
                mark = {
                    "ok": "[green]ok[/green]",
                    "skipped": "[dim]skipped[/dim]",
                    "partial": "[bold yellow]PARTIAL[/bold yellow]",
                }.get(record.outcome, "[bold red]FAILED[/bold red]")
                shown = list(record.rows.items())
                rows = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in shown[:4])
                rows += ", ..." if len(shown) > 4 else ""
                line = f"  {record.step:<9} {record.seconds:>7.1f} s  {mark}"
                if record.peak_rss_gb is not None:
                    line += f"  peak {record.peak_rss_gb:.1f} GB"
                if rows:
                    line += f"  {escape(rows)}"
                lines.print(line, highlight=False, soft_wrap=True, markup=True)
                if record.outcome == "partial":
                    lines.print(
                        f"            [bold yellow]not done:[/bold yellow] {escape(record.error or '')}",
                        highlight=False,
                        soft_wrap=True,
                        markup=True,
                    )
                for note in record.notes:
                    lines.print(
                        f"            [yellow]note:[/yellow] {escape(note)}",
                        highlight=False,
                        soft_wrap=True,
                        markup=True,
                    )
                if record.step in STEPS[:-1] and record.outcome != "failed":  # crowds and profiles were said as lists
                    current["step"] = STEPS[STEPS.index(record.step) + 1]
                    show(current["step"])

            result = refresh(
                config, retrain_if_drift=retrain_if_drift, retrainer=retrainer, on_step=on_step, progress=say
            )
        manifest = result.manifest
        if result.is_backfill:
            out.print(
                f"published {result.run} in {manifest['seconds']} s (a backfill: LATEST stays at the newer "
                f"run {result.latest.name})"
            )
        else:
            out.print(f"published {result.run} in {manifest['seconds']} s; LATEST -> {result.run.name}")
        out.print(f"manifest: {result.run / 'manifest.json'}")
        if manifest.get("retraining_advised"):
            out.print("[yellow]drift is flagged: retraining advised (see the manifest's drift)[/yellow]", markup=True)
        if result.pruned:
            out.print(f"removed older runs: {', '.join(result.pruned)}")
        history = manifest.get("segment_history")
        if history and history["recorded"]:
            out.print(f"segment history: {len(history['recorded'])} recorded in {history['folder']}")
        for name, reason in (history or {}).get("not_recorded", {}).items():
            out.print(
                f"[yellow]warning: segment {name!r} not recorded in the folder's history[/yellow]: {escape(reason)}",
                markup=True,
            )
        if manifest.get("outcome") == "partial":  # published, but a scheduler must see that not all was done
            raise PortraitError(
                f"refresh as of {config.as_of} published {result.run.name} without some of its parts: "
                f"{manifest['error']}; fix or delete them (portrait segment show NAME, segment delete NAME)"
            )
