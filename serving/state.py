"""What the routes read, resolved from :class:`~serving.settings.ServeSettings`.

The scores lists are drawn from are held in memory, and their features read a few columns at a
time from the file opened with them (:class:`~serving.feature_columns.FeatureColumns`); both are
loaded again only when the published scores change: on each request the ``LATEST`` pointer is
read (with ``--runs``, the run ``LATEST`` names through :func:`serving.refresh.current_run`,
then that run's scores pointer) and the scores file's identity compared, so a new ``portrait
score`` or ``portrait refresh`` is served without a restart and a request never mixes two runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from portrait.errors import NotFound, PortraitError, Unavailable
from portrait.outputs import (
    LATEST,
    SCORING_TOKEN,
    features_path,
    latest_scores_dataset,
    refresh_folder_problem,
    scores_summary,
)
from portrait.privacy import Consent
from serving.feature_columns import FeatureColumns
from serving.registry import LoadedModel, alias_version, load_model_version
from serving.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """The folders one request reads: the scores, the tags and, with ``--runs``, the run."""

    scores: Path
    tags: Path | None
    run: Path | None = None

    @property
    def segment_members(self) -> Path | None:
        """A run's segment members (``segments/<name>.parquet`` and ``summary.json``)."""
        return self.run / "segments" if self.run is not None else None


class ScoresReplacing(Exception):
    """The features file beside the scores is of another scoring (their tokens differ): a
    re-score of the same date has written its features and not yet its scores (it writes them
    in that order), so the pair would mix two scorings."""


class ScoresSnapshot:
    """One scores table and the features it was scored from (in the scores' row order).
    Raises :class:`ScoresReplacing` when the two files are of different scorings."""

    def __init__(self, scores_dir: Path, name: str, paired: bool = True) -> None:
        self.scores_dir = scores_dir
        with open(scores_dir / name, "rb") as handle:  # the identity of the file read, not of the path
            self.stamp = _identity(scores_dir, name, os.fstat(handle.fileno()))
            scores = pd.read_parquet(handle)
        as_of = dt.date.fromisoformat(name.removeprefix("scores_").removesuffix(".parquet"))
        self.scores = scores
        self.dataset = latest_scores_dataset(scores_dir)
        self.scored_models = [c[: -len("_score")] for c in scores.columns if c.endswith("_score")]
        self.as_of = str(scores["as_of"].iloc[0].date()) if len(scores) else None
        # read a few columns at a time as lists need them, not held whole (2.5 GB a worker at 1M)
        self.features = FeatureColumns(features_path(scores_dir, as_of), scores["customer_id"])
        ours, theirs = scores.attrs.get(SCORING_TOKEN), self.features.attrs.get(SCORING_TOKEN)
        if paired and ours and theirs and ours != theirs:  # files written before the token: taken as a pair
            raise ScoresReplacing(f"the features beside {scores_dir / name} are of another scoring")


# How long the version an alias names is taken as known before the registry is asked again
# (two registry reads): a promotion reaches the API within this.
ALIAS_CHECK_SECONDS = 10.0


class ServeState:
    """Everything the routers share: the settings, the published outputs, the models, the
    consent rules, the audit log."""

    def __init__(self, settings: ServeSettings, audit_log: Path) -> None:
        self.settings = settings
        self.audit_log = audit_log
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._snapshot: ScoresSnapshot | None = None
        self._batch: tuple[tuple, str, dict] | None = None  # (stamp, as-of, models) of batch_models
        self._consent_lock = threading.Lock()
        self._consent: tuple[Path, str, Consent] | None = None
        self._versions: dict[str, tuple[float, str]] = {}  # model -> (when asked, the alias's version)
        self._model_lock = threading.Lock()
        self._loaded = lru_cache(maxsize=16)(self._load_model)

    def model(self, name: str) -> LoadedModel:
        """The version of ``name`` the serving alias names, asked of the registry at most every
        :data:`ALIAS_CHECK_SECONDS` and loaded once per version: a promotion is served without
        a restart (the first version loaded was kept for good: /score answered v1 beside a
        champion v2, and lists lost their reasons once the refresh scored with v2)."""
        with self._model_lock:  # one request asks and loads; the others wait for its answer
            now = time.monotonic()
            asked = self._versions.get(name)
            if asked is None or now - asked[0] > ALIAS_CHECK_SECONDS:
                try:
                    asked = (now, self._registry_call(alias_version, name, self.settings.alias))
                except Unavailable as exc:  # a model or alias that is gone is not served on
                    if asked is None:
                        raise
                    # the registry busy (a promote writing it) or unreachable: the version known
                    # is served on, and asked about again next time
                    log.warning("model %s: the registry could not be asked (%s); serving v%s", name, exc, asked[1])
                    asked = (now - ALIAS_CHECK_SECONDS, asked[1])
                self._versions[name] = asked
            return self._loaded(name, asked[1])

    def _load_model(self, name: str, version: str) -> LoadedModel:
        return self._registry_call(load_model_version, name, version, self.settings.alias)

    @staticmethod
    def _registry_call(call, *args):
        try:
            return call(*args)
        except Unavailable:  # the registry itself: the operator's to fix
            raise
        except PortraitError as exc:
            raise NotFound(str(exc)) from None

    # ------------------------------------------------------------------ published outputs

    def published(self) -> Published:
        runs = self.settings.runs
        if runs is None:
            return Published(self.settings.scores, self.settings.tags)
        from serving.refresh import current_run

        run = current_run(runs)
        if run is None:
            raise Unavailable(
                f"no published run under {runs} yet (no LATEST, or an empty one): run portrait refresh first"
            )
        if not run.is_dir():
            raise Unavailable(
                f"LATEST under {runs} names {run.name}, which is not there (removed?): run portrait refresh"
            )
        return Published(run / "scores", run / "tags", run)

    def snapshot(self, published: Published | None = None) -> ScoresSnapshot:
        """The scores LATEST names now, loaded once per version of the file."""
        scores_dir = (published or self.published()).scores
        pointer = scores_dir / LATEST
        try:
            name, stamp = _scores_stamp(scores_dir)
        except OSError:
            if self._snapshot is None or not pointer.exists():
                raise Unavailable(
                    refresh_folder_problem(scores_dir) or f"no scores in {scores_dir}; run portrait score first"
                ) from None
            raise Unavailable(f"the scores {pointer} names cannot be read") from None
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._snapshot = _consistent_snapshot(scores_dir, name)
                    self._stamp = self._snapshot.stamp  # of the file read, which may be newer than stamp
        return self._snapshot

    def batch_models(self) -> tuple[str, dict]:
        """The published batch's as-of date and what its summary recorded per model (version,
        a relative label's offset), read from the summary alone: scoring sent rows needs no
        scores table. Read once per version of the scores file; Unavailable without one."""
        scores_dir = self.published().scores
        try:
            name, stamp = _scores_stamp(scores_dir)
        except OSError:
            raise Unavailable(f"no scores in {scores_dir}; run portrait score first") from None
        batch = self._batch
        if batch is None or batch[0] != stamp:
            summary = scores_summary(scores_dir, name)
            batch = (stamp, name.removeprefix("scores_").removesuffix(".parquet"), summary.get("models", {}))
            self._batch = batch
        return batch[1], batch[2]

    def run_loaded(self) -> bool:
        """Whether a profile of the served run needs nothing loaded now: the scores its LATEST
        names are the ones held, and the run's tables are in this worker's memory
        (:func:`serving.profile.in_memory_ready`). Never loads or starts loading anything."""
        from serving.profile import memory_loaded

        if self.settings.runs is None or self._stamp is None:
            return False
        try:
            _, stamp = _scores_stamp(self.published().scores)
        except (OSError, PortraitError):
            return False
        return stamp == self._stamp and memory_loaded(self.settings.runs)

    # ------------------------------------------------------------------ consent

    def consent(self, snapshot: ScoresSnapshot) -> Consent:
        """The consent rules (:meth:`consent_and_version`)."""
        return self.consent_and_version(snapshot)[0]

    def consent_and_version(self, snapshot: ScoresSnapshot) -> tuple[Consent, str]:
        """The consent rules of the data set lists are drawn from (``--data``, else the one the
        scores were computed from), read on first use and again whenever the data set, its
        settings or its suppression file change. Without a known data set every list answers
        503: no list goes out unchecked."""
        from portrait.dataset import open_dataset
        from portrait.privacy import consent_version, load_consent

        data = self.settings.data or snapshot.dataset
        if data is None:
            raise Unavailable(
                f"cannot check marketing consent: the scores in {snapshot.scores_dir} do not record their "
                "data set; start portrait serve with --data DATASET"
            )
        if not Path(data).exists():
            raise Unavailable(
                f"cannot check marketing consent: the data set {data} no longer exists; "
                "start portrait serve with --data DATASET"
            )
        with self._consent_lock:
            dataset = open_dataset(data)
            version = consent_version(dataset)
            if self._consent is None or self._consent[:2] != (Path(data), version):
                self._consent = (Path(data), version, load_consent(dataset))
            return self._consent[2], version

    @staticmethod
    def list_version(snapshot: ScoresSnapshot, consent_version: str) -> str:
        """A token that changes whenever a list drawn now could differ from one drawn before: the
        scores file (a new date, or the same date scored again) or the consent rules (their
        version from :meth:`consent_and_version`). The pages of one list carry it; a page asked
        with another is refused (409)."""
        return hashlib.sha256(repr((snapshot.stamp, consent_version)).encode()).hexdigest()[:16]

    def privacy(self, snapshot: ScoresSnapshot):
        """The privacy settings (:class:`portrait.privacy.PrivacySettings`) of the data set
        lists and crowds are drawn from, as its ``portrait.toml`` says now (read again only when
        it changes); None when unknown."""
        from serving.profile import privacy_now

        data = self.data(snapshot)
        if data is None or not Path(data).exists():
            return None
        return privacy_now(data)

    def data(self, snapshot: ScoresSnapshot) -> Path | None:
        """The data set crowd reports and profiles are read from."""
        return self.settings.data or snapshot.dataset

    def segments_folder(self) -> Path | None:
        """The saved segments folder (``--segments``, else the default one when it exists)."""
        from marketing.segments import SegmentStore

        folder = SegmentStore(self.settings.segments).folder
        return folder if folder.is_dir() else None


# While a re-score writes its features and then its scores, a snapshot is tried again for up to
# REPLACING_WAIT seconds (a few seconds at 1M customers).
REPLACING_WAIT, REPLACING_POLL = 10.0, 0.2


def _consistent_snapshot(scores_dir: Path, name: str) -> ScoresSnapshot:
    """The scores LATEST names and their features, of one scoring: while a re-score is between
    writing its features and its scores, tried again until its scores are there. A pair still
    of two scorings after :data:`REPLACING_WAIT` (a re-score interrupted between its two
    writes) is served as it is, as before the token, and said in the log: refusing would stop
    every route until the next scoring."""
    deadline = time.monotonic() + REPLACING_WAIT
    while True:
        try:
            return ScoresSnapshot(scores_dir, name)
        except ScoresReplacing:
            if time.monotonic() >= deadline:
                log.warning(
                    "the features beside the scores in %s are of another scoring (a re-score interrupted between "
                    "writing its features and its scores?): lists may filter on them; score again",
                    scores_dir,
                )
                return ScoresSnapshot(scores_dir, name, paired=False)
            time.sleep(REPLACING_POLL)
            name, _ = _scores_stamp(scores_dir)


def _scores_stamp(scores_dir: Path) -> tuple[str, tuple]:
    """The scores file ``LATEST`` in ``scores_dir`` names, and its identity (a new file or a
    rewrite changes it); OSError when either cannot be read."""
    name = (scores_dir / LATEST).read_text(encoding="utf-8").strip()
    return name, _identity(scores_dir, name, (scores_dir / name).stat())


def _identity(scores_dir: Path, name: str, stat: os.stat_result) -> tuple:
    """A scores file's identity: a new file or a rewrite of the same date changes it."""
    return (str(scores_dir), name, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def plain(value):
    """JSON-safe: numpy scalars to Python, NaN to null, timestamps as ISO text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value
