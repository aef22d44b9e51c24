"""Experiment configs: ``experiments/*.toml`` validated into a typed object.

Every table and key is checked: an unknown key or a bad value is a :class:`ConfigError` that
names the file, the key and what is allowed. Example::

    name = "repurchase_90d"
    description = "Who buys again in the next 90 days"
    [data]
    path = "demo"                    # "demo" (Complete Journey) or a data set folder, relative
                                     # to this file's folder (see load_experiment)
    [cutoffs]
    rule = "spaced"                  # "spaced" | "monthly", or: dates = ["2017-04-01", "2017-10-01"]
    spacing_days = 14                # "spaced": a training cutoff every N days
    align = "month"                  # the holdout cutoff: the latest month start (or "week":
                                     # Monday, "day": any day) whose label window fits the data
    count = 12                       # at most N training cutoffs (default: "spaced" all that fit,
                                     # the latest 52 at most; "monthly" 6); see training.splits
    [label]
    kind = "repurchase"              # repurchase | high_value | future_spend
    horizon_days = 90
    high_value_quantile = 0.8
    [features]
    exclude_families = ["attributes"]
    [model]
    type = "select"                  # select (the best on validation) | lightgbm | logistic |
                                     # bgnbd | rfm | blend; spend models are always lightgbm
    monotone = true                  # LightGBM: recency down, frequency up (models.history)
    learning_rate = 0.05             # any other key is a LightGBM parameter
    [validation]
    scheme = "time"                  # time | customer_kfold (one cutoff, K folds of customers)
    calibration = "isotonic"         # isotonic | sigmoid
    folds = 5                        # time: a cross-fit over 5 folds of customers; each fold's rows
    cutoffs = 3                      # at the latest N training cutoffs stop, calibrate and select
                                     # the model trained without that fold (customer_kfold: K folds)
    base_rate_margin = 0.05          # warn when validation and holdout base rates differ more
    [tuning]
    trials = 20
    timeout_seconds = 900
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from features.catalogue import FAMILIES
from features.config import FeatureConfig
from models.task import MODEL_NAME_LENGTH, Task, is_model_name, task_for_label
from portrait.errors import ConfigError, PortraitError
from portrait.toml_text import as_toml

LABEL_KINDS = ("repurchase", "high_value", "future_spend")
DEMO = "demo"
DEMO_FOLDER = Path("data") / "completejourney"
MODEL_TYPES = ("select", "lightgbm", "logistic", "bgnbd", "rfm", "blend")
CUTOFF_RULES = ("spaced", "monthly")
HOLDOUT_ALIGNS = ("month", "week", "day")
# Regularised for a few thousand customers repeated over many cutoffs (issue 13: about 15
# leaves, 200 rows per leaf, half the features per tree, L2 5).
DEFAULT_MODEL_PARAMS: dict[str, Any] = {
    "n_estimators": 2000,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_child_samples": 200,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 5.0,
    "early_stopping_rounds": 100,
    "random_state": 42,
    "n_jobs": 1,  # two OpenMP threads on a loaded 2-core machine measured 30x slower (100 s against 3.6 s)
    "verbose": -1,
}


@dataclass(frozen=True)
class CutoffRule:
    rule: str | None = None  # "spaced" or "monthly"
    count: int | None = None  # at most this many training cutoffs; None: spaced all, monthly 6
    dates: tuple[dt.date, ...] = ()
    spacing_days: int = 14
    align: str = "month"  # where the holdout cutoff falls: a month start, a Monday, or any day


@dataclass(frozen=True)
class LabelSpec:
    kind: str
    horizon_days: int
    high_value_quantile: float = 0.8

    @property
    def task(self) -> Task:
        """What the model does (models.task): the one place that decides classifier or regressor."""
        return task_for_label(self.kind)

    @property
    def is_classification(self) -> bool:
        return self.task.is_classification


@dataclass(frozen=True)
class ValidationSpec:
    scheme: str = "time"
    calibration: str = "isotonic"
    folds: int = 5
    min_positives: int = 100
    min_negatives: int = 100
    customers: float = 0.25  # portrait tune's validation share of customers
    cutoffs: int = 3
    base_rate_margin: float = 0.05


@dataclass(frozen=True)
class TuningSpec:
    trials: int = 20
    timeout_seconds: int | None = None
    metric: str | None = None  # default: validation ROC AUC, or Gini for spend


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    description: str
    data: str
    cutoffs: CutoffRule
    label: LabelSpec
    families: tuple[str, ...]
    features: FeatureConfig
    model_params: dict[str, Any]
    validation: ValidationSpec
    tuning: TuningSpec
    source: Path | None = field(default=None, compare=False)
    model_type: str = "select"
    monotone: bool = True

    @property
    def demo_path(self) -> Path:
        return demo_path_of(self.source)

    def with_data(self, data: str | Path) -> ExperimentConfig:
        from dataclasses import replace

        return replace(self, data=str(data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "data": self.data,
            "cutoffs": {
                "rule": self.cutoffs.rule,
                "count": self.cutoffs.count,
                "dates": [d.isoformat() for d in self.cutoffs.dates],
                "spacing_days": self.cutoffs.spacing_days,
                "align": self.cutoffs.align,
            },
            "label": self.label.__dict__,
            "families": list(self.families),
            "features": {k: list(v) if isinstance(v, tuple) else v for k, v in self.features.__dict__.items()},
            "model": {"type": self.model_type, "monotone": self.monotone, **self.model_params},
            "validation": self.validation.__dict__,
            "tuning": self.tuning.__dict__,
        }


def demo_path_of(source: Path | None) -> Path:
    """Where ``path = "demo"`` lives for a config file ``source``: ``data/completejourney`` in
    the project the file belongs to (the folder holding its ``experiments/`` folder, else the
    file's own folder), never in whatever folder the command happens to run in. A config built
    without a file uses the working directory."""
    if source is None:
        return DEMO_FOLDER
    folder = source.parent.absolute()
    return (folder.parent if folder.name == "experiments" else folder) / DEMO_FOLDER


def data_path_of(data: str, source: Path) -> str:
    """A ``[data] path`` of the config file ``source``: relative paths are read from the file's
    folder, as a reader of the file expects; ``demo`` stays (:func:`demo_path_of`)."""
    if data != DEMO and not Path(data).expanduser().is_absolute():
        return os.path.normpath(source.parent.absolute() / Path(data).expanduser())
    return data


def check_data_set_named(data: str, source: Path) -> None:
    """A ``[data] path`` of ``source`` that names no folder, said as the file's setting (it was
    "data set ... does not exist", the reader left to guess where the path came from)."""
    if data != DEMO and not Path(data).exists():
        raise ConfigError(
            f"{source} [data] path: data set {data} does not exist (a relative path is read from the file's "
            "folder; --data DIR runs on another data set)"
        )


def check_keys(where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def check_name(where: str, name: object) -> None:
    """An experiment's name (a registered model's name): letters, digits, '_' or '-'."""
    if name is None:
        raise ConfigError(
            f"{where}: name = \"...\" is required (letters, digits, '_' or '-'): the registered model's name"
        )
    if not is_model_name(name):
        raise ConfigError(
            f"{where}: name must be letters, digits, '_' or '-' (at most {MODEL_NAME_LENGTH}), got {as_toml(name)}"
        )


def table_of(where: str, raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


# Validation metrics a tuning study can maximise (training.metrics; higher is better).
TUNING_METRICS = {"classification": ("roc_auc", "pr_auc"), "future_spend": ("gini", "spearman")}
# A horizon or window longer than this (ten years) is a typo, and past the calendar's end.
MAX_DAYS = 3660


def whole_number(where: str, key: str, value: object, low: int = 1, high: int | None = None) -> int:
    """``value`` as a whole number from ``low`` (to ``high``), or a ConfigError naming ``key``
    (true and false are not numbers here, though Python counts them as 1 and 0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low:,} to {high:,}" if high is not None else f"at least {low:,}"
        raise ConfigError(f"{where}: {key} must be a whole number {bounds}, got {as_toml(value)}")
    return value


def text_list(where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where}: {key} must be a list of names, e.g. {key} = ["value"], got {as_toml(value)}')
    return value


# [model] keys read besides LightGBM's defaults above (LightGBM's own other parameters pass through).
_OTHER_MODEL_KEYS = (
    "max_depth",
    "min_child_weight",
    "min_split_gain",
    "reg_alpha",
    "max_bin",
    "tweedie_variance_power",
)


# What LightGBM accepts for each [model] number, checked before any feature is built (a bad
# value was a LightGBMError traceback after minutes of work): whole numbers with their least
# value, and other numbers with their range.
_WHOLE_FROM = {
    "n_estimators": 1,
    "num_leaves": 2,
    "min_child_samples": 1,
    "subsample_freq": 0,
    "early_stopping_rounds": 1,
    "random_state": -(2**31),
    "verbose": -(2**31),
    "max_bin": 2,
    "max_depth": -1,  # -1 (or 0): no limit
    "n_jobs": -(2**31),  # 0 or less: LightGBM's default threads
}
_NUMBER_RANGES = {  # low, high, whether low itself is allowed, whether high is
    "learning_rate": (0.0, math.inf, False, False),
    "subsample": (0.0, 1.0, False, True),
    "colsample_bytree": (0.0, 1.0, False, True),
    "reg_lambda": (0.0, math.inf, True, False),
    "reg_alpha": (0.0, math.inf, True, False),
    "min_split_gain": (0.0, math.inf, True, False),
    "min_child_weight": (0.0, math.inf, True, False),
    "tweedie_variance_power": (1.0, 2.0, True, False),  # LightGBM refuses 2 itself
}


def _in_range(value: object, low: float, high: float, low_in: bool, high_in: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (low <= value if low_in else low < value) and (value <= high if high_in else value < high)


def _range_words(low: float, high: float, low_in: bool, high_in: bool) -> str:
    """ "more than 0 and at most 1", "from 1 to below 2", "of at least 0"..."""
    if not math.isfinite(high):
        return f"of at least {low:g}" if low_in else f"more than {low:g}"
    if low_in:
        return f"from {low:g} to {'' if high_in else 'below '}{high:g}"
    return f"more than {low:g} and {'at most' if high_in else 'below'} {high:g}"


def _check_model_params(where: str, params: dict) -> None:
    """Every number of ``[model]`` the product knows has LightGBM's type and range; a key close
    to a known one is a typo (LightGBM would ignore it without a word)."""
    for key, value in params.items():
        if key in _WHOLE_FROM:
            whole_number(f"{where} [model]", key, value, low=_WHOLE_FROM[key])
        elif key in _NUMBER_RANGES:
            if not _in_range(value, *_NUMBER_RANGES[key]):
                raise ConfigError(
                    f"{where} [model]: {key} must be a number {_range_words(*_NUMBER_RANGES[key])}, got {as_toml(value)}"
                )
        else:
            own_name = _product_name_of(key)
            if own_name is not None:  # LightGBM keeps the main name and drops the other: said
                raise ConfigError(
                    f"{where} [model]: {key} is LightGBM's other name for {own_name}: write {own_name} = {as_toml(value)} "
                    f"(the name the product sets and checks; given both, LightGBM keeps one and ignores the other)"
                )
            known = _lightgbm_parameters()
            if key in known:  # a LightGBM parameter or alias the product does not set
                continue
            close = difflib.get_close_matches(key, [*DEFAULT_MODEL_PARAMS, *_OTHER_MODEL_KEYS], n=1, cutoff=0.8)
            if close and close[0] != key:
                raise ConfigError(f"{where} [model]: unknown key {key!r}; did you mean {close[0]!r}?")
            if known:
                hint = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                raise ConfigError(
                    f"{where} [model]: unknown key {key!r}: neither the product's (type, monotone) nor a LightGBM "
                    "parameter, which LightGBM would ignore without a word"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                )


# LightGBM's metric names (and their aliases) that an experiment's task can stop early on:
# a metric of another task (multi_logloss, ndcg), "None" or an unknown name left LightGBM no
# metric to stop on, a traceback after the features were built (a user's test).
_ERROR_METRICS = ("l1", "mean_absolute_error", "mae", "regression_l1", "l2", "mean_squared_error", "mse")
_ERROR_METRICS += ("regression_l2", "regression", "rmse", "root_mean_squared_error", "l2_root")
TASK_METRICS = {
    "classification": (
        *("binary_logloss", "binary", "binary_error", "auc", "average_precision", "cross_entropy", "xentropy"),
        *("cross_entropy_lambda", "xentlambda", "kullback_leibler", "kldiv", *_ERROR_METRICS),
    ),
    "regression": (
        *_ERROR_METRICS,
        *("quantile", "mape", "mean_absolute_percentage_error", "huber", "fair", "poisson", "gamma"),
        *("gamma_deviance", "tweedie"),
    ),
}
# The model types that fit a LightGBM model (alone, among the candidates, or in the blend).
LIGHTGBM_TYPES = ("select", "lightgbm", "blend")
# [model] keys every type reads: the seed of the customer folds and splits, the threads.
ANY_TYPE_KEYS = ("random_state", "n_jobs")


def _check_task_params(where: str, params: dict, label: LabelSpec, model_type: str) -> None:
    """The ``[model]`` values that go against the experiment's task or model type: an objective
    (the task sets it: a LightGBM classifier with a regression objective was trained and
    registered), an early-stopping metric the task has not, or LightGBM values for a model type
    that fits no LightGBM model (logged as if used)."""
    task, kind = ("classification" if label.is_classification else "regression"), label.kind
    for key, value in params.items():
        group = next((names for names in _lightgbm_alias_groups() if key in names), frozenset({key}))
        if "objective" in group:
            objective = "tweedie (tweedie_variance_power sets its power)" if task == "regression" else "binary"
            raise ConfigError(
                f"{where} [model]: {key} is set by the label's task: a {kind} model is fitted with LightGBM's "
                f"{objective} objective; remove it"
            )
        if "metric" in group:
            # a list, or LightGBM's own comma-separated text ("auc,binary_logloss")
            given = value if isinstance(value, list) else value.split(",") if isinstance(value, str) else [value]
            given = [v.strip() if isinstance(v, str) else v for v in given]
            wrong = [v for v in given if not isinstance(v, str) or v not in TASK_METRICS[task]]
            if wrong or not given:
                raise ConfigError(
                    f"{where} [model]: {key} (what early stopping reads) must be a {task} metric of LightGBM's, "
                    f"such as {as_toml(list(TASK_METRICS[task][:6]))}, got {as_toml(value)}"
                )
    lightgbm_only = sorted(set(params) - set(ANY_TYPE_KEYS))
    if model_type not in LIGHTGBM_TYPES and lightgbm_only:
        one = len(lightgbm_only) == 1
        raise ConfigError(
            f"{where} [model]: {', '.join(lightgbm_only)} {'is a LightGBM value' if one else 'are LightGBM values'}, "
            f"which type = {as_toml(model_type)} does not use: remove {'it' if one else 'them'}, or use "
            'type = "lightgbm" (or "select", which tries LightGBM among its candidates)'
        )


def _cutoff_text(value) -> dt.date:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date")
    from features.build import parse_cutoff

    return parse_cutoff(value)


def _product_name_of(key: str) -> str | None:
    """The product's own name for ``key`` when ``key`` is another LightGBM name (an alias) of a
    parameter the product sets or checks (``max_leaves`` -> ``num_leaves``, ``eta`` ->
    ``learning_rate``); None for the product's names and other parameters."""
    own = [*DEFAULT_MODEL_PARAMS, *_OTHER_MODEL_KEYS, *_WHOLE_FROM, *_NUMBER_RANGES]
    if key in own:
        return None
    group = next((names for names in _lightgbm_alias_groups() if key in names), None)
    return next((name for name in own if group is not None and name in group), None)


@functools.cache
def _lightgbm_alias_groups() -> tuple[frozenset[str], ...]:
    """Each LightGBM parameter's names (its main name and aliases); empty if this LightGBM does
    not tell."""
    try:
        from lightgbm.basic import _ConfigAliases

        return tuple(frozenset([main, *aliases]) for main, aliases in _ConfigAliases._get_all_param_aliases().items())
    except Exception:  # a private LightGBM API: never let its absence stop a training
        return ()


@functools.cache
def _lightgbm_parameters() -> frozenset[str]:
    """Every name LightGBM takes for a parameter (canonical names, their aliases and its scikit-
    learn wrapper's), read from the installed LightGBM; empty if this LightGBM does not tell
    (the known-typo check above still runs)."""
    groups = _lightgbm_alias_groups()
    if not groups:
        return frozenset()
    from lightgbm import LGBMModel

    return frozenset().union(*groups, LGBMModel().get_params(), DEFAULT_MODEL_PARAMS, _OTHER_MODEL_KEYS)


def parse_experiment(raw: dict, where: str = "experiment") -> ExperimentConfig:
    check_keys(
        where, raw, {"name", "description", "data", "cutoffs", "label", "features", "model", "validation", "tuning"}
    )
    name = raw.get("name")
    check_name(where, name)
    if not isinstance(raw.get("description", ""), str):  # was stored as its text ("5")
        raise ConfigError(f"{where}: description must be text, got {as_toml(raw['description'])}")

    data = table_of(where, raw, "data")
    check_keys(f"{where} [data]", data, {"path"})
    if "path" not in data:
        raise ConfigError(f"{where} [data]: path is required ('demo' or a data set folder)")
    if not isinstance(data["path"], str) or not data["path"].strip():
        raise ConfigError(
            f"{where} [data]: path must be text ('demo' or a data set folder), got {as_toml(data['path'])}"
        )

    cutoffs_raw = table_of(where, raw, "cutoffs")
    check_keys(f"{where} [cutoffs]", cutoffs_raw, {"rule", "count", "dates", "spacing_days", "align"})
    if ("dates" in cutoffs_raw) == ("rule" in cutoffs_raw):
        raise ConfigError(f'{where} [cutoffs]: give either rule = "spaced" (or "monthly") or dates = [...]')
    if "rule" in cutoffs_raw and cutoffs_raw["rule"] not in CUTOFF_RULES:
        raise ConfigError(
            f"{where} [cutoffs]: rule must be one of {as_toml(list(CUTOFF_RULES))}, got {as_toml(cutoffs_raw['rule'])}"
        )
    given_dates = cutoffs_raw.get("dates", [])
    if "dates" in cutoffs_raw and (not isinstance(given_dates, list) or not given_dates):
        raise ConfigError(f'{where} [cutoffs]: dates must be a list of dates, dates = ["2017-06-01", ...]')
    timed = [d for d in given_dates if isinstance(d, dt.datetime)]
    if timed:  # a cutoff is the first instant of a day: an hour or a zone would be silently dropped
        raise ConfigError(f"{where} [cutoffs]: dates are days, YYYY-MM-DD, not date-times: got {timed[0].isoformat()}")
    try:  # one reading of a date for every command (parse_cutoff): 19971001 or 1997-W40 is not one
        dates = tuple(sorted(d if isinstance(d, dt.date) else _cutoff_text(d) for d in given_dates))
    except (ValueError, PortraitError) as exc:
        raise ConfigError(f"{where} [cutoffs]: dates must be YYYY-MM-DD: {exc}") from None
    repeated = sorted({d.isoformat() for d in dates if dates.count(d) > 1})
    if repeated:
        raise ConfigError(f"{where} [cutoffs]: dates repeat {as_toml(repeated)}: give each cutoff once")
    count = cutoffs_raw.get("count")
    if count is not None:
        whole_number(f"{where} [cutoffs]", "count", count)
        if "dates" in cutoffs_raw:  # ignored with dates: a user's count = 3 changed nothing
            raise ConfigError(f"{where} [cutoffs]: count goes with rule (with dates, each date is a cutoff)")
    spacing = cutoffs_raw.get("spacing_days", 14)
    if not isinstance(spacing, int) or isinstance(spacing, bool) or spacing < 1:
        raise ConfigError(f"{where} [cutoffs]: spacing_days must be a positive integer, got {as_toml(spacing)}")
    if "spacing_days" in cutoffs_raw and cutoffs_raw.get("rule") != "spaced":
        raise ConfigError(f'{where} [cutoffs]: spacing_days goes with rule = "spaced"')
    align = cutoffs_raw.get("align", "month")
    if align not in HOLDOUT_ALIGNS:
        raise ConfigError(
            f"{where} [cutoffs]: align must be one of {as_toml(list(HOLDOUT_ALIGNS))}, got {as_toml(align)}"
        )
    if "align" in cutoffs_raw and "dates" in cutoffs_raw:
        raise ConfigError(f"{where} [cutoffs]: align goes with rule (with dates the last date is the holdout cutoff)")
    cutoffs = CutoffRule(rule=cutoffs_raw.get("rule"), count=count, dates=dates, spacing_days=spacing, align=align)

    label_raw = table_of(where, raw, "label")
    check_keys(f"{where} [label]", label_raw, {"kind", "horizon_days", "high_value_quantile"})
    kind = label_raw.get("kind")
    if kind not in LABEL_KINDS:
        raise ConfigError(f"{where} [label]: kind must be one of {as_toml(list(LABEL_KINDS))}, got {as_toml(kind)}")
    horizon = whole_number(f"{where} [label]", "horizon_days", label_raw.get("horizon_days"), high=MAX_DAYS)
    quantile = label_raw.get("high_value_quantile", 0.8)
    if not isinstance(quantile, float | int) or not 0 < quantile < 1:
        raise ConfigError(f"{where} [label]: high_value_quantile must be between 0 and 1, got {as_toml(quantile)}")
    if "high_value_quantile" in label_raw and kind != "high_value":  # ignored by the other kinds
        raise ConfigError(f'{where} [label]: high_value_quantile goes with kind = "high_value", not {as_toml(kind)}')
    label = LabelSpec(kind=kind, horizon_days=horizon, high_value_quantile=float(quantile))

    features_raw = dict(table_of(where, raw, "features"))
    include = features_raw.pop("include_families", list(FAMILIES))
    exclude = features_raw.pop("exclude_families", [])
    for key, value in (("include_families", include), ("exclude_families", exclude)):
        unknown = set(text_list(f"{where} [features]", key, value)) - set(FAMILIES)
        if unknown:
            raise ConfigError(
                f"{where} [features]: {key} has unknown families {sorted(unknown)}; known: {list(FAMILIES)}"
            )
    families = tuple(f for f in FAMILIES if f in include and f not in exclude)
    if not families:
        raise ConfigError(f"{where} [features]: no feature family is left to train on")
    unknown = set(features_raw) - {f.name for f in fields(FeatureConfig)}
    if unknown:  # FeatureConfig's own message would leave out the two keys read above
        known = sorted({f.name for f in fields(FeatureConfig)} | {"include_families", "exclude_families"})
        raise ConfigError(f"{where} [features]: unknown feature settings {sorted(unknown)}; known: {known}")
    try:
        feature_config = FeatureConfig.from_dict(features_raw)
    except ConfigError as exc:
        raise ConfigError(f"{where} [features]: {exc}") from exc

    model_raw = dict(table_of(where, raw, "model"))
    model_type = model_raw.pop("type", "select")
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{where} [model]: type must be one of {as_toml(list(MODEL_TYPES))}, got {as_toml(model_type)}"
        )
    if kind == "future_spend" and model_type not in ("select", "lightgbm"):
        raise ConfigError(
            f"{where} [model]: a future_spend model is a LightGBM regressor; type {as_toml(model_type)} is not"
        )
    if model_type not in ("select", "lightgbm") and "value" not in families:
        raise ConfigError(
            f"{where} [model]: type {as_toml(model_type)} is computed from the purchase history (the value family), "
            'which [features] leaves out; include it or use type = "lightgbm"'
        )
    monotone = model_raw.pop("monotone", True)
    if not isinstance(monotone, bool):
        raise ConfigError(f"{where} [model]: monotone must be true or false, got {as_toml(monotone)}")
    _check_model_params(where, model_raw)
    _check_task_params(where, model_raw, label, model_type)
    model_params = {**DEFAULT_MODEL_PARAMS, **model_raw}

    validation_raw = table_of(where, raw, "validation")
    check_keys(
        f"{where} [validation]",
        validation_raw,
        {
            "scheme",
            "calibration",
            "folds",
            "min_positives",
            "min_negatives",
            "customers",
            "cutoffs",
            "base_rate_margin",
        },
    )
    for key in ("folds", "min_positives", "min_negatives", "cutoffs"):
        if key in validation_raw:
            folds = key == "folds"
            whole_number(
                f"{where} [validation]", key, validation_raw[key], low=2 if folds else 1, high=100 if folds else None
            )
    validation = ValidationSpec(**validation_raw)
    if isinstance(validation.customers, bool) or not (
        isinstance(validation.customers, float | int) and 0 < validation.customers < 1
    ):
        raise ConfigError(
            f"{where} [validation]: customers (the share held out for validation) must be between 0 and 1, "
            f"got {as_toml(validation.customers)}"
        )
    if not isinstance(validation.cutoffs, int) or validation.cutoffs < 1:
        raise ConfigError(
            f"{where} [validation]: cutoffs must be a positive integer, got {as_toml(validation.cutoffs)}"
        )
    if isinstance(validation.base_rate_margin, bool) or not (
        isinstance(validation.base_rate_margin, float | int) and validation.base_rate_margin >= 0
    ):
        raise ConfigError(
            f"{where} [validation]: base_rate_margin must be a number >= 0, got {as_toml(validation.base_rate_margin)}"
        )
    if validation.scheme not in ("time", "customer_kfold"):
        raise ConfigError(
            f"{where} [validation]: scheme must be 'time' or 'customer_kfold', got {as_toml(validation.scheme)}"
        )
    if validation.calibration not in ("isotonic", "sigmoid"):
        raise ConfigError(
            f"{where} [validation]: calibration must be 'isotonic' or 'sigmoid', got {as_toml(validation.calibration)}"
        )
    if validation.folds < 2:
        raise ConfigError(f"{where} [validation]: folds must be at least 2")
    if "calibration" in validation_raw and not label.is_classification:  # was ignored without a word
        raise ConfigError(
            f"{where} [validation]: calibration goes with a probability model (repurchase, high_value); a "
            f"{kind} model predicts amounts, which are not calibrated: remove it"
        )
    if cutoffs.dates and validation.scheme == "time":  # said with the file's settings, before any data is read
        from training.splits import explicit_split  # (splits reads this module's CutoffRule)

        try:
            explicit_split(cutoffs.dates, horizon, validation.scheme)
        except PortraitError as exc:
            raise ConfigError(f"{where} [cutoffs]: {exc}") from None
    if validation.scheme == "customer_kfold" and len(cutoffs.dates) > 1:  # said with the file's settings
        raise ConfigError(
            f'{where} [validation]: scheme = "customer_kfold" takes one cutoff (the holdout\'s), and [cutoffs] '
            f"dates gives {len(cutoffs.dates)}"
        )

    tuning_raw = table_of(where, raw, "tuning")
    check_keys(f"{where} [tuning]", tuning_raw, {"trials", "timeout_seconds", "metric"})
    if "trials" in tuning_raw:
        whole_number(f"{where} [tuning]", "trials", tuning_raw["trials"], high=100_000)
    if tuning_raw.get("timeout_seconds") is not None:
        whole_number(f"{where} [tuning]", "timeout_seconds", tuning_raw["timeout_seconds"])
    metrics = TUNING_METRICS["future_spend" if kind == "future_spend" else "classification"]
    if tuning_raw.get("metric") is not None and tuning_raw["metric"] not in metrics:
        raise ConfigError(
            f"{where} [tuning]: metric must be one of {as_toml(list(metrics))}, got {as_toml(tuning_raw['metric'])}"
        )
    tuning = TuningSpec(**tuning_raw)

    return ExperimentConfig(
        name=name,
        description=raw.get("description", ""),
        data=str(data["path"]),
        cutoffs=cutoffs,
        label=label,
        families=families,
        features=feature_config,
        model_params=model_params,
        validation=validation,
        tuning=tuning,
        model_type=model_type,
        monotone=monotone,
    )


def load_experiment(path: str | Path) -> ExperimentConfig:
    """The experiment in ``path``; its ``[data] path`` is resolved against the file's folder
    (``"demo"`` against its project: :attr:`ExperimentConfig.demo_path`)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder; give one of its experiment files" if path.is_dir() else "does not exist"
        raise ConfigError(f"experiment file {path} {what}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    from dataclasses import replace

    config = parse_experiment(raw, str(path))
    return replace(config, data=data_path_of(config.data, path), source=path)
