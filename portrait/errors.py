"""Errors a user sees: each names the table, the column and examples where it can."""

from __future__ import annotations


class PortraitError(Exception):
    """An error whose message is meant for the person running the command."""


class ContractError(PortraitError):
    """The data set breaks the input contract in a way no row-level quarantine can fix."""

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
        examples: list[dict] | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.examples = examples or []
        where = ".".join(p for p in (table, column) if p)
        text = f"{where}: {message}" if where else message
        if self.examples:
            shown = "\n".join(f"  {row}" for row in self.examples[:3])
            text += f"\nexample rows:\n{shown}"
        super().__init__(text)


class ConfigError(PortraitError):
    """A configuration file or option has an unknown key or a bad value."""
