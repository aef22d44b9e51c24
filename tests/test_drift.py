"""Population stability: the index by hand, and which features are flagged at scoring."""

import math

import numpy as np
import pandas as pd
import pytest

from models.drift import bin_shares, population_stability_index, reference_distributions
from serving.drift import FLAG, WARN, drift_report


def test_psi_matches_the_hand_computed_value():
    # PSI = sum over bins of (actual - expected) * ln(actual / expected)
    # bins:      expected  actual   (a - e)   ln(a / e)
    #   low        0.5      0.8      +0.3     ln(1.6) = 0.470004
    #   high       0.5      0.2      -0.3     ln(0.4) = -0.916291
    # PSI = 0.3 * 0.470004 + (-0.3) * (-0.916291) = 0.3 * ln(1.6 / 0.4) = 0.3 * ln 4 = 0.415888
    assert population_stability_index([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.3 * math.log(4), abs=1e-12)
    assert population_stability_index([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.415888, abs=1e-6)


def test_psi_of_three_bins_with_an_empty_one_uses_the_floor():
    # expected (0.25, 0.25, 0.5), actual (0.5, 0.5, 0.0); the empty bin counts as 1e-4:
    #   (0.5 - 0.25) * ln(0.5 / 0.25)       = 0.25 * ln 2      = 0.173287  (twice)
    #   (0.0001 - 0.5) * ln(0.0001 / 0.5)   = -0.4999 * -8.517193 = 4.257745
    # PSI = 2 * 0.173287 + 4.257745 = 4.604319
    expected = 2 * 0.25 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert population_stability_index([0.25, 0.25, 0.5], [0.5, 0.5, 0.0]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(4.604319, abs=1e-6)


def test_psi_is_zero_for_the_same_shares_and_symmetric():
    assert population_stability_index([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert population_stability_index([0.5, 0.5], [0.8, 0.2]) == pytest.approx(
        population_stability_index([0.8, 0.2], [0.5, 0.5])
    )


def test_bins_are_right_closed_with_a_last_bin_for_missing():
    # edges 1 and 2: (-inf, 1], (1, 2], (2, inf), missing
    values = pd.Series([0.5, 1.0, 1.5, 2.0, 3.0, np.nan])
    assert bin_shares(values, [1.0, 2.0]).tolist() == pytest.approx([2 / 6, 2 / 6, 1 / 6, 1 / 6])


def _reference_half_and_half() -> dict:
    # One edge at 0.5: zeros fall in the low bin, ones in the high bin; no missing values.
    return {"f": {"edges": [0.5], "shares": [0.5, 0.5, 0.0]}}


def _ones(share_of_ones: float, n: int = 1000) -> pd.DataFrame:
    ones = round(share_of_ones * n)
    return pd.DataFrame({"f": [0.0] * (n - ones) + [1.0] * ones})


def test_a_shifted_feature_is_flagged():
    # shares 0.8 / 0.2 against 0.5 / 0.5: PSI 0.415888 (as above) > 0.25
    report = drift_report(_reference_half_and_half(), _ones(0.2))
    assert report["flagged"] == {"f": pytest.approx(0.4159, abs=1e-4)}
    assert report["warnings"] == {}
    assert report["features_checked"] == 1


def test_a_stable_feature_is_neither_flagged_nor_warned():
    report = drift_report(_reference_half_and_half(), _ones(0.5))
    assert report == {"flagged": {}, "warnings": {}, "features_checked": 1}


def test_a_moderate_shift_is_a_warning_not_a_flag():
    # shares 0.68 / 0.32: PSI = 0.18 * ln(0.68 / 0.32) = 0.18 * 0.753772 = 0.135679, between 0.1 and 0.25
    report = drift_report(_reference_half_and_half(), _ones(0.32))
    assert WARN < 0.135679 <= FLAG
    assert report["flagged"] == {}
    assert report["warnings"] == {"f": pytest.approx(0.1357, abs=1e-4)}


def test_a_small_shift_is_not_reported():
    # shares 0.65 / 0.35: PSI = 0.15 * ln(0.65 / 0.35) = 0.15 * 0.619039 = 0.092856 < 0.1
    report = drift_report(_reference_half_and_half(), _ones(0.35))
    assert report == {"flagged": {}, "warnings": {}, "features_checked": 1}


def test_reference_from_training_then_a_shifted_sample_is_flagged_and_a_fresh_one_is_not():
    rng = np.random.default_rng(7)
    train = pd.DataFrame({"spend": rng.normal(100, 20, 20_000), "orders": rng.poisson(5, 20_000).astype(float)})
    reference = reference_distributions(train)
    fresh = pd.DataFrame({"spend": rng.normal(100, 20, 5_000), "orders": rng.poisson(5, 5_000).astype(float)})
    shifted = fresh.assign(spend=fresh["spend"] + 30)  # 1.5 standard deviations more
    assert drift_report(reference, fresh)["flagged"] == {}
    assert drift_report(reference, fresh)["warnings"] == {}
    report = drift_report(reference, shifted)
    assert list(report["flagged"]) == ["spend"]
    assert report["flagged"]["spend"] > FLAG
    assert report["features_checked"] == 2


def test_flagged_features_are_listed_worst_first():
    reference = {name: {"edges": [0.5], "shares": [0.5, 0.5, 0.0]} for name in ("a", "b")}
    features = pd.DataFrame({"a": _ones(0.2)["f"], "b": _ones(0.05)["f"]})
    assert list(drift_report(reference, features)["flagged"]) == ["b", "a"]


def test_a_category_feature_drifts_when_a_value_it_never_held_takes_a_share():
    train = pd.DataFrame({"favourite_channel": pd.Categorical(["web"] * 60 + ["app"] * 40)})
    reference = reference_distributions(train)
    assert reference == {"favourite_channel": {"values": ["web", "app"], "shares": [0.6, 0.4, 0.0, 0.0]}}
    same = pd.DataFrame({"favourite_channel": pd.Categorical(["app"] * 4 + ["web"] * 6)})
    assert drift_report(reference, same) == {"flagged": {}, "warnings": {}, "features_checked": 1}
    # a new channel takes 20%, from app: PSI = (0.2 - 0.4) ln(0.2 / 0.4) + (0.2 - 1e-4) ln(0.2 / 1e-4)
    new = pd.DataFrame({"favourite_channel": ["web"] * 60 + ["app"] * 20 + ["kiosk"] * 20})
    expected = -0.2 * np.log(0.5) + (0.2 - 1e-4) * np.log(0.2 / 1e-4)
    assert drift_report(reference, new)["flagged"] == {"favourite_channel": round(expected, 4)}
