"""Writing outputs whole or not at all: a reader (a nightly job, the API) never sees half a file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def atomic_write(frame: pd.DataFrame, path: Path, csv: bool | None = None) -> None:
    """Writes ``frame`` to a temporary name beside ``path``, then renames it into place.
    CSV when ``csv`` is true, or when it is None and ``path`` ends in ``.csv``; else Parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if csv or (csv is None and path.suffix == ".csv"):
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
