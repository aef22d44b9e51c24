"""Where stored outputs live in a folder and how to find the one for a date.

A scores folder holds ``scores_<as_of>.parquet`` (one row per customer), the feature table it
was scored from, ``features_<as_of>.parquet``, and a ``LATEST`` pointer naming the newest
scores file. Readers that work as of a date (tags, segments) take the newest scores whose
as-of is not after theirs, never later scores: those would leak the future into the past.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path

import pandas as pd

from portrait.errors import PortraitError
from portrait.files import parquet_attrs, read_parquet

log = logging.getLogger(__name__)

LATEST = "LATEST"  # the pointer file of a scores folder and of a refresh root
RUNS = "runs"  # a refresh root's folder of runs (runs/<as_of>)
LOCK = "refresh.lock"  # a refresh root's lock: one run at a time
# A saved segments folder's lock: refreshes record into it one at a time, and forget rewrites it
# under it; each waits up to SEGMENT_RECORD_WAIT_SECONDS for the other.
SEGMENT_RECORD_LOCK = ".refresh.lock"
SEGMENT_RECORD_WAIT_SECONDS = 600.0
MANIFEST = "manifest.json"  # what a refresh run did, in its folder
_SCORES_FILE = re.compile(r"scores_(\d{4}-\d{2}-\d{2})\.parquet")


def scores_path(out_dir: Path, as_of: dt.date) -> Path:
    return out_dir / f"scores_{as_of.isoformat()}.parquet"


def features_path(out_dir: Path, as_of: dt.date) -> Path:
    return out_dir / f"features_{as_of.isoformat()}.parquet"


def scores_dates(scores_dir: Path) -> list[dt.date]:
    """The as-of dates of the scores tables in a folder, oldest first."""
    if not scores_dir.is_dir():
        return []
    found = (_SCORES_FILE.fullmatch(p.name) for p in scores_dir.iterdir())
    return sorted(dt.date.fromisoformat(m[1]) for m in found if m)


def scores_as_of(scores_dir: Path, as_of: dt.date) -> tuple[pd.DataFrame, dt.date]:
    """The newest scores table with an as-of date on or before ``as_of``, and its date."""
    dates = [d for d in scores_dates(scores_dir) if d <= as_of]
    if not dates and (problem := refresh_folder_problem(scores_dir)):
        raise PortraitError(problem)
    if not dates:
        later = scores_dates(scores_dir)
        raise PortraitError(
            f"no scores in {scores_dir} as of {as_of} or earlier"
            + (
                f" (the folder has {', '.join(map(str, later[-3:]))}: later scores would leak the future)"
                if later
                else "; run portrait score first"
            )
        )
    return read_parquet(scores_path(scores_dir, dates[-1])), dates[-1]


def point_latest_at(scores_dir: Path, target: Path, as_of: dt.date) -> str | None:
    """Name ``target`` (a scores file of ``as_of``) in the folder's ``LATEST`` unless it names
    newer scores: scoring an earlier date (a backfill) leaves it there, as a refresh does, and
    the newer file's name is returned (None when ``LATEST`` now names ``target``)."""
    from portrait.files import atomic_write_text

    pointer = scores_dir / LATEST
    try:
        current = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        current = ""
    named = _SCORES_FILE.fullmatch(current)
    if named and dt.date.fromisoformat(named.group(1)) > as_of and (scores_dir / current).is_file():
        return current
    atomic_write_text(target.name, pointer)
    return None


def scores_summary(scores_dir: Path, name: str) -> dict:
    """The run summary written beside the scores file ``name`` ({} when it is missing or
    unreadable: scores written by hand, or before summaries were; and when it is another
    scoring's: a scoring stopped between writing its scores and its summary left the previous
    one's beside them, naming another data set and other models' batch)."""
    summary = scores_dir / (name.removesuffix(".parquet") + ".summary.json")
    try:
        loaded = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    token = loaded.get(SCORING_TOKEN)  # summaries written before 2026-12-06 have none
    if token is not None and token != scoring_token(scores_dir / name):
        log.warning("%s describes another scoring than %s (one stopped between the two): not read", summary, name)
        return {}
    return loaded


def scoring_token(path: Path) -> str | None:
    """The token of the scoring that wrote a scores (or features) file, from its Parquet
    metadata (pandas' attributes), without reading its rows; None when it has none."""
    try:
        return parquet_attrs(path).get(SCORING_TOKEN)
    except (OSError, ValueError):
        return None


# The key, in a scores file's and its features file's pandas attributes (Parquet metadata), of
# the scoring that wrote them: the same in both when they are of one scoring.
SCORING_TOKEN = "scoring"
# The key, in a scores file's pandas attributes, of each scored model's label kind (repurchase,
# high_value, future_spend): what its scores are (probabilities or amounts) for a reader of the
# file alone. Files scored before 2026-12-07 have none.
MODEL_LABELS = "model_labels"


def latest_scores_dataset(scores_dir: Path) -> Path | None:
    """The data set the latest scores were computed from, as their summary records it (None
    for scores written before it was recorded, or from in-memory frames)."""
    pointer = scores_dir / LATEST
    if not pointer.exists():
        return None
    path = scores_summary(scores_dir, pointer.read_text().strip()).get("dataset_path")
    return Path(path) if path else None


def is_refresh_root(folder: Path) -> bool:
    """``folder`` holds refresh runs and names the published one (``runs/``, ``LATEST``)."""
    return (Path(folder) / RUNS).is_dir() and (Path(folder) / LATEST).is_file()


def abandoned_runs(runs: Path) -> list[Path]:
    """The folders a killed refresh left in ``runs`` (its run being written, ``.DATE.tmp-*``, or
    the run it was replacing, ``.DATE.old-*``): whoever holds the refresh lock may remove them."""
    if not Path(runs).is_dir():
        return []
    return sorted(
        path
        for path in Path(runs).iterdir()
        if path.name.startswith(".") and (".tmp-" in path.name or ".old-" in path.name) and path.is_dir()
    )


def is_run_folder(folder: Path) -> bool:
    """``folder`` is one refresh run's (``ROOT/runs/<as_of>`` with its manifest)."""
    return Path(folder).parent.name == RUNS and (Path(folder) / MANIFEST).is_file()


def refresh_folder_problem(scores_dir: Path) -> str | None:
    """What to give instead when ``scores_dir`` is a refresh root or one run's folder, which
    hold scores one level down (``runs/DATE/scores``): None for any other folder."""
    scores_dir = Path(scores_dir)
    if is_refresh_root(scores_dir):
        run = (scores_dir / LATEST).read_text(encoding="utf-8").strip()
        return (
            f"{scores_dir} is a refresh root, not a scores folder: its latest scores are in "
            f"{scores_dir / run / 'scores'} (give that, or --runs {scores_dir} where the command takes it)"
        )
    if is_run_folder(scores_dir):
        return f"{scores_dir} is one refresh run's folder: its scores are in {scores_dir / 'scores'}"
    return None


def latest_scores(scores_dir: Path, default: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest scores table and the features it was scored from. ``default``: the folder is
    a command's default, not one the user named: a message names it whole, and the option."""
    if problem := refresh_folder_problem(scores_dir):
        raise PortraitError(problem)
    pointer = scores_dir / LATEST
    if not pointer.exists():
        if default:
            raise PortraitError(
                f"no scores in {scores_dir.resolve()} (the default folder); run portrait score first, "
                "or give the folder it wrote with --scores DIR"
            )
        raise PortraitError(f"no scores in {scores_dir}; run portrait score first")
    name = pointer.read_text().strip()
    scores = read_parquet(scores_dir / name)
    as_of = name.removeprefix("scores_").removesuffix(".parquet")
    features = read_parquet(scores_dir / f"features_{as_of}.parquet")
    return scores, features
