"""Pure pieces of training: config validation, time splits, metrics, baselines."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from portrait.errors import ConfigError, PortraitError
from training.config import parse_experiment
from training.evaluate import recent_spend
from training.metrics import expected_calibration_error, lift_and_capture, normalized_gini
from training.splits import explicit_split, monthly_split

BASE = {
    "name": "x",
    "data": {"path": "demo"},
    "cutoffs": {"rule": "monthly"},
    "label": {"kind": "repurchase", "horizon_days": 90},
}


def test_monthly_split_keeps_every_label_window_apart():
    split = monthly_split(dt.date(2017, 1, 1), dt.date(2017, 12, 31), horizon_days=90, train_count=6)
    assert split.holdout == dt.date(2017, 10, 1)  # 10-01 + 89 days = 12-29 <= 12-31
    assert split.validation == dt.date(2017, 7, 1)  # at least 90 days before the holdout
    assert split.train == (dt.date(2017, 2, 1), dt.date(2017, 3, 1), dt.date(2017, 4, 1))
    for cutoff in split.train:
        assert cutoff + dt.timedelta(days=90) <= split.validation


def test_monthly_split_refuses_history_too_short_for_the_horizon():
    with pytest.raises(PortraitError, match="too short for a 180-day horizon"):
        monthly_split(dt.date(2017, 1, 1), dt.date(2017, 12, 31), horizon_days=180, train_count=3)


def test_explicit_cutoffs_whose_label_windows_overlap_are_refused():
    dates = (dt.date(2017, 3, 1), dt.date(2017, 5, 1), dt.date(2017, 8, 1))
    with pytest.raises(PortraitError, match="let label windows overlap"):
        explicit_split(dates, 90, "time")


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown keys \['lable'\]"):
        parse_experiment({**BASE, "lable": {}})
    with pytest.raises(ConfigError, match="kind must be one of"):
        parse_experiment({**BASE, "label": {"kind": "churn", "horizon_days": 90}})
    with pytest.raises(ConfigError, match="horizon_days must be a positive integer"):
        parse_experiment({**BASE, "label": {"kind": "repurchase", "horizon_days": "90"}})
    with pytest.raises(ConfigError, match=r"unknown families \['mood'\]"):
        parse_experiment({**BASE, "features": {"exclude_families": ["mood"]}})
    with pytest.raises(ConfigError, match="either rule"):
        parse_experiment({**BASE, "cutoffs": {"rule": "monthly", "dates": ["2017-01-01"]}})


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
