"""Training end to end on small synthetic data, with one MLflow store for the session."""

import datetime as dt
import re
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from models.pyfunc import serving_frame
from portrait.errors import ConfigError, PortraitError
from training.config import LabelSpec, ValidationSpec, parse_experiment
from training.data import prepare
from training.evaluate import fit_and_evaluate
from training.registry import promote
from training.train import train_experiment

FAST = {"n_estimators": 150, "learning_rate": 0.1, "early_stopping_rounds": 20, "min_child_samples": 20}


def experiment(data_path, **overrides):
    raw = {
        "name": "synthetic_repurchase_30d",
        "data": {"path": str(data_path)},
        "cutoffs": {"rule": "monthly", "count": 3},
        "label": {"kind": "repurchase", "horizon_days": 30},
        "model": FAST,
        "validation": {"folds": 2},  # a cross-fit over two folds of customers keeps the tests fast
    }
    raw.update(overrides)
    return parse_experiment(raw)


@pytest.fixture(scope="session")
def prepared(small_synthetic):
    config = experiment(small_synthetic)
    return config, prepare(config)


@pytest.fixture(scope="session")
def trained(tracking, prepared):
    config, data = prepared
    return config, data, train_experiment(config, data=data)


def test_cutoffs_are_split_in_time_with_no_holdout_rows_in_training(prepared):
    config, data = prepared
    split = data.split
    assert split.holdout == dt.date(2024, 12, 1)
    assert split.validation is None
    assert split.train == (dt.date(2024, 9, 1), dt.date(2024, 10, 1), dt.date(2024, 11, 1))
    assert split.validation_cutoffs == split.train  # the latest 3 (the default) are all 3 here
    train_cutoffs = set(data.train_rows["cutoff"].dt.date)
    assert split.holdout not in train_cutoffs
    assert max(train_cutoffs) + dt.timedelta(days=30) <= split.holdout


def test_the_drift_reference_is_the_latest_training_cutoffs_population(trained):
    """Pooled over every training cutoff, tenure and lifetime counts were lower than at any later
    date and every refresh flagged them, even right after a retraining (a user's test)."""
    from models.drift import reference_distributions
    from portrait.tracking import load_version

    config, data, summary = trained
    _, card = load_version(config.name, summary.model_version)
    latest = data.X(data.rows(data.split.train[-1]))
    assert (
        card["reference"]["days_since_first_purchase"] == reference_distributions(latest)["days_since_first_purchase"]
    )
    pooled = reference_distributions(data.X(data.train_rows))["days_since_first_purchase"]
    assert card["reference"]["days_since_first_purchase"]["edges"] != pooled["edges"]


def test_history_features_are_computed_per_cutoff(prepared):
    from models.history import HISTORY_FEATURES, population_history

    _, data = prepared
    assert data.history_columns == list(HISTORY_FEATURES)
    assert not set(HISTORY_FEATURES) & set(data.feature_columns)  # serving builds catalogue features only
    rows = data.rows(dt.date(2024, 10, 1))
    alone, _ = population_history(rows[data.feature_columns], 30)
    pd.testing.assert_frame_equal(rows[list(HISTORY_FEATURES)], alone)


def test_sufficiency_gate_says_what_is_missing(small_synthetic):
    config = experiment(small_synthetic)
    strict = replace(config, validation=ValidationSpec(min_positives=10**6))
    with pytest.raises(
        PortraitError,
        match=r"not enough data to train .*positives \(need 1000000\).*; the minimums are min_positives and "
        r"min_negatives in the experiment's \[validation\]",
    ):
        prepare(strict)


def test_same_config_and_data_give_the_same_metrics(prepared):
    config, data = prepared
    config = replace(config, model_type="lightgbm")
    first = fit_and_evaluate(config, data).metrics
    second = fit_and_evaluate(config, data).metrics
    assert first == second


def test_model_beats_chance_and_calibration_is_reported(trained):
    _, _, summary = trained
    m = summary.metrics
    assert m["holdout_roc_auc"] > 0.7
    # every candidate was fitted and judged; the chosen one is no worse than any peer on validation
    assert set(summary.candidates) == {"lightgbm", "logistic", "bgnbd", "bgnbd_expected", "rfm", "blend"}
    chosen = summary.candidates[summary.model_type]["validation_roc_auc"]
    assert chosen == max(c["validation_roc_auc"] for c in summary.candidates.values())
    assert chosen >= max(m[f"baseline_{p}_validation_roc_auc"] for p in ("rfm", "bgnbd", "bgnbd_expected"))
    assert m["validation_roc_auc_margin_over_best_peer"] >= 0
    # calibration measured on the rows the calibration was fitted on is no measure: holdout only
    assert "validation_pr_auc" in m and "holdout_ece" in m
    assert not [k for k in m if k.startswith("validation_") and k.endswith(("_ece", "_brier", "_log_loss"))]
    for name in (
        "holdout_pr_auc",
        "holdout_log_loss",
        "holdout_brier",
        "holdout_lift_at_10pct",
        "holdout_ece",
        "holdout_ece_uncalibrated",
        "baseline_rfm_holdout_roc_auc",
        "baseline_bgnbd_holdout_roc_auc",
        "baseline_bgnbd_holdout_lift_at_10pct",
        "holdout_roc_auc_margin_over_best_peer",
        "holdout_roc_auc_margin_ci_low",
        "holdout_roc_auc_margin_ci_high",
    ):
        assert name in m


def test_run_has_every_artifact_and_the_candidate_alias(trained):
    config, _, summary = trained
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "report")}
    assert {
        "report/gains_chart.png",
        "report/calibration_curve.png",
        "report/feature_importance.png",
        "report/shap_importance.csv",
    } <= artifacts
    assert str(client.get_model_version_by_alias(config.name, "candidate").version) == summary.model_version
    run = client.get_run(summary.run_id)
    assert run.data.params["holdout_cutoff"] == "2024-12-01"
    assert run.data.tags["dataset_fingerprint"]
    # the peer's BG/NBD parameters, which a data scientist compares with their own fit
    assert re.match(
        r"fitted on the history before the holdout cutoff \(weeks\): r [0-9.e+-]+, alpha [0-9.e+-]+, a [0-9.e+-]+, b ",
        run.data.tags["peer_bgnbd_notes"],
    )


def test_pyfunc_returns_calibrated_probabilities_not_labels(trained):
    config, data, summary = trained
    model = mlflow.pyfunc.load_model(f"models:/{config.name}@candidate")
    holdout = data.X(data.rows(data.split.holdout)).head(300)
    scores = model.predict(serving_frame(holdout))["score"].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert len(np.unique(scores)) > 2  # probabilities, not 0/1 labels
    estimator = model.unwrap_python_model().estimator
    np.testing.assert_allclose(scores, estimator.predict_proba(holdout)[:, 1])


def test_model_meta_stores_each_feature_meaning_for_reasons(trained):
    config, data, _ = trained
    meta = mlflow.pyfunc.load_model(f"models:/{config.name}@candidate").unwrap_python_model().meta
    assert data.meanings["orders_90d"].label == "orders in the last 90 days"
    assert set(meta["meanings"]) <= set(data.feature_columns)
    assert meta["meanings"]["spend_90d"] == {
        "family": "windows",
        "window": 90,
        "scale": "money",
        "unit": "currency",
        "label": "spend in the last 90 days",
        "measure": "spend",
        "subject": None,
        "value": None,
        "per": None,
        "aspect": "volume",
    }
    shares = [m for m in meta["meanings"].values() if m["measure"] == "category_share" and m["value"]]
    assert shares and all(m["value"] in data.vocabulary.categories for m in shares)


def test_promotion_moves_champion_only_when_at_least_as_good(trained, prepared):
    config, data, first = trained
    assert "is now champion" in promote(config.name).sentence()
    worse = replace(
        config,
        model_type="lightgbm",
        model_params={**config.model_params, "n_estimators": 1, "num_leaves": 2, "early_stopping_rounds": None},
    )
    second = train_experiment(worse, data=data)
    assert second.metrics["holdout_roc_auc"] < first.metrics["holdout_roc_auc"]
    # the champion judged on this run's holdout: the same window as its own, so its own figure back
    assert second.champion.version == first.model_version
    assert second.champion.champion_value == pytest.approx(first.metrics["holdout_roc_auc"], abs=1e-12)
    assert second.champion.margin == pytest.approx(
        second.metrics["holdout_roc_auc"] - first.metrics["holdout_roc_auc"], abs=1e-12
    )
    with pytest.raises(
        PortraitError, match=r"refusing to promote .* below champion v\d+'s .* on the candidate's holdout"
    ):
        promote(config.name)
    forced = promote(config.name, force=True)
    assert forced.forced and forced.version == second.model_version
    again = promote(config.name)  # a retried promote: nothing changes, and it is no error
    assert again.unchanged and again.version == second.model_version
    assert again.sentence() == f"{config.name} v{second.model_version} is already the champion (holdout_roc_auc " + (
        f"{second.metrics['holdout_roc_auc']:.4f}); nothing changed"
    )


def test_the_champion_is_judged_on_the_candidates_holdout_not_on_its_own(tracking, prepared, small_synthetic):
    from sklearn.metrics import roc_auc_score

    from portrait.dataset import open_dataset
    from serving.registry import load_model
    from serving.score import build_model_features, predict_scores

    config, data = prepared  # holdout 2024-12-01
    name = "synthetic_champion_window"
    # an earlier champion, with other feature settings: its features are rebuilt its own way
    early = replace(
        experiment(
            small_synthetic,
            cutoffs={"dates": ["2024-09-01", "2024-11-01"]},
            features={"exclude_families": ["timing"], "behaviour_window": 30},
        ),
        name=name,
    )
    early_data = prepare(early)  # trained twice: once before the later champion, once after
    first = train_experiment(early, data=early_data)
    assert first.holdout_cutoff == dt.date(2024, 11, 1) and first.champion is None
    promote(name)
    later = train_experiment(replace(config, name=name), data=data)
    judged = later.champion
    assert judged.version == first.model_version and judged.holdout == dt.date(2024, 12, 1)
    # what scoring the champion as of 2024-12-01 gives, on the run's holdout customers and labels
    champion = load_model(name, "champion")
    features = build_model_features(open_dataset(small_synthetic), dt.date(2024, 12, 1), [champion])[name]
    holdout = data.rows(data.split.holdout)
    scores = pd.Series(predict_scores(champion, features), index=features["customer_id"]).loc[holdout["customer_id"]]
    assert judged.champion_value == pytest.approx(roc_auc_score(data.y(holdout), scores), abs=1e-12)
    assert judged.champion_value != pytest.approx(first.metrics["holdout_roc_auc"], abs=1e-4)  # another window
    run = MlflowClient().get_run(later.run_id).data
    assert run.metrics["champion_holdout_roc_auc"] == judged.champion_value
    assert run.tags["champion_compared_version"] == first.model_version
    if later.metrics["holdout_roc_auc"] >= judged.champion_value:
        assert "both on the candidate's holdout of 2024-12-01" in promote(name).sentence()
    else:
        promote(name, force=True)
    # a candidate of an older window than the champion's is not judged against it, nor promoted over it
    older = train_experiment(early, data=early_data)
    assert older.champion is None
    assert any(
        "learned from outcomes until 2024-12-01, after this holdout's cutoff 2024-11-01" in n for n in older.notes
    )
    with pytest.raises(
        PortraitError, match=r"measured on the holdout of 2024-11-01 and champion v\d+'s on that of 2024-12-01"
    ):
        promote(name)


def test_tune_trial_zero_is_the_experiments_own_parameters_and_completes(tracking, prepared, tmp_path):
    import optuna

    from training.tune import tune_experiment

    config, data = prepared
    config = replace(config, name="synthetic_tune")  # its own registered model
    summary = tune_experiment(config, trials=1, data=data, workdir=tmp_path)
    from training.tune import study_name

    metric = config.label.task.tuning_metric
    name = study_name(config, metric, data.dataset_fingerprint)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    # an edited experiment (another horizon), or the data set's files changed, would not resume these trials
    other = replace(config, label=replace(config.label, horizon_days=config.label.horizon_days + 1))
    assert name.startswith("synthetic_tune-") and study_name(other, metric, data.dataset_fingerprint) != name
    assert study_name(config, metric, "another fingerprint") != name
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    # the defaults with the experiment's [model] values (FAST), and LightGBM's reg_alpha = 0
    assert trial.params == {
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_child_samples": 20,
        "colsample_bytree": 0.5,
        "subsample": 0.8,
        "reg_lambda": 5.0,
        "reg_alpha": 0.0,
    }
    assert summary.default_value == trial.value == summary.best_value
    # what a trial's figure is, since it is not train's validation figure (a user compared the two)
    assert summary.metric == metric
    rows = re.fullmatch(
        rf"one fit per trial, judged on the {config.validation.customers:.0%} of customers held out at the latest "
        r"training cutoffs \(([0-9,]+) rows\)",
        summary.scored_on,
    )
    assert rows and int(rows.group(1).replace(",", "")) > 0


def _versions(trained, name: str, runs: list[tuple[dict, dict, dict]]) -> list[str]:
    """Versions of a new registered model ``name`` (the trained model's artifact), one per
    ``(tags, params, metrics)`` of a run logged for it."""
    config, _, first = trained
    client = MlflowClient()
    source = client.get_model_version(config.name, first.model_version).source
    client.create_registered_model(name)
    versions = []
    for tags, params, metrics in runs:
        with mlflow.start_run() as run:
            mlflow.set_tags(tags)
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
        versions.append(client.create_model_version(name, source, run_id=run.info.run_id).version)
    return versions


def test_promote_refuses_to_compare_versions_of_different_data_sets(trained):
    name = "synthetic_two_datasets"
    versions = _versions(
        trained,
        name,
        [
            ({"dataset": shop, "headline_metric": "holdout_roc_auc"}, {}, {"holdout_roc_auc": auc})
            for shop, auc in (("shop_a", 0.70), ("shop_b", 0.90))
        ],
    )
    promote(name, version=versions[0])
    with pytest.raises(PortraitError, match=r"trained on the data set 'shop_b' and champion v1 on 'shop_a'"):
        promote(name, version=versions[1])
    forced = promote(name, version=versions[1], force=True)
    assert forced.forced and "trained on 'shop_b', the previous champion on 'shop_a'" in forced.sentence()


def test_promote_compares_the_registered_models_own_figure_of_a_fold_experiment(trained):
    """Folds of customers that chose different candidates log the mixture's figure as the headline
    and the registered model's own as registered_candidate_*: a promotion compares the models
    that would serve (v1's registered model 0.7708 against v2's 0.7724, not v1's mixture 0.7731)."""
    name = "synthetic_fold_mixture"
    tags = {"dataset": "shop", "headline_metric": "holdout_roc_auc"}
    versions = _versions(
        trained,
        name,
        [
            (tags, {}, {"holdout_roc_auc": 0.7731, "registered_candidate_holdout_roc_auc": 0.7708}),
            (tags, {}, {"holdout_roc_auc": 0.7724}),
        ],
    )
    promote(name, version=versions[0])
    promoted = promote(name, version=versions[1])
    assert (promoted.candidate_value, promoted.champion_value) == (0.7724, 0.7708)


def test_promote_says_a_registry_it_cannot_reach_is_unreachable_not_that_the_model_is_missing(monkeypatch):
    """A server down was "no registered model named ...; train it first" (a user's test)."""
    from mlflow.exceptions import MlflowException

    from portrait.errors import Unavailable
    from training import registry

    class Unreachable:
        def get_registered_model(self, name):
            raise MlflowException("API request to http://127.0.0.1:9 failed: Connection refused")

    monkeypatch.setattr(registry, "MlflowClient", Unreachable)
    with pytest.raises(Unavailable, match="cannot read the model registry at .*: API request to .* Connection refused"):
        registry.promote("repurchase_90d")


def test_lightgbm_stopping_on_a_model_value_is_one_message_naming_the_experiment(tracking, prepared):
    """device_type = "gpu" on a machine without OpenCL: a LightGBMError traceback (a user's test)."""
    config, data = prepared
    config = replace(config, model_type="lightgbm", model_params={**config.model_params, "device_type": "gpu"})
    with pytest.raises(
        ConfigError, match=rf"^{config.name}: LightGBM stopped while fitting: .+ \(check the \[model\] values\)$"
    ):
        train_experiment(config, data=data)


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns"])
def test_a_folder_tracking_uri_is_refused_before_any_work(prepared, monkeypatch, uri):
    """MLflow 3 refuses to write a folder store: train fitted, then stopped with a traceback;
    promote, a reader, gave the same traceback (a user's test)."""
    import training.train as train_module
    from portrait.tracking import require_store
    from training.train import train_experiment

    config, _ = prepared
    monkeypatch.setattr(train_module, "prepare", lambda *a, **k: pytest.fail("the data was read"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(PortraitError, match=rf"MLFLOW_TRACKING_URI={uri} is a folder store, which MLflow 3 keeps"):
            train_experiment(config)
        with pytest.raises(PortraitError, match="is a folder store"):
            require_store()  # what promote and every reader of the registry check first
    finally:
        mlflow.set_tracking_uri(previous)


def test_promote_refuses_a_version_that_predicts_something_else(trained):
    # A spend model trained under a classifier's name: its Gini 0.88 is not "better" than AUC 0.80.
    name = "synthetic_two_labels"
    versions = _versions(
        trained,
        name,
        [
            ({"dataset": "shop", "headline_metric": metric}, {"label": label, "horizon_days": 90}, {metric: value})
            for label, metric, value in (
                ("repurchase", "holdout_roc_auc", 0.80),
                ("future_spend", "holdout_gini", 0.88),
            )
        ],
    )
    promote(name, version=versions[0])
    with pytest.raises(
        PortraitError, match=r"it predicts future_spend over 90 days \(holdout_gini\) and champion v1 repurchase"
    ):
        promote(name, version=versions[1])
    forced = promote(name, version=versions[1], force=True)
    assert forced.version == str(versions[1]) and forced.forced


def test_persona_commands_refuse_the_name_of_a_propensity_model(trained, tmp_path):
    from training.personas import PersonaConfig, _require_personas_name, run_persona_fit, show_personas

    config, _, _ = trained
    with pytest.raises(PortraitError, match=rf"{config.name} v\d+ \(candidate\) is not a persona model"):
        show_personas(config.name, "candidate", tmp_path)  # was an MlflowException traceback
    with pytest.raises(
        PortraitError, match=rf"'{config.name}' is the name of a registered model that is not a persona"
    ):
        _require_personas_name(config.name)
    # before anything is read or fitted (it failed after the whole fit, naming an internal path)
    with pytest.raises(PortraitError, match="is not a persona model"):
        run_persona_fit(PersonaConfig(config.name, str(tmp_path / "no data needed: the name comes first")))


def test_more_folds_than_validation_customers_is_an_error_not_a_lightgbm_traceback(prepared):
    config, data = prepared
    customers = data.train_rows["customer_id"].nunique()
    config = replace(config, validation=replace(config.validation, folds=customers + 10))
    with pytest.raises(PortraitError, match=r"\[validation\] folds = \d+ leaves \d+ fold\(s\) without validation rows"):
        fit_and_evaluate(config, data)


def test_a_validation_fold_of_one_class_is_an_error_not_a_calibration_traceback(prepared):
    """A top-10% label on a small shop left a fold's latest rows without a buyer: the
    calibration stopped with "y_valid must hold two classes" and a traceback."""
    from training.splits import customer_folds

    config, data = prepared
    rows = data.train_rows
    k, seed = config.validation.folds, int(config.model_params.get("random_state", 42))
    fold = customer_folds(rows["customer_id"], k, seed)
    latest = rows["cutoff"].isin([pd.Timestamp(c) for c in data.split.validation_cutoffs]).to_numpy()
    frame = data.frame.copy()
    at = frame.index.isin(rows.index[latest & (fold != 0)])
    frame.loc[at, data.target] = 0  # nobody with the label in folds 1.. at the latest cutoffs
    with pytest.raises(PortraitError, match=rf"\[validation\] folds = {k}: {k - 1} fold\(s\) .* one class only"):
        fit_and_evaluate(config, replace(data, frame=frame))


def test_a_blend_experiment_trains_on_the_time_scheme(prepared):
    # [model] type = "blend": each fold fits its LightGBM, the blend is made of their average
    # (it used to stop with "max() arg is an empty sequence" in every fold)
    config, data = prepared
    result = fit_and_evaluate(replace(config, model_type="blend"), data)
    assert set(result.candidates) == {"lightgbm", "blend"}
    assert result.model_type in ("lightgbm", "blend")
    assert np.isfinite(result.metrics["holdout_roc_auc"])


def test_promote_tells_apart_data_sets_of_one_folder_name_and_high_value_quantiles(trained):
    name = "synthetic_two_places"
    versions = _versions(
        trained,
        name,
        [
            (
                {"dataset": "data", "dataset_path": place, "headline_metric": "holdout_roc_auc"},
                {},
                {"holdout_roc_auc": auc},
            )
            for place, auc in (("/shops/a/data", 0.70), ("/shops/b/data", 0.90))
        ],
    )
    promote(name, version=versions[0])
    with pytest.raises(PortraitError, match=r"'data \(/shops/b/data\)' and champion v1 on 'data \(/shops/a/data\)'"):
        promote(name, version=versions[1])
    name = "synthetic_two_quantiles"
    versions = _versions(
        trained,
        name,
        [
            (
                {"dataset": "shop", "headline_metric": "holdout_roc_auc"},
                {"label": "high_value", "horizon_days": 30, "high_value_quantile": quantile},
                {"holdout_roc_auc": auc},
            )
            for quantile, auc in ((0.8, 0.85), (0.95, 0.92))
        ],
    )
    promote(name, version=versions[0])
    with pytest.raises(
        PortraitError, match=r"predicts high_value \(quantile 0.95\) over 30 days .* high_value \(quantile 0.8\)"
    ):
        promote(name, version=versions[1])


def test_tuning_a_customer_fold_experiment_tunes_within_each_fold_on_its_training_customers_alone(
    tracking, small_synthetic, tmp_path, monkeypatch
):
    """Its trials were judged on a split of the holdout cutoff's own customers, whose out-of-fold
    scores make the holdout figure: optimistic by the choice of parameters. Now each outer fold is
    scored by a model tuned on the other folds' customers alone (nested), the registered model's
    parameters tuned on every customer."""
    import optuna

    from training import tune
    from training.evaluate import check_customer_folds

    config = experiment(
        small_synthetic,
        name="synthetic_tune_folds",
        cutoffs={"dates": ["2024-12-01"]},
        validation={"scheme": "customer_kfold", "folds": 2},
    )
    data = prepare(config)
    seen = []
    split = tune._customer_split
    monkeypatch.setattr(
        tune, "_customer_split", lambda c, X, y, what: seen.append((what, X.index)) or split(c, X, y, what)
    )
    summary = tune.tune_experiment(config, trials=1, data=data, workdir=tmp_path)
    rows = data.rows(data.split.holdout)
    X, y = data.model_X(rows), data.y(rows)
    folds = list(check_customer_folds(config, X, y).split(X, y))
    assert [what for what, _ in seen] == ["to tune:", "to tune within fold 1:", "to tune within fold 2:"]
    for (_, index), (train_index, test_index) in zip(seen[1:], folds, strict=True):
        assert set(index) == set(X.index[train_index]) and not set(index) & set(X.index[test_index])
    assert sorted(summary.fold_values) == [1, 2] and all(0.5 < v <= 1 for v in summary.fold_values.values())
    assert "the holdout figure is nested: each of the 2 folds' customers is scored" in summary.scored_on
    name = tune.study_name(config, config.label.task.tuning_metric, data.dataset_fingerprint)
    for fold in (1, 2):
        study = optuna.load_study(study_name=f"{name}-fold{fold}", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        assert len(study.trials) == 1 and study.trials[0].user_attrs.get("default")
    run = MlflowClient().get_run(summary.final.run_id)
    assert run.data.tags["nested_tuning"] == "2 folds, 1 more trials each"


@pytest.mark.parametrize("model_type", ["logistic", "bgnbd", "rfm"])
def test_tune_refuses_a_model_type_whose_parameters_it_does_not_search(prepared, tmp_path, model_type):
    """A trial is a LightGBM fit: tuning a logistic experiment printed LightGBM's figures, then
    registered the same logistic model again (a user's test)."""
    from training.tune import tune_experiment

    config, data = prepared
    with pytest.raises(PortraitError, match=rf"tune searches LightGBM's parameters; \[model\] type = \"{model_type}\""):
        tune_experiment(replace(config, model_type=model_type), trials=1, data=data, workdir=tmp_path)


def test_a_pruned_trial_is_a_finished_run_tagged_pruned_not_a_failed_one(tracking, prepared, tmp_path, monkeypatch):
    import optuna

    import training.tune as tune

    def prune_at_once(trial):
        def callback(env) -> None:
            raise optuna.TrialPruned("pruned for the test")

        return callback

    monkeypatch.setattr(tune, "_pruning_callback", prune_at_once)
    config, data = prepared
    config = replace(config, name="synthetic_tune_pruned")
    with pytest.raises(PortraitError, match="no tuning trial of 'synthetic_tune_pruned' completed"):
        tune.tune_experiment(config, trials=1, data=data, workdir=tmp_path)
    runs = mlflow.search_runs(experiment_names=[config.name], filter_string="attributes.run_name = 'trial-0'")
    assert len(runs) == 1
    assert runs.loc[0, "status"] == "FINISHED" and runs.loc[0, "tags.state"] == "pruned"


def test_a_relative_labels_holdout_is_scored_at_its_share_as_batch_scoring_scores_it(prepared):
    # high value (the top 20% of the next 30 days' spend) on the same rows: every training
    # cutoff has 20% positives, so the holdout's probabilities are moved to a mean of 0.2 by one
    # logit offset (models.prior_shift), their order kept
    config, data = prepared
    hv_config = replace(config, label=LabelSpec("high_value", 30, 0.8))
    hv_data = replace(data, target="high_value")
    result = fit_and_evaluate(hv_config, hv_data)
    assert result.positive_share == pytest.approx(0.2)
    assert result.holdout_prediction.mean() == pytest.approx(0.2, abs=1e-9)
    assert np.isfinite(result.metrics["holdout_prior_shift_logit"])
    assert result.metrics["holdout_ece_before_shift"] >= 0
    for scores in result.candidate_predictions.values():
        assert scores.mean() == pytest.approx(0.2, abs=1e-9)


def test_the_peers_are_judged_when_the_model_leaves_their_families_out(small_synthetic):
    """The peers read the value features (RFM, BG/NBD): a model without that family was shown
    with no peer at all, and no margin."""
    from features.catalogue import describe

    config = experiment(
        small_synthetic,
        cutoffs={"rule": "monthly", "count": 2},
        features={"exclude_families": ["value", "attributes"]},
        model={**FAST, "type": "lightgbm"},
    )
    data = prepare(config)
    families = {meaning.family for meaning in describe(data.feature_columns).values()}
    assert "value" not in families and "orders_lifetime" not in data.feature_columns
    result = fit_and_evaluate(config, data)
    assert {"baseline_rfm_holdout_roc_auc", "baseline_bgnbd_holdout_roc_auc"} <= set(result.metrics)
    assert "holdout_roc_auc_margin_over_best_peer" in result.metrics


def test_customer_folds_say_the_registered_candidates_own_figure_when_folds_chose_others(prepared, monkeypatch):
    """With K folds of customers the model row scores each fold with that fold's own choice: a
    figure of the procedure. When folds chose other candidates than the registered one, its own
    out-of-fold figure and margin over the best peer are logged and said beside it."""
    import training.evaluate as evaluate

    config, _ = prepared
    y = np.array([0, 0, 1, 1])
    per_candidate = {"lightgbm": np.array([0.1, 0.6, 0.4, 0.9]), "logistic": np.array([0.1, 0.2, 0.8, 0.9])}
    monkeypatch.setattr(  # the peers' comparison, as baseline_metrics returns it for these scores
        evaluate,
        "baseline_metrics",
        lambda rows, y_, config_, prediction: (
            {
                "holdout_roc_auc_margin_over_best_peer": 0.0011,
                "holdout_roc_auc_margin_ci_low": -0.0015,
                "holdout_roc_auc_margin_ci_high": 0.0035,
            },
            {},
            [],
        ),
    )
    metrics: dict = {}
    note = evaluate._registered_candidate_note(
        config, None, y, "lightgbm", per_candidate, {"logistic": 3, "lightgbm": 2}, metrics
    )
    assert note == (
        "the model row scores each fold's customers with the candidate chosen in that fold (lightgbm in 2, "
        "logistic in 3): it judges the procedure. The registered lightgbm alone scored 0.7500 out of fold, "
        "+0.0011 over the best peer, 95% paired bootstrap interval [-0.0015, +0.0035]",
    )
    assert metrics["registered_candidate_holdout_roc_auc"] == 0.75  # 3 of 4 pairs ranked right
    assert metrics["registered_candidate_holdout_roc_auc_margin_ci_high"] == 0.0035
    # every fold chose the registered candidate: the model row is its own figure, nothing to add
    assert evaluate._registered_candidate_note(config, None, y, "lightgbm", per_candidate, {"lightgbm": 5}, {}) == ()
