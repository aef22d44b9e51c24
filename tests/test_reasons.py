"""Reasons: each feature phrased from its catalogue meaning (label, and the value by its scale)."""

import numpy as np
import pandas as pd
import pytest

from features.catalogue import describe
from models.reasons import format_value, phrase, top_reasons
from serving.registry import LoadedModel
from serving.score import model_meanings, reasons_for

VOCABULARY = {"categories": ["Dairy & Eggs", "Fresh Food"], "channels": ["App", "Store"]}


@pytest.mark.parametrize(
    ("feature", "value", "expected"),
    [
        ("spend_90d", 1234.5, "spend in the last 90 days: 1,234.50"),  # money
        ("avg_order_value", 20, "average order value: 20.00"),
        ("spend_lifetime", -12.345, "spend in all, net of refunds: -12.35"),
        ("promo_share_365d", 0.456, "share of orders with a discount in the last 365 days: 46%"),  # share
        ("orders_90d", 4.0, "orders in the last 90 days: 4"),  # count
        ("items_30d", 1234.0, "units bought in the last 30 days: 1,234"),
        ("campaign_click_count_90d", 3, "campaign clicks in the last 90 days: 3"),
        ("days_since_last_purchase", 12.0, "days since the last purchase: 12 days"),  # days
        ("days_since_last_purchase", 1, "days since the last purchase: 1 day"),
        ("mean_days_between_orders", 12.5, "days between orders on average: 12.5 days"),
        ("favourite_category", "Dairy & Eggs", "favourite category: Dairy & Eggs"),  # category
        ("overdue_ratio", 1.5, "time since the last order against the usual gap: 1.50"),  # ratio
        ("spend_90d", np.nan, "spend in the last 90 days: unknown"),  # null
        ("days_since_last_purchase", None, "days since the last purchase: unknown"),
        ("favourite_category", None, "favourite category: unknown"),
        ("basket_entropy", 0.5, "basket entropy: 0.50"),  # not a feature: its name in words
    ],
)
def test_a_feature_is_phrased_by_its_label_and_scale(feature, value, expected):
    assert phrase(feature, value) == expected


def test_per_value_shares_name_the_data_value_from_the_vocabulary():
    meanings = describe(["category_share_dairy_eggs", "channel_share_app"], vocabulary=VOCABULARY)
    assert phrase("category_share_dairy_eggs", 0.45, meanings) == "share of spend on Dairy & Eggs: 45%"
    assert phrase("channel_share_app", 1.0, meanings) == "share of orders via App: 100%"
    # without the vocabulary the value is read from the name
    assert phrase("category_share_dairy_eggs", 0.45) == "share of spend on dairy eggs: 45%"


def test_a_number_attribute_reads_a_year_as_a_year_and_a_large_number_with_separators():
    """A birth year, now described as the number it is (the kinds a feature table carries),
    was phrased "birth year: 1,975"."""
    meanings = describe(["attr_birth_year", "attr_income"], attributes={"birth_year": "number", "income": "number"})
    assert phrase("attr_birth_year", 1975.0, meanings) == "birth year: 1975"
    assert phrase("attr_income", 52000.0, meanings) == "income: 52,000"
    assert phrase("attr_income", 52000.5, meanings) == "income: 52,000.50"


def test_stored_meanings_phrase_like_the_catalogue():
    feature = describe(["spend_90d"])["spend_90d"]
    assert phrase("spend_90d", 1234.5, {"spend_90d": feature.meaning()}) == "spend in the last 90 days: 1,234.50"
    stored = {"x": {"label": "money on x", "scale": "money", "unit": "currency"}}
    assert phrase("x", 3, stored) == "money on x: 3.00"


def test_values_are_formatted_by_scale():
    assert format_value(0.5, "share") == "50%"
    assert format_value(1, "flag") == "yes"
    assert format_value(0, "flag") == "no"
    assert format_value(2.0, "number") == "2"
    assert format_value(2.25, "number") == "2.25"
    assert format_value("web", "count") == "web"  # text is shown as is whatever the scale
    assert format_value(pd.NA, "money") == "unknown"
    assert format_value(np.float32("nan"), "share") == "unknown"
    assert format_value(np.int64(7), "days") == "7 days"


def test_top_reasons_take_the_largest_positive_contributions():
    contributions = pd.DataFrame({"orders_90d": [0.5, -0.2], "spend_30d": [0.1, 0.3], "view_count_7d": [0.7, -0.1]})
    features = pd.DataFrame({"orders_90d": [4, 0], "spend_30d": [20.0, 55.5], "view_count_7d": [9, 0]})
    reasons = top_reasons(contributions, features, k=2)
    assert reasons.loc[0].tolist() == [
        "product views in the last 7 days: 9",
        "orders in the last 90 days: 4",
    ]
    assert reasons.loc[1].tolist() == ["spend in the last 30 days: 55.50", None]
    # A left-out feature (a sensitive attribute) is never a reason: the next one takes its place.
    hidden = top_reasons(contributions, features, k=2, leave_out=["view_count_7d"])
    assert hidden.loc[0].tolist() == ["orders in the last 90 days: 4", "spend in the last 30 days: 20.00"]
    assert hidden.loc[1].tolist() == ["spend in the last 30 days: 55.50", None]


class _Contributions:
    """A stand-in estimator whose contributions are the feature values themselves."""

    def contributions(self, X):
        return X.apply(pd.to_numeric, errors="coerce").fillna(-1.0)


def test_a_model_logged_before_meanings_were_stored_describes_its_features_from_its_meta():
    # windows (30, 60): spend_60d is not in the default catalogue, so only the stored settings
    # and vocabulary can label it and name the category
    meta = {
        "label": "repurchase",
        "features": ["spend_60d", "category_share_dairy_eggs", "days_since_last_purchase"],
        "vocabulary": {**VOCABULARY, "brands": [], "payment_methods": []},
        "feature_config": {"windows": [30, 60], "behaviour_window": 60, "trend_window": 60},
        "descriptions": {"spend_60d": "Net spend in the last 60 days, refunds deducted."},
    }
    assert set(model_meanings(meta)) == set(meta["features"])
    model = LoadedModel("m", "1", "champion", meta, _Contributions(), {})
    features = pd.DataFrame(
        {"spend_60d": [1500.0], "category_share_dairy_eggs": [0.3], "days_since_last_purchase": [7.0]}
    )
    assert reasons_for(model, features).loc[0].tolist() == [
        "spend in the last 60 days: 1,500.00",
        "days since the last purchase: 7 days",
        "share of spend on Dairy & Eggs: 30%",
    ]


def test_a_model_with_stored_meanings_uses_them():
    meta = {
        "label": "repurchase",
        "features": ["spend_60d"],
        "meanings": {"spend_60d": {"label": "two months' spend", "scale": "money", "unit": "currency"}},
    }
    model = LoadedModel("m", "1", "champion", meta, _Contributions(), {})
    assert reasons_for(model, pd.DataFrame({"spend_60d": [10.0]}), k=1).loc[0].tolist() == ["two months' spend: 10.00"]


def test_sensitive_attributes_are_found_as_values_and_dates_and_dropped_from_stored_reasons():
    from portrait.privacy import PrivacySettings
    from serving.score import sensitive_features, without_sensitive_reasons

    privacy = PrivacySettings(sensitive_columns=("age_band", "birth_date"))
    names = ["attr_age_band", "days_since_birth_date", "attr_birth_date", "attr_region", "orders_90d"]
    assert sensitive_features(privacy, names) == ["attr_age_band", "days_since_birth_date", "attr_birth_date"]
    assert sensitive_features(None, names) == []
    stored = pd.DataFrame(
        {
            "reason_1": ["age band: 25-34", "orders in the last 90 days: 4", None],
            "reason_2": ["spend in the last 30 days: 20.00", "days since birth date: 12000 days", None],
            "reason_3": ["orders in the last 90 days: 4", "region: north", None],
        }
    )
    kept = without_sensitive_reasons(stored, privacy)
    assert kept.to_numpy().tolist() == [
        ["spend in the last 30 days: 20.00", "orders in the last 90 days: 4", None],
        ["orders in the last 90 days: 4", "region: north", None],
        [None, None, None],
    ]
    assert without_sensitive_reasons(stored, PrivacySettings()).equals(stored)


def test_a_sensitive_column_marked_in_another_case_still_drops_its_stored_reasons():
    """``sensitive_columns = ["Age"]`` marks the column ``age`` (any case); the reasons stored
    before the mark say ``age: 75.0`` and must go as well."""
    from portrait.privacy import PrivacySettings
    from serving.score import without_sensitive_reasons

    stored = pd.DataFrame(
        {"reason_1": ["age: 75.0", "Age Band: 65+"], "reason_2": ["orders in the last 90 days: 4", None]}
    )
    kept = without_sensitive_reasons(stored, PrivacySettings(sensitive_columns=("Age", "age_band")))
    assert kept.to_numpy().tolist() == [["orders in the last 90 days: 4", None], [None, None]]
