"""The nightly refresh: validate, features, score, RFM, tags, segments, profile material and
lists for one as-of date, published all at once.

A run writes everything into a hidden folder ``runs/.<as_of>.tmp-<unique>`` under the output
root. Only when every step has succeeded is that folder renamed to ``runs/<as_of>`` (replacing
an earlier run of the same date in one atomic exchange, :func:`portrait.files.replace_directory`)
and the pointer file ``LATEST`` (which names ``runs/<as_of>``) rewritten atomically, so a
reader that follows ``LATEST`` always sees the features, scores, tags and segments of one
complete run. ``LATEST`` names the newest date: a run of an earlier date than a published
one (a backfill) is published beside it and leaves ``LATEST`` alone. A failed step leaves ``LATEST``
as it was; the partial outputs and a manifest naming the failure are kept in
``runs/<as_of>.failed`` (replaced by the next failure of that date, removed by its success).
A saved segment that cannot be evaluated (a condition the data contradicts, a tag gone) does not
fail the run: the run is published without it and without the lists drawn from it, the step
and the manifest say ``partial`` with what was left out, and the command exits 2.

One run at a time per output root (``refresh.lock``); after a successful switch only the last
``keep`` runs are kept (never the one ``LATEST`` names, nor the run just published: a backfill
older than the newest ``keep`` stays until the next run's switch).

Retraining (``--retrain-if-drift``) is injected by the caller as a function, so this module,
like all of ``serving/``, never imports ``training``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from portrait.connections import interrupting_queries, is_interruption
from portrait.errors import TRY_AGAIN_LATER, PortraitError
from portrait.files import atomic_write, atomic_write_text, exclusive_lock, read_parquet, replace_directory
from portrait.outputs import LATEST, LOCK, MANIFEST, RUNS, abandoned_runs, is_run_folder
from portrait.privacy import with_withheld_columns
from portrait.resources import cpu_seconds, peak_rss_bytes, reset_peak_rss
from portrait.store_errors import is_busy
from portrait.toml_text import as_toml
from serving.settings import DEFAULT_MODELS

log = logging.getLogger(__name__)

DEFAULT_KEEP = 7
STEPS = ("validate", "features", "score", "rfm", "tags", "segments", "crowds", "profiles", "lists")
_RUN_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")
_KEYS = {"data", "out", "as_of", "models", "alias", "reasons", "tags", "manual_tags", "segments", "keep", "lists"}
_LIST_KEYS = {"name", "model", "top", "segment"}

# Retrain a model on a data set and promote it: (model name, experiment file, data set) ->
# what happened, one sentence. Supplied by the command (training lives outside serving/).
Retrainer = Callable[[str, Path, Path], str]


INTERRUPTED = 130  # a command's exit status on Ctrl-C (128 + SIGINT), as the CLI gives it


class RefreshFailed(PortraitError):
    """A step of the refresh failed; LATEST was left where it was."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, a service stop) during a refresh: it ends the run as a
    failure, recorded like any other (a KeyboardInterrupt, so no step takes it for its own error)."""


# SIGTERM seen during this refresh; and whether the run is publishing (a rename and a pointer
# write, each atomic: a stop then waits for them rather than leave the operator guessing).
_TERMINATION = threading.Event()
_PUBLISHING = threading.Event()
_DEFERRED_INTERRUPT = threading.Event()  # a Ctrl-C while publishing, raised once published


def _terminated(signum, frame) -> None:
    _TERMINATION.set()
    if not _PUBLISHING.is_set():
        raise Terminated()


def _interrupted(signum, frame) -> None:
    """Ctrl-C: as Python's own handler, but, like SIGTERM, not while the run is published (a
    Ctrl-C then left the run's folder in place and LATEST naming the day before, unsaid): it
    is raised once the run is published."""
    if not _PUBLISHING.is_set():
        raise KeyboardInterrupt
    _DEFERRED_INTERRUPT.set()


@contextlib.contextmanager
def _sigterm_ends_the_run():
    """While a refresh runs in the main thread, SIGTERM raises :class:`Terminated` instead of
    killing the process with no record of why (the default). Python runs the handler only when
    the interpreter has control, so a DuckDB query under way is interrupted from another thread
    (:func:`portrait.connections.interrupting_queries`); the step's failure is then taken for the
    stop it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _TERMINATION.clear()
    _PUBLISHING.clear()
    _DEFERRED_INTERRUPT.clear()
    before = signal.signal(signal.SIGTERM, _terminated)
    # Python's own Ctrl-C handler only: an ignored SIGINT (a job started in the background by a
    # script) stays ignored
    before_interrupt = signal.getsignal(signal.SIGINT)
    if before_interrupt is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)
    try:
        with interrupting_queries(_stops_the_run):
            yield
    finally:
        signal.signal(signal.SIGTERM, before)
        if before_interrupt is signal.default_int_handler:
            signal.signal(signal.SIGINT, before_interrupt)
        _PUBLISHING.clear()


def _stops_the_run(number: int) -> bool:
    """Whether a signal arriving now interrupts the run's queries (SIGTERM, Ctrl-C), unless the
    run is publishing (a rename and a pointer write, which a stop waits for)."""
    if number == signal.SIGTERM:
        _TERMINATION.set()
    return number in (signal.SIGTERM, signal.SIGINT) and not _PUBLISHING.is_set()


@dataclass
class ListSpec:
    name: str
    model: str
    top: int | None = None
    segment: str | None = None


@dataclass
class RefreshConfig:
    data: Path
    out: Path
    as_of: dt.date
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    alias: str = "champion"
    reasons: bool = False
    tags: Path | None = None
    manual_tags: Path | None = None
    segments: Path | None = None
    keep: int = DEFAULT_KEEP
    lists: list[ListSpec] = field(default_factory=list)
    retrain: dict[str, Path] = field(default_factory=dict)
    source: str = "refresh settings"


def load_config(path: Path, as_of: str | None = None) -> RefreshConfig:
    """Read a refresh TOML (paths relative to the working directory, like every command's);
    ``as_of`` overrides the file's date, which defaults to today in the data set's zone."""
    from features.build import parse_cutoff

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PortraitError(f"refresh settings {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PortraitError(f"refresh settings {path}: {exc}") from None
    unknown = sorted(set(raw) - _KEYS - {"retrain"})
    if unknown:
        raise PortraitError(f"{path}: unknown setting(s) {unknown}; known: {sorted(_KEYS | {'retrain'})}")
    for key in ("data", "out"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise PortraitError(f'{path}: {key} = "FOLDER" is required')
    if "as_of" in raw and not isinstance(raw["as_of"], str | dt.date):
        raise PortraitError(f'{path}: as_of must be a date, as_of = "YYYY-MM-DD" (got {as_toml(raw["as_of"])})')
    for key in ("reasons",):
        if key in raw and not isinstance(raw[key], bool):
            raise PortraitError(f"{path}: {key} must be true or false (got {as_toml(raw[key])})")
    for key in ("alias", "tags", "manual_tags", "segments"):
        if key in raw and not isinstance(raw[key], str):
            raise PortraitError(f'{path}: {key} must be text, {key} = "..." (got {as_toml(raw[key])})')
    for key, kind in (("tags", "file"), ("segments", "folder")):  # said now, not after the steps before them
        given = raw.get(key)
        if given and not (Path(given).is_file() if kind == "file" else Path(given).is_dir()):
            raise PortraitError(
                f"{path}: {key} = {given!r}: no such {kind} (read from the working folder, {Path.cwd()})"
            )
    from portrait.dataset import today_in_zone_of

    when = as_of or raw.get("as_of") or today_in_zone_of(Path(raw["data"])).isoformat()
    keep = raw.get("keep", DEFAULT_KEEP)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise PortraitError(f"{path}: keep must be a whole number of runs, at least 1 (got {as_toml(keep)})")
    models = raw.get("models", list(DEFAULT_MODELS))
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise PortraitError(f"{path}: models must be a non-empty list of registered model names")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise PortraitError(f"{path}: models names {repeated} more than once")
    lists = []
    for i, spec in enumerate(raw.get("lists", [])):
        if not isinstance(spec, dict) or "model" not in spec:
            raise PortraitError(f'{path}: [[lists]] entry {i + 1} needs model = "NAME"')
        extra = sorted(set(spec) - _LIST_KEYS)
        if extra:
            raise PortraitError(f"{path}: [[lists]] entry {i + 1}: unknown key(s) {extra}; known: {sorted(_LIST_KEYS)}")
        for key in ("model", "name", "segment"):
            if key in spec and not isinstance(spec[key], str):
                raise PortraitError(
                    f'{path}: [[lists]] entry {i + 1}: {key} must be text, {key} = "..." (got {as_toml(spec[key])})'
                )
        top = spec.get("top")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
            raise PortraitError(f"{path}: [[lists]] entry {i + 1}: top must be a whole number of customers")
        default_name = (
            spec["model"] + (f"_{spec['segment']}" if spec.get("segment") else "") + (f"_top{top}" if top else "")
        )
        name = spec.get("name", default_name)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise PortraitError(f"{path}: list name {name!r}: letters, digits, '_', '-' and '.' only")
        if spec["model"] not in models:  # said now, not after every other step has run
            raise PortraitError(
                f"{path}: [[lists]] entry {i + 1}: model {spec['model']!r} is not scored by this refresh; "
                f"models = {models}"
            )
        if name in {earlier.name for earlier in lists}:  # the second would overwrite the first's file
            raise PortraitError(f"{path}: [[lists]] entry {i + 1}: a list named {name!r} comes earlier; name it apart")
        if spec.get("segment"):  # said now, not after every other step has run
            check_saved_segment(spec["segment"], Path(raw["segments"]) if raw.get("segments") else None, path, i)
        lists.append(ListSpec(name, spec["model"], top, spec.get("segment")))
    retrain = raw.get("retrain", {})
    if not isinstance(retrain, dict) or not all(isinstance(v, str) for v in retrain.values()):
        raise PortraitError(
            f'{path}: [retrain] maps a model name to its experiment file: NAME = "experiments/NAME.toml"'
        )
    try:
        cutoff = parse_cutoff(str(when))
    except PortraitError as exc:
        raise PortraitError(f"--as-of: {exc}" if as_of else f"{path}: as_of: {exc}") from None

    def optional(key: str) -> Path | None:
        return Path(raw[key]) if raw.get(key) else None

    return RefreshConfig(
        data=Path(raw["data"]),
        out=Path(raw["out"]),
        as_of=cutoff,
        models=list(models),
        alias=str(raw.get("alias", "champion")),
        reasons=bool(raw.get("reasons", False)),
        tags=optional("tags"),
        manual_tags=optional("manual_tags"),
        segments=optional("segments"),
        keep=keep,
        lists=lists,
        retrain={name: Path(file) for name, file in retrain.items()},
        source=str(path),
    )


def check_saved_segment(name: str, folder: Path | None, path: Path, index: int) -> None:
    """A list's segment must be a saved one (the refresh refreshes every saved segment)."""
    from marketing.segments import SegmentStore

    if folder is None:
        raise PortraitError(
            f'{path}: [[lists]] entry {index + 1}: segment {name!r} needs segments = "FOLDER" in the settings '
            "(the refresh refreshes the saved segments there)"
        )
    store = SegmentStore(folder)
    saved = store.names()
    if name not in saved:
        raise PortraitError(
            f"{path}: [[lists]] entry {index + 1}: segment {name!r} is not saved in {store.folder} "
            f"(saved: {', '.join(saved) or 'none'}); portrait segment create saves one"
        )


# ---------------------------------------------------------------- where things are


def current_run(root: Path) -> Path | None:
    """The run folder ``LATEST`` under ``root`` names (None before the first successful run).
    Read it once and take every file from that folder: they belong to one run."""
    pointer = Path(root) / LATEST
    if not pointer.exists():
        return None
    named = pointer.read_text(encoding="utf-8").strip()
    if not named:  # emptied (a full disk, a hand): named the root itself, every later run a "backfill"
        return None
    return Path(root) / named


def check_refresh_root(root: Path, option: str = "--runs") -> None:
    """Refuse one run's folder (``ROOT/runs/DATE``) where a refresh root is asked for: read as
    a root it holds no LATEST, and every score, tag and RFM group would be silently absent."""
    root = Path(root)
    if not (root / LATEST).exists() and is_run_folder(root):
        raise PortraitError(
            f"{option} {root} is one run's folder; give the refresh root {root.parent.parent} "
            f"(with --as-of {root.name} for that run where the command takes one)"
        )
    if (root / LATEST).is_file() and not (root / RUNS).is_dir():
        named = (root / LATEST).read_text(encoding="utf-8", errors="replace").strip()
        if named.startswith("scores_") and named.endswith(".parquet"):  # portrait score's LATEST
            raise PortraitError(
                f"{option} {root} is a scores folder (portrait score's), not a refresh root: give --scores {root}"
            )


def run_dates(root: Path) -> list[str]:
    """The as-of dates of the complete runs under ``root``, oldest first: folders named by a
    real date holding a run's manifest (:func:`~portrait.outputs.is_run_folder`). Anything else
    there (an empty ``2024-12-25``, ``2024-13-45``, a file, a copy made by hand) is no run: it
    took one of ``keep``'s places, and a refresh then deleted published runs for it."""
    folder = Path(root) / RUNS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _is_dated(p.name) and is_run_folder(p))


def _is_dated(name: str) -> bool:
    if not _RUN_NAME.fullmatch(name):
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- the run


@dataclass
class StepRecord:
    step: str
    outcome: str = "ok"  # ok, partial (published without some of its parts: error says which), failed, skipped
    seconds: float = 0.0
    rows: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    cpu_seconds: float | None = None  # user + system, every thread of the process
    peak_rss_gb: float | None = None  # the process's peak memory during the step (see StepMeter)

    def to_dict(self) -> dict:
        record = {"step": self.step, "outcome": self.outcome, "seconds": self.seconds, "rows": self.rows}
        if self.cpu_seconds is not None:
            record["cpu_seconds"] = self.cpu_seconds
        if self.peak_rss_gb is not None:
            record["peak_rss_gb"] = self.peak_rss_gb
        if self.notes:
            record["notes"] = self.notes
        if self.error:
            record["error"] = self.error
        return record


class StepMeter:
    """Wall and CPU seconds of one step, and the process's peak memory during it: on Linux the
    peak (VmHWM) is reset when the step starts (``/proc/self/clear_refs``), so each step reports
    its own; elsewhere the peak so far is reported."""

    def __init__(self) -> None:
        reset_peak_rss()
        self.wall = time.perf_counter()
        self.cpu = cpu_seconds()

    def read(self) -> tuple[float, float, float]:
        return (
            round(time.perf_counter() - self.wall, 2),
            round(cpu_seconds() - self.cpu, 2),
            round(peak_rss_bytes() / 1024**3, 2),
        )


@dataclass
class RefreshResult:
    run: Path
    manifest: dict
    pruned: list[str]
    latest: Path  # the run LATEST names afterwards: ``run``, unless ``run`` is a backfill

    @property
    def is_backfill(self) -> bool:
        return self.latest != self.run


Reporter = Callable[[StepRecord], None]


def refresh(
    config: RefreshConfig,
    *,
    retrain_if_drift: bool = False,
    retrainer: Retrainer | None = None,
    on_step: Reporter | None = None,
    progress: Callable[[str], None] | None = None,
) -> RefreshResult:
    """Run every step for ``config.as_of`` and publish the run (see the module docstring).
    ``on_step`` is called with each step's record when it ends; ``progress`` with what a step
    is doing. Raises :class:`RefreshFailed` when a step fails (LATEST unchanged) and
    :class:`portrait.files.LockHeld` when another refresh holds the output root."""
    root = config.out
    if retrain_if_drift:  # found now, not after a first model was retrained and promoted
        for name, file in config.retrain.items():
            if not file.is_file():
                raise PortraitError(f"{config.source}: [retrain] {name} = {str(file)!r}: no such experiment file")
    if not config.data.exists():  # before the output root is made (a run from the wrong folder)
        raise PortraitError(
            f"{config.source}: data = {str(config.data)!r} is {config.data.resolve()}, which does not exist "
            f"(a relative path is read from the working folder, {Path.cwd()}); nothing was run or written"
        )
    from serving.registry import alias_version

    for name in config.models:  # a model not registered (a typo) failed at the features step, minutes in
        alias_version(name, config.alias)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / LOCK, f"portrait refresh of {root}"), _sigterm_ends_the_run():
        return _locked_refresh(config, retrain_if_drift, retrainer, on_step, progress)


def _locked_refresh(config, retrain_if_drift, retrainer, on_step, progress) -> RefreshResult:
    root = config.out
    runs = root / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    _clean_abandoned(runs)  # we hold the lock: any temporary run folder is a killed run's
    as_of = config.as_of.isoformat()
    work = runs / f".{as_of}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    latest = current_run(root)
    # The run this one follows (tags entered/left, drift): the newest before its date, never
    # the run it replaces (a re-run of a date) nor a later one (a backfill).
    earlier = [d for d in run_dates(root) if d < as_of]
    previous = runs / earlier[-1] if earlier else None
    manifest: dict = {
        "as_of": as_of,
        "settings": config.source,
        "data": str(config.data.resolve()),  # whole: a profile of the run alone checks its tombstones
        "alias": config.alias,
        "started_at": _now(),
        "previous_run": str(previous.relative_to(root)) if previous else None,
        "outcome": None,
        "steps": [],
        "models": {},
        "drift": {},
    }
    job = _Job(config, work, previous, manifest, retrain_if_drift, retrainer, progress or (lambda message: None))
    try:
        for step in STEPS:
            record = StepRecord(step)
            meter = StepMeter()
            busy = False
            try:
                getattr(job, step)(record)
            except Exception as exc:  # every failure ends the run the same way: recorded, no switch
                if _TERMINATION.is_set():  # DuckDB's "Query interrupted" for our SIGTERM
                    raise Terminated() from None
                if is_interruption(exc):  # Ctrl-C: the run ends as interrupted, not as a failed step
                    raise KeyboardInterrupt from None
                record.outcome = "failed"
                record.error = _message(exc)
                busy = is_busy(exc)
            record.seconds, record.cpu_seconds, record.peak_rss_gb = meter.read()
            manifest["steps"].append(record.to_dict())
            if on_step:
                on_step(record)
            if record.outcome == "failed":
                failed = RefreshFailed(f"refresh as of {as_of} failed at step {step}: {record.error}")
                if busy:  # a lock another command holds: the same run can simply be started again
                    failed.exit_code = TRY_AGAIN_LATER
                raise failed
        if changed := job.data_changed():
            raise RefreshFailed(
                f"refresh as of {as_of}: the data set changed while the run read it ({changed}): its steps would "
                "mix two versions of the data, so nothing was published; run again once the files are complete"
            )
    except BaseException as exc:
        job.close()
        manifest["outcome"] = "failed"
        manifest["error"] = _message(exc)
        if isinstance(exc, KeyboardInterrupt):  # SIGTERM or Ctrl-C: the step it stopped in, said alike
            at = STEPS[min(len(manifest["steps"]), len(STEPS) - 1)]
            manifest["error"] += f" at step {at}"
        manifest["finished_at"] = _now()
        kept = _keep_failed(work, runs / f"{as_of}.failed", manifest)
        if isinstance(exc, KeyboardInterrupt):
            # Ctrl-C was a bare "interrupted": now the step, LATEST and the manifest, as for SIGTERM
            # (its exit status stays 130)
            stopped = RefreshFailed(f"refresh as of {as_of} {manifest['error']}")
            if not isinstance(exc, Terminated):
                stopped.exit_code = INTERRUPTED
            exc = stopped
        if not isinstance(exc, RefreshFailed):
            raise
        text = str(exc) + "; " + (f"LATEST still points to {latest.relative_to(root)}" if latest else "no LATEST yet")
        if manifest.get("retrained"):  # the registry moved even though the run did not
            text += "; before it failed, it retrained: " + "; ".join(
                f"{r['model']}: {r['outcome']}" for r in manifest["retrained"]
            )
        if kept is None:
            text += f"; manifest: {runs / f'{as_of}.failed' / MANIFEST}"
        else:
            text += f"; the failure's record could not be written either ({kept}): free disk space and run again"
        failed = RefreshFailed(text)
        failed.exit_code = exc.exit_code
        raise failed from None
    _PUBLISHING.set()  # from here a SIGTERM or Ctrl-C waits for the run to be published whole
    job.close()
    partial = [step for step in manifest["steps"] if step["outcome"] == "partial"]
    manifest["outcome"] = "partial" if partial else "ok"
    if partial:
        manifest["error"] = "; ".join(f"step {step['step']}: {step['error']}" for step in partial)
    manifest["finished_at"] = _now()
    manifest["seconds"] = round(sum(s["seconds"] for s in manifest["steps"]), 2)
    final = runs / as_of
    try:
        atomic_write_text(json.dumps(manifest, indent=2, default=str), work / MANIFEST)
    except OSError as exc:  # a full disk: every step ran, the run is not whole (was a raw OS error)
        _PUBLISHING.clear()
        shutil.rmtree(work, ignore_errors=True)  # the space it held, for the next attempt
        raise RefreshFailed(
            f"refresh as of {as_of}: every step ran, but the run could not be written whole "
            f"({exc.strerror or exc}), so nothing was published; "
            + (f"LATEST still points to {latest.relative_to(root)}" if latest else "no LATEST yet")
            + "; free disk space and run again"
        ) from None
    replace_directory(work, final)
    # LATEST names the newest published date: a backfill must not send readers (lists, the API,
    # the next night's comparisons) back to an older day. Compared with what LATEST names, not
    # with the newest folder: a newer run whose LATEST write failed was never published.
    published = current_run(root)
    # (no LATEST at all, deleted by hand: the newest complete run)
    target = run_dates(root)[-1] if published is None or not published.is_dir() else max(published.name, as_of)
    if published is None or published.name != target:
        try:
            atomic_write_text(f"{RUNS}/{target}\n", root / LATEST)
        except OSError as exc:
            raise RefreshFailed(
                f"refresh as of {as_of}: the run is complete in {final}, but LATEST could not be updated "
                f"({exc.strerror or exc}): readers still see "
                + (f"{published.relative_to(root)}" if published else "no run")
                + "; fix that and run again"
            ) from None
    _PUBLISHING.clear()  # published: a stop from here ends the command (pruning is redone next time)
    if _DEFERRED_INTERRUPT.is_set():  # a Ctrl-C that waited for the publishing
        raise KeyboardInterrupt
    # Only a published run's segments go into the folder's history (a run that failed to publish
    # left rows for a night readers never saw); the run's manifest then says what was recorded.
    history = job.record_segment_history()
    if history is not None:
        manifest["segment_history"] = history
        try:
            atomic_write_text(json.dumps(manifest, indent=2, default=str), final / MANIFEST)
        except OSError as exc:  # the run is whole; only this addition to its record is missing
            log.warning("refresh: the manifest of %s could not be updated with the segment history: %s", final, exc)
    shutil.rmtree(runs / f"{as_of}.failed", ignore_errors=True)
    pruned = prune(root, config.keep, also_keep=as_of)
    return RefreshResult(final, manifest, pruned, current_run(root) or final)


class _Job:
    """The steps, sharing what one builds for the next (models, features, one population)."""

    def __init__(self, config, work, previous, manifest, retrain_if_drift, retrainer, say):
        from portrait.dataset import open_dataset

        self.config = config
        self.work = work
        self.previous = previous
        self.manifest = manifest
        self.retrain_if_drift = retrain_if_drift
        self.retrainer = retrainer
        self.say = say
        self.dataset_path = config.data
        self.dataset = None
        self._open_dataset = open_dataset
        self.models = None
        self.feature_frames = None
        self.last_purchase: dt.date | None = None  # the data's, from the validate step
        self.population = None
        self.library = None
        self.applied_tags = None
        self.members: dict[str, pd.Series] = {}
        # the segments step's store, results and the definitions evaluated, recorded into the
        # folder's history once the run is published (record_segment_history)
        self.evaluated_segments: tuple | None = None
        self.files: dict[str, tuple[int, int] | None] | None = None  # the data set's files as validate read them

    def close(self) -> None:
        if self.population is not None:
            self.population.close()
            self.population = None

    # ------------------------------------------------------------ steps

    def validate(self, record: StepRecord) -> None:
        from portrait.validate import validate

        if not self.dataset_path.exists():
            raise PortraitError(f"data set {self.dataset_path} does not exist")
        self.dataset = self._open_dataset(self.dataset_path)
        self.files = _file_states(self.dataset)
        report = validate(self.dataset, self.work / "validation", progress=self.say)
        record.rows = {
            "customers": report.purchases_customers,
            "quarantined": report.quarantined_rows,
            **{f"{t.table}_valid": t.valid_rows for t in report.tables},
        }
        self.manifest["data_fingerprint"] = report.fingerprint
        self.manifest["timezone"] = report.timezone
        record.notes = list(report.notes) + self._changes_since_previous(record.rows)
        if report.quarantined_rows:
            record.notes.append(
                f"{report.quarantined_rows:,} row(s) quarantined, not used "
                + ", ".join(f"({t.table}: {t.quarantined_rows:,})" for t in report.tables if t.quarantined_rows)
                + "; the rows are in the run's validation/ folder"
            )
        stale = self._check_as_of(report.purchases_first_ts, report.purchases_last_ts)
        record.notes += [stale] if stale else []

    def data_changed(self) -> str | None:
        """Which of the data set's files changed since the validate step read them (None when
        none did): a feed that re-exported during the run."""
        if self.files is None:
            return None
        now = _file_states(self.dataset)  # (not opened again: that would decode its CSV files again)
        changed = sorted(Path(p).name for p in set(self.files) | set(now) if self.files.get(p) != now.get(p))
        return ", ".join(changed) + " changed" if changed else None

    def _changes_since_previous(self, rows: dict[str, int]) -> list[str]:
        """Warnings when a table the previous run read is gone, or holds under half of the valid
        rows it held then: a broken feed, whose empty features would otherwise be scored and
        published like any other night's (only drift would hint at it)."""
        if self.previous is None:
            return []
        try:
            manifest = json.loads((self.previous / MANIFEST).read_text())
            before = next(s for s in manifest["steps"] if s["step"] == "validate")["rows"]
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            return []
        when = manifest.get("as_of", self.previous.name)
        warnings = []
        # A table gone for more than one night is said every night, from the run that last read it.
        missing = {
            table: since
            for table, since in (manifest.get("missing_tables") or {}).items()
            if rows.get(f"{table}_valid") is None
        }
        for table, since in sorted(missing.items()):
            warnings.append(
                f"warning: the data set has had no {table} table since the run of {since}, so every feature "
                "built from it is empty (a broken feed?)"
            )
        for key, count in before.items():
            if not key.endswith("_valid") or not isinstance(count, int) or count <= 0:
                continue
            table = key.removesuffix("_valid")
            now = rows.get(key)
            if now is None:
                missing[table] = when
                warnings.append(
                    f"warning: the run of {when} read {count:,} valid {table} rows; the data set has no {table} "
                    f"table now, so every feature built from it is empty (a broken feed?)"
                )
            elif now * 2 < count:
                warnings.append(
                    f"warning: {table} holds {now:,} valid rows against {count:,} in the run of {when} "
                    "(a broken or partial feed?)"
                )
            elif table == "purchases" and now < count:
                warnings.append(
                    f"warning: purchases holds {now:,} valid rows, fewer than the {count:,} of the run of {when}: "
                    "past lines restated or removed (or customers forgotten); tags and segments entered or left "
                    "tonight may come from that, not from what customers did"
                )
        if missing:
            self.manifest["missing_tables"] = missing
        zone, zone_then = self.manifest.get("timezone"), manifest.get("timezone")
        if zone and zone_then and zone != zone_then:
            warnings.append(
                f"warning: the data set's timezone is {zone} now, {zone_then} in the run of {when}: times and days "
                "are read in another zone, so tags and segments entered or left tonight may come from that"
            )
        fingerprint = self.manifest.get("data_fingerprint")
        if (
            fingerprint is not None
            and manifest.get("data_fingerprint") == fingerprint
            and str(when) < str(self.config.as_of)
        ):
            warnings.append(
                f"warning: the data set is the same as in the run of {when} (fingerprint "
                f"{self.manifest['data_fingerprint']}): no new data since? Tags and segments entered or left "
                "tonight come from the date moving on alone"
            )
        return warnings

    def _check_as_of(self, first: str | None, last: str | None) -> str | None:
        """A run as of a date before the data, or more than a year after its latest purchase,
        would publish scores, tags and lists in which every window is empty: a stopped feed or
        a mistyped date, to be fixed, not served. More than :data:`STALE_FEED_DAYS` after it, the
        run is published with a warning (the short windows are empty); returned."""
        from features.build import LATE_AS_OF_DAYS, STALE_FEED_DAYS

        as_of = self.config.as_of
        if first in (None, "None") or last in (None, "None"):
            return
        first_day, last_day = dt.date.fromisoformat(first[:10]), dt.date.fromisoformat(last[:10])
        self.last_purchase = last_day
        if as_of <= first_day:
            raise PortraitError(f"as of {as_of} is before the first purchase ({first_day}): nothing to refresh")
        if last_day > as_of:  # the feed's freshness is its latest purchase up to the date, not a stray future row
            last_day = self._last_purchase_by(as_of) or last_day
        gap = (as_of - last_day).days
        if gap > LATE_AS_OF_DAYS:
            raise PortraitError(
                f"as of {as_of} is {gap} days after the latest purchase ({last_day}; the data runs from "
                f"{first_day}): every window would be empty. Is the data feed stopped, or the date mistyped?"
            )
        if gap > STALE_FEED_DAYS:
            return (
                f"warning: the latest purchase ({last_day}) is {gap} days before {as_of}: the 30-day windows "
                "are empty for everyone and recency grows for all (a stopped feed, or a mistyped date?)"
            )
        return None

    def _last_purchase_by(self, as_of: dt.date) -> dt.date | None:
        """The day of the latest purchase before ``as_of`` (None when there is none)."""
        from features.plan import timestamp_literal

        con = self.dataset.connect()
        try:
            latest = con.execute(f"SELECT MAX(ts) FROM purchases WHERE ts < {timestamp_literal(as_of)}").fetchone()[0]
        finally:
            con.close()
        return None if latest is None else pd.Timestamp(latest).date()

    def features(self, record: StepRecord) -> None:
        from serving.registry import load_model
        from serving.score import build_model_features

        self.say("loading models")
        self.models = [load_model(name, self.config.alias) for name in self.config.models]
        self.manifest["models"] = {m.name: str(m.version) for m in self.models}
        self.say("building features")
        self.feature_frames = build_model_features(self.dataset, self.config.as_of, self.models, progress=self.say)
        first = next(iter(self.feature_frames.values()))
        record.rows = {"customers": int(len(first)), "columns": int(first.shape[1] - 1)}

    def score(self, record: StepRecord) -> None:
        run = self._score()
        flagged = self._drift(run.summary)
        if (
            flagged
            and self.retrain_if_drift
            and self.last_purchase is not None
            and self.last_purchase > self.config.as_of + dt.timedelta(days=1)
        ):
            # Training reads the whole data set: as of an earlier date (a backfill) its labels
            # would be the purchases that followed the date, and the champion would move with them.
            record.notes.append(
                f"drift flagged (PSI > 0.25) for {', '.join(flagged)}; not retrained: the data holds purchases up to "
                f"{self.last_purchase}, after {self.config.as_of}, and a model trained for this run would learn "
                "from them (retrain in a run of today's date)"
            )
        elif flagged and self.retrain_if_drift:
            record.notes.append(f"drift flagged for {', '.join(flagged)}: retraining")
            record.notes += self._retrain(flagged)
            if self.manifest["retrained"]:  # scored again with the champions now (none: as it was)
                self.features(StepRecord("features"))  # the new champions' features
                run = self._score()
                still = self._drift(run.summary)
                if still:
                    record.notes.append(f"drift still flagged after retraining: {', '.join(still)}")
        elif flagged:
            record.notes.append(
                f"drift flagged (PSI > 0.25) for {', '.join(flagged)}: retraining advised "
                "(portrait train and promote, or run with --retrain-if-drift)"
            )
        record.notes += [f"warning: {info['note']}" for info in run.summary["models"].values() if info.get("note")]
        record.rows = {"customers": run.summary["customers"]}
        self.manifest["retraining_advised"] = bool(self._drift(run.summary))

    def _score(self):
        from serving.score import score

        return score(
            self.dataset,
            self.config.as_of,
            self.config.models,
            self.work / "scores",
            alias=self.config.alias,
            with_reasons=self.config.reasons,
            validate_first=False,
            progress=self.say,
            models=self.models,
            features_by_model=self.feature_frames,
        )

    def _drift(self, summary: dict) -> list[str]:
        drift = {
            name: {"flagged": info["drift"]["flagged"], "warnings": info["drift"]["warnings"]}
            for name, info in summary["models"].items()
            if "drift" in info
        }
        self.manifest["drift"] = drift
        self.manifest["models"] = {name: str(info["version"]) for name, info in summary["models"].items()}
        return [name for name, info in drift.items() if info["flagged"]]

    def _retrain(self, flagged: list[str]) -> list[str]:
        from serving.registry import trained_on

        notes = []
        done: list[dict] = []
        self.manifest["retrained"] = done  # filled as it goes: a later failure still records a promotion
        for name in flagged:
            experiment = self.config.retrain.get(name)
            if experiment is None:
                notes.append(f"{name}: no experiment file in [retrain]; not retrained")
                continue
            if self.retrainer is None:
                notes.append(f"{name}: retraining is not available here; not retrained")
                continue
            # The same files the champion learned from: a retrain gives the same model, and was
            # registered and promoted as a new version every night (a new user's walkthrough).
            if self.dataset is not None and trained_on(name, self.config.alias) == self.dataset.fingerprint():
                notes.append(
                    f"{name}: not retrained: its {self.config.alias} learned from these very files (the data set "
                    "has not changed since), so the drift comes from the date moving on, not from new data"
                )
                continue
            self.say(f"retraining {name}")
            outcome = self.retrainer(name, experiment, self.dataset_path)
            notes.append(f"{name}: {outcome}")
            done.append({"model": name, "experiment": str(experiment), "outcome": outcome})
        return notes

    def rfm(self, record: StepRecord) -> None:
        from marketing.population import Population
        from marketing.rfm import group_summary, top_share_of_revenue

        self.population = Population(
            self.dataset, self.config.as_of, scores_dir=self.work / "scores", progress=self.say
        )
        value_columns = ["days_since_last_purchase", "orders_lifetime", "spend_lifetime"]
        frame = self.population.frame(columns=value_columns)
        rfm = frame[["customer_id", *value_columns, "rfm_r", "rfm_f", "rfm_m", "rfm_fm", "rfm_group"]]
        folder = self.work / "rfm"
        stem = f"rfm_{self.config.as_of.isoformat()}"
        atomic_write(rfm, folder / f"{stem}.parquet")
        atomic_write(group_summary(frame, frame), folder / f"{stem}_groups.csv", csv=True)
        top = top_share_of_revenue(frame)
        facts = {"as_of": self.config.as_of.isoformat(), "customers": len(frame), "top_20pct_share_of_revenue": top}
        atomic_write_text(json.dumps(facts, indent=2, default=str), folder / f"{stem}.summary.json")
        record.rows = {"customers": int(len(frame)), "groups": int(rfm["rfm_group"].nunique())}

    def tags(self, record: StepRecord) -> None:
        from marketing.manual import default_store
        from marketing.tags import apply_tags, load_library, write_tags

        self.library = load_library(self.config.tags)
        manual = self.config.manual_tags or default_store()
        applied = apply_tags(self.library, self.population, manual_store=manual)
        previous = self.previous / "tags" if self.previous is not None else None
        tags, summary, _ = write_tags(self.library, applied, self.config.as_of, self.work / "tags", previous)
        self.applied_tags = applied
        record.rows = {"customers": int(applied.customers), "tags": int(tags["tag"].nunique()), "rows": int(len(tags))}
        record.notes = list(summary["notes"])

    def segments(self, record: StepRecord) -> None:
        from marketing.manual import default_store
        from marketing.segments import SegmentEvaluator, SegmentStore, evaluate_each, failures_message

        if self.config.segments is None:
            record.outcome = "skipped"
            record.notes = ["no segments folder in the settings"]
            return
        if not self.config.segments.is_dir():
            raise PortraitError(f"segments folder {self.config.segments} does not exist")
        store = SegmentStore(self.config.segments)
        chosen, unreadable = [], []
        for name in store.names():
            try:
                chosen.append(store.load(name))
            except PortraitError as exc:  # a file edited by hand: left out like a failed segment
                unreadable.append((name, str(exc)))
        manual = self.config.manual_tags or default_store()
        evaluator = SegmentEvaluator(self.population, store, self.library, manual, applied=self.applied_tags)
        results, failed = evaluate_each(evaluator, chosen)
        failed = unreadable + failed
        if failed:
            # One marketer's broken segment does not hold back everyone's scores, tags and lists:
            # the run is published without it, said, and the command's exit is not 0 (as
            # `portrait segment refresh` does); it stopped the whole night before (a user's test).
            record.outcome = "partial"
            record.error = (
                f"{len(failed)} of {len(chosen) + len(unreadable)} segments not refreshed: {failures_message(failed)}"
            )
            not_refreshed = {name for name, _ in failed}
            chosen = [segment for segment in chosen if segment.name not in not_refreshed]
        self.evaluated_segments = (store, results, {segment.name: segment.definition() for segment in chosen})
        sizes = {}
        before = _previous_segments(self.previous)
        for segment, result in zip(chosen, results, strict=True):
            members = result.members.astype("str").sort_values(kind="stable").reset_index(drop=True)
            self.members[segment.name] = members
            atomic_write(pd.DataFrame({"customer_id": members}), self.work / "segments" / f"{segment.name}.parquet")
            reads = store.reads(segment.name, self.library)
            sizes[segment.name] = {
                "customers": int(len(members)),
                "base": result.base,
                "share": round(result.share, 6),
                # What chose these members, as the run saw it: the API's privacy check reads it
                # too, so a definition edited after the run cannot hide a sensitive attribute.
                "reads": reads,
                # against the run this one follows, when it chose by the same definition (the
                # tags' entered and left are counted so; the runs' segments had none)
                **_entered_left(members, before, segment.name, reads),
            }
            if not len(members):
                record.notes.append(f"segment {segment.name!r} has no customers")
        summary = {
            "as_of": self.config.as_of.isoformat(),
            "folder": str(self.config.segments.resolve()),  # whole: serve --runs reads it from anywhere
            "segments": sizes,
            "not_refreshed": dict(failed),
        }
        atomic_write_text(json.dumps(summary, indent=2), self.work / "segments" / "summary.json")
        record.rows = {name: size["customers"] for name, size in sizes.items()}

    def record_segment_history(self) -> dict | None:
        """Record the run's segments into the segments folder's history and members, as
        ``portrait segment refresh`` does (size, share, entered and left against the folder's
        stored members; a backfill adds its row only), once the run is published, if the data set
        did not change meanwhile (a forget included). Not recorded, and said: a segment replaced
        or deleted since it was evaluated or whose own history or members file cannot be read or
        written, or every segment when the folder's recording lock stays held; the run is
        published either way (its own segments are whole). None without a segments step."""
        from marketing.segments import record_refreshes

        if self.evaluated_segments is None:
            return None
        store, results, definitions = self.evaluated_segments
        said = {"folder": str(store.folder.resolve()), "recorded": [], "not_recorded": {}}

        def data_unchanged() -> None:  # again under the lock, which a forget takes to scrub the folder
            if changed := self.data_changed():
                raise PortraitError(f"the data set changed since it was read ({changed}): a forget, or a new export")

        errors: dict[str, str] = {}
        try:
            recorded, _, replaced = record_refreshes(store, results, definitions, data_unchanged, errors)
        except Exception as exc:  # the lock held, the data changed: none recorded; the run stays published
            reason = _message(exc)
            said["not_recorded"] = {result.name: reason for result in results}
            return said
        said["recorded"] = [result.name for result in recorded]
        said["not_recorded"] = {name: "its definition was replaced or deleted during the run" for name in replaced}
        said["not_recorded"] |= errors  # its own files unreadable (a history edited by hand); the others recorded
        return said

    def crowds(self, record: StepRecord) -> None:
        """The crowd material (marketing/crowd_material.py): every dimension per customer and
        the per-customer category and brand spend, so a crowd report on this run reads no raw data."""
        from marketing.crowd import CrowdData
        from marketing.crowd_material import FOLDER, write_crowd_material

        data = CrowdData(self.population, self.library, say=self.say)
        record.rows = write_crowd_material(data, self.work / FOLDER)

    def profiles(self, record: StepRecord) -> None:
        """Per-person profile material (serving/profile.py): the last orders and events, the
        identity summary and the attributes row, so a profile of this run reads no raw data."""
        from serving.profile import MATERIAL, write_profile_material

        record.rows = write_profile_material(
            self.population.con, self.dataset, self.config.as_of, self.work / MATERIAL, progress=self.say
        )

    def lists(self, record: StepRecord) -> None:
        from portrait.audit import os_user, record_export
        from portrait.outputs import latest_scores
        from portrait.privacy import export_note, load_consent
        from serving.lists import build_list
        from serving.registry import load_model
        from serving.settings import REASONS_FIRST

        if not self.config.lists:
            record.outcome = "skipped"
            record.notes = ["no [[lists]] in the settings"]
            return
        scores, features = latest_scores(self.work / "scores")
        dataset = self.dataset or self._open_dataset(self.dataset_path)
        consent = load_consent(dataset)
        privacy = with_withheld_columns(dataset.privacy, dataset)  # once for every list
        left_out = []
        for spec in self.config.lists:
            members = None
            if spec.segment is not None:
                if spec.segment not in self.members:  # its segment failed: the list is not written
                    left_out.append(f"list {spec.name!r}: segment {spec.segment!r} was not refreshed in this run")
                    continue
                members = set(self.members[spec.segment])
            reasons_model = None
            if f"{spec.model}_reason_1" not in scores.columns and f"{spec.model}_score" in scores.columns:
                reasons_model = next((m for m in self.models if m.name == spec.model), None) or load_model(
                    spec.model, self.config.alias
                )
            rows = build_list(
                scores,
                features,
                spec.model,
                top=spec.top,
                reasons_model=reasons_model,
                reasons_first=REASONS_FIRST,
                customers=members,
                consent=consent,
                privacy=privacy,
            )
            written = self.work / "lists" / f"{spec.name}.csv"
            atomic_write(rows, written, csv=True)
            # a file of customer ids, as every list pull: in the audit log (it was not); a line
            # that cannot be written fails the step, and the file goes (a failed run's folder is
            # kept: it would hold a pull the log cannot account for)
            try:
                record_export(
                    None,
                    os_user(),
                    "portrait refresh list",
                    {
                        "list": spec.name,
                        "model": spec.model,
                        "top": spec.top,
                        "segment": spec.segment,
                        "as_of": self.config.as_of.isoformat(),
                        "out": str(self.config.out / RUNS / self.config.as_of.isoformat() / "lists" / written.name),
                    },
                    len(rows),
                    via="refresh",
                    left_out=rows.attrs["left_out"],
                )
            except PortraitError:
                written.unlink(missing_ok=True)
                raise
            record.rows[spec.name] = int(len(rows))
            record.notes.append(f"{spec.name}: {export_note(rows.attrs['left_out'], rows.attrs['matched'])}")
            if rows.attrs.get("note"):
                record.notes.append(f"{spec.name}: {rows.attrs['note']}")
        if left_out:
            record.outcome = "partial"
            record.error = "; ".join(left_out)


def _previous_segments(previous: Path | None) -> tuple[Path, dict] | None:
    """The segments folder of the run this one follows and its summary's sizes (None without)."""
    if previous is None or not (previous / "segments" / "summary.json").is_file():
        return None
    try:
        summary = json.loads((previous / "segments" / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return previous / "segments", summary.get("segments", {}) if isinstance(summary, dict) else {}


def _entered_left(members: pd.Series, before: tuple[Path, dict] | None, name: str, reads: str) -> dict:
    """``entered`` and ``left`` of segment ``name`` against the previous run's members, when that
    run refreshed it by the same definition; none otherwise."""
    if before is None:
        return {"entered": None, "left": None}
    folder, sizes = before
    earlier = sizes.get(name)
    path = folder / f"{name}.parquet"
    if not isinstance(earlier, dict) or earlier.get("reads") != reads or not path.is_file():
        return {"entered": None, "left": None}
    from marketing.segments import entered_and_left

    previous = pd.Index(read_parquet(path, columns=["customer_id"])["customer_id"].astype("str")).unique()
    entered, left = entered_and_left(pd.Index(members).unique(), previous)
    return {"entered": entered, "left": left}


# ---------------------------------------------------------------- publishing, keeping


def prune(root: Path, keep: int, also_keep: str | None = None) -> list[str]:
    """Delete complete runs beyond the newest ``keep`` (never the one LATEST names, nor the run
    ``also_keep``) and failed runs older than the oldest kept; return the folder names removed."""
    runs = Path(root) / RUNS
    dates = run_dates(root)
    current = current_run(root)
    kept = set(dates[-keep:])
    if current is not None:
        kept.add(current.name)
    if also_keep is not None:
        kept.add(also_keep)
    removed = []
    for name in dates:
        if name not in kept:
            shutil.rmtree(runs / name)
            removed.append(name)
    oldest = min(kept) if kept else None
    for failed in runs.glob("*.failed"):
        # a failed run's folder (not a file of that name: it was said removed and stayed)
        if oldest is not None and failed.name.removesuffix(".failed") < oldest and failed.is_dir():
            shutil.rmtree(failed, ignore_errors=True)
            removed.append(failed.name)
    return removed


def _file_states(dataset) -> dict[str, tuple[int, int] | None]:
    """Each of the data set's files (its tables', its tombstones, and any file now in its
    folder, such as a part file added) with its size and modification time (None: gone)."""
    from portrait import contract
    from portrait.dataset import CONFIG_FILE
    from portrait.forget import tombstone_files

    paths = {str(p) for source in dataset.sources.values() for p in (source.files or ())}
    paths |= {str(source.duckdb_file) for source in dataset.sources.values() if source.duckdb_file}
    paths |= {str(p) for p in tombstone_files(dataset)}
    if dataset.root is not None and dataset.root.is_dir():
        # a table's files (a part file added too) and the settings; not whatever else the folder
        # holds (the refresh's own outputs, when they are kept inside it)
        names = tuple(table.name for table in contract.TABLES)
        paths |= {
            str(p)
            for p in dataset.root.rglob("*")
            if p.is_file() and (p.relative_to(dataset.root).parts[0].lower().startswith(names) or p.name == CONFIG_FILE)
        }
    states: dict[str, tuple[int, int] | None] = {}
    for path in sorted(paths):
        try:
            stat = Path(path).stat()
            states[path] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            states[path] = None
    return states


def _keep_failed(work: Path, failed: Path, manifest: dict) -> str | None:
    """Keep a failed run's outputs and manifest as ``failed``; why it could not, when it could
    not (a full disk), so the message names no record that is not there."""
    try:
        atomic_write_text(json.dumps(manifest, indent=2, default=str), work / MANIFEST)
        replace_directory(work, failed)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _clean_abandoned(runs: Path) -> None:
    for path in abandoned_runs(runs):
        shutil.rmtree(path, ignore_errors=True)


def _message(exc: BaseException) -> str:
    if isinstance(exc, PortraitError):
        return str(exc)
    if isinstance(exc, Terminated):
        return "stopped by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
