"""The MLflow pyfunc model: everything serving needs to score, in one logged model.

It bundles the fitted estimator (joblib), the feature list and vocabulary the features were
built with, the label and horizon, feature descriptions for reasons, and the training
reference distributions for drift checks. ``predict`` returns probabilities (or predicted
spend), never class labels.
"""

from __future__ import annotations

import json

import joblib
import mlflow.pyfunc
import pandas as pd


class PortraitModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.estimator = joblib.load(context.artifacts["estimator"])
        with open(context.artifacts["meta"]) as handle:
            self.meta = json.load(handle)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if self.meta["label"] == "future_spend":
            scores = self.estimator.predict(frame)
        else:
            scores = self.estimator.predict_proba(frame)[:, 1]
        return pd.DataFrame({"score": scores}, index=frame.index)
