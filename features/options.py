"""Command-line options shared by the commands that read a date: checked as the option is read,
so that the message names the option (``--from`` or ``--to`` of one command line), not a
"cutoff" the user never wrote."""

from __future__ import annotations

import typer

from portrait.errors import PortraitError


def checked_date(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """A date option's value, refused at once unless :func:`features.build.parse_cutoff` reads
    it (``YYYY-MM-DD``, from 1900 to 2199)."""
    if value is None or ctx.resilient_parsing:
        return value
    from features.build import parse_cutoff

    try:
        parse_cutoff(value)
    except PortraitError as exc:
        raise typer.BadParameter(str(exc).removeprefix("cutoff ")) from None
    return value
