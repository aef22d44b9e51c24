"""Pure pieces of training: config validation, time splits, metrics, reasons."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from models.reasons import phrase, top_reasons
from portrait.errors import ConfigError, PortraitError
from training.config import parse_experiment
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


def test_reasons_are_phrased_for_a_marketer():
    assert phrase("orders_90d", 4.0) == "bought 4 times in the last 90 days"
    assert phrase("campaign_click_count_90d", 3) == "clicked 3 campaigns in the last 90 days"
    assert phrase("category_share_fresh_food", 0.42) == "42% of spend on fresh food"
    assert phrase("days_since_last_purchase", 12.0) == "last bought 12 days ago"


def test_top_reasons_take_the_largest_positive_contributions():
    contributions = pd.DataFrame({"orders_90d": [0.5, -0.2], "spend_30d": [0.1, 0.3], "view_count_7d": [0.7, -0.1]})
    features = pd.DataFrame({"orders_90d": [4, 0], "spend_30d": [20.0, 55.5], "view_count_7d": [9, 0]})
    reasons = top_reasons(contributions, features, k=2)
    assert reasons.loc[0].tolist() == [
        "viewed products 9 times in the last 7 days",
        "bought 4 times in the last 90 days",
    ]
    assert reasons.loc[1].tolist() == ["spent 55.50 in the last 30 days", None]
