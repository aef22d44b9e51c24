"""LightGBM propensity (calibrated probabilities) and spend (Tweedie) models.

Both follow scikit-learn's estimator contract: ``__init__`` stores parameters and ``fit``
never changes them, ``fit`` returns ``self``, fitted attributes end in ``_``, and prediction
checks the model is fitted. ``fit(X, y, X_valid=..., y_valid=...)`` takes the validation set
as keywords: rows of customers held out of training (or later in time); the booster
early-stops on its log loss and the calibrator is fitted on it, never on the training rows.
Without one (in a ``Pipeline`` or ``cross_val_score``) a stratified ``validation_fraction`` of
the rows is held out.

With ``horizon_days`` the classifier adds the point-in-time history features (RFM ranks, BG/NBD
outputs: :mod:`models.history`) to its inputs, each cutoff of a stacked frame (``cutoff``
column) on its own; with ``monotone`` it constrains the features whose direction is known
(:data:`models.history.DIRECTIONS`: recency down, frequency up).
"""

from __future__ import annotations

import inspect
import os

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted

from models.calibration import SmoothedIsotonic
from models.history import DIRECTIONS, GROUP_COLUMN, HISTORY_FEATURES, HistoryFeatures, fold_contributions
from models.targets import binary_target, codes_in, numeric_target

_FIT_ONLY = ("early_stopping_rounds",)
# LightGBM 4.7 deprecates ``fit(eval_set=[(X, y)])`` for ``fit(eval_X=X, eval_y=y)``; the
# versions before it (pyproject allows 4.3) know only ``eval_set``.
_EVAL_XY = "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters
TIE_BREAK = 1e-6
DEFAULT_TWEEDIE_POWER = 1.3


# Trained with one thread (training.config), but a large batch predicts on every core: 1.9x
# faster on 100k rows with 2 threads on an idle 2-core machine. Small batches (the API's
# rows) stay on one thread, where starting OpenMP threads costs more than it saves.
PARALLEL_PREDICT_ROWS = 20_000


def prediction_threads(rows: int) -> int:
    return (os.cpu_count() or 1) if rows >= PARALLEL_PREDICT_ROWS else 1


def _booster_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in _FIT_ONLY}


def align_columns(X: pd.DataFrame, columns: list[str], categories: dict[str, list]) -> pd.DataFrame:
    """The model's columns in training order, categoricals recoded to the training categories
    (an unseen category becomes missing, as LightGBM expects)."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"the data lacks {len(missing)} feature(s) the model needs: {missing[:10]}")
    X = X[columns]  # a new frame (copy-on-write): recoding a column below leaves the caller's
    for column, values in categories.items():
        raw = X[column].astype("object")
        # an unseen value becomes missing here (pandas 4 refuses it in the constructor)
        X[column] = pd.Categorical(raw.where(raw.isin(values)), categories=values)
    return X


def numeric_matrix(frame: pd.DataFrame) -> np.ndarray:
    """``frame`` as the float64 matrix LightGBM makes of it: a categorical column as its codes
    (missing: NaN), every other column as floats (missing: NaN)."""
    matrix = np.empty(frame.shape, dtype=np.float64, order="F")  # a column is one write; LightGBM reads either order
    for j, column in enumerate(frame.columns):
        matrix[:, j] = _numeric_column(frame[column])
    return matrix


def _numeric_column(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.float64)
        codes[codes < 0] = np.nan
        return codes
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


class SharedInputs:
    """The booster matrix that the members of an average (a cross-fit's fold models) share for
    one frame: built once; a member whose history features differ (its own reference
    population) overwrites only those columns. Members predict one after the other."""

    def __init__(self):
        self.key = None
        self.matrix: np.ndarray | None = None


class _LightGBMBase(BaseEstimator):
    shares_inputs = True  # predicts with a SharedInputs (see _Averaged)

    def _booster_matrix(self, X: pd.DataFrame, shared: SharedInputs | None = None) -> np.ndarray:
        """The booster's input matrix for ``X``. With ``shared`` (the members of an average),
        the columns other than the history features are built once for all members."""
        check_is_fitted(self, "booster_")
        history = getattr(self, "history_", None)
        if shared is None or (history is not None and not history.against_reference(X)):
            return numeric_matrix(self._prepare(X))
        names = self.feature_names_
        key = (tuple(names), tuple((c, tuple(v)) for c, v in sorted(self.categories_.items())))
        if shared.key != key:
            shared.key, shared.matrix = None, np.empty((len(X), len(names)), dtype=np.float64, order="F")
            base = [c for c in names if c not in HISTORY_FEATURES]
            aligned = align_columns(X, base, self.categories_)
            for column in base:
                shared.matrix[:, names.index(column)] = _numeric_column(aligned[column])
            shared.key = key
        if history is not None:
            part = history.reference_history(X)
            for column in part.columns:
                if column in names:
                    shared.matrix[:, names.index(column)] = _numeric_column(part[column])
        return shared.matrix

    def _booster_input(self, X: pd.DataFrame) -> pd.DataFrame:
        history = getattr(self, "history_", None)
        if history is not None:
            X = history.transform(X)
        return X.drop(columns=[GROUP_COLUMN], errors="ignore")

    def _prepare_fit(self, X: pd.DataFrame) -> pd.DataFrame:
        self.input_features_ = [c for c in X.columns if c != GROUP_COLUMN and c not in HISTORY_FEATURES]
        X = self._booster_input(X)
        self.feature_names_ = list(X.columns)
        self.categories_ = {
            c: list(X[c].cat.categories) for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)
        }
        return align_columns(X, self.feature_names_, self.categories_)

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "booster_")
        return align_columns(self._booster_input(X), self.feature_names_, self.categories_)

    def _split_validation(self, X, y, X_valid, y_valid, stratify: bool):
        if (X_valid is None) != (y_valid is None):
            raise ValueError("give both X_valid and y_valid, or neither")
        if X_valid is not None:
            return X, np.asarray(y), X_valid, np.asarray(y_valid)
        y = np.asarray(y)
        X_fit, X_valid, y_fit, y_valid = train_test_split(
            X,
            y,
            test_size=self.validation_fraction,
            random_state=self.random_state,
            stratify=y if stratify else None,
        )
        return X_fit, y_fit, X_valid, y_valid

    def _fit_booster(self, estimator, X, y, X_valid, y_valid, params: dict):
        rounds = params.get("early_stopping_rounds")
        callbacks = [lgb.early_stopping(rounds, first_metric_only=True, verbose=False)] if rounds else []
        callbacks += list(getattr(self, "callbacks", None) or [])
        estimator.fit(X, y, callbacks=callbacks, **_validation_set(estimator, y, X_valid, y_valid))
        return estimator

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-row TreeSHAP contributions (raw score units), one column per input feature; a
        history feature's contribution is shared among the features it is computed from."""
        prepared = self._prepare(X)
        values = self.booster_.booster_.predict(prepared, pred_contrib=True)
        frame = pd.DataFrame(values[:, :-1], columns=self.feature_names_, index=prepared.index)
        inputs = getattr(self, "input_features_", self.feature_names_)
        return fold_contributions(frame, inputs) if list(inputs) != self.feature_names_ else frame

    @property
    def best_iteration_(self) -> int:
        check_is_fitted(self, "booster_")
        return int(self.booster_.best_iteration_ or self.booster_.n_estimators)


class PropensityClassifier(ClassifierMixin, _LightGBMBase):
    """``LGBMClassifier`` whose probabilities are calibrated on held-out validation rows."""

    def __init__(
        self,
        params: dict | None = None,
        calibration: str = "isotonic",
        callbacks=None,
        horizon_days: int | None = None,
        monotone: bool = False,
        validation_fraction: float = 0.2,
        random_state: int = 0,
    ):
        self.params = params
        self.calibration = calibration
        self.callbacks = callbacks
        self.horizon_days = horizon_days
        self.monotone = monotone
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y, X_valid: pd.DataFrame | None = None, y_valid=None) -> PropensityClassifier:
        if self.calibration not in ("isotonic", "sigmoid"):
            raise ValueError(f"calibration must be 'isotonic' or 'sigmoid', got {self.calibration!r}")
        y, classes = binary_target(y)
        y_valid = None if y_valid is None else codes_in(y_valid, classes)
        X, y, X_valid, y_valid = self._split_validation(X, y, X_valid, y_valid, stratify=True)
        params = _booster_params(dict(self.params or {}))
        params.setdefault("metric", "binary_logloss")  # early stopping on log loss, not AUC
        self.history_ = HistoryFeatures(self.horizon_days).fit(X) if self.horizon_days else None
        X = self._prepare_fit(X)
        X_valid = align_columns(self._booster_input(X_valid), self.feature_names_, self.categories_)
        if self.monotone:
            params["monotone_constraints"] = [DIRECTIONS.get(c, 0) for c in self.feature_names_]
        self.booster_ = self._fit_booster(lgb.LGBMClassifier(**params), X, y, X_valid, y_valid, dict(self.params or {}))
        self.classes_ = classes
        raw = self.booster_.predict_proba(X_valid)[:, 1]
        if self.calibration == "isotonic":
            self.calibrator_ = SmoothedIsotonic().fit(raw, y_valid)
        else:
            self.calibrator_ = LogisticRegression(C=1e6).fit(_logit(raw).reshape(-1, 1), y_valid)
        return self

    def predict_uncalibrated(self, X: pd.DataFrame, shared: SharedInputs | None = None) -> np.ndarray:
        # The Booster on the matrix: what LGBMClassifier.predict_proba gives for class 1, without
        # converting the frame again for each member of an average.
        matrix = self._booster_matrix(X, shared)
        return self.booster_.booster_.predict(matrix, num_threads=prediction_threads(len(X)))

    def predict_proba(self, X: pd.DataFrame, shared: SharedInputs | None = None) -> np.ndarray:
        raw = self.predict_uncalibrated(X, shared)
        if self.calibration == "isotonic":
            p = self.calibrator_.predict(raw)
        else:
            p = self.calibrator_.predict_proba(_logit(raw).reshape(-1, 1))[:, 1]
        # Isotonic calibration is a step function: a fifth of customers can share one value,
        # which would leave lists unordered within it. A one-in-a-million share of the raw score
        # keeps the order of the booster and moves no probability by more than 1e-6.
        p = (1 - TIE_BREAK) * np.clip(p, 0.0, 1.0) + TIE_BREAK * raw
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


class SpendRegressor(RegressorMixin, _LightGBMBase):
    """Tweedie ``LGBMRegressor`` for net spend over the horizon (predicted customer value)."""

    def __init__(
        self,
        params: dict | None = None,
        tweedie_variance_power: float | None = None,
        callbacks=None,
        validation_fraction: float = 0.2,
        random_state: int = 0,
    ):
        self.params = params
        self.tweedie_variance_power = tweedie_variance_power
        self.callbacks = callbacks
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y, X_valid: pd.DataFrame | None = None, y_valid=None) -> SpendRegressor:
        params = dict(self.params or {})
        # The power comes from the argument or from params (an experiment's [model] table);
        # the default only when neither gives it.
        given = params.get("tweedie_variance_power")
        if given is not None and self.tweedie_variance_power is not None and given != self.tweedie_variance_power:
            raise ValueError(
                f"tweedie_variance_power is given twice: {self.tweedie_variance_power} as the argument and "
                f"{given} in params"
            )
        power = next(v for v in (self.tweedie_variance_power, given, DEFAULT_TWEEDIE_POWER) if v is not None)
        if not 1 <= power < 2:
            raise ValueError(f"tweedie_variance_power must be in [1, 2), got {power}")
        y = numeric_target(y)
        y_valid = None if y_valid is None else numeric_target(y_valid, "y_valid")
        X, y, X_valid, y_valid = self._split_validation(X, y, X_valid, y_valid, stratify=False)
        self.history_ = None
        X = self._prepare_fit(X)
        X_valid = align_columns(self._booster_input(X_valid), self.feature_names_, self.categories_)
        booster = {**_booster_params(params), "objective": "tweedie", "tweedie_variance_power": power}
        # Tweedie needs non-negative targets: net refunds count as zero spend.
        y, y_valid = np.clip(np.asarray(y, float), 0, None), np.clip(np.asarray(y_valid, float), 0, None)
        self.booster_ = self._fit_booster(lgb.LGBMRegressor(**booster), X, y, X_valid, y_valid, params)
        return self

    def predict(self, X: pd.DataFrame, shared: SharedInputs | None = None) -> np.ndarray:
        matrix = self._booster_matrix(X, shared)
        return self.booster_.booster_.predict(matrix, num_threads=prediction_threads(len(X)))


def _validation_set(estimator, y, X_valid, y_valid) -> dict:
    """The booster's validation rows as its ``fit`` keywords. Through ``eval_set`` an
    ``LGBMClassifier`` label-encodes the validation labels as it does the training labels;
    through ``eval_y`` (LightGBM 4.7) it passes them on as given, so they are encoded here the
    same way (the identity for 0/1 labels)."""
    if not _EVAL_XY:
        return {"eval_set": [(X_valid, y_valid)]}
    if isinstance(estimator, lgb.LGBMClassifier):
        y_valid = LabelEncoder().fit(y).transform(y_valid)
    return {"eval_X": X_valid, "eval_y": y_valid}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
