"""One contract for every model: the task a model does (classification, regression, personas)
owns how it predicts a score, which metrics judge it and its headline metric; the typed card is
what is stored beside a registered model (``meta.json``): :class:`ModelCard` for propensity and
spend models, :class:`PersonaCard` for persona models.

Everything that used to ask "is this a classifier?" (``label.is_classification``, the
headline metric chosen in several places, ``meta["label"] == "future_spend"``) asks the task.
Metrics are plain functions (``training.metrics``) passed in by the caller, so this module
stays free of MLflow and of the training package.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

CARD_VERSION = 1


@dataclass(frozen=True)
class Task:
    """What a model does. ``kind`` is ``classification``, ``regression`` or ``personas``."""

    kind: str
    headline_metric: str  # the metric promotion compares and a run is judged by
    tuning_metric: str  # what ``portrait tune`` maximises on validation (without the prefix)
    early_stopping_metric: str | None  # LightGBM's metric for early stopping and pruning

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    def predict(self, model, X: pd.DataFrame) -> np.ndarray:
        """The score of each row: P(positive) for classification, the prediction for regression."""
        if self.kind == "classification":
            return model.predict_proba(X)[:, 1]
        if self.kind == "regression":
            return model.predict(X)
        raise ValueError(f"a {self.kind} model assigns groups (assign), it has no score to predict")


CLASSIFICATION = Task("classification", "holdout_roc_auc", "roc_auc", "binary_logloss")
REGRESSION = Task("regression", "holdout_gini", "gini", "tweedie")
PERSONAS = Task("personas", "persona_stability", "stability", None)
TASKS = {t.kind: t for t in (CLASSIFICATION, REGRESSION, PERSONAS)}
LABEL_TASKS = {"repurchase": CLASSIFICATION, "high_value": CLASSIFICATION, "future_spend": REGRESSION}


def task_for_label(label: str) -> Task:
    """The task of a label kind (``repurchase``, ``high_value``, ``future_spend``)."""
    try:
        return LABEL_TASKS[label]
    except KeyError:
        raise ValueError(f"label must be one of {sorted(LABEL_TASKS)}, got {label!r}") from None


class _Card:
    """What the cards share: written as JSON, read back with :meth:`from_dict`, which refuses
    unknown keys, names missing ones and fills (from the fields' defaults) what older cards
    lack."""

    kind: ClassVar[str]  # how messages name the card

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_json_default)

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        if unknown := set(raw) - known:
            raise ValueError(f"{cls.kind}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if missing := required - set(raw):
            raise ValueError(f"{cls.kind}: missing keys {sorted(missing)}")
        return cls(**raw)


@dataclass
class ModelCard(_Card):
    """What is stored beside a registered propensity or spend model (``meta.json``): enough to
    build its features, score, phrase reasons and check drift. Read back with
    :meth:`from_dict`, which refuses unknown keys and fills what older cards lack."""

    kind: ClassVar[str] = "model card"

    name: str
    label: str
    horizon_days: int
    features: list[str]
    families: list[str]
    feature_config: dict[str, Any]
    vocabulary: dict[str, Any]
    descriptions: dict[str, str]
    meanings: dict[str, dict]
    holdout_cutoff: str
    headline_metric: str
    metrics: dict[str, float]
    categories: dict[str, list] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    model_type: str = "lightgbm"
    task: str = ""
    card_version: int = CARD_VERSION
    # a relative label's share of any scored population (high value: the top 20%); batch scores
    # are moved to it (models.prior_shift). None: an absolute label, or a card from before it.
    positive_share: float | None = None
    # The end of the latest label window the model learned from (learned_until_of); None: a
    # card from before it (its holdout cutoff is then the nearest bound known).
    learned_until: str | None = None

    def __post_init__(self) -> None:
        task = task_for_label(self.label)
        if not self.task:
            self.task = task.kind
        if self.task != task.kind:
            raise ValueError(f"model card {self.name}: task {self.task!r} does not fit the label {self.label!r}")
        if self.headline_metric != task.headline_metric:
            raise ValueError(
                f"model card {self.name}: headline metric {self.headline_metric!r}, the {task.kind} task's is "
                f"{task.headline_metric!r}"
            )

    @property
    def task_(self) -> Task:
        return TASKS[self.task]


MODEL_NAME_LENGTH = 200


def is_model_name(name: object) -> bool:
    """A registered model's name (an experiment's or a persona fit's): letters, digits, '_' or
    '-', at most :data:`MODEL_NAME_LENGTH` characters. Checked where one is given (a
    configuration, a request) before the registry is asked: MLflow's own error for "a:b" named
    the store's path."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MODEL_NAME_LENGTH
        and name.replace("_", "").replace("-", "").isalnum()
    )


PERSONA_LABEL = "persona"  # the label of a persona card: what readers tell persona models by


@dataclass
class PersonaCard(_Card):
    """What is stored beside a registered persona model (``meta.json``): the features it
    assigns from and the families and vocabulary to build them with, its personas' names by id,
    the date it was fitted as of, and its headline metric with the fit's metrics.

    The dictionary keeps the shape persona models were first stored with (``label`` is
    ``"persona"``, ``names`` keyed by the id as text, as JSON keeps it), so readers of
    ``meta.json`` read old and new cards alike. Cards stored before this class lack
    ``vocabulary`` and ``feature_config`` (the first ones) and everything after ``as_of``:
    :meth:`from_dict` fills them (no vocabulary and default feature settings: what those
    models were fitted with; no name, no metrics)."""

    kind: ClassVar[str] = "persona card"

    features: list[str]
    families: list[str]
    names: dict[int, str]  # persona id -> name
    as_of: str  # ISO date the features were built as of
    vocabulary: dict[str, Any] = field(default_factory=dict)
    feature_config: dict[str, Any] = field(default_factory=dict)
    label: str = PERSONA_LABEL
    name: str = ""  # the registered model's name
    task: str = PERSONAS.kind
    headline_metric: str = PERSONAS.headline_metric
    metrics: dict[str, float] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    def __post_init__(self) -> None:
        what = f"persona card {self.name}".rstrip()
        if self.label != PERSONA_LABEL:
            raise ValueError(f"{what}: label {self.label!r}, a persona card's is {PERSONA_LABEL!r}")
        if self.task != PERSONAS.kind:
            raise ValueError(f"{what}: task {self.task!r}, a persona card's is {PERSONAS.kind!r}")
        if self.headline_metric != PERSONAS.headline_metric:
            raise ValueError(
                f"{what}: headline metric {self.headline_metric!r}, the personas task's is {PERSONAS.headline_metric!r}"
            )
        try:
            self.names = {int(k): str(v) for k, v in self.names.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{what}: names must map persona ids (integers) to names") from None
        self.metrics = {k: float(v) for k, v in self.metrics.items()}

    @property
    def task_(self) -> Task:
        return PERSONAS

    def to_dict(self) -> dict[str, Any]:
        """As stored: persona ids as text, the only keys JSON has."""
        return {**asdict(self), "names": {str(k): v for k, v in self.names.items()}}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def learned_until_of(train_cutoffs, holdout_cutoff, horizon_days: int):
    """The end of the latest label window a model learned from: its last training cutoff plus
    the horizon; with no training cutoff (customer folds at the holdout cutoff, the final model
    fitted on all of its rows), the holdout cutoff plus the horizon. Dates in, a date out."""
    import datetime as dt

    last = max(train_cutoffs) if train_cutoffs else holdout_cutoff
    return last + dt.timedelta(days=int(horizon_days))
