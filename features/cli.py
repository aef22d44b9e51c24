"""``portrait features ...`` commands."""

from __future__ import annotations


def register(app, out, console) -> None:
    pass
