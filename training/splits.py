"""Choosing cutoffs and splitting them in time: training, validation, holdout.

The rule keeps every label window apart: a training cutoff's label window ends on or before
the validation cutoff, and the validation cutoff's ends on or before the holdout cutoff. So no
outcome the model learned from, or was calibrated on, lies in the period it is judged on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from portrait.errors import PortraitError
from training.config import CutoffRule

MIN_HISTORY_DAYS = 28  # a training cutoff needs at least four weeks of history before it


@dataclass(frozen=True)
class TimeSplit:
    train: tuple[dt.date, ...]
    validation: dt.date | None
    holdout: dt.date

    @property
    def all(self) -> tuple[dt.date, ...]:
        return self.train + ((self.validation,) if self.validation else ()) + (self.holdout,)


def _month_start_at_or_before(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _months_back(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def monthly_split(first_day: dt.date, last_day: dt.date, horizon_days: int, train_count: int) -> TimeSplit:
    """Holdout: the latest month start whose label window fits in the data; validation: the
    latest month start a horizon before it; training: up to ``train_count`` month starts a
    horizon before the validation cutoff, each with at least four weeks of history."""
    horizon = dt.timedelta(days=horizon_days)
    holdout = _month_start_at_or_before(last_day - horizon + dt.timedelta(days=1))
    validation = _month_start_at_or_before(holdout - horizon)
    latest_train = _month_start_at_or_before(validation - horizon)
    earliest = first_day + dt.timedelta(days=MIN_HISTORY_DAYS)
    train = [c for c in (_months_back(latest_train, i) for i in range(train_count)) if c >= earliest]
    if not train:
        raise PortraitError(
            f"the history from {first_day} to {last_day} is too short for a {horizon_days}-day "
            f"horizon: time-ordered training needs three label windows one after another (training "
            f"before {validation}, validation at {validation}, holdout at {holdout}) plus "
            f"{MIN_HISTORY_DAYS} days of history before the first training cutoff; use a shorter "
            "horizon or validation scheme 'customer_kfold' with one cutoff"
        )
    return TimeSplit(train=tuple(sorted(train)), validation=validation, holdout=holdout)


def explicit_split(dates: tuple[dt.date, ...], horizon_days: int, scheme: str) -> TimeSplit:
    if scheme == "customer_kfold":
        if len(dates) != 1:
            raise PortraitError(f"validation scheme 'customer_kfold' takes exactly one cutoff, got {len(dates)}")
        return TimeSplit(train=(), validation=None, holdout=dates[0])
    if len(dates) < 3:
        raise PortraitError("time-ordered validation needs at least three cutoffs: training, validation, holdout")
    *train, validation, holdout = dates
    horizon = dt.timedelta(days=horizon_days)
    if validation + horizon > holdout or train[-1] + horizon > validation:
        raise PortraitError(
            f"cutoffs {[d.isoformat() for d in dates]} let label windows overlap: with a {horizon_days}-day "
            "horizon each training cutoff must be at least a horizon before the validation cutoff, "
            "and the validation cutoff a horizon before the holdout"
        )
    return TimeSplit(train=tuple(train), validation=validation, holdout=holdout)


def choose_split(rule: CutoffRule, scheme: str, horizon_days: int, first_day: dt.date, last_day: dt.date) -> TimeSplit:
    if rule.dates:
        split = explicit_split(rule.dates, horizon_days, scheme)
    elif scheme == "customer_kfold":
        holdout = _month_start_at_or_before(last_day - dt.timedelta(days=horizon_days - 1))
        split = TimeSplit(train=(), validation=None, holdout=holdout)
    else:
        split = monthly_split(first_day, last_day, horizon_days, rule.count)
    if split.holdout + dt.timedelta(days=horizon_days - 1) > last_day:
        raise PortraitError(
            f"the holdout cutoff {split.holdout} needs data until "
            f"{split.holdout + dt.timedelta(days=horizon_days - 1)}, but the data ends on {last_day}"
        )
    if split.all[0] <= first_day:
        raise PortraitError(f"cutoff {split.all[0]} is not after the data's first day {first_day}")
    return split
