"""The MLflow pyfunc model: everything serving needs to score, in one logged model.

It bundles the fitted estimator (joblib), the feature list and vocabulary the features were
built with, the label and horizon, each feature's catalogue meaning (label, scale, unit: what
reasons are phrased from), and the training reference distributions for drift checks.
``predict`` returns probabilities (or predicted spend), never class labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import joblib
import mlflow.pyfunc
import pandas as pd

from models.task import task_for_label


def serving_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Features as the model's signature expects them: categoricals as text (None when missing),
    counts as doubles (a JSON client may send 3.0, which an integer schema would refuse)."""
    X = X.copy()
    for column in X.columns:
        if isinstance(X[column].dtype, pd.CategoricalDtype):
            X[column] = X[column].astype("object").where(X[column].notna(), None)
        elif pd.api.types.is_integer_dtype(X[column]) or pd.api.types.is_bool_dtype(X[column]):
            X[column] = X[column].astype("float64")
    return X


class PortraitModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.estimator = joblib.load(context.artifacts["estimator"])
        with open(context.artifacts["meta"]) as handle:
            self.meta = json.load(handle)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        scores = task_for_label(self.meta["label"]).predict(self.estimator, frame)
        return pd.DataFrame({"score": scores}, index=frame.index)


@dataclass
class StoredFit:
    """A fitted persona model with its stable ids and names (what a refit or a scorer needs)."""

    model: object  # models.personas.PersonaModel
    names: dict[int, str]
    cluster_to_persona: dict[int, int]

    def assign(self, features: pd.DataFrame) -> pd.DataFrame:
        clusters = self.model.predict(features)
        ids = [self.cluster_to_persona[int(c)] for c in clusters]
        return pd.DataFrame({"persona_id": ids, "persona_name": [self.names[i] for i in ids]}, index=features.index)


class PersonaPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.fit = joblib.load(context.artifacts["persona_fit"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.fit.assign(pd.DataFrame(model_input))
