"""``portrait forget``: the right to be forgotten (:mod:`portrait.forget`) from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from portrait.errors import PortraitError

DEFAULT_OUTPUTS = Path("outputs")


def register(app: typer.Typer, out, console) -> None:
    @app.command("forget")
    def forget_command(
        ids: Annotated[
            list[str] | None, typer.Argument(help="Customer ids to forget (any of a person's merged ids).")
        ] = None,
        ids_file: Annotated[
            Path | None, typer.Option("--ids", help="A CSV of customer ids (a customer_id column, or one column).")
        ] = None,
        dataset: Annotated[Path, typer.Option("--data", help="The data set folder or DuckDB file.")] = ...,
        outputs: Annotated[
            list[Path] | None,
            typer.Option(
                "--outputs",
                help="Folders of stored outputs to remove the person from (repeat for several); "
                "default: outputs/ and the segments folder.",
            ),
        ] = None,
        manual_tags: Annotated[
            Path | None,
            typer.Option(
                "--manual-tags", help="The manual tag store (default: PORTRAIT_MANUAL_TAGS or tags/manual.parquet)."
            ),
        ] = None,
        reason: Annotated[str, typer.Option("--reason", help="Why (kept with the tombstone).")] = "",
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; change nothing.")] = False,
        whole_person: Annotated[
            bool,
            typer.Option(
                "--whole-person",
                help="Forget a person of more than 20 merged customer ids too (refused without it: often a "
                "shared identifier chaining customers together).",
            ),
        ] = False,
    ) -> None:
        """Forget customers: tombstone them in the data set and remove their rows from stored outputs and manual tags.

        Every later read and import of the data set leaves them out."""
        from marketing.manual import default_store, forget_ids, read_ids
        from marketing.segments import default_folder
        from portrait.dataset import open_dataset
        from portrait.forget import LARGE_PERSON, forget, large_persons

        given = list(ids or [])
        if ids_file is not None:
            given += [i for i in read_ids(ids_file).tolist() if i]
        if not given:
            raise PortraitError("give the customer ids to forget, as arguments or with --ids FILE.csv")
        folders = list(outputs) if outputs else [DEFAULT_OUTPUTS, default_folder()]
        missing = [f for f in folders if not f.exists()]
        if outputs and missing:
            raise PortraitError(f"--outputs {', '.join(map(str, missing))}: no such folder; nothing was changed")
        folders = [f for f in folders if f.exists()]
        store = manual_tags or default_store()
        if manual_tags is not None and not manual_tags.exists():
            raise PortraitError(f"--manual-tags {manual_tags}: no such file; nothing was changed")
        ds = open_dataset(dataset)
        with console.status("forgetting") as status:
            result = forget(
                ds,
                given,
                outputs=folders,
                manual_store=store,
                forget_manual_ids=forget_ids,
                reason=reason,
                dry_run=dry_run,
                whole_person=whole_person,
                progress=lambda message: status.update(escape(message)),
            )
        would = "would be " if dry_run else ""
        for person in result.persons:
            if person.already_forgotten:
                out.print(
                    f"{person.given_id}: already forgotten (no longer in the data)",
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            n, v = len(person.customer_ids), person.identity_values
            out.print(
                f"{person.given_id}: one person, {n} customer id{'s' if n != 1 else ''} and "
                f"{v} identity value{'s' if v != 1 else ''} {would}forgotten",
                highlight=False,
                soft_wrap=True,
            )
        out.print(
            f"tombstone: {result.tombstones_added:,} entr{'ies' if result.tombstones_added != 1 else 'y'} "
            f"{'would be ' if dry_run else ''}added to {result.tombstone_file} ({result.tombstones_total:,} in all)",
            highlight=False,
            soft_wrap=True,
        )
        shown = ", ".join(map(str, folders)) or "none"
        out.print(
            f"stored outputs checked: {result.checked_files:,} files under {shown}", highlight=False, soft_wrap=True
        )
        for path, rows in result.removed:
            out.print(
                f"  {path}: {rows:,} row{'s' if rows != 1 else ''} {would}removed", highlight=False, soft_wrap=True
            )
        for folder in result.abandoned_runs:
            out.print(f"  {folder}: a killed refresh's folder, {would}removed whole", highlight=False, soft_wrap=True)
        if result.manual_store is not None:
            out.print(
                f"  {result.manual_store} (manual tags): {result.manual_rows:,} row{'s' if result.manual_rows != 1 else ''} "
                f"{would}removed",
                highlight=False,
                soft_wrap=True,
            )
        untouched = result.checked_files - len(result.removed) - len(result.unreadable)
        out.print(f"  {untouched:,} other files do not hold them (unchanged)", highlight=False, soft_wrap=True)
        out.print(
            "note: models trained before now learned from these customers' rows (MLflow stores no customer "
            "ids: metrics, plots, 5 example rows of feature values, aggregate drift references); retrain "
            "(portrait train, portrait personas fit) to remove their influence",
            highlight=False,
            soft_wrap=True,
        )
        if dry_run:
            out.print("dry run: nothing was changed", highlight=False, soft_wrap=True)
            large = large_persons(result.persons)
            if large and not whole_person:
                out.print(
                    f"note: {large[0].given_id} is one person of {len(large[0].customer_ids):,} customer ids (more than "
                    f"{LARGE_PERSON}): a run without --dry-run refuses it unless --whole-person is given",
                    highlight=False,
                    soft_wrap=True,
                )
        if result.unreadable:
            for path, problem in result.unreadable:
                console.print(
                    f"[bold red]error:[/bold red] cannot read {escape(str(path))}: {escape(problem)}",
                    highlight=False,
                    markup=True,
                    soft_wrap=True,
                )
            console.print(
                "[bold red]error:[/bold red] the files above could not be checked and may still hold the "
                "customers; fix or remove them and run the command again",
                highlight=False,
                markup=True,
                soft_wrap=True,
            )
            raise typer.Exit(1)
