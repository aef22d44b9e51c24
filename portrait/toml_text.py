"""Values in messages about a TOML file (an experiment, a refresh's settings) as the file writes
them: ``true``, ``"text"``, ``2024-01-01``, not Python's ``True``, ``'text'``,
``datetime.date(2024, 1, 1)``."""

from __future__ import annotations

import datetime as dt
import json


def as_toml(value) -> str:
    """A value as the experiment file writes it, for a message: ``true``, ``"text"``, not Python's
    ``True`` and ``'text'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(as_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {as_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dt.date | dt.time):  # datetime too: an unquoted date or time in TOML
        return value.isoformat()
    return repr(value)
