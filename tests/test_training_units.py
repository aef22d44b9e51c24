"""Pure pieces of training: config validation, time splits, metrics, baselines."""

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.config import FeatureConfig
from portrait.errors import ConfigError, PortraitError
from training.config import parse_experiment
from training.evaluate import Peer, peer_comparison, recent_spend, rfm_score
from training.metrics import (
    bootstrap_counts,
    expected_calibration_error,
    lift_and_capture,
    normalized_gini,
    paired_bootstrap_auc_margin,
    weighted_roc_auc,
)
from training.splits import (
    choose_split,
    customer_validation_split,
    explicit_split,
    holdout_cutoff,
    training_cutoffs,
)

BASE = {
    "name": "x",
    "data": {"path": "demo"},
    "cutoffs": {"rule": "monthly"},
    "label": {"kind": "repurchase", "horizon_days": 90},
}


def test_spaced_cutoffs_fit_as_many_as_end_before_the_holdout():
    from training.config import CutoffRule

    first, last = dt.date(2017, 1, 1), dt.date(2017, 12, 31)
    split = choose_split(CutoffRule(rule="spaced", spacing_days=14), "time", 90, first, last, validation_cutoffs=2)
    assert split.holdout == dt.date(2017, 10, 1)  # 10-01 + 89 days = 12-29 <= 12-31
    assert split.validation is None  # no separate later window
    # the last training cutoff's window [07-03, 10-01) ends the day before the holdout cutoff;
    # every 14 days back to the first with 28 days of history (01-29 or later: 01-30)
    assert split.train[-1] == dt.date(2017, 7, 3) and split.train[0] == dt.date(2017, 1, 30)
    assert len(split.train) == 12 and all(
        (b - a).days == 14 for a, b in zip(split.train[:-1], split.train[1:], strict=True)
    )
    assert split.validation_cutoffs == (dt.date(2017, 6, 19), dt.date(2017, 7, 3))
    for cutoff in split.train:
        assert cutoff + dt.timedelta(days=90) <= split.holdout


def test_monthly_and_counted_training_cutoffs():
    holdout = dt.date(2017, 10, 1)
    assert training_cutoffs(dt.date(2017, 1, 1), holdout, 90, "monthly", count=3) == (
        dt.date(2017, 5, 1),
        dt.date(2017, 6, 1),
        dt.date(2017, 7, 1),
    )
    assert training_cutoffs(dt.date(2017, 1, 1), holdout, 90, "spaced", 28, count=2) == (
        dt.date(2017, 6, 5),
        dt.date(2017, 7, 3),
    )


def test_spaced_cutoffs_without_a_count_are_the_latest_52_that_fit(caplog):
    """A placeholder line dated 1950 in a 2017 log: 1,749 cutoffs fit, 52 are taken (the latest,
    14 days apart); a count asks for more."""
    holdout = dt.date(2017, 10, 1)
    taken = training_cutoffs(dt.date(1950, 6, 1), holdout, 90)
    assert len(taken) == 52 and taken[-1] == dt.date(2017, 7, 3) and taken[0] == dt.date(2015, 7, 20)  # 51 x 14 days
    assert "1749 training cutoffs fit from 1950-06-29" in caplog.text and "the latest 52 are used" in caplog.text
    caplog.clear()
    assert len(training_cutoffs(dt.date(1950, 6, 1), holdout, 90, count=60)) == 60
    assert caplog.text == ""  # asked for: no warning


def test_the_holdout_cutoff_falls_on_a_month_start_a_monday_or_any_day():
    from training.config import CutoffRule

    # a 6.5-week log ending on Monday 2017-10-16, a 7-day horizon: the window must end by 10-16
    first, last = dt.date(2017, 9, 1), dt.date(2017, 10, 16)
    assert holdout_cutoff(last, 7) == dt.date(2017, 10, 1)  # a week and a half of labels unused
    assert holdout_cutoff(last, 7, "week") == dt.date(2017, 10, 9)  # Monday; 10-09 + 6 = 10-15
    assert holdout_cutoff(last, 7, "day") == dt.date(2017, 10, 10)  # 10-10 + 6 = 10-16
    split = choose_split(CutoffRule(rule="spaced", spacing_days=7, align="week"), "time", 7, first, last, 2)
    assert split.holdout == dt.date(2017, 10, 9)
    # its window [10-02, 10-09) ends before the holdout; 09-25 has under 28 days of history
    assert split.train == (dt.date(2017, 10, 2),)
    with pytest.raises(PortraitError, match="must be 'month', 'week' or 'day', got 'year'"):
        holdout_cutoff(last, 7, "year")
    with pytest.raises(
        ConfigError, match=r'\[cutoffs\]: align must be one of \["month", "week", "day"\], got "fortnight"'
    ):
        parse_experiment({**BASE, "cutoffs": {"rule": "spaced", "align": "fortnight"}})
    with pytest.raises(ConfigError, match="align goes with rule"):
        parse_experiment({**BASE, "cutoffs": {"dates": ["2017-06-01", "2017-10-01"], "align": "day"}})
    assert parse_experiment({**BASE, "cutoffs": {"rule": "spaced", "align": "day"}}).cutoffs.align == "day"


def test_history_too_short_for_the_horizon_is_refused():
    from training.config import CutoffRule

    with pytest.raises(PortraitError, match=r"too short for a 300-day horizon.*or list the cutoffs yourself"):
        choose_split(CutoffRule(rule="spaced"), "time", 300, dt.date(2017, 1, 1), dt.date(2017, 12, 31))


def test_validation_holds_customers_out_of_every_training_cutoff():
    cutoffs = pd.to_datetime(["2017-01-02", "2017-01-16", "2017-01-30"])
    rows = pd.DataFrame({"customer_id": np.repeat([f"c{i}" for i in range(8)], 3), "cutoff": np.tile(cutoffs, 8)})
    fit, valid = customer_validation_split(rows, (dt.date(2017, 1, 30),), share=0.25, seed=0)
    held = set(rows.loc[valid, "customer_id"])
    assert len(held) == 2  # a quarter of 8 customers
    assert set(rows.loc[valid, "cutoff"]) == {pd.Timestamp("2017-01-30")}  # validation at the latest cutoff
    assert held.isdisjoint(rows.loc[fit, "customer_id"])  # no row of theirs in training, at any cutoff
    assert fit.sum() == 6 * 3 and not (fit & valid).any()


def test_explicit_cutoffs_whose_label_windows_overlap_are_refused():
    dates = (dt.date(2017, 3, 1), dt.date(2017, 5, 1), dt.date(2017, 7, 1))
    with pytest.raises(PortraitError, match="let label windows overlap"):
        explicit_split(dates, 90, "time")
    split = explicit_split((dt.date(2017, 3, 1), dt.date(2017, 4, 1), dt.date(2017, 7, 1)), 90, "time")
    assert split.train == (dt.date(2017, 3, 1), dt.date(2017, 4, 1)) and split.holdout == dt.date(2017, 7, 1)


def test_cutoffs_the_data_cannot_hold_are_said_with_the_file_and_key(tmp_path):
    from training.data import prepare

    data = tmp_path / "data"
    data.mkdir()
    (data / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount\no1,a,2017-01-05,1\no2,b,2017-02-06,2\no3,a,2017-03-20,3\n"
    )
    config = parse_experiment(
        {
            **BASE,
            "data": {"path": str(data)},
            "cutoffs": {"dates": ["2017-01-20", "2017-03-01"]},
            "label": {"kind": "repurchase", "horizon_days": 30},
        },
        where="exp/x.toml",
    )
    with pytest.raises(
        ConfigError,
        match=r"^x \[cutoffs\] \(dates\): the holdout cutoff 2017-03-01 needs data until 2017-03-30, but the data ends",
    ):
        prepare(config)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown keys \['lable'\]"):
        parse_experiment({**BASE, "lable": {}})
    with pytest.raises(ConfigError, match=r"^experiment: description must be text, got 5$"):  # was stored as "5"
        parse_experiment({**BASE, "description": 5})
    spend = {**BASE, "label": {"kind": "future_spend", "horizon_days": 90}}
    with pytest.raises(ConfigError, match=r"calibration goes with a probability model .*a future_spend model predicts"):
        parse_experiment({**spend, "validation": {"calibration": "sigmoid"}})  # was ignored without a word
    with pytest.raises(
        ConfigError,
        match=r"objective is set by the label\'s task: a future_spend model is fitted with LightGBM\'s tweedie",
    ):
        parse_experiment({**spend, "model": {"objective": "regression"}})  # was overwritten without a word
    with pytest.raises(ConfigError, match=r"metric .* must be a regression metric"):
        parse_experiment({**spend, "model": {"metric": "auc"}})
    assert parse_experiment({**spend, "model": {"metric": "l2"}}).model_params["metric"] == "l2"
    assert parse_experiment({**BASE, "model": {"metric": "auc"}}).model_params["metric"] == "auc"
    # LightGBM's comma-separated metrics; the seed of the folds, read by every model type
    assert parse_experiment({**BASE, "model": {"metric": "auc,binary_logloss"}}).model_params["metric"] == (
        "auc,binary_logloss"
    )
    for model_type in ("rfm", "logistic", "bgnbd"):
        seeded = parse_experiment({**BASE, "model": {"type": model_type, "random_state": 7, "n_jobs": 1}})
        assert seeded.model_params["random_state"] == 7, model_type
    with pytest.raises(ConfigError, match="kind must be one of"):
        parse_experiment({**BASE, "label": {"kind": "churn", "horizon_days": 90}})
    with pytest.raises(ConfigError, match='horizon_days must be a whole number from 1 to 3,660, got "90"'):
        parse_experiment({**BASE, "label": {"kind": "repurchase", "horizon_days": "90"}})
    with pytest.raises(ConfigError, match=r"unknown families \['mood'\]"):
        parse_experiment({**BASE, "features": {"exclude_families": ["mood"]}})
    # an unknown key lists the keys [features] takes, the two family keys among them (left out before)
    with pytest.raises(ConfigError, match=r"unknown feature settings \['families'\]; known: \[.*'exclude_families', "):
        parse_experiment({**BASE, "features": {"families": ["value"]}})
    with pytest.raises(ConfigError, match="either rule"):
        parse_experiment({**BASE, "cutoffs": {"rule": "monthly", "dates": ["2017-01-01"]}})
    with pytest.raises(ConfigError, match=r'rule must be one of \["spaced", "monthly"\], got "weekly"'):
        parse_experiment({**BASE, "cutoffs": {"rule": "weekly"}})
    with pytest.raises(ConfigError, match='spacing_days goes with rule = "spaced"'):
        parse_experiment({**BASE, "cutoffs": {"rule": "monthly", "spacing_days": 7}})
    with pytest.raises(ConfigError, match="spacing_days must be a positive integer, got 0"):
        parse_experiment({**BASE, "cutoffs": {"rule": "spaced", "spacing_days": 0}})
    # said with the file's own settings (a user's test: "cutoffs repeat: [...]" named no setting)
    with pytest.raises(ConfigError, match=r'^experiment: name = "\.\.\." is required'):
        parse_experiment({k: v for k, v in BASE.items() if k != "name"})
    with pytest.raises(ConfigError, match=r'\[cutoffs\]: dates repeat \["2017-01-01"\]: give each cutoff once'):
        parse_experiment({**BASE, "cutoffs": {"dates": ["2017-01-01", "2017-01-01", "2017-03-01"]}})
    with pytest.raises(
        ConfigError, match=r'scheme = "customer_kfold" takes one cutoff .*and \[cutoffs\] dates gives 2'
    ):
        parse_experiment(
            {**BASE, "cutoffs": {"dates": ["2017-01-01", "2017-03-01"]}, "validation": {"scheme": "customer_kfold"}}
        )
    # settings the others make meaningless were ignored without a word (a user's test)
    with pytest.raises(ConfigError, match=r"\[cutoffs\]: count goes with rule \(with dates, each date is a cutoff\)"):
        parse_experiment({**BASE, "cutoffs": {"dates": ["2017-01-01", "2017-04-01"], "count": 3}})
    with pytest.raises(ConfigError, match='high_value_quantile goes with kind = "high_value", not "repurchase"'):
        parse_experiment({**BASE, "label": {"kind": "repurchase", "horizon_days": 90, "high_value_quantile": 0.5}})
    with pytest.raises(ConfigError, match=r'\[model\]: type must be one of \["select", "lightgbm"'):
        parse_experiment({**BASE, "model": {"type": "xgboost"}})
    with pytest.raises(ConfigError, match='a future_spend model is a LightGBM regressor; type "logistic" is not'):
        parse_experiment({**BASE, "label": {"kind": "future_spend", "horizon_days": 90}, "model": {"type": "logistic"}})
    with pytest.raises(ConfigError, match="monotone must be true or false"):
        parse_experiment({**BASE, "model": {"monotone": "yes"}})
    with pytest.raises(ConfigError, match=r"customers \(the share held out for validation\) must be between 0 and 1"):
        parse_experiment({**BASE, "validation": {"customers": 1.5}})
    with pytest.raises(ConfigError, match="cutoffs must be a whole number at least 1, got 0"):
        parse_experiment({**BASE, "validation": {"cutoffs": 0}})


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        # each was a traceback, or silently changed what ran
        ("validation", {"folds": "5"}, r'\[validation\]: folds must be a whole number from 2 to 100, got "5"'),
        ("validation", {"folds": 2.5}, "folds must be a whole number from 2 to 100, got 2.5"),
        ("validation", {"min_positives": "x"}, 'min_positives must be a whole number at least 1, got "x"'),
        ("cutoffs", {"rule": None, "dates": 5}, "dates must be a list of dates"),
        ("cutoffs", {"rule": None, "dates": []}, "dates must be a list of dates"),  # was 12 spaced cutoffs
        ("cutoffs", {"count": True}, "count must be a whole number at least 1, got true"),  # was 1
        ("label", {"horizon_days": True}, "horizon_days must be a whole number from 1 to 3,660, got true"),
        ("label", {"horizon_days": 99_999_999_999}, "from 1 to 3,660, got 99999999999"),
        ("features", {"include_families": "value"}, "include_families must be a list of names"),
        ("model", {"n_estimators": "many"}, r"\[model\]: n_estimators must be a whole number at least 1"),
        ("model", {"learning_rate": float("nan")}, "learning_rate must be a number more than 0, got nan"),
        # each was a LightGBMError traceback once the features were built
        ("model", {"learning_rate": -1.0}, "learning_rate must be a number more than 0, got -1.0"),
        ("model", {"subsample": 5.0}, "subsample must be a number more than 0 and at most 1, got 5.0"),
        ("model", {"max_depth": "deep"}, 'max_depth must be a whole number at least -1, got "deep"'),
        ("model", {"num_leaves": 1}, "num_leaves must be a whole number at least 2, got 1"),
        (
            "model",
            {"tweedie_variance_power": 2.5},
            "tweedie_variance_power must be a number from 1 to below 2, got 2.5",
        ),
        ("model", {"reg_alpha": -0.1}, "reg_alpha must be a number of at least 0, got -0.1"),
        ("features", {"windows": 5}, r"windows must be a list of whole day counts, e.g. \[7, 30, 90\], got 5"),
        ("features", {"top_categories": "x"}, "top_categories must be a whole number, got 'x'"),  # features/config.py
        (
            "cutoffs",
            {"rule": None, "dates": [dt.datetime(2017, 6, 1, 10)]},
            "dates are days, YYYY-MM-DD, not date-times",
        ),
        ("cutoffs", {"spacing_days": True, "rule": "spaced"}, "spacing_days must be a positive integer, got true"),
        ("cutoffs", {"rule": None, "dates": [19971001]}, r"dates must be YYYY-MM-DD: 19971001 is not a date"),
        (
            "cutoffs",
            {"rule": None, "dates": ["19971001"]},
            r"dates must be YYYY-MM-DD: cutoff '19971001' is not a date",
        ),
        ("validation", {"cutoffs": True}, "cutoffs must be a whole number at least 1, got true"),  # was 1
        ("data", {"path": 5}, r"\[data\]: path must be text \('demo' or a data set folder\), got 5"),
        ("model", {"n_estimatorz": 5}, "unknown key 'n_estimatorz'; did you mean 'n_estimators'"),  # was ignored
        ("model", {"leaves": 7}, "unknown key 'leaves': neither the product's .* nor a LightGBM parameter"),  # was too
        ("model", {"not_a_param": 3}, "unknown key 'not_a_param'"),
        # an alias of a parameter the product sets: LightGBM keeps the product's value, ignores it
        ("model", {"max_leaves": 3}, "max_leaves is LightGBM's other name for num_leaves: write num_leaves = 3"),
        ("model", {"eta": 0.9}, "eta is LightGBM's other name for learning_rate"),
        ("model", {"lambda_l2": -5.0}, "lambda_l2 is LightGBM's other name for reg_lambda"),  # its range unchecked
        ("tuning", {"trials": "many"}, "trials must be a whole number from 1 to 100,000"),
        ("tuning", {"timeout_seconds": -5}, "timeout_seconds must be a whole number at least 1, got -5"),
        ("tuning", {"metric": "gini"}, r'metric must be one of \["roc_auc", "pr_auc"\], got "gini"'),
        # LightGBM had no metric to stop early on: a traceback after the features were built
        (
            "model",
            {"metric": "foo"},
            r"\[model\]: metric \(what early stopping reads\) must be a classification metric",
        ),
        ("model", {"metric": "None"}, 'must be a classification metric of LightGBM\'s, such as .*got "None"'),
        ("model", {"metrics": ["auc", "ndcg"]}, r'metrics .* must be a classification metric .*got \["auc", "ndcg"\]'),
        # a classifier trained with a regression objective was registered
        ("model", {"objective": "regression"}, "objective is set by the label's task: a repurchase model is fitted "),
        ("model", {"application": "binary"}, "application is set by the label's task"),
        # logged as if used
        ("model", {"type": "rfm", "learning_rate": 0.1}, r'learning_rate is a LightGBM value, which type = "rfm" does'),
        ("model", {"type": "logistic", "num_leaves": 7, "n_estimators": 9}, "n_estimators, num_leaves are LightGBM"),
        # said once the data was read, without the file's name or key
        (
            "cutoffs",
            {"rule": None, "dates": ["2017-06-01"]},
            r'\[cutoffs\]: time-ordered validation needs at least two cutoffs.*scheme = "customer_kfold"',
        ),
        (
            "cutoffs",
            {"rule": None, "dates": ["2017-05-01", "2017-06-01"]},
            r"\[cutoffs\]: cutoffs \['2017-05-01', '2017-06-01'\] let label windows overlap: with a 90-day horizon",
        ),
    ],
)
def test_config_values_of_the_wrong_type_are_errors_naming_the_setting(section, values, message):
    raw = {**BASE, section: {**BASE.get(section, {}), **values}}
    raw[section] = {k: v for k, v in raw[section].items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        parse_experiment(raw)
    assert parse_experiment({**BASE, "model": {"max_bin": 63}}).model_params["max_bin"] == 63  # LightGBM's own
    for fine in (
        {"n_jobs": -1},
        {"n_jobs": 0},
        {"subsample_freq": 0},
        {"max_depth": -1},
        {"reg_alpha": 0.0},
        {"learning_rate": 1.5},
        {"tweedie_variance_power": 1.995},
        {"cat_smooth": 5.0},  # LightGBM parameters the product neither sets nor checks
        {"min_data_in_bin": 5},
    ):
        assert parse_experiment({**BASE, "model": fine}).model_params.items() >= fine.items()


def test_config_defaults_and_family_exclusion():
    config = parse_experiment({**BASE, "features": {"exclude_families": ["attributes"], "windows": [30, 90]}})
    assert "attributes" not in config.families and "value" in config.families
    assert config.features.windows == (30, 90)
    assert config.model_params["random_state"] == 42


def test_shipped_experiments_all_parse():
    from pathlib import Path

    from training.config import load_experiment
    from training.personas import load_persona_config

    folder = Path(__file__).parents[1] / "experiments"
    names = {load_experiment(p).name for p in folder.glob("*.toml") if not p.name.startswith("personas")}
    assert {"repurchase_30d", "repurchase_90d", "high_value_90d", "spend_90d", "cdnow_repurchase_39w"} <= names
    assert load_persona_config(folder / "personas.toml").name == "personas"


def test_expected_calibration_error_by_hand():
    # bin 0.1-0.2: p=0.1,0.1 observed 0,1 -> |0.5-0.1| * 2; bin 0.9: p=0.9,0.9 observed 1,1 -> |1-0.9| * 2
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p) == pytest.approx((0.4 * 2 + 0.1 * 2) / 4)


def test_lift_and_capture_by_hand():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    score = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    lift, capture = lift_and_capture(y, score, 0.2)  # top 2: one positive of three
    assert lift == pytest.approx((1 / 2) / (3 / 10))
    assert capture == pytest.approx(1 / 3)


def test_normalized_gini_is_one_for_a_perfect_order_and_minus_one_reversed():
    y = np.array([0.0, 5.0, 1.0, 10.0])
    assert normalized_gini(y, y) == pytest.approx(1.0)
    assert normalized_gini(y, -y) == pytest.approx(-1.0)


def test_a_constant_spend_prediction_has_gini_zero_whatever_the_row_order():
    """A small shop's flat spend model got -0.47 (interval [-1.15, -0.39]) from the rows' order:
    equal predictions are in no order, their part of the curve is its expectation."""
    y = np.array([0, 0, 10, 0, 50, 5, 0, 20.0])
    assert normalized_gini(y, np.ones(8)) == 0.0 and normalized_gini(y[::-1], np.ones(8)) == 0.0
    # two tied groups by hand: {50, 0} first, then {10, 0}; total 60. Expected curve at 1..4:
    # 25/60, 50/60, 55/60, 60/60 -> 190/240 - 5/8 = 1/6; perfect (50, 10, 0, 0): 230/240 - 5/8 = 1/3
    assert normalized_gini([50, 0, 10, 0], [2, 2, 1, 1]) == pytest.approx((1 / 6) / (1 / 3))
    # distinct predictions: as before (the reversed perfect order is -1)
    assert normalized_gini(y, y + np.arange(8) * 1e-6) == pytest.approx(1.0)


def test_recent_spend_scales_the_nearest_windowed_spend_to_the_horizon():
    features = pd.DataFrame(
        {
            "spend_30d": [30.0, -5.0],
            "spend_90d": [90.0, 45.0],
            "spend_lifetime": [500.0, 500.0],  # spend, but not windowed
            "spend_trend_90d": [1.0, 1.0],  # windowed, but another measure
        }
    )
    np.testing.assert_allclose(recent_spend(features, 60), [60.0, 0.0])  # 30 and 90 tie: the shorter
    np.testing.assert_allclose(recent_spend(features, 80), [80.0, 40.0])


def test_recent_spend_reads_windows_from_the_feature_settings():
    features = pd.DataFrame({"spend_14d": [14.0], "spend_60d": [30.0]})
    np.testing.assert_allclose(recent_spend(features, 50, FeatureConfig(windows=(14, 60), behaviour_window=60)), [25.0])
    with pytest.raises(ValueError, match=r"no windowed spend feature among the columns \['spend_14d', 'spend_60d'\]"):
        recent_spend(features, 50)  # the default windows have neither


def test_rfm_rank_score_sums_three_percentile_ranks_by_hand():
    features = pd.DataFrame(
        {
            "days_since_last_purchase": [5.0, 50.0, 5.0, np.nan],
            "orders_lifetime": [4, 1, 2, 0],
            "spend_lifetime": [100.0, 10.0, 300.0, 0.0],
        }
    )
    # among the three buyers: recency ranks (fewer days better) 2.5/3, 1/3, 2.5/3 (tie);
    # frequency 3/3, 1/3, 2/3; monetary 2/3, 1/3, 3/3; no purchase yet scores 0
    expected = [2.5 / 3 + 1 + 2 / 3, 1 / 3 + 1 / 3 + 1 / 3, 2.5 / 3 + 2 / 3 + 1, 0.0]
    np.testing.assert_allclose(rfm_score(features), expected)


def test_weighted_roc_auc_equals_sklearn_with_sample_weights_and_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.normal(size=300) + y, 1)  # many ties
    weights = rng.integers(0, 4, (6, 300))
    expected = [roc_auc_score(y, score, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_roc_auc(y, score, weights), expected, rtol=1e-12)


def test_paired_bootstrap_interval_of_the_auc_margin():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1] * 25)
    perfect = y + np.linspace(0, 0.5, len(y))
    noise = np.random.default_rng(1).normal(size=len(y))
    margin, low, high = paired_bootstrap_auc_margin(y, perfect, noise, resamples=500, seed=3)
    assert margin == pytest.approx(1 - roc_auc_score(y, noise))
    assert 0 < low < margin < high
    assert paired_bootstrap_auc_margin(y, noise, noise, resamples=200) == (0.0, 0.0, 0.0)  # paired: no spread
    # The same seed gives the same interval; the loop over resamples by hand agrees with it.
    assert paired_bootstrap_auc_margin(y, perfect, noise, resamples=500, seed=3) == (margin, low, high)
    by_hand = [
        roc_auc_score(y, perfect, sample_weight=c) - roc_auc_score(y, noise, sample_weight=c)
        for chunk in bootstrap_counts(len(y), 500, 3)
        for c in chunk
    ]
    assert (low, high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))


def test_peer_comparison_names_the_best_peer_and_its_interval():
    y = np.array([0, 1] * 50)
    good = y + np.linspace(0, 2, 100)  # AUC 0.75
    weak = np.linspace(0, 1, 100)  # AUC 0.51
    model = y * 3.0 + np.linspace(0, 1, 100)  # perfect
    metrics, tags = peer_comparison(y, model, [Peer("weak", "weak", weak), Peer("good", "good", good, ("a note",))])
    assert tags == {"best_peer": "good", "peer_good_notes": "a note"}
    assert metrics["baseline_good_holdout_roc_auc"] == pytest.approx(roc_auc_score(y, good))
    assert metrics["holdout_roc_auc_margin_over_best_peer"] == pytest.approx(1 - roc_auc_score(y, good))
    assert metrics["holdout_roc_auc_margin_ci_low"] > 0
    assert {"baseline_weak_holdout_pr_auc", "baseline_weak_holdout_lift_at_10pct"} <= set(metrics)


def test_train_prints_cutoffs_holdout_base_rate_and_the_peer_table():
    from training.cli import summary_lines
    from training.train import RunSummary

    metrics = {
        "holdout_roc_auc": 0.81,
        "holdout_pr_auc": 0.7,
        "holdout_lift_at_10pct": 2.0,
        "holdout_positive_rate": 0.412,
        "holdout_ece": 0.01,
        "holdout_ece_uncalibrated": 0.03,
        "baseline_rfm_holdout_roc_auc": 0.79,
        "baseline_rfm_holdout_pr_auc": 0.6,
        "baseline_rfm_holdout_lift_at_10pct": 1.9,
        "baseline_bgnbd_holdout_roc_auc": 0.8,
        "baseline_bgnbd_holdout_pr_auc": 0.65,
        "baseline_bgnbd_holdout_lift_at_10pct": 1.95,
        "holdout_roc_auc_margin_over_best_peer": 0.01,
        "holdout_roc_auc_margin_ci_low": -0.002,
        "holdout_roc_auc_margin_ci_high": 0.021,
        "bootstrap_resamples": 1000.0,
    }
    summary = RunSummary(
        "run1",
        "1",
        "m",
        "3",
        metrics,
        "sqlite:///x",
        train_cutoffs=(dt.date(2024, 8, 1), dt.date(2024, 9, 1)),
        holdout_cutoff=dt.date(2024, 12, 1),
        horizon_days=30,
        holdout_rows=2950,
        best_peer="bgnbd",
        peer_labels={"rfm": "RFM rank score", "bgnbd": "BG/NBD P(any purchase)"},
        notes=("BG/NBD P(any purchase): b is at its upper bound",),
        model_type="blend",
        candidates={
            "lightgbm": {"validation_roc_auc": 0.8, "holdout_roc_auc": 0.805},
            "blend": {"validation_roc_auc": 0.81, "holdout_roc_auc": 0.81},
        },
    )
    text = "\n".join(summary_lines(summary))
    assert "cutoffs: training 2024-08-01, 2024-09-01; holdout 2024-12-01 (label window 30 days)" in text
    assert "holdout: 2,950 customers, base rate 41.2%" in text
    assert re.search(r"RFM rank score\s+0\.7900\s+0\.6000\s+1\.9000", text)
    assert re.search(r"model\s+0\.8100\s+0\.7000\s+2\.0000", text)
    assert (
        "best peer (BG/NBD P(any purchase)) in ROC AUC: +0.0100, 95% paired bootstrap interval [-0.0020, +0.0210]"
        in text
    )
    assert "the interval holds 0: this holdout cannot tell the model from the peer" in text
    assert "note: BG/NBD P(any purchase): b is at its upper bound" in text
    assert "model chosen on validation: blend" in text
    assert re.search(r"blend\s+0\.8100\s+0\.8100 <- registered", text)
    assert "a candidate named as a peer" not in text
    metrics["holdout_roc_auc_margin_ci_low"] = 0.001  # the whole interval above 0: nothing to add
    assert "cannot tell" not in "\n".join(summary_lines(summary))
    metrics["holdout_roc_auc_margin_ci_low"], metrics["holdout_roc_auc_margin_ci_high"] = -0.0864, 0.0
    assert "the interval holds 0" in "\n".join(summary_lines(summary))  # an end at 0 holds it too
    metrics["holdout_roc_auc_margin_ci_high"] = -0.00002  # printed as +0.0000: it holds 0 too
    assert "the interval holds 0" in "\n".join(summary_lines(summary))
    metrics["holdout_roc_auc_margin_ci_high"] = 0.0
    metrics["holdout_roc_auc_margin_over_best_peer"] = -0.00001  # not printed as a loss
    assert "in ROC AUC: +0.0000, 95% paired bootstrap interval [-0.0864, +0.0000]" in "\n".join(summary_lines(summary))
    summary.candidates["rfm"] = {"validation_roc_auc": 0.78, "holdout_roc_auc": 0.7897}
    assert "a candidate named as a peer is that peer made a model" in "\n".join(summary_lines(summary))


def test_data_path_is_resolved_against_the_experiment_files_folder(tmp_path, monkeypatch):
    from training.config import load_experiment

    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    text = """name = "x"\n[data]\npath = "{path}"\n[cutoffs]\nrule = "monthly"\n[label]\nkind = "repurchase"\nhorizon_days = 30\n"""
    (project / "experiments" / "mine.toml").write_text(text.format(path="../mydata"))
    (project / "experiments" / "demo.toml").write_text(text.format(path="demo"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_experiment(Path("../project/experiments/mine.toml")).data == str(project / "mydata")
    demo = load_experiment(project / "experiments" / "demo.toml")
    assert demo.data == "demo" and demo.demo_path == project / "data" / "completejourney"
    # an experiment outside an experiments/ folder keeps its demo data beside it
    (project / "loose.toml").write_text(text.format(path="demo"))
    assert load_experiment(project / "loose.toml").demo_path == project / "data" / "completejourney"
    # --data on the command line stays relative to where the command runs
    assert load_experiment(project / "experiments" / "mine.toml").with_data("local").data == "local"


def test_demo_path_opens_the_projects_demo_data_and_imports_nothing_here(tmp_path, monkeypatch):
    from training.data import resolve_dataset

    demo = tmp_path / "project" / "data" / "completejourney"
    demo.mkdir(parents=True)
    pd.DataFrame({"order_id": ["o1"], "customer_id": ["c1"], "ts": ["2017-01-01"], "amount": [1.0]}).to_parquet(
        demo / "purchases.parquet"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    dataset = resolve_dataset("demo", demo)
    assert dataset.root == demo and list(elsewhere.iterdir()) == []


def test_spend_regressor_keeps_a_tweedie_power_given_in_params():
    from models.propensity import SpendRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200)})
    y = np.exp(X["a"].to_numpy()) * rng.integers(0, 2, 200)
    params = {"n_estimators": 5, "verbose": -1, "tweedie_variance_power": 1.6}
    model = SpendRegressor(params=params).fit(X, y, X, y)
    assert model.booster_.get_params()["tweedie_variance_power"] == 1.6
    assert SpendRegressor(params={"n_estimators": 5, "verbose": -1}).fit(X, y, X, y).booster_.get_params()[
        "tweedie_variance_power"
    ] == pytest.approx(1.3)
    with pytest.raises(ValueError, match="tweedie_variance_power is given twice: 1.2 as the argument and 1.6"):
        SpendRegressor(params=params, tweedie_variance_power=1.2).fit(X, y, X, y)
    with pytest.raises(ValueError, match=r"tweedie_variance_power must be in \[1, 2\), got 2.5"):
        SpendRegressor(params={**params, "tweedie_variance_power": 2.5}).fit(X, y, X, y)


def test_label_window_starts_at_the_cutoff_not_a_moment_before():
    """A purchase in the last hours before the cutoff is history (a feature), never a label."""
    from features.labels import build_labels, build_training_set
    from portrait.dataset import Dataset

    purchases = pd.DataFrame(
        {
            "order_id": ["a0", "a1", "b1", "c1", "d1", "e1"],
            "customer_id": ["a", "a", "b", "c", "d", "e"],
            "ts": [
                "2024-11-01 10:00:00",
                "2024-11-30 23:30:00",  # a: half an hour before the cutoff: not a label
                "2024-12-01 00:00:00",  # b: at the cutoff: label
                "2024-12-30 23:59:59",  # c: the last second of the 30-day window: label
                "2024-12-31 00:00:00",  # d: the window's end is exclusive: not a label
                "2024-10-01 09:00:00",  # e: only history
            ],
            "amount": [10.0, 20.0, 5.0, 7.0, 9.0, 3.0],
        }
    )
    dataset = Dataset.from_frames(purchases=purchases)
    labels = build_labels(dataset, "2024-12-01", 30, pd.Series(["a", "b", "c", "d", "e"]))
    assert labels.set_index("customer_id")["repurchase"].to_dict() == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 0}
    assert labels.set_index("customer_id")["future_spend"].to_dict() == {
        "a": 0.0,
        "b": 5.0,
        "c": 7.0,
        "d": 0.0,
        "e": 0.0,
    }
    frame = build_training_set(dataset, ["2024-12-01"], 30, families=["value"]).set_index("customer_id")
    assert frame.loc["a", "repurchase"] == 0 and frame.loc["a", "days_since_last_purchase"] == 1
    assert frame.loc["a", "orders_lifetime"] == 2


@pytest.mark.parametrize("calibration", ["isotonic", "sigmoid"])
def test_calibrated_probabilities_are_the_validation_rates_not_the_raw_scores(calibration):
    """One binary feature. Training rates are 10% and 50%; the later validation window's are 30%
    and 80%. The booster learns the training rates; calibration on validation must map them to
    the validation rates (by hand: ECE (0.2 + 0.3) / 2 = 0.25 raw, 0 calibrated; isotonic steps
    smoothed by their size: 301 / 1002 and 801 / 1002, models.calibration)."""
    from models.propensity import TIE_BREAK, PropensityClassifier

    def rows(rate0, rate1, n=1000):
        x = np.repeat([0, 1], n)
        y = np.concatenate([np.arange(n) < rate0 * n, np.arange(n) < rate1 * n]).astype(int)
        return pd.DataFrame({"x": x.astype(float)}), y

    X, y = rows(0.1, 0.5)
    X_valid, y_valid = rows(0.3, 0.8)
    params = {"n_estimators": 300, "learning_rate": 0.3, "min_child_samples": 1, "reg_lambda": 0.0, "verbose": -1}
    model = PropensityClassifier(params=params, calibration=calibration).fit(X, y, X_valid=X_valid, y_valid=y_valid)
    raw = model.predict_uncalibrated(X_valid)
    np.testing.assert_allclose(raw[[0, -1]], [0.1, 0.5], atol=1e-3)  # the booster learned the training rates
    calibrated = model.predict_proba(X_valid)[:, 1]
    expected = [0.3, 0.8] if calibration == "sigmoid" else [301 / 1002, 801 / 1002]
    np.testing.assert_allclose(calibrated[[0, -1]], expected, atol=1e-3 if calibration == "sigmoid" else TIE_BREAK)
    assert expected_calibration_error(y_valid, raw) == pytest.approx(0.25, abs=1e-3)
    assert expected_calibration_error(y_valid, calibrated) <= 1e-3


def test_isotonic_steps_are_smoothed_by_their_size_and_stay_monotone():
    """A step's share is (positives + 1) / (rows + 2): a pure step is never certain. Steps that
    smoothing puts out of order are pooled, weighted by rows + 2."""
    from models.calibration import SmoothedIsotonic

    scores = np.arange(0.1, 0.85, 0.1)
    calibrator = SmoothedIsotonic().fit(scores, [0, 0, 1, 0, 1, 1, 1, 1])  # steps 0/2, 1/2, 4/4
    np.testing.assert_allclose(calibrator.predict([0.0, 0.15, 0.35, 0.45, 0.9]), [1 / 4, 1 / 4, 2 / 4, 2 / 3, 5 / 6])
    # steps 0/1 and 1/10 (plain isotonic: 0 and 0.1) smooth to 1/3 and 2/12: pooled, (1 + 2) / (3 + 12)
    pooled = SmoothedIsotonic().fit(np.arange(1.0, 12.0), [0, 1] + [0] * 9)
    np.testing.assert_allclose(pooled.predict([1.0, 6.0, 11.0]), [0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="y must be 0/1"):  # labels 1/2 gave shares of 1.4
        SmoothedIsotonic().fit([0.1, 0.2, 0.3], [2, 1, 2])


def test_every_model_type_of_the_config_is_in_the_registry():
    from training.config import MODEL_TYPES
    from training.evaluate import MODEL_REGISTRY, candidate_types

    assert set(MODEL_TYPES) - {"select"} <= set(MODEL_REGISTRY)
    config = parse_experiment({**BASE, "model": {"type": "logistic"}})
    assert config.model_type == "logistic" and "type" not in config.model_params
    assert candidate_types(config, with_history=True) == ("logistic",)
    assert candidate_types(parse_experiment({**BASE, "model": {"type": "blend"}}), True) == ("lightgbm", "blend")
    # without the history features a logistic model (or BG/NBD, RFM, a blend) cannot be made:
    # said, not replaced by LightGBM
    with pytest.raises(PortraitError, match="type 'logistic' needs the purchase history features"):
        candidate_types(config, with_history=False)
    assert candidate_types(parse_experiment(BASE), with_history=False) == ("lightgbm",)
    with pytest.raises(ConfigError, match='type "bgnbd" is computed from the purchase history'):
        parse_experiment({**BASE, "model": {"type": "bgnbd"}, "features": {"exclude_families": ["value"]}})


def test_a_validation_base_rate_far_from_the_holdouts_is_warned_about():
    from training.evaluate import base_rate_note

    assert base_rate_note(0.90, 0.94, margin=0.05) is None
    note = base_rate_note(0.80, 0.94, margin=0.05)
    assert note == (
        "the calibration rows' base rate 80.0% differs from the holdout's 94.0% by more than 5.0%: "
        "probabilities are calibrated to another level than the holdout's"
    )


def test_lightgbm_is_registered_unless_validation_clearly_says_otherwise():
    from training.evaluate import preferred_choice

    # logistic leads LightGBM by 0.0025 on average, but the per-fold differences swing by more
    # (+0.01, -0.01, +0.01, 0: mean 0.0025, standard error 0.0048): LightGBM
    noisy = {"logistic": np.array([0.82, 0.80, 0.81, 0.81]), "lightgbm": np.array([0.81, 0.81, 0.80, 0.81])}
    assert preferred_choice(noisy) == "lightgbm"
    # a lead of 0.01 in every fold is no noise: logistic
    steady = {"logistic": np.array([0.82, 0.82, 0.81, 0.82]), "lightgbm": np.array([0.81, 0.81, 0.80, 0.81])}
    assert preferred_choice(steady) == "logistic"
    # LightGBM (mean 0.8075) below a peer at 0.808 on validation: the best at or above it
    assert preferred_choice(noisy, floor=0.808) == "logistic"
    # every candidate below the peer: the same choice among all of them
    assert preferred_choice(noisy, floor=0.9) == "lightgbm"
    assert preferred_choice(steady, floor=0.9) == "logistic"
    # LightGBM not a candidate (a [model] type of one model): the best
    assert preferred_choice({"rfm": np.array([0.7, 0.7]), "bgnbd": np.array([0.72, 0.71])}) == "bgnbd"
    # a tie between two others, LightGBM below the floor: the simpler of the two
    tie = {"blend": np.array([0.8, 0.8]), "bgnbd": np.array([0.8, 0.8]), "lightgbm": np.array([0.7, 0.7])}
    assert preferred_choice(tie, floor=0.75) == "bgnbd"


def test_a_label_has_a_share_by_construction_only_when_every_training_cutoff_showed_it():
    from training.evaluate import label_share

    high_value = parse_experiment({**BASE, "label": {"kind": "high_value", "horizon_days": 30}})
    cutoffs = np.array(["a"] * 10 + ["b"] * 10)
    two_of_ten = np.array([1, 1] + [0] * 8)
    assert label_share(high_value, np.concatenate([two_of_ten, two_of_ten]), cutoffs) == pytest.approx(0.2)
    # at b only one customer of ten spent anything in the window: the positives are the spenders
    one_of_ten = np.array([1] + [0] * 9)
    assert label_share(high_value, np.concatenate([two_of_ten, one_of_ten]), cutoffs) is None
    # a small shop's top 20%: 7 of 37 and 8 of 38 (the share is less than a customer away)
    small = np.array(["c"] * 37 + ["d"] * 38)
    y_small = np.concatenate([[1] * 7 + [0] * 30, [1] * 8 + [0] * 30])
    assert label_share(high_value, y_small, small) == pytest.approx(0.2)
    assert label_share(high_value, np.concatenate([[1] * 6 + [0] * 31, [1] * 8 + [0] * 30]), small) is None
    # an absolute label has no share to move to
    repurchase = parse_experiment(BASE)
    assert label_share(repurchase, np.concatenate([two_of_ten, two_of_ten]), cutoffs) is None


def test_an_experiment_file_that_is_not_utf8_is_an_error(tmp_path):
    from training.config import load_experiment

    path = tmp_path / "e.toml"
    path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"e.toml: not UTF-8 text \(byte 11\); save the file as UTF-8"):
        load_experiment(path)


def test_a_folder_given_as_an_experiment_file_is_said_to_be_one(tmp_path):
    from training.config import load_experiment

    with pytest.raises(ConfigError, match="is a folder; give one of its experiment files"):
        load_experiment(tmp_path)


def test_validation_metrics_are_each_folds_averaged_not_the_pooled_rows():
    from types import SimpleNamespace

    from training.evaluate import _per_fold_metrics

    config = SimpleNamespace(label=SimpleNamespace(is_classification=True))
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    # each fold's model ranks its own rows perfectly, at different levels (each calibrated on its
    # own fold): pooled, the rows of the two folds interleave (pooled ROC AUC 0.75)
    p = np.array([0.1, 0.2, 0.1, 0.2, 0.5, 0.6, 0.5, 0.6])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    metrics = _per_fold_metrics(config, y, p, folds, "validation_")
    assert metrics["validation_roc_auc"] == 1.0
    assert metrics["validation_pr_auc"] == 1.0


def test_spend_metrics_of_folds_smaller_than_ten_customers_have_every_decile():
    """A fold of 4 customers fills 4 deciles of 10: the others are NaN, not missing keys (a
    spend model on a small shop stopped with a KeyError)."""
    from types import SimpleNamespace

    from training.evaluate import _per_fold_metrics
    from training.metrics import spend_metrics

    small = spend_metrics([0.0, 10.0, 20.0, 30.0], [1.0, 12.0, 18.0, 35.0])
    assert [k for k in small if k.startswith("mean_error_decile_")] == [f"mean_error_decile_{i}" for i in range(1, 11)]
    assert sum(not np.isnan(small[f"mean_error_decile_{i}"]) for i in range(1, 11)) == 4
    config = SimpleNamespace(label=SimpleNamespace(is_classification=False))
    y = np.array([0.0, 10.0, 20.0, 30.0, 5.0, 6.0, 7.0])
    p = np.array([1.0, 12.0, 18.0, 35.0, 5.0, 6.0, 9.0])
    metrics = _per_fold_metrics(config, y, p, np.array([0, 0, 0, 0, 1, 1, 1]), "validation_")
    assert metrics["validation_mae"] == pytest.approx(((1 + 2 + 2 + 5) / 4 + 2 / 3) / 2)
    assert len([k for k in metrics if "decile" in k]) == 10


def test_a_small_shops_training_says_what_its_figures_rest_on():
    """A holdout of 12 customers (3 buyers), LightGBM flat in each fold (another level per fold,
    each calibrated on its own), and a registered BG/NBD whose fits were flagged."""
    from types import SimpleNamespace

    from training.evaluate import _small_data_notes

    config = SimpleNamespace(label=SimpleNamespace(is_classification=True))
    folds = np.array([0, 0, 1, 1])
    out_of_fold = {"lightgbm": np.array([0.3, 0.3, 0.4, 0.4]), "logistic": np.array([0.1, 0.2, 0.3, 0.3])}
    flags = {"2025-04-01": ("alpha is at its upper bound",), "2025-05-01": ("no evidence of dropout",)}
    notes = _small_data_notes(config, "bgnbd_expected", out_of_fold, folds, np.array([1] * 3 + [0] * 9), flags)
    assert len(notes) == 3
    assert notes[0].startswith("the holdout has 12 customers, 3 of them with the label")
    assert notes[1].startswith("lightgbm gave every validation customer the same score")
    assert notes[2].startswith(
        "the registered model (bgnbd_expected) is BG/NBD, whose fit was flagged at 2 cutoff(s); "
    )
    assert "at 2025-05-01: no evidence of dropout" in notes[2]
    large = np.array([1] * 60 + [0] * 60)
    assert _small_data_notes(config, "lightgbm", {"logistic": out_of_fold["logistic"]}, folds, large, flags) == []
    spend = SimpleNamespace(label=SimpleNamespace(is_classification=False))  # measured by Gini, not AUC
    (flat,) = _small_data_notes(spend, "lightgbm", out_of_fold, folds, np.array([5.0, 0.0, 3.0]), flags)
    assert flat.endswith("its Gini of 0 is no ranking at all")


def test_a_high_value_label_with_a_zero_threshold_is_noted():
    from types import SimpleNamespace

    from training.data import label_notes

    config = parse_experiment({**BASE, "label": {"kind": "high_value", "horizon_days": 7}})
    # at the first cutoff 1 of 10 customers spends (the 80% quantile is 0): "any purchase";
    # at the second 3 of 10 do (the 80% quantile is above 0)
    frame = pd.DataFrame(
        {
            "cutoff": pd.to_datetime(["2024-01-01"] * 10 + ["2024-02-01"] * 10),
            "future_spend": [0.0] * 9 + [5.0] + [0.0] * 7 + [5.0, 6.0, 7.0],
        }
    )
    notes = label_notes(config, SimpleNamespace(frame=frame))
    assert notes == (
        "the high-value threshold (the top 20% of spend over 7 days) is 0 at 1 of 2 cutoffs: fewer customers than "
        "that spend in the window, so there the label is any purchase; a longer horizon or a higher "
        "high_value_quantile keeps it a value target",
    )
    assert label_notes(config, SimpleNamespace(frame=frame.iloc[10:])) == ()
    assert label_notes(parse_experiment(BASE), SimpleNamespace(frame=frame)) == ()


def test_a_runs_target_is_its_label_horizon_and_high_value_quantile():
    from training.champion import _same_target, target_of

    assert target_of({"label": "repurchase", "horizon_days": "90"}) == ("repurchase", "90")
    top20 = {"label": "high_value", "horizon_days": "90", "high_value_quantile": "0.8"}
    assert target_of(top20) == ("high_value (quantile 0.8)", "90")
    high_value = parse_experiment(
        {**BASE, "label": {"kind": "high_value", "horizon_days": 90, "high_value_quantile": 0.8}}
    )
    assert _same_target(top20, high_value)
    assert not _same_target({**top20, "high_value_quantile": "0.95"}, high_value)  # the top 5%: another target
    assert not _same_target({**top20, "horizon_days": "30"}, high_value)
    assert _same_target({"label": "high_value", "horizon_days": "90"}, high_value)  # logged before the quantile
    assert not _same_target({"label": "repurchase", "horizon_days": "90"}, high_value)


def test_a_holdout_with_one_class_says_which_class_is_missing():
    from features.catalogue import Vocabulary
    from training.data import TrainingData, check_sufficiency
    from training.splits import TimeSplit

    config = parse_experiment({**BASE, "validation": {"min_positives": 1, "min_negatives": 1}})
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "b"],
            "cutoff": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-04-01", "2024-04-01"]),
            "repurchase": [1, 0, 0, 0],
        }
    )
    split = TimeSplit(train=(dt.date(2024, 1, 1),), validation=None, holdout=dt.date(2024, 4, 1))
    data = TrainingData(frame, split, [], "repurchase", Vocabulary((), (), (), ()), {}, "d", "f")
    with pytest.raises(
        PortraitError, match=r"at the holdout cutoff 2024-04-01 nobody of its 2 customers has the label \(no positives"
    ):
        check_sufficiency(data, config)


def test_what_a_model_learned_from_ends_a_horizon_after_its_last_training_cutoff():
    from models.task import learned_until_of
    from training.champion import learned_until

    cutoffs = (dt.date(2024, 9, 1), dt.date(2024, 10, 1))
    assert learned_until_of(cutoffs, dt.date(2024, 12, 1), 30) == dt.date(2024, 10, 31)
    assert learned_until_of((), dt.date(1997, 10, 1), 273) == dt.date(1998, 7, 1)  # customer folds at one cutoff
    params = {"train_cutoffs": "2024-09-01,2024-10-01", "holdout_cutoff": "2024-12-01", "horizon_days": "30"}
    assert learned_until(params) == dt.date(2024, 10, 31)
    assert learned_until({**params, "train_cutoffs": "-"}) == dt.date(2024, 12, 31)


def test_a_damaged_or_locked_study_store_is_named_not_blamed_on_mlflow(tmp_path):
    import sqlite3

    import optuna

    from portrait.errors import Busy, PortraitError
    from training.tune import _study_store_error

    store = tmp_path / "optuna.db"
    store.write_bytes(b"not an sqlite file " * 64)
    with pytest.raises(Exception) as raised:
        optuna.create_study(study_name="s", storage=f"sqlite:///{store}", load_if_exists=True)
    error = _study_store_error(store, raised.value)
    assert type(error) is PortraitError and error.exit_code == 2
    assert str(error) == (
        f"the tuning study's store {store} cannot be used: file is not a database (move the file away, and a new "
        "study starts from the experiment's settings)"
    )
    locked = _study_store_error(store, sqlite3.OperationalError("database is locked"))
    assert (
        isinstance(locked, Busy) and locked.exit_code == 75 and "another portrait tune is writing to it" in str(locked)
    )


def test_a_promotion_says_when_the_version_trailed_the_best_peer_on_its_holdout():
    """A small shop's high-value model became champion "(there was none; holdout_roc_auc = 0.5449)",
    0.126 below the BG/NBD peer on the same holdout, and the promotion did not say so."""
    from training.registry import Promotion

    promotion = Promotion("hv", "1", None, "holdout_roc_auc", 0.5449, None, False, below_peer=("bgnbd", -0.1261))
    assert promotion.sentence() == (
        "hv v1 is now champion (there was none; holdout_roc_auc = 0.5449); note: on its holdout it trails the "
        "best peer (bgnbd) by 0.1261 in roc_auc"
    )
    ahead = Promotion("hv", "1", None, "holdout_roc_auc", 0.7, None, False)
    assert ahead.sentence() == "hv v1 is now champion (there was none; holdout_roc_auc = 0.7000)"


@pytest.mark.parametrize(
    "labels, told",
    [
        # one customer kept apart
        ([1, 1, 0, 0, 0], "5 customers (2 positive, 3 negative), 20% of them kept apart"),
        ([1] * 9 + [0], "10 customers (9 positive, 1 negative), 20% of them kept apart"),  # one negative
    ],
)
def test_a_split_too_small_for_two_of_each_class_is_an_error_not_a_traceback(labels, told):
    """min_positives = 2 let 10 customers in two folds through to scikit-learn's ValueError."""
    from training.evaluate import check_stratified_split

    with pytest.raises(
        PortraitError, match=r"^too few customers for \[validation\] folds = 2: a fold trains on "
    ) as raised:
        check_stratified_split(
            np.array(labels), 0.2, "for [validation] folds = 2: a fold trains on", "use more customers", seed=42
        )
    assert str(raised.value).endswith(
        f"{told}, which needs at least 2 of each class and 2 on each side; use more customers"
    )
    check_stratified_split(np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0]), 0.2, "", "", seed=42)  # 2 kept, both classes


def test_a_split_whose_side_kept_apart_would_hold_one_class_is_refused():
    """2 with the label among 20: the stratified 20% (4 customers) gets 2 x 4/20 = 0.4 of them,
    rounded to none. The side kept apart then had no validation AUC (every candidate NaN, the
    first listed chosen) and calibrated on one class."""
    from training.evaluate import check_stratified_split

    with pytest.raises(PortraitError, match=r"the 4 kept apart would all be negative, with no validation AUC"):
        check_stratified_split(np.array([1, 1] + [0] * 18), 0.2, "to tune:", "use more customers", seed=42)
    check_stratified_split(np.array([1] * 5 + [0] * 15), 0.2, "to tune:", "", seed=42)  # 1 of 4 kept is positive


def test_tune_refuses_a_time_split_whose_held_out_customers_hold_one_class():
    """Every trial of such a tune failed ('The value nan is not acceptable', with scikit-learn's
    warning of one class) before a vague 'no tuning trial completed'. 8 customers at 2 latest
    cutoffs, all buying: the 25% held out (2 customers, 4 rows) hold the label only."""
    from types import SimpleNamespace

    from training.tune import _validation_sets

    config = parse_experiment(
        {
            "name": "t",
            "data": {"path": "x"},
            "cutoffs": {"rule": "spaced"},
            "label": {"kind": "repurchase", "horizon_days": 30},
        }
    )
    cutoffs = (dt.date(2024, 1, 1), dt.date(2024, 1, 15))
    rows = pd.DataFrame(
        {
            "customer_id": [str(c) for c in range(8) for _ in cutoffs],
            "cutoff": [pd.Timestamp(c) for _ in range(8) for c in cutoffs],
            "x": 1.0,
            "target": 1,
        }
    )
    data = SimpleNamespace(
        train_rows=rows,
        split=SimpleNamespace(validation_cutoffs=cutoffs),
        model_X=lambda r: r[["x"]],
        y=lambda r: r["target"].to_numpy(),
    )
    with pytest.raises(
        PortraitError,
        match=r"^too few customers to tune: the 25% of customers held out for validation \(\[validation\] "
        r"customers\) have 4 rows at the latest 2 training cutoff\(s\), all with the label: no trial",
    ):
        _validation_sets(config, data)
    # ... and the customers fitted on holding one class (the held-out ones both): no trial learns
    held = ["3", "4"]  # the 25% held out with the default seed (42)
    rows.loc[rows["customer_id"] == held[0], "target"] = 0
    with pytest.raises(
        PortraitError, match=r"the customers not held out for validation have 12 training rows, all with"
    ):
        _validation_sets(config, data)
    rows["target"] = rows["customer_id"].astype(int) % 2  # odd customers buy: both classes on each side
    X_fit, y_fit, X_valid, y_valid = _validation_sets(config, data)  # both classes held out: no refusal
    assert len(X_fit) == 12 and set(y_valid) == {0, 1}


def test_a_setting_is_shown_as_the_file_writes_it():
    import datetime as dt

    from portrait.toml_text import as_toml

    assert as_toml(True) == "true" and as_toml("x") == '"x"' and as_toml(3.5) == "3.5"
    assert as_toml(dt.date(2024, 1, 1)) == "2024-01-01"  # an unquoted date (was datetime.date(2024, 1, 1))
    assert as_toml({"a": 1, "b": [False, "y"]}) == '{a = 1, b = [false, "y"]}'


def test_more_validation_cutoffs_than_training_ones_are_said():
    from training.evaluate import validation_cutoffs_notes
    from training.splits import TimeSplit

    dates = (dt.date(2024, 9, 1), dt.date(2024, 10, 1))
    split = TimeSplit(dates, None, dt.date(2024, 12, 1), dates)
    config = parse_experiment({**BASE, "validation": {"cutoffs": 5}})
    assert validation_cutoffs_notes(config, split) == [
        "[validation] cutoffs = 5, but there are 2 training cutoffs: validated at all 2"
    ]
    assert validation_cutoffs_notes(parse_experiment({**BASE, "validation": {"cutoffs": 2}}), split) == []
