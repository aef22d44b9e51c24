"""One contract for every model: the typed cards stored beside registered models (persona
cards, old-format persona cards still load), persona models registered through the one
registration helper, and LightGBM's validation set passed through its non-deprecated API."""

import datetime as dt
import warnings
from pathlib import Path

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


# What training/personas.py stored beside a persona model before the typed card (as of
# b626775), and what the first persona models stored (a4dcfee: no vocabulary, no feature_config).
OLD_PERSONA_META = {
    "label": "persona",
    "features": ["share_app", "orders_lifetime"],
    "families": ["value", "preferences"],
    "names": {"0": "Promotion hunters", "1": "Payday shoppers"},
    "vocabulary": {"channels": ["app", "store"]},
    "feature_config": {},
    "as_of": "2025-01-01",
}
FIRST_PERSONA_META = {
    "label": "persona",
    "features": ["share_app"],
    "families": ["value"],
    "names": {"0": "Browsers"},
    "as_of": "2024-06-01",
}


def test_persona_card_round_trips_through_json_with_ids_as_text():
    import json

    from models.task import CARD_VERSION, PERSONAS, PersonaCard

    card = PersonaCard(
        name="personas",
        features=["share_app"],
        families=["value"],
        names={0: "Browsers", 3: "Payday shoppers"},
        as_of="2025-01-01",
        vocabulary={"channels": ["app"]},
        metrics={"persona_stability": np.float64(0.91), "personas_distinguished": np.int64(2)},
    )
    stored = json.loads(card.to_json())
    assert stored["names"] == {"0": "Browsers", "3": "Payday shoppers"} == card.to_dict()["names"]
    assert stored["label"] == "persona" and stored["task"] == "personas" and stored["card_version"] == CARD_VERSION
    assert stored["headline_metric"] == PERSONAS.headline_metric == "persona_stability"
    assert stored["metrics"] == {"persona_stability": 0.91, "personas_distinguished": 2.0}
    back = PersonaCard.from_dict(stored)
    assert back == card and back.names == {0: "Browsers", 3: "Payday shoppers"}
    assert back.task_ is PERSONAS


@pytest.mark.parametrize("old", [OLD_PERSONA_META, FIRST_PERSONA_META], ids=["before-the-card", "first"])
def test_persona_cards_stored_before_the_typed_card_load_and_keep_their_shape(old):
    from models.task import PersonaCard

    card = PersonaCard.from_dict(dict(old))
    assert card.names == {int(k): v for k, v in old["names"].items()}
    assert card.name == "" and card.metrics == {} and card.headline_metric == "persona_stability"
    assert card.vocabulary == old.get("vocabulary", {}) and card.feature_config == {}
    again = card.to_dict()
    # Every key an old card had reads the same; what it lacked is filled, with values serving
    # treats as it treated the missing keys (no vocabulary, default feature settings).
    assert {k: again[k] for k in old} == old
    assert not again["vocabulary"] or "vocabulary" in old
    assert PersonaCard.from_dict(again) == card


def test_a_card_refuses_unknown_and_missing_keys_and_a_label_not_its_own():
    from models.task import ModelCard, PersonaCard

    with pytest.raises(ValueError, match=r"persona card: unknown keys \['colour'\]; known: \["):
        PersonaCard.from_dict({**OLD_PERSONA_META, "colour": "red"})
    with pytest.raises(ValueError, match=r"persona card: missing keys \['as_of', 'names'\]"):
        PersonaCard.from_dict({k: v for k, v in OLD_PERSONA_META.items() if k not in ("names", "as_of")})
    with pytest.raises(ValueError, match="persona card p: label 'repurchase', a persona card's is 'persona'"):
        PersonaCard.from_dict({**OLD_PERSONA_META, "name": "p", "label": "repurchase"})
    with pytest.raises(
        ValueError, match="headline metric 'holdout_roc_auc', the personas task's is 'persona_stability'"
    ):
        PersonaCard.from_dict({**OLD_PERSONA_META, "headline_metric": "holdout_roc_auc"})
    with pytest.raises(ValueError, match="names must map persona ids"):
        PersonaCard.from_dict({**OLD_PERSONA_META, "names": {"first": "Browsers"}})
    with pytest.raises(ValueError, match=r"model card: missing keys \['descriptions', 'families'"):
        ModelCard.from_dict({"name": "m", "label": "repurchase"})


@pytest.fixture(scope="module")
def persona_registrations(tracking, small_synthetic):
    """Two fits of one persona model, each registered through training.tracking.register_pyfunc
    (the calls recorded)."""
    import training.personas as personas
    import training.tracking

    calls = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return training.tracking.register_pyfunc(*args, **kwargs)

    config = personas.PersonaConfig("card_personas", str(small_synthetic), as_of=dt.date(2025, 1, 1), k=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(personas, "register_pyfunc", recording)
        first = personas.run_persona_fit(config)
        second = personas.run_persona_fit(config)
    return config, first, second, calls


def test_persona_models_register_through_the_shared_helper_with_a_typed_card(persona_registrations):
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from models.task import PersonaCard
    from serving.registry import load_model
    from training.train import CANDIDATE

    config, (fit, run_id, version), (refit, _, reversion), calls = persona_registrations
    assert [args[0] for args, _ in calls] == [config.name, config.name]
    assert [args[5] for args, _ in calls] == [CANDIDATE, CANDIDATE]
    assert (version, reversion) == ("1", "2")
    assert str(MlflowClient().get_model_version_by_alias(config.name, CANDIDATE).version) == "2"
    assert refit.names == fit.names and sorted(refit.changes["kept"]) == sorted(fit.names)  # ids carried over

    folder = mlflow.artifacts.download_artifacts(f"models:/{config.name}/1")
    stored = json.loads((Path(folder) / "artifacts" / "meta.json").read_text())
    card = PersonaCard.from_dict(stored)
    assert card.name == config.name and card.names == fit.names and card.as_of == "2025-01-01"
    # declared, not inferred (a subprocess per registration, which left lightgbm out)
    import lightgbm
    import sklearn

    requirements = (Path(folder) / "requirements.txt").read_text().split()
    assert f"lightgbm=={lightgbm.__version__}" in requirements
    assert f"scikit-learn=={sklearn.__version__}" in requirements
    assert any(line.startswith("mlflow==") for line in requirements)
    assert card.features == list(fit.model.feature_names_) and card.vocabulary
    assert MlflowClient().get_run(run_id).data.metrics["persona_stability"] == card.metrics["persona_stability"]

    loaded = load_model(config.name, CANDIDATE)
    assert loaded.is_personas and loaded.features == card.features and loaded.meta == stored
    assert loaded.estimator.assign(fit.features[loaded.features].head(3))["persona_name"].notna().all()


def test_a_persona_model_registered_with_the_old_meta_still_loads_and_assigns(persona_registrations, tmp_path):
    import json

    import joblib
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from models.pyfunc import PersonaPyfunc, StoredFit, serving_frame
    from serving.registry import load_model

    _, (fit, _, _), _, _ = persona_registrations
    name = "card_personas_old"
    stored = tmp_path / "persona_fit.joblib"
    joblib.dump(StoredFit(fit.model, fit.names, fit.cluster_to_persona), stored)
    old = {  # exactly what training/personas.py wrote before the typed card
        "label": "persona",
        "features": fit.model.feature_names_,
        "families": ["value", "windows"],
        "names": fit.names,
        "vocabulary": fit.features.attrs["vocabulary"],
        "feature_config": {},
        "as_of": "2025-01-01",
    }
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(old))
    example = serving_frame(fit.features[fit.model.feature_names_].head(5))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PersonaPyfunc(),
            artifacts={"persona_fit": str(stored), "meta": str(meta)},
            signature=infer_signature(example, pd.DataFrame({"persona_id": [0], "persona_name": ["x"]})),
            input_example=example,
            registered_model_name=name,
        )
    MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)

    loaded = load_model(name)
    as_stored = json.loads(json.dumps(old))
    assert {k: loaded.meta[k] for k in as_stored} == as_stored  # what readers read is unchanged
    assert loaded.meta["name"] == name and loaded.meta["headline_metric"] == "persona_stability"
    assert loaded.is_personas and loaded.features == list(fit.model.feature_names_)
    assigned = loaded.estimator.assign(fit.features[loaded.features])
    np.testing.assert_array_equal(assigned["persona_id"].to_numpy(), fit.labels)
