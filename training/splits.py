"""Choosing cutoffs and splitting them in time: training cutoffs and a holdout cutoff.

The holdout cutoff is the latest month start (``[cutoffs] align``: or Monday, or day) whose
label window fits in the data; month starts keep it still while the data grows day by day, a
Monday or a day waste less of a short log. Training
cutoffs are as many as fit (every ``spacing_days``, or month starts) up to the last one whose
label window ends before the holdout cutoff, each with at least four weeks of history before
it; every training row sees all history before its own cutoff. So no outcome the model learned
from lies in the period it is judged on.

There is no separate later validation window: validation (early stopping, calibration, model
selection) uses the customers held out of training at the latest ``validation.cutoffs``
training cutoffs (:func:`customer_validation_split`), whose base rate is the nearest in time to
the holdout's.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from portrait.errors import PortraitError
from training.config import CutoffRule

log = logging.getLogger(__name__)

MIN_HISTORY_DAYS = 28  # a training cutoff needs at least four weeks of history before it
MONTHLY_DEFAULT_COUNT = 6
# "spaced" without a count takes the latest this many of those that fit (two years every 14 days):
# the training set grows by the customers at each cutoff, and a line dated decades before the
# rest (a placeholder's 1950-06-01) gave 1,900 cutoffs and a training that never ended.
MAX_SPACED_CUTOFFS = 52


@dataclass(frozen=True)
class TimeSplit:
    train: tuple[dt.date, ...]
    validation: dt.date | None  # always None: validation is a customer split of the training cutoffs
    holdout: dt.date
    validation_cutoffs: tuple[dt.date, ...] = ()  # the training cutoffs whose held-out customers validate

    @property
    def all(self) -> tuple[dt.date, ...]:
        return self.train + ((self.validation,) if self.validation else ()) + (self.holdout,)


def _month_start_at_or_before(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _months_back(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def holdout_cutoff(last_day: dt.date, horizon_days: int, align: str = "month") -> dt.date:
    """The latest month start (``align = "week"``: Monday; ``"day"``: day) whose label window
    ends on or before ``last_day``."""
    latest = last_day - dt.timedelta(days=horizon_days - 1)
    if align == "month":
        return _month_start_at_or_before(latest)
    if align == "week":
        return latest - dt.timedelta(days=latest.weekday())
    if align == "day":
        return latest
    raise PortraitError(f"holdout alignment must be 'month', 'week' or 'day', got {align!r}")


def _too_short(first_day, last_day, horizon_days, holdout) -> PortraitError:
    return PortraitError(
        f"the history from {first_day} to {last_day} is too short for a {horizon_days}-day "
        f"horizon: a training cutoff needs its label window to end before the holdout cutoff "
        f"{holdout} and {MIN_HISTORY_DAYS} days of history before it; use a shorter horizon, "
        "validation scheme 'customer_kfold' with one cutoff, a holdout on any day ([cutoffs] align = \"day\"), "
        "or list the cutoffs yourself "
        "([cutoffs] dates = [...]: the last is the holdout, at least a horizon after the one before it)"
    )


def training_cutoffs(
    first_day: dt.date,
    holdout: dt.date,
    horizon_days: int,
    rule: str = "spaced",
    spacing_days: int = 14,
    count: int | None = None,
) -> tuple[dt.date, ...]:
    """Training cutoffs up to the last whose label window ``[c, c + horizon)`` ends before
    ``holdout``, back to the first with ``MIN_HISTORY_DAYS`` of history: every ``spacing_days``
    (rule ``spaced``, all that fit unless ``count``, at most :data:`MAX_SPACED_CUTOFFS` without
    one) or month starts (``monthly``, ``count`` of them, default 6)."""
    latest = holdout - dt.timedelta(days=horizon_days)
    earliest = first_day + dt.timedelta(days=MIN_HISTORY_DAYS)
    if rule == "monthly":
        latest = _month_start_at_or_before(latest)
        candidates = (_months_back(latest, i) for i in range(count or MONTHLY_DEFAULT_COUNT))
        return tuple(sorted(c for c in candidates if c >= earliest))
    if rule != "spaced":
        raise PortraitError(f"cutoff rule must be 'spaced' or 'monthly', got {rule!r}")
    steps = max((latest - earliest).days // spacing_days + 1, 0)
    if count is None and steps > MAX_SPACED_CUTOFFS:
        log.warning(
            "%d training cutoffs fit from %s (the first purchase day plus %d days) to %s; the latest %d are used "
            "([cutoffs] count = N for more; a first purchase decades before the rest is a placeholder to fix)",
            steps,
            earliest,
            MIN_HISTORY_DAYS,
            latest,
            MAX_SPACED_CUTOFFS,
        )
    steps = min(steps, MAX_SPACED_CUTOFFS if count is None else count)
    return tuple(sorted(latest - dt.timedelta(days=spacing_days * i) for i in range(steps)))


def explicit_split(dates: tuple[dt.date, ...], horizon_days: int, scheme: str) -> TimeSplit:
    if scheme == "customer_kfold":
        if len(dates) != 1:
            raise PortraitError(f"validation scheme 'customer_kfold' takes exactly one cutoff, got {len(dates)}")
        return TimeSplit(train=(), validation=None, holdout=dates[0])
    if len(dates) < 2:
        raise PortraitError(
            "time-ordered validation needs at least two cutoffs: training cutoffs, then the holdout (the last date); "
            'for one cutoff, use [validation] scheme = "customer_kfold"'
        )
    *train, holdout = dates
    if train[-1] + dt.timedelta(days=horizon_days) > holdout:
        raise PortraitError(
            f"cutoffs {[d.isoformat() for d in dates]} let label windows overlap: with a {horizon_days}-day "
            "horizon each training cutoff must be at least a horizon before the holdout cutoff (the last date)"
        )
    return TimeSplit(train=tuple(train), validation=None, holdout=holdout)


def choose_split(
    rule: CutoffRule,
    scheme: str,
    horizon_days: int,
    first_day: dt.date,
    last_day: dt.date,
    validation_cutoffs: int = 2,
) -> TimeSplit:
    if rule.dates:
        split = explicit_split(rule.dates, horizon_days, scheme)
    elif scheme == "customer_kfold":
        split = TimeSplit(train=(), validation=None, holdout=holdout_cutoff(last_day, horizon_days, rule.align))
    else:
        holdout = holdout_cutoff(last_day, horizon_days, rule.align)
        train = training_cutoffs(first_day, holdout, horizon_days, rule.rule or "spaced", rule.spacing_days, rule.count)
        if not train:
            raise _too_short(first_day, last_day, horizon_days, holdout)
        split = TimeSplit(train=train, validation=None, holdout=holdout)
    if split.train:
        split = TimeSplit(split.train, None, split.holdout, split.train[-validation_cutoffs:])
    if split.holdout + dt.timedelta(days=horizon_days - 1) > last_day:
        raise PortraitError(
            f"the holdout cutoff {split.holdout} needs data until "
            f"{split.holdout + dt.timedelta(days=horizon_days - 1)}, but the data ends on {last_day}"
        )
    if split.all[0] <= first_day:
        raise PortraitError(f"cutoff {split.all[0]} is not after the data's first day {first_day}")
    return split


def held_out_customers(customers: pd.Series, share: float, seed: int) -> np.ndarray:
    """A boolean mask: is each row's customer among the ``share`` of distinct customers held
    out (the same draw for every cutoff of a customer)."""
    ids = pd.Index(customers.astype(str).unique()).sort_values()
    order = np.random.default_rng(seed).permutation(len(ids))
    held = ids[order[: int(round(share * len(ids)))]]
    return customers.astype(str).isin(held).to_numpy()


def customer_validation_split(
    rows: pd.DataFrame, validation_cutoffs: tuple[dt.date, ...], share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the training rows: the training rows (customers not held out, every cutoff)
    and the validation rows (held-out customers at ``validation_cutoffs``). A held-out
    customer's rows at earlier cutoffs are in neither: their label windows overlap the
    validation windows, so training on them would leak the validation outcome."""
    held = held_out_customers(rows["customer_id"], share, seed)
    latest = rows["cutoff"].isin([pd.Timestamp(c) for c in validation_cutoffs]).to_numpy()
    return ~held, held & latest


def customer_folds(customers: pd.Series, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0 .. ``folds`` - 1) by its customer: every row of a customer, at
    every cutoff, is in the same fold; folds differ in size by at most one customer."""
    ids = pd.Index(customers.astype(str).unique()).sort_values()
    fold_of = pd.Series(np.random.default_rng(seed).permutation(len(ids)) % folds, index=ids)
    return fold_of.reindex(customers.astype(str).to_numpy()).to_numpy()
