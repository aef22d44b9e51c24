"""One contract for every model: the typed cards stored beside registered models (persona
cards, old-format persona cards still load), persona models registered through the one
registration helper, and LightGBM's validation set passed through its non-deprecated API."""

import warnings

import numpy as np
import pandas as pd
import pytest

import models.propensity as propensity


def _small_frame(n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "orders_lifetime": rng.poisson(3, n).astype(float),
            "days_since_last_order": rng.integers(0, 400, n).astype(float),
            "spend_365d": rng.gamma(2, 50, n),
            "channel": pd.Categorical(rng.choice(["app", "store", "web"], n)),
        }
    )
    logit = 0.4 * X["orders_lifetime"] - 0.01 * X["days_since_last_order"] + rng.normal(0, 1, n)
    y = (logit > 0).astype(int).to_numpy()
    spend = np.where(y == 1, rng.gamma(2, 30, n), 0.0)
    return X, y, spend


def _fit_all(X, y, spend):
    params = {"n_estimators": 120, "learning_rate": 0.1, "early_stopping_rounds": 10}
    classifier = propensity.PropensityClassifier(params=params).fit(X, y)
    given = propensity.PropensityClassifier(params=params).fit(
        X.iloc[:1000], y[:1000], X_valid=X.iloc[1000:], y_valid=y[1000:]
    )
    spend_model = propensity.SpendRegressor(params=params).fit(X, spend)
    return (
        classifier.predict_proba(X)[:, 1],
        given.predict_proba(X)[:, 1],
        spend_model.predict(X),
        (classifier.best_iteration_, given.best_iteration_, spend_model.best_iteration_),
    )


@pytest.mark.skipif(not propensity._EVAL_XY, reason="this LightGBM knows only eval_set")
def test_lightgbm_validation_rows_go_through_eval_x_without_a_warning_and_the_same_models(monkeypatch):
    X, y, spend = _small_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deprecated eval_set would raise here
        current = _fit_all(X, y, spend)
    monkeypatch.setattr(propensity, "_EVAL_XY", False)  # the eval_set path (LightGBM < 4.7)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The argument 'eval_set' is deprecated")
        deprecated = _fit_all(X, y, spend)
    assert current[3] == deprecated[3]
    for new, old in zip(current[:3], deprecated[:3], strict=True):
        np.testing.assert_array_equal(new, old)


def test_classifier_validation_labels_are_encoded_as_lightgbm_encodes_the_training_labels():
    import lightgbm as lgb

    kwargs = propensity._validation_set(lgb.LGBMClassifier(), np.array([False, True]), "X", np.array([True, False]))
    if propensity._EVAL_XY:
        assert kwargs["eval_X"] == "X" and kwargs["eval_y"].tolist() == [1, 0]
    else:
        assert kwargs["eval_set"][0][0] == "X"
    regression = propensity._validation_set(lgb.LGBMRegressor(), np.array([0.5]), "X", np.array([2.5]))
    assert (regression.get("eval_y") if propensity._EVAL_XY else regression["eval_set"][0][1]).tolist() == [2.5]
