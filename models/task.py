"""One contract for every model: the task a model does (classification, regression, personas)
owns how it predicts a score, which metrics judge it and its headline metric; the typed model
card is what is stored beside a registered model (``meta.json``).

Everything that used to ask "is this a classifier?" (``label.is_classification``, the
headline metric chosen in several places, ``meta["label"] == "future_spend"``) asks the task.
Metrics are plain functions (``training.metrics``) passed in by the caller, so this module
stays free of MLflow and of the training package.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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


@dataclass
class ModelCard:
    """What is stored beside a registered propensity or spend model (``meta.json``): enough to
    build its features, score, phrase reasons and check drift. Read back with
    :meth:`from_dict`, which refuses unknown keys and fills what older cards lack."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_json_default)

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"model card: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**raw)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
