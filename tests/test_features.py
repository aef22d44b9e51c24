"""Feature builders on a hand-written data set with every expected value written out.

Cutoff 2024-03-01. Customer A: two orders and a refund; B: only events; C: one order a year
ago; D: only a refund; E: first seen after the cutoff.
"""

import math

import pandas as pd
import pytest

from features.build import build_features
from features.catalogue import FAMILIES, catalogue, describe
from features.config import FeatureConfig
from features.labels import build_labels, build_training_set
from portrait.dataset import Dataset
from portrait.errors import ConfigError, PortraitError

CUTOFF = "2024-03-01"
PURCHASE_COLUMNS = [
    "order_id",
    "customer_id",
    "ts",
    "amount",
    "quantity",
    "category",
    "brand",
    "channel",
    "payment_method",
    "discount",
]
PURCHASES = pd.DataFrame(
    [
        ("o1", "A", "2024-01-01 10:00:00", 20.0, 1, "books", "b1", "web", "card", 0.0),
        ("o1", "A", "2024-01-01 10:00:00", 10.0, 2, "toys", "b2", "web", "card", 5.0),
        ("o2", "A", "2024-02-15 19:30:00", 40.0, 2, "books", "b1", "app", "card", 0.0),
        ("r1", "A", "2024-02-20 12:00:00", -20.0, -1, "books", "b1", "web", "card", 0.0),
        ("o3", "A", "2024-03-01 00:00:00", 55.0, 1, "books", "b1", "app", "card", 0.0),  # at cutoff
        ("c1", "C", "2023-03-05 14:00:00", 100.0, 1, "toys", "b2", "store", "cash", 0.0),
        ("r2", "D", "2024-02-10 11:00:00", -15.0, -1, "books", "b1", "store", "cash", 0.0),
        ("e1", "E", "2024-03-05 12:00:00", 30.0, 1, "toys", "b2", "web", "card", 0.0),
    ],
    columns=PURCHASE_COLUMNS,
)
EVENTS = pd.DataFrame(
    [
        ("A", "2024-01-10 09:00:00", "campaign_received"),  # no purchase within 7 days
        ("A", "2024-02-10 09:00:00", "campaign_received"),  # o2 five days later
        ("A", "2024-02-14 18:00:00", "view"),
        ("B", "2024-02-01 09:00:00", "campaign_received"),
        ("B", "2024-02-28 09:00:00", "view"),
        ("B", "2024-02-28 09:05:00", "Add_To_Cart "),  # free text is trimmed and lower-cased
        ("E", "2024-03-02 09:00:00", "view"),
    ],
    columns=["customer_id", "ts", "event_type"],
)


def dataset(purchases=PURCHASES, events=EVENTS) -> Dataset:
    return Dataset.from_frames(purchases=purchases, events=events)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return build_features(dataset(), CUTOFF).set_index("customer_id")


EXPECTED_A = {
    "days_since_last_purchase": 15,
    "days_since_first_purchase": 60,
    "orders_lifetime": 2,
    "spend_lifetime": 50.0,
    "avg_order_value": 35.0,
    "max_order_value": 40.0,
    "refund_count": 1,
    "refund_amount": 20.0,
    "refund_rate": 20 / 70,
    "orders_7d": 0,
    "orders_30d": 1,
    "spend_30d": 20.0,
    "orders_90d": 2,
    "spend_90d": 50.0,
    "items_90d": 5.0,
    "active_days_90d": 2,
    "distinct_categories_30d": 1,
    "distinct_categories_90d": 2,
    "mean_days_between_orders": 45.0,
    "std_days_between_orders": None,
    "overdue_ratio": 15 / 45,
    "spend_trend_90d": 1.0,
    "orders_trend_90d": 1.0,
    # shares of net spend: books 20 + 40 - 20 (the refund r1) = 40, toys 10
    "category_share_toys": 10 / 50,
    "category_share_books": 40 / 50,
    "category_share_other": 0.0,
    "brand_share_b2": 10 / 50,
    "brand_share_b1": 40 / 50,
    "channel_share_store": 0.0,
    "channel_share_app": 0.5,
    "channel_share_web": 0.5,
    "payment_share_cash": 0.0,
    "payment_share_card": 1.0,
    "favourite_category": "books",
    "favourite_channel": "app",
    "distinct_categories_lifetime": 2,
    "discount_order_share": 0.5,
    "avg_discount_depth": 5 / 35,
    "price_level": (1 * 7.5 / 53.75 * 1) ** (1 / 3),  # geometric mean of the three lines' ratios
    "premium_line_share": 0.0,
    "promo_share_30d": 0.0,
    "promo_share_90d": 0.5,
    "order_share_monday": 0.5,
    "order_share_thursday": 0.5,
    "order_share_weekend": 0.0,
    "order_share_morning": 0.5,
    "order_share_evening": 0.5,
    "payday_order_share": 1.0,
    "peak_season_order_share": 1.0,
    "view_count_30d": 1,
    "campaign_received_count_30d": 1,
    "campaign_received_count_90d": 2,
    "event_count_90d": 3,
    "days_since_last_event": 16,
    "active_event_days_90d": 3,
    "view_to_cart_rate_90d": 0.0,
    "cart_to_purchase_rate_90d": None,
    "campaign_response_rate": 0.5,
}
EXPECTED_B = {
    "orders_lifetime": 0,
    "spend_lifetime": 0.0,
    "days_since_last_purchase": None,
    "avg_order_value": None,
    "category_share_books": None,
    "favourite_category": None,
    "view_count_7d": 1,
    "add_to_cart_count_7d": 1,
    "days_since_last_event": 2,
    "view_to_cart_rate_90d": 1.0,
    "cart_to_purchase_rate_90d": 0.0,
    "campaign_response_rate": 0.0,
}
EXPECTED_C = {
    "days_since_last_purchase": 362,
    "orders_lifetime": 1,
    "orders_180d": 0,
    "orders_365d": 1,
    "mean_days_between_orders": None,
    "overdue_ratio": None,
    "order_share_sunday": 1.0,
    "order_share_afternoon": 1.0,
    "payday_order_share": 1.0,
    "price_level": 100 / 53.75,
    "premium_line_share": 1.0,
    "days_since_last_event": None,
    "view_count_365d": 0,
}
EXPECTED_D = {  # only a refund
    "orders_lifetime": 0,
    "refund_count": 1,
    "refund_amount": 15.0,
    "spend_lifetime": -15.0,
    "days_since_last_purchase": None,
    "refund_rate": None,
    "category_share_books": None,
}


def assert_row(row: pd.Series, expected: dict) -> None:
    for name, value in expected.items():
        actual = row[name]
        if value is None:
            assert pd.isna(actual), f"{name}: expected null, got {actual}"
        elif isinstance(value, str):
            assert actual == value, f"{name}: expected {value}, got {actual}"
        else:
            assert not pd.isna(actual) and math.isclose(actual, value, rel_tol=1e-9, abs_tol=1e-12), (
                f"{name}: expected {value}, got {actual}"
            )


@pytest.mark.parametrize(
    "customer,expected", [("A", EXPECTED_A), ("B", EXPECTED_B), ("C", EXPECTED_C), ("D", EXPECTED_D)]
)
def test_hand_computed_feature_values(features, customer, expected):
    assert_row(features.loc[customer], expected)


def test_customers_first_seen_after_the_cutoff_are_not_rows(features):
    assert features.index.tolist() == ["A", "B", "C", "D"]


def test_vocabulary_is_top_values_by_spend_before_the_cutoff():
    frame = build_features(dataset(), CUTOFF)
    assert frame.attrs["vocabulary"] == {
        "categories": ["toys", "books"],
        "brands": ["b2", "b1"],
        "channels": ["store", "app", "web"],
        "payment_methods": ["cash", "card"],
    }


def test_values_holding_an_email_or_a_phone_number_name_no_feature(caplog):
    """A category "Engraving for jo@example.com" or a brand with a phone number named features,
    and through them MLflow's runs and the interest tags, for good: left out of the vocabulary
    (their lines 'other'), and said without the value."""
    purchases = PURCHASES.assign(
        category=PURCHASES["category"].replace({"toys": "Engraving for jo.doe@example.com"}),
        brand=PURCHASES["brand"].replace({"b1": "call +44 (0)20 7946 0958"}),
    )
    with caplog.at_level("WARNING", logger="features.build"):
        frame = build_features(dataset(purchases), CUTOFF)
    vocabulary = frame.attrs["vocabulary"]
    assert vocabulary["categories"] == ["books"] and vocabulary["brands"] == ["b2"]
    assert not [c for c in frame.columns if "example" in c or "7946" in c]
    said = [r.getMessage() for r in caplog.records]
    assert "purchases.category: 1 value(s) hold an e-mail address or a phone number; left out" in said[0]
    assert "purchases.brand: 1 value(s)" in said[1]
    assert not [m for m in said if "example.com" in m or "7946" in m]


def test_dtypes_are_explicit(features):
    assert features["orders_lifetime"].dtype == "int64"
    assert features["spend_lifetime"].dtype == "float64"
    assert isinstance(features["favourite_category"].dtype, pd.CategoricalDtype)


def test_catalogue_has_all_eight_families_and_unique_names():
    families = {f.family for f in catalogue()}
    assert families == set(FAMILIES) and len(FAMILIES) == 8


AFTER_CUTOFF_PURCHASES = pd.DataFrame(
    [
        ("x1", "A", "2024-03-01 00:00:00", 999.0, 9, "games", "b9", "kiosk", "crypto", 50.0),
        ("x2", "B", "2024-03-10 08:00:00", 5.0, 1, "books", "b1", "app", "card", 0.0),
        ("x3", "Z", "2025-01-01 08:00:00", 1e6, 1, "cars", "b7", "web", "card", 0.0),
        ("x4", "C", "2024-03-02 08:00:00", -100.0, -1, "toys", "b2", "store", "cash", 0.0),
    ],
    columns=PURCHASE_COLUMNS,
)
AFTER_CUTOFF_EVENTS = pd.DataFrame(
    [
        ("A", "2024-03-01 00:00:00", "view"),
        ("C", "2024-03-03 00:00:00", "campaign_received"),
        ("Z", "2024-04-01 00:00:00", "add_to_cart"),
    ],
    columns=["customer_id", "ts", "event_type"],
)


def test_rows_at_or_after_the_cutoff_change_no_feature_value(features):
    leaked = build_features(
        dataset(pd.concat([PURCHASES, AFTER_CUTOFF_PURCHASES]), pd.concat([EVENTS, AFTER_CUTOFF_EVENTS])),
        CUTOFF,
    ).set_index("customer_id")
    pd.testing.assert_frame_equal(features, leaked)


def test_a_campaign_whose_response_window_is_open_at_the_cutoff_is_not_scored():
    # received 3 days before the cutoff: whether it is answered is not knowable yet
    events = pd.concat(
        [EVENTS, pd.DataFrame([("C", "2024-02-27 09:00:00", "campaign_received")], columns=EVENTS.columns)]
    )
    frame = build_features(dataset(events=events), CUTOFF).set_index("customer_id")
    assert pd.isna(frame.loc["C", "campaign_response_rate"])


def test_a_campaigns_response_does_not_change_once_its_window_is_closed():
    """Received 7 days before the cutoff to the second: an order at the cutoff itself, the end of
    the window, is not seen then, nor counted at a later cutoff (it was 0.0, then 1.0); one a
    second before the end is a response at both."""
    receipts = pd.DataFrame(
        [("D", "2024-02-23 00:00:00", "campaign_received"), ("E", "2024-02-23 00:00:00", "campaign_received")],
        columns=EVENTS.columns,
    )
    orders = PURCHASES.iloc[[0]]
    at_end = orders.assign(order_id="d1", customer_id="D", ts="2024-03-01 00:00:00")
    just_before = orders.assign(order_id="e1", customer_id="E", ts="2024-02-29 23:59:59")
    data = dataset(pd.concat([PURCHASES, at_end, just_before]), pd.concat([EVENTS, receipts]))
    for cutoff in (CUTOFF, "2024-03-02", "2024-03-20"):
        frame = build_features(data, cutoff).set_index("customer_id")
        assert frame.loc["D", "campaign_response_rate"] == 0.0, cutoff
        assert frame.loc["E", "campaign_response_rate"] == 1.0, cutoff


def test_row_order_and_part_files_change_nothing(features, tmp_path):
    shuffled = build_features(
        dataset(PURCHASES.sample(frac=1, random_state=1), EVENTS.sample(frac=1, random_state=2)), CUTOFF
    ).set_index("customer_id")
    pd.testing.assert_frame_equal(features, shuffled)

    from portrait.dataset import open_dataset

    for name, frame in (("purchases", PURCHASES), ("events", EVENTS)):
        folder = tmp_path / name
        folder.mkdir()
        for i, part in enumerate((frame.iloc[::2], frame.iloc[1::2])):
            part.to_parquet(folder / f"part-{i}.parquet", index=False)
    from_parts = build_features(open_dataset(tmp_path), CUTOFF).set_index("customer_id")
    pd.testing.assert_frame_equal(features, from_parts, check_dtype=False)


def test_without_events_behaviour_features_are_zero_or_null():
    frame = build_features(Dataset.from_frames(purchases=PURCHASES), CUTOFF).set_index("customer_id")
    assert frame.index.tolist() == ["A", "C", "D"]
    assert frame["view_count_30d"].eq(0).all()
    assert frame["days_since_last_event"].isna().all()


def test_a_build_tells_its_progress_each_step_by_name_and_gives_the_same_table(features):
    told = []
    frame = build_features(dataset(), CUTOFF, progress=told.append).set_index("customer_id")
    assert told[0] == "features: purchases" and told[-1] == "features: joining them into one table"
    assert {"features: orders", "features: orders per customer", "features: event buckets per customer"} <= set(told)
    assert all(message.startswith("features: ") and "f_" not in message for message in told)
    pd.testing.assert_frame_equal(frame, features)


def test_orders_of_one_day_give_the_same_timeline_whatever_their_ids():
    """Two orders on 2024-02-01 and one ten days later: two active days, gaps 0 and 10 (the
    second order of the day is 0 days after the first), whichever id sorts first."""

    def timeline(first_id: str, second_id: str) -> pd.Series:
        purchases = pd.DataFrame(
            [
                (first_id, "F", "2024-02-01 10:00:00", 10.0, 1, "books", "b1", "web", "card", 0.0),
                (second_id, "F", "2024-02-01 15:00:00", 12.0, 1, "books", "b1", "web", "card", 0.0),
                ("m3", "F", "2024-02-11 09:00:00", 14.0, 1, "books", "b1", "web", "card", 0.0),
            ],
            columns=PURCHASE_COLUMNS,
        )
        frame = build_features(dataset(purchases, EVENTS.iloc[:0]), CUTOFF).set_index("customer_id")
        return frame.loc["F", ["active_days_lifetime", "active_days_30d", "std_days_between_orders"]]

    expected = {"active_days_lifetime": 2, "active_days_30d": 2, "std_days_between_orders": math.sqrt(50)}
    for ids in (("a1", "z2"), ("z2", "a1")):
        assert timeline(*ids).to_dict() == pytest.approx(expected)


def test_cutoff_is_required_to_be_a_date():
    with pytest.raises(PortraitError, match="must be a date at midnight"):
        build_features(dataset(), "2024-03-01 12:00")
    with pytest.raises(PortraitError, match="is not a date"):
        build_features(dataset(), "soon")


def test_feature_config_rejects_unknown_keys_and_bad_windows():
    with pytest.raises(ConfigError, match=r"unknown feature settings \['windowz'\]"):
        FeatureConfig.from_dict({"windowz": [7]})
    with pytest.raises(ConfigError, match="distinct and ascending"):
        FeatureConfig(windows=(30, 7, 90))
    with pytest.raises(ConfigError, match="trend_window must be at least 1 day, got 0"):
        FeatureConfig(trend_window=0)
    # the behaviour family counts events over one of the windows (a ValueError traceback before)
    with pytest.raises(ConfigError, match=r"behaviour_window = 90 must be one of the windows \[30, 60\]"):
        FeatureConfig(windows=(30, 60))
    assert "orders_60d" in {f.name for f in catalogue(FeatureConfig(windows=(30, 60), behaviour_window=60))}


def test_configured_windows_change_the_catalogue():
    frame = build_features(dataset(), CUTOFF, FeatureConfig(windows=(14, 90)))
    assert "orders_14d" in frame.columns and "orders_30d" not in frame.columns


def test_labels_read_only_the_window_after_the_cutoff():
    labels = build_labels(dataset(), CUTOFF, 30, pd.Series(["A", "B", "C", "D"])).set_index("customer_id")
    assert labels.loc["A"].to_dict() == {"future_spend": 55.0, "repurchase": 1, "high_value": 1}
    assert labels.loc["B"].to_dict() == {"future_spend": 0.0, "repurchase": 0, "high_value": 0}
    # E bought in the window but was not a feature row, so has no label row
    assert "E" not in labels.index


def test_the_rest_of_an_order_placed_before_the_cutoff_is_no_repurchase():
    """o1's lines straddle the cutoff's midnight: the features count it an order before the
    cutoff, and the label counted it again, a repurchase already made. The same order id two
    days before is another order (a number used again), and a repurchase."""
    frame = pd.DataFrame(
        {
            "order_id": ["o1", "o1", "o2", "o2", "o3"],
            "customer_id": ["s", "s", "t", "t", "u"],
            "ts": ["2017-03-26 23:59:58", "2017-03-27 00:00:02", "2017-03-25 10:00:00", "2017-03-28 10:00:00",
                   "2017-03-29 10:00:00"],
            "amount": [5.0, 7.0, 3.0, 4.0, 6.0],
        }
    )  # fmt: skip
    data = Dataset.from_frames(purchases=frame)
    features = build_features(data, "2017-03-27", families=["value"]).set_index("customer_id")
    assert features.loc["s", "orders_lifetime"] == 1
    labels = build_labels(data, "2017-03-27", 7, pd.Series(["s", "t", "u"])).set_index("customer_id")
    assert labels["repurchase"].to_dict() == {"s": 0, "t": 1, "u": 1}
    assert labels["future_spend"].to_dict() == {"s": 7.0, "t": 4.0, "u": 6.0}  # the window's money, as before


def test_refunds_reduce_future_spend_and_are_not_a_repurchase():
    purchases = pd.concat([PURCHASES, AFTER_CUTOFF_PURCHASES])
    labels = build_labels(dataset(purchases), CUTOFF, 30, pd.Series(["A", "C"])).set_index("customer_id")
    assert labels.loc["C"].to_dict() == {"future_spend": -100.0, "repurchase": 0, "high_value": 0}
    assert labels.loc["A", "future_spend"] == 55.0 + 999.0


def test_the_labels_count_a_purchase_order_as_the_features_do():
    # One rule for both: an order with a line that is not a refund is a purchase order; refund
    # lines alone are a refund. F's orders are free ($0.00, as the BTYD literature counts
    # a transaction); G's lines cancel to a floating residue below 0 (0.3 - 0.1 - 0.2); H's
    # exchanges net -5.00 but sell a line; K's only order in the window is a return of one
    # bought before the cutoff, under that order's id.
    rows = [
        ("f1", "F", "2024-02-01 10:00:00", 0.0),
        ("f2", "F", "2024-03-10 10:00:00", 0.0),
        ("g1", "G", "2024-02-01 10:00:00", 0.3),
        ("g1", "G", "2024-02-01 10:00:00", -0.1),
        ("g1", "G", "2024-02-01 10:00:00", -0.2),
        ("g2", "G", "2024-03-10 10:00:00", 0.3),
        ("g2", "G", "2024-03-10 10:00:00", -0.1),
        ("g2", "G", "2024-03-10 10:00:00", -0.2),
        ("h0", "H", "2024-01-05 10:00:00", 20.0),
        ("h1", "H", "2024-02-01 10:00:00", 5.0),
        ("h1", "H", "2024-02-01 10:00:00", -10.0),
        ("h2", "H", "2024-03-10 10:00:00", 5.0),
        ("h2", "H", "2024-03-10 10:00:00", -10.0),
        ("k1", "K", "2024-02-20 10:00:00", 40.0),
        ("k1", "K", "2024-03-05 10:00:00", -40.0),
    ]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount"])
    data = Dataset.from_frames(purchases=purchases)
    features = build_features(data, CUTOFF).set_index("customer_id")
    assert features["orders_lifetime"].to_dict() == {"F": 1, "G": 1, "H": 2, "K": 1}
    assert features.loc["H", "days_since_last_purchase"] == 29  # h1 on 2024-02-01 sold a line
    assert features["refund_count"].to_dict() == {"F": 0, "G": 1, "H": 1, "K": 0}
    labels = build_labels(data, CUTOFF, 30, pd.Series(["F", "G", "H", "K"])).set_index("customer_id")
    assert labels["repurchase"].to_dict() == {"F": 1, "G": 1, "H": 1, "K": 0}
    assert labels["future_spend"].to_dict() == {"F": 0.0, "G": 0.0, "H": -5.0, "K": -40.0}


def test_a_return_counts_alike_under_its_orders_id_or_a_new_one():
    """How a shop books a return must not change a feature: A returns under the order's id, B
    under a new id, in a later window than the purchase; C's refund (shipping too) exceeds its
    order; D's return line has no quantity."""
    rows = [
        ("a1", "A", "2024-01-10 10:00:00", 60.0, 1.0),
        ("a1", "A", "2024-01-10 10:00:00", 40.0, 1.0),
        ("a1", "A", "2024-02-20 10:00:00", -40.0, -1.0),
        ("b1", "B", "2024-01-10 10:00:00", 60.0, 1.0),
        ("b1", "B", "2024-01-10 10:00:00", 40.0, 1.0),
        ("rb", "B", "2024-02-20 10:00:00", -40.0, -1.0),
        ("c1", "C", "2024-01-10 10:00:00", 100.0, 1.0),
        ("c1", "C", "2024-01-25 10:00:00", -104.95, -1.0),
        ("d1", "D", "2024-01-10 10:00:00", 50.0, 2.0),
        ("d1", "D", "2024-01-10 10:00:00", -25.0, None),
    ]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount", "quantity"])
    features = build_features(Dataset.from_frames(purchases=purchases), CUTOFF).set_index("customer_id")
    pd.testing.assert_series_equal(features.loc["A"], features.loc["B"], check_names=False)
    assert features.loc["A", ["spend_30d", "spend_90d", "items_90d", "avg_order_value"]].tolist() == [
        -40.0,
        60.0,
        2.0,
        100.0,
    ]
    assert features["orders_lifetime"].to_dict() == {"A": 1, "B": 1, "C": 1, "D": 1}
    assert features["spend_lifetime"].to_dict() == {"A": 60.0, "B": 60.0, "C": -4.95, "D": 25.0}
    assert features["refund_count"].to_dict() == {"A": 1, "B": 1, "C": 1, "D": 1}
    assert features["refund_amount"].to_dict() == {"A": 40.0, "B": 40.0, "C": 104.95, "D": 25.0}
    assert features["refund_rate"].round(6).to_dict() == {"A": 0.4, "B": 0.4, "C": 1.0495, "D": 0.5}
    assert features.loc["C", ["days_since_first_purchase", "max_order_value"]].tolist() == [51, 100.0]
    assert features.loc["D", "items_90d"] == 2.0  # units bought; the return is a refund


def test_high_value_is_the_top_quantile_of_future_spend():
    rows = [(f"o{i}", f"c{i}", "2024-01-10", 10.0) for i in range(10)]
    rows += [(f"p{i}", f"c{i}", "2024-03-05", float(i * 10)) for i in range(10)]  # 0..90
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount"])
    customers = pd.Series([f"c{i}" for i in range(10)])
    labels = build_labels(Dataset.from_frames(purchases=purchases), CUTOFF, 30, customers)
    # the 0.8 quantile of 0, 10, ..., 90 is 72: c8 and c9
    assert labels.loc[labels["high_value"] == 1, "customer_id"].tolist() == ["c8", "c9"]


def test_future_spend_is_money_rounded_so_the_high_value_cut_is_the_same_every_run():
    # 0.70 + 0.20 is 0.8999999999999999 in floating point, and a parallel sum's last bits
    # differ from run to run: the label is the money, rounded to 6 decimals, so that a customer
    # at the high-value quantile is on the same side of it in every run. c1 spends 0.90 in two
    # lines, c2 0.90 in one: the same future spend, and both at the 0.5 quantile (0.90).
    rows = [("a", "c1", "2024-03-05", 0.70), ("a", "c1", "2024-03-05", 0.20), ("b", "c2", "2024-03-06", 0.90)]
    rows += [("c", "c3", "2024-03-07", 0.10)]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount"])
    labels = build_labels(
        Dataset.from_frames(purchases=purchases), CUTOFF, 30, pd.Series(["c1", "c2", "c3"]), high_value_quantile=0.5
    ).set_index("customer_id")
    assert labels["future_spend"].to_dict() == {"c1": 0.9, "c2": 0.9, "c3": 0.1}
    assert labels["high_value"].to_dict() == {"c1": 1, "c2": 1, "c3": 0}


def test_training_set_stacks_cutoffs_with_their_labels():
    rows = [(f"o{m}", "A", f"2024-{m:02d}-10", 10.0 * m) for m in range(1, 7)]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount"])
    stacked = build_training_set(Dataset.from_frames(purchases=purchases), ["2024-03-01", "2024-04-01"], 30)
    assert stacked["cutoff"].astype(str).tolist() == ["2024-03-01", "2024-04-01"]
    assert stacked["spend_lifetime"].tolist() == [30.0, 60.0]
    assert stacked["future_spend"].tolist() == [30.0, 40.0]


def test_training_set_refuses_a_cutoff_whose_label_window_is_incomplete():
    with pytest.raises(PortraitError, match="runs past the data's last purchase day 2024-03-05"):
        build_training_set(dataset(), ["2024-03-01"], 30)


def test_training_refuses_label_windows_against_a_placeholder_date():
    """One line dated 9999-12-31 made the data end there: a holdout in 2200, or label windows
    past the real data with nobody buying in them."""
    rows = [(f"o{m}", "A", f"2024-{m:02d}-10", 10.0) for m in range(1, 7)] + [("o9", "B", "9999-12-31", 1.0)]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount"])
    message = r"1 purchase line dated after tomorrow \(the latest 9999-12-31; the others end on 2024-06-10\)"
    with pytest.raises(PortraitError, match=message):
        build_training_set(Dataset.from_frames(purchases=purchases), ["2024-03-01"], 30)


def test_docs_catalogue_agrees_with_the_code():
    from pathlib import Path

    from features.cli import catalogue_markdown

    docs = Path(__file__).resolve().parents[1] / "docs" / "features.md"
    assert catalogue_markdown() in docs.read_text()


def test_the_catalogue_piped_is_one_tab_separated_line_per_feature():
    """Off a terminal the table was cut to 80 columns: `features list | grep spend_90d` found nothing."""
    from typer.testing import CliRunner

    from portrait_cli.main import _register_later_commands, app

    _register_later_commands()
    result = CliRunner().invoke(app, ["features", "list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "name\tlabel\tfamily\twindow\tscale\tunit\tdescription"
    spend = next(line.split("\t") for line in lines if line.startswith("spend_90d\t"))
    assert spend[:6] == ["spend_90d", "spend in the last 90 days", "windows", "90d", "money", "currency"]
    assert len(lines) == 1 + len(catalogue())


def test_selected_families_only_and_their_values_unchanged(features):
    frame = build_features(dataset(), CUTOFF, families=["value", "behaviour"]).set_index("customer_id")
    assert {c for c in frame.columns} <= {f.name for f in catalogue() if f.family in ("value", "behaviour")}
    assert "cart_to_purchase_rate_90d" not in frame.columns  # needs orders_90d from windows
    pd.testing.assert_frame_equal(frame, features[frame.columns])


def test_unknown_family_is_refused():
    with pytest.raises(PortraitError, match=r"unknown feature families \['moods'\]"):
        build_features(dataset(), CUTOFF, families=["moods"])


def test_a_window_of_w_days_holds_exactly_the_w_days_before_the_cutoff():
    # cutoff 2024-03-01: the 7-day window is 2024-02-23 00:00 .. 2024-02-29 23:59:59
    purchases = pd.DataFrame(
        [("in", "K", "2024-02-23 00:00:00", 1.0), ("out", "K", "2024-02-22 23:59:59", 2.0)],
        columns=["order_id", "customer_id", "ts", "amount"],
    )
    events = pd.DataFrame(
        [
            ("K", "2024-02-23 00:00:00", "view"),
            ("K", "2024-02-22 23:59:59", "view"),
            ("K", "2023-12-02 00:00:00", "search"),
            ("K", "2023-12-01 23:59:59", "search"),
        ],
        columns=["customer_id", "ts", "event_type"],
    )
    row = build_features(Dataset.from_frames(purchases=purchases, events=events), CUTOFF).iloc[0]
    assert (row["orders_7d"], row["spend_7d"], row["orders_30d"]) == (1, 1.0, 2)
    assert (row["view_count_7d"], row["view_count_30d"]) == (1, 2)
    # 2023-12-02 is 90 days before the cutoff: inside the 90-day window and its active days
    assert (row["search_count_90d"], row["search_count_180d"], row["active_event_days_90d"]) == (1, 2, 3)


def test_active_event_days_count_each_day_once_across_the_day_masks():
    # cutoff 2024-03-01; an event a days before it is on 2024-03-01 minus a days. The days are
    # kept as bits of masks of 62 days (1-62, 63-124): 62 and 63 days before fall in different
    # masks, two events of one day count once, and 91 days before is outside the 90-day window.
    days_before = [1, 62, 62, 63, 90, 91]
    stamps = [
        pd.Timestamp(CUTOFF) - pd.Timedelta(days=a) + pd.Timedelta(hours=h)
        for a, h in zip(days_before, [0, 1, 23, 0, 12, 0], strict=True)
    ]
    events = pd.DataFrame({"customer_id": "K", "ts": [t.isoformat(sep=" ") for t in stamps], "event_type": "view"})
    purchases = pd.DataFrame(
        [("o", "K", "2024-01-01 00:00:00", 1.0)], columns=["order_id", "customer_id", "ts", "amount"]
    )
    row = build_features(Dataset.from_frames(purchases=purchases, events=events), CUTOFF).iloc[0]
    assert row["active_event_days_90d"] == 4
    assert row["view_count_90d"] == 5


def test_windowed_spend_is_net_of_refunds_like_lifetime_spend():
    # 696.43 of purchases and a 409.27 refund in the window: 287.16, as in spend_lifetime.
    purchases = pd.DataFrame(
        [
            ("p1", "R", "2024-02-01 10:00:00", 400.00, 1, "books", "b1", "web", "card", 0.0),
            ("p2", "R", "2024-02-10 10:00:00", 296.43, 1, "books", "b1", "web", "card", 0.0),
            ("x1", "R", "2024-02-20 10:00:00", -409.27, -1, "books", "b1", "web", "card", 0.0),
            # a return line inside a purchase order nets within the order
            ("p3", "S", "2024-02-10 10:00:00", 696.43, 1, "books", "b1", "web", "card", 0.0),
            ("p3", "S", "2024-02-10 10:00:00", -409.27, -1, "toys", "b2", "web", "card", 0.0),
        ],
        columns=PURCHASE_COLUMNS,
    )
    frame = build_features(dataset(purchases, EVENTS.iloc[:0]), CUTOFF, families=["value", "windows"])
    frame = frame.set_index("customer_id")
    for customer in ("R", "S"):
        assert frame.loc[customer, "spend_90d"] == pytest.approx(287.16)
        assert frame.loc[customer, "spend_365d"] == frame.loc[customer, "spend_lifetime"]


def test_every_feature_carries_its_meaning():
    from features.catalogue import SCALES, Vocabulary

    vocab = Vocabulary(categories=("Dairy & Eggs",), brands=("b1",), channels=("app",), payment_methods=("card",))
    features = catalogue(vocab=vocab, attributes={"age_band": "category", "signup_date": "date", "income": "number"})
    for feature in features:
        assert feature.scale in SCALES and feature.label and feature.measure, feature.name
        if feature.window is not None and feature.measure != feature.name:
            assert feature.name == f"{feature.measure}_{feature.window}d"
    by_name = {f.name: f for f in features}
    assert by_name["spend_90d"].label == "spend in the last 90 days"
    assert (by_name["spend_90d"].scale, by_name["spend_90d"].unit, by_name["spend_90d"].measure) == (
        "money",
        "currency",
        "spend",
    )
    share = by_name["category_share_dairy_eggs"]
    assert (share.subject, share.value, share.label) == ("category", "Dairy & Eggs", "share of spend on Dairy & Eggs")
    assert by_name["promo_share_90d"].per == "orders_90d" and by_name["order_share_monday"].per == "orders_lifetime"
    assert by_name["attr_income"].scale == "number" and by_name["days_since_signup_date"].scale == "days"
    # Without the vocabulary, per-value names are recognised and read from the name.
    found = describe(["category_share_frozen_food", "customer_id", "spend_30d", "persona_name"])
    assert set(found) == {"category_share_frozen_food", "spend_30d"}
    assert found["category_share_frozen_food"].label == "share of spend on frozen food"


def test_building_only_some_features_gives_the_same_values(features):
    only = build_features(dataset(), CUTOFF, only=["favourite_category", "overdue_ratio", "spend_90d"]).set_index(
        "customer_id"
    )
    assert {"favourite_category", "overdue_ratio", "spend_90d", "days_since_last_purchase"} <= set(only.columns)
    assert "favourite_channel" not in only.columns and "view_count_7d" not in only.columns
    pd.testing.assert_frame_equal(only, features[only.columns], check_categorical=False)


def test_event_counts_built_without_the_active_days_are_the_same(features):
    # Without an active-days feature the events are not grouped by day: same counts and recency.
    names = ["view_count_7d", "event_count_90d", "days_since_last_event", "campaign_response_rate"]
    only = build_features(dataset(), CUTOFF, only=names).set_index("customer_id")
    assert not any(c.startswith("active_event_days") for c in only.columns)
    pd.testing.assert_frame_equal(only[names], features[names], check_categorical=False)
    both = build_features(dataset(), CUTOFF, only=[*names, "active_event_days_90d"]).set_index("customer_id")
    pd.testing.assert_frame_equal(both[names], features[names], check_categorical=False)


def test_customers_with_only_events_stay_in_a_build_without_event_features():
    frame = build_features(dataset(), CUTOFF, families=["value"])
    assert frame["customer_id"].tolist() == ["A", "B", "C", "D"]  # B has only events


def test_customers_with_only_events_under_merged_ids_are_their_persons():
    # a-web is merged into A and h-2 into H; H has no row of its own, F no identity at all;
    # G's only event is at the cutoff.
    more = [
        ("a-web", "2024-02-01 09:00:00", "view"),
        ("h-2", "2024-02-02 09:00:00", "view"),
        ("F", "2024-02-03 09:00:00", "view"),
        ("G", "2024-03-01 00:00:00", "view"),
    ]
    events = pd.concat([EVENTS, pd.DataFrame(more, columns=EVENTS.columns)], ignore_index=True)
    identities = pd.DataFrame(
        {"customer_id": ["A", "a-web", "H", "h-2"], "id_type": ["email"] * 4, "id_value": ["x", "x", "y", "y"]}
    )
    dataset = Dataset.from_frames(purchases=PURCHASES, events=events, identities=identities)
    frame = build_features(dataset, CUTOFF, families=["value"])
    assert frame["customer_id"].tolist() == ["A", "B", "C", "D", "F", "H"]


def test_the_favourite_channel_is_the_one_with_most_orders_and_a_channel_outside_the_top_is_other():
    # Top 2 channels by spend: web (400), app (200); kiosk (4) is outside them.
    orders = [
        ("a1", "A", 100.0, "web"),
        ("a2", "A", 100.0, "web"),
        ("a3", "A", 100.0, "app"),
        ("a4", "A", 100.0, "app"),  # 2 and 2: the first by name, app
        ("b1", "B", 1.0, "kiosk"),
        ("b2", "B", 1.0, "kiosk"),
        ("b3", "B", 1.0, "kiosk"),
        ("b4", "B", 100.0, "web"),  # kiosk 3, web 1: other (the best known one was web)
        ("c1", "C", 100.0, "web"),
        ("c2", "C", 1.0, "kiosk"),  # 1 and 1: the known one
        ("d1", "D", 5.0, None),  # no channel recorded: none
    ]
    purchases = pd.DataFrame(
        [(o, c, f"2024-02-0{i % 9 + 1} 10:00:00", a, ch) for i, (o, c, a, ch) in enumerate(orders)],
        columns=["order_id", "customer_id", "ts", "amount", "channel"],
    )
    frame = build_features(Dataset.from_frames(purchases=purchases), CUTOFF, FeatureConfig(top_channels=2))
    found = frame.set_index("customer_id")["favourite_channel"]
    assert found.astype("object").where(found.notna(), None).to_dict() == {
        "A": "app",
        "B": "other",
        "C": "web",
        "D": None,
    }
    assert frame.attrs["vocabulary"]["channels"] == ["web", "app"]


def test_the_favourite_category_is_the_largest_net_spend_not_the_pooled_rest():
    # One top category (by total spend: toys 160, books 90, food 30, garden 25, pets 25).
    lines = [
        ("a1", "A", "2024-02-01 10:00:00", 40.0, "books"),  # books 40 against 60 in three others
        ("a1", "A", "2024-02-01 10:00:00", 20.0, "food"),
        ("a1", "A", "2024-02-01 10:00:00", 20.0, "garden"),
        ("a2", "A", "2024-02-02 10:00:00", 20.0, "pets"),
        ("b1", "B", "2024-02-01 10:00:00", 10.0, "toys"),  # toys 10, food 10, books 50 - 45 = 5
        ("b1", "B", "2024-02-01 10:00:00", 10.0, "food"),
        ("b2", "B", "2024-02-03 10:00:00", 50.0, "books"),
        ("r1", "B", "2024-02-04 10:00:00", -45.0, "books"),  # books nets to 5
        ("c1", "C", "2024-02-01 10:00:00", 150.0, "toys"),
        ("c1", "C", "2024-02-01 10:00:00", 5.0, "garden"),
        ("d1", "D", "2024-02-01 10:00:00", 5.0, "pets"),  # pets 5, toys 0 after its refund
        ("d1", "D", "2024-02-01 10:00:00", 5.0, "toys"),
        ("r2", "D", "2024-02-02 10:00:00", -5.0, "toys"),
        ("e1", "E", "2024-02-01 10:00:00", 15.0, "books"),  # all refunded: no favourite
        ("r3", "E", "2024-02-02 10:00:00", -15.0, "books"),
    ]
    purchases = pd.DataFrame(
        [(o, c, ts, amount, 1, category) for o, c, ts, amount, category in lines],
        columns=["order_id", "customer_id", "ts", "amount", "quantity", "category"],
    )
    frame = build_features(
        Dataset.from_frames(purchases=purchases), CUTOFF, FeatureConfig(top_categories=1), families=["preferences"]
    ).set_index("customer_id")
    assert frame.attrs["vocabulary"]["categories"] == ["toys"]
    # A: books is the largest (40) though outside the top 1 -> other; C: toys; B: toys 10 and
    # food 10 tie, and the tie goes to the top category; D: toys nets to 0, pets 5 -> other
    favourite = frame["favourite_category"].astype(object)
    assert favourite.where(favourite.notna(), None).to_dict() == {
        "A": "other",
        "B": "toys",
        "C": "toys",
        "D": "other",
        "E": None,
    }
    assert frame.loc["A", "category_share_other"] == 1.0  # the pooled rest is not a category
    assert frame["distinct_categories_lifetime"].to_dict() == {"A": 4, "B": 3, "C": 2, "D": 2, "E": 1}


def test_the_spine_from_each_ids_first_event_is_the_spine_from_the_events():
    """Who had an event before the cutoff, read from each id's first event time (the crowd
    trend reads the events once for every point): B (events only) is in, E (first event after
    the cutoff) is not, and the frame is the one built from the events."""
    data = dataset()
    con = data.connect()
    try:
        con.execute(
            "CREATE TEMP TABLE first_seen AS SELECT customer_id, MIN(ts) AS first_ts FROM clean_events GROUP BY 1"
        )
        from_events = build_features(data, CUTOFF, con=con, only={"orders_lifetime"})
        from_first_seen = build_features(data, CUTOFF, con=con, only={"orders_lifetime"}, event_first_seen="first_seen")
        con.execute("CREATE TEMP TABLE nobody_seen AS SELECT * FROM first_seen WHERE false")
        read = build_features(data, CUTOFF, con=con, only={"orders_lifetime"}, event_first_seen="nobody_seen")
    finally:
        con.close()
    assert from_first_seen["customer_id"].tolist() == ["A", "B", "C", "D"]
    pd.testing.assert_frame_equal(from_first_seen, from_events)
    assert read["customer_id"].tolist() == ["A", "C", "D"]  # the relation is what is read


def test_money_that_cancels_to_a_floating_residue_is_zero_in_ratios():
    """0.10 + 0.20 - 0.30 is 5.6e-17 (or 2.8e-17, by the order of addition), not 0: the spend
    trend over it is NULL, as over a spend of exactly 0, never -1 or 1 by the order in which an
    engine happened to add (Spark and DuckDB differed on one of 100k customers). Spend shares
    are over net spend per category, rounded alike: all of Z's books returned leaves no share."""
    lines = pd.DataFrame(
        [
            ("z1", "Z", "2024-02-10 10:00:00", 0.10, 1, "books", "b1", "web", "card", 0.0),
            ("z2", "Z", "2024-02-11 10:00:00", 0.20, 1, "books", "b1", "web", "card", 0.0),
            ("z3", "Z", "2024-02-12 10:00:00", -0.30, -1, "books", "b1", "web", "card", 0.0),
        ],
        columns=PURCHASE_COLUMNS,
    )
    frame = build_features(dataset(purchases=pd.concat([PURCHASES, lines])), CUTOFF).set_index("customer_id")
    assert frame.loc["Z", "spend_90d"] == 0.0
    assert math.isnan(frame.loc["Z", "spend_trend_90d"])
    assert math.isnan(frame.loc["Z", "category_share_books"])


def test_a_category_whose_purchases_were_returned_is_not_the_favourite():
    lines = pd.DataFrame(
        [
            ("z1", "Z", "2024-02-01 10:00:00", 500.0, 1, "toys", "b2", "web", "card", 0.0),
            ("z2", "Z", "2024-02-03 10:00:00", -500.0, -1, "toys", "b2", "web", "card", 0.0),
            ("z3", "Z", "2024-02-10 10:00:00", 20.0, 1, "books", "b1", "web", "card", 0.0),
            ("y1", "Y", "2024-02-01 10:00:00", 90.0, 3, "toys", "b2", "web", "card", 0.0),
            ("y2", "Y", "2024-02-02 10:00:00", -60.0, -2, "toys", "b2", "web", "card", 0.0),
            ("y3", "Y", "2024-02-10 10:00:00", 40.0, 1, "books", "b1", "web", "card", 0.0),
        ],
        columns=PURCHASE_COLUMNS,
    )
    frame = build_features(dataset(purchases=pd.concat([PURCHASES, lines])), CUTOFF).set_index("customer_id")
    assert frame.loc["Z", "category_share_toys"] == 0.0 and frame.loc["Z", "category_share_books"] == 1.0
    assert frame.loc["Z", "favourite_category"] == "books" and frame.loc["Z", "brand_share_b1"] == 1.0
    # Y kept 30 of toys and 40 of books
    assert frame.loc["Y", "category_share_toys"] == pytest.approx(30 / 70)
    assert frame.loc["Y", "favourite_category"] == "books"
    assert frame.loc["A", "spend_trend_90d"] == pytest.approx(1.0)  # all of A's spend is recent


def test_price_level_is_the_typical_ratio_not_an_average_set_by_one_odd_line():
    # Category median unit price 2.00 (six lines at 2.00, one at 2,000.00). A bought three
    # lines at 1, 1 and 1,000 times the median: price level (1 x 1 x 1000)^(1/3) = 10, where an
    # average would be 334 (one fuel line counted in odd units set a whole persona's price level
    # on the Complete Journey). B bought at the median: 1.
    rows = [("a1", "A", "2024-02-01", 2.0, 1), ("a2", "A", "2024-02-02", 2.0, 1), ("a3", "A", "2024-02-03", 2000.0, 1)]
    rows += [(f"b{i}", "B", f"2024-02-0{i + 1}", 2.0, 1) for i in range(4)]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount", "quantity"])
    purchases["category"] = "fuel"
    frame = build_features(Dataset.from_frames(purchases=purchases), CUTOFF, only=["price_level"])
    assert frame.set_index("customer_id")["price_level"].to_dict() == {"A": pytest.approx(10.0), "B": 1.0}


def test_a_half_at_the_tenth_decimal_rounds_alike_from_either_side():
    # 0.2021484375 (207/1024) is exactly a half at the 10th decimal; a parallel sum hands it over
    # one unit in the last place above or below from run to run. Both round as the half does,
    # away from zero (5 values of 162 million differed between two 1M-customer builds before).
    import duckdb
    import numpy as np

    from features.plan import rounded

    half = 0.2021484375
    values = [np.nextafter(half, 0.0), half, np.nextafter(half, 1.0), -np.nextafter(half, 0.0), 0.8999999999999999]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, x DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(float(v) for v in values)))
    out = [row[0] for row in con.execute(f"SELECT {rounded('x')} FROM t ORDER BY i").fetchall()]
    assert out == [0.202148438, 0.202148438, 0.202148438, -0.202148438, 0.9]
    assert con.execute(f"SELECT {rounded('1234.5678901234')}").fetchall()[0][0] == 1234.567890123


def test_a_date_attribute_counts_days_only_when_it_is_before_the_cutoff():
    """The cutoff is the first instant of its day: a date on the cutoff's day (any hour) is not
    before it, so its days-since is NULL, as for a later date; the day before counts 1."""
    customers = pd.DataFrame(
        {
            "customer_id": ["A", "C", "D", "E"],
            "signup_date": ["2024-03-01 09:00:00", "2024-02-29 23:00:00", "2024-03-01 00:00:00", "2023-03-01"],
        }
    )
    data = Dataset.from_frames(purchases=PURCHASES, events=EVENTS, customers=customers)
    frame = build_features(data, CUTOFF, families=["attributes"]).set_index("customer_id")
    days = frame["days_since_signup_date"]
    assert days.isna()["A"] and days.isna()["D"]  # on the cutoff's day: not before it
    assert (days["C"], days["E"]) == (1.0, 366.0)


def test_a_word_for_no_value_in_an_attribute_is_missing_not_a_category():
    """'NULL' among ages made the column text (a category of 46 values, one of them NULL), and
    a gender of F, M and NULL three-valued. "NA" (a region) and "unknown" (an answer) stay."""
    ids = [f"c{i}" for i in range(30)]
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            # R writes NA, others a dash: in a column of numbers no such text is a value
            "age": [["NULL", "NaN", "n/a", "NA", "-"][i // 6] if i % 6 == 0 else str(20 + i) for i in range(30)],
            "gender": [["F", "M", " null ", "N/A", "unknown"][i % 5] for i in range(30)],
            "region": [["NA", "EU", "\\N"][i % 3] for i in range(30)],
        }
    )
    purchases = pd.DataFrame({"order_id": ids, "customer_id": ids, "ts": "2024-01-05 10:00:00", "amount": 10.0})
    data = Dataset.from_frames(purchases=purchases, customers=customers)
    frame = build_features(data, CUTOFF, families=["attributes"]).set_index("customer_id")
    assert pd.api.types.is_float_dtype(frame["attr_age"]) and frame["attr_age"].isna().sum() == 5
    assert frame.loc["c1", "attr_age"] == 21.0
    assert sorted(frame["attr_gender"].dropna().unique()) == ["F", "M", "unknown"]
    assert frame["attr_gender"].isna().sum() == 12
    assert sorted(frame["attr_region"].dropna().unique()) == ["EU", "NA"] and frame["attr_region"].isna().sum() == 10
    # the kinds go with the table, so that the catalogue describes each attribute as it was
    # built (an age is a number, not the category its name alone would make it)
    assert frame.attrs["attributes"] == {"age": "number", "gender": "category", "region": "category"}
    meanings = describe(frame.columns, vocabulary=frame.attrs["vocabulary"], attributes=frame.attrs["attributes"])
    assert (meanings["attr_age"].scale, meanings["attr_age"].dtype) == ("number", "float")
    assert meanings["attr_region"].scale == "category"
    assert describe(["attr_age"])["attr_age"].scale == "category"  # by name alone: what a model stored before
    stacked = build_training_set(data, ["2023-12-01"], 30, families=["attributes"])
    assert stacked.attrs["attributes"] == frame.attrs["attributes"]


def test_numbers_past_a_million_keep_their_digits():
    # rounded to 9 decimals by way of 12, 81012370 came out as 81012369.99999999: past a
    # million a value is rounded to 3 decimals, which it holds exactly
    purchases = pd.DataFrame(
        [("o1", "A", "2024-01-05 10:00:00", 81012370.0), ("o2", "B", "2024-01-06 10:00:00", 1234567.891234)],
        columns=["order_id", "customer_id", "ts", "amount"],
    )
    features = build_features(Dataset.from_frames(purchases=purchases), CUTOFF).set_index("customer_id")
    assert features.loc["A", "spend_lifetime"] == 81012370.0
    assert features.loc["B", "spend_lifetime"] == 1234567.891


DISCOUNT_FEATURES = ["discount_order_share", "avg_discount_depth", "promo_share_30d", "promo_share_365d"]


def test_discount_features_are_missing_not_zero_when_no_discount_was_recorded_before_the_cutoff():
    """An export without a discount column read every customer as "never discounted" (0%), in
    profiles and crowd reports, and a drift alarm when it became missing. Whether any discount
    was recorded is read from the lines before the cutoff: a discount first written after it
    changes nothing (no leak), a discount before it brings the features back, 0 for the others."""
    without = PURCHASES.assign(discount=None)
    frame = build_features(dataset(purchases=without), CUTOFF)
    assert frame[DISCOUNT_FEATURES].isna().all().all()
    assert frame["spend_lifetime"].notna().all()  # the rest as before
    later = pd.DataFrame(
        [("o9", "A", "2024-03-05 10:00:00", 10.0, 1, "books", "b1", "web", "card", 2.0)], columns=PURCHASE_COLUMNS
    )
    after_cutoff = build_features(dataset(purchases=pd.concat([without, later])), CUTOFF)
    pd.testing.assert_frame_equal(after_cutoff, frame)
    recorded = build_features(dataset(purchases=PURCHASES), CUTOFF).set_index("customer_id")
    assert recorded.loc["A", "discount_order_share"] == 0.5  # o1 (5.00 off) of o1 and o2
    assert recorded[DISCOUNT_FEATURES].notna().any().all()


DAYPART_FEATURES = ["order_share_night", "order_share_morning", "order_share_afternoon", "order_share_evening"]


def test_a_log_of_dates_without_times_leaves_the_time_of_day_empty_not_night():
    """Dates alone (every time midnight, as CDNOW) made every customer a night shopper (share
    1.0 at 00-06 h) in features, crowd reports and persona names. A time of day first recorded
    after the cutoff changes nothing; one before it brings the shares back."""
    dates = PURCHASES.assign(ts=pd.to_datetime(PURCHASES["ts"]).dt.strftime("%Y-%m-%d"))
    frame = build_features(dataset(purchases=dates), CUTOFF).set_index("customer_id")
    assert frame[DAYPART_FEATURES].isna().all().all()
    assert frame.loc["A", "order_share_monday"] == 0.5  # the day is known: o1 on Monday 2024-01-01
    later = pd.DataFrame(
        [("o9", "A", "2024-03-05 10:00:00", 10.0, 1, "books", "b1", "web", "card", 0.0)], columns=PURCHASE_COLUMNS
    )
    after_cutoff = build_features(dataset(purchases=pd.concat([dates, later])), CUTOFF).set_index("customer_id")
    pd.testing.assert_frame_equal(after_cutoff, frame)
    one_time = dates.assign(ts=dates["ts"].where(dates["order_id"] != "o2", "2024-02-15 19:30:00"))
    timed = build_features(dataset(purchases=one_time), CUTOFF).set_index("customer_id")
    assert timed.loc["A", ["order_share_night", "order_share_evening"]].tolist() == [0.5, 0.5]


def test_a_tie_between_favourites_goes_to_the_first_by_name_whatever_the_vocabulary_order():
    """Equal spends went to the category higher in the vocabulary: scored with a model's
    vocabulary and tagged with the day's, one customer had two favourite categories (in a tag
    and in a profile). By name, both vocabularies agree."""
    from features.catalogue import Vocabulary

    lines = pd.DataFrame(
        [
            ("t1", "T", "2024-02-10 10:00:00", 10.0, 1, "toys", "b1", "web", "card", 0.0),
            ("t2", "T", "2024-02-11 10:00:00", 10.0, 1, "books", "b1", "app", "card", 0.0),
        ],
        columns=PURCHASE_COLUMNS,
    )
    data = dataset(purchases=pd.concat([PURCHASES, lines]))
    found = []
    for categories, channels in (
        (("toys", "books"), ("web", "app", "store")),
        (("books", "toys"), ("store", "app", "web")),
    ):
        vocabulary = Vocabulary(categories=categories, brands=("b1", "b2"), channels=channels)
        frame = build_features(data, CUTOFF, vocabulary=vocabulary).set_index("customer_id")
        found.append((frame.loc["T", "favourite_category"], frame.loc["T", "favourite_channel"]))
    assert found == [("books", "app"), ("books", "app")]


def test_names_from_any_script_are_distinct_and_do_not_depend_on_the_other_values():
    from features.catalogue import slug, slugs

    # accents dropped, either Unicode spelling alike; other scripts keep a hash of their text
    assert [slug(v) for v in ("Café", "Cafe\u0301", "Größe", "MEAT - BEEF")] == ["cafe", "cafe", "grosse", "meat_beef"]
    names = [slug(v) for v in ("お茶", "緑茶", "حلويات", "تمور", "地域", "性別")]
    assert len(set(names)) == 6 and all(n.startswith("u") and len(n) == 7 for n in names)
    assert slug("お茶") == "uc3da86"  # the same on every day, whatever the other values
    assert slugs(("緑茶", "お茶", "Milk")) == [slug("緑茶"), "uc3da86", "milk"]
    # two values that would share a name each keep a hash of their own
    assert slugs(("Tea", "tea", "Milk")) == ["tea_c675bc", "tea_75490f", "milk"]
    assert slugs(("Caf\u00e9", "Cafe\u0301")) == ["cafe_7d6408", "cafe_08bb07"]  # two values to the data
    both = pd.DataFrame(
        [("o1", "A", "2024-01-05 10:00:00", 5.0, "Caf\u00e9"), ("o2", "B", "2024-01-06 10:00:00", 5.0, "Cafe\u0301")],
        columns=["order_id", "customer_id", "ts", "amount", "category"],
    )
    built = build_features(Dataset.from_frames(purchases=both), CUTOFF).set_index("customer_id")
    assert built.loc["A", "category_share_cafe_7d6408"] == built.loc["B", "category_share_cafe_08bb07"] == 1.0


def test_customers_columns_in_other_scripts_become_distinct_features_and_clashes_are_refused():
    purchases = pd.DataFrame(
        [("o1", "C1", "2024-01-05 10:00:00", 12.0), ("o2", "C2", "2024-02-05 10:00:00", 9.8)],
        columns=["order_id", "customer_id", "ts", "amount"],
    )
    customers = pd.DataFrame({"customer_id": ["C1", "C2"], "地域": ["東京", "大阪"], "性別": ["女性", "男性"]})
    features = build_features(Dataset.from_frames(purchases=purchases, customers=customers), CUTOFF)
    assert features.set_index("customer_id").loc["C1", ["attr_u48a7cf", f"attr_{slug_of('性別')}"]].tolist() == [
        "東京",
        "女性",
    ]
    clash = pd.DataFrame({"customer_id": ["C1", "C2"], "Region": ["n", "s"], "region ": ["e", "w"]})
    with pytest.raises(
        PortraitError,
        match=r"customers columns 'Region' and 'region ' would be one feature \(attr_region\): rename all but one",
    ):
        build_features(Dataset.from_frames(purchases=purchases, customers=clash), CUTOFF)


def slug_of(value: str) -> str:
    from features.catalogue import slug

    return slug(value)


def test_a_return_in_parts_or_with_a_free_item_counts_alike_under_either_id():
    """E returns in two parts on two days under the order's id, F under two new ids; G returns a
    free gift with the item ($0.00, one unit back) under the order's id, H under a new id: a
    returned gift is part of the refund, not a purchase."""
    rows = [
        ("e1", "E", "2024-01-10 10:00:00", 90.0, 3.0),
        ("e1", "E", "2024-01-12 10:00:00", -30.0, -1.0),
        ("e1", "E", "2024-02-20 10:00:00", -30.0, -1.0),
        ("f1", "F", "2024-01-10 10:00:00", 90.0, 3.0),
        ("r1", "F", "2024-01-12 10:00:00", -30.0, -1.0),
        ("r2", "F", "2024-02-20 10:00:00", -30.0, -1.0),
        ("g1", "G", "2024-01-10 10:00:00", 50.0, 1.0),
        ("g1", "G", "2024-01-10 10:00:00", 0.0, 1.0),
        ("g1", "G", "2024-02-20 10:00:00", -50.0, -1.0),
        ("g1", "G", "2024-02-20 10:00:00", 0.0, -1.0),
        ("h1", "H", "2024-01-10 10:00:00", 50.0, 1.0),
        ("h1", "H", "2024-01-10 10:00:00", 0.0, 1.0),
        ("rh", "H", "2024-02-20 10:00:00", -50.0, -1.0),
        ("rh", "H", "2024-02-20 10:00:00", 0.0, -1.0),
    ]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount", "quantity"])
    data = Dataset.from_frames(purchases=purchases)
    features = build_features(data, CUTOFF).set_index("customer_id")
    pd.testing.assert_series_equal(features.loc["E"], features.loc["F"], check_names=False)
    pd.testing.assert_series_equal(features.loc["G"], features.loc["H"], check_names=False)
    assert features.loc["E", ["spend_30d", "spend_90d", "refund_count", "orders_lifetime"]].tolist() == [
        -30.0,
        30.0,
        2,
        1,
    ]
    assert features.loc["G", ["orders_lifetime", "days_since_last_purchase", "items_90d"]].tolist() == [1, 51, 2.0]
    labels = build_labels(data, "2024-02-01", 30, pd.Series(["G", "H"])).set_index("customer_id")
    assert labels["repurchase"].to_dict() == {"G": 0, "H": 0}


def test_a_return_across_midnight_is_one_refund_and_returns_weeks_apart_are_two():
    rows = [
        ("b1", "B", "2024-01-10 23:50:00", 50.0, 1.0),
        ("b1", "B", "2024-01-11 00:05:00", 30.0, 1.0),
        ("b1", "B", "2024-01-20 23:59:00", -30.0, -1.0),
        ("b1", "B", "2024-01-21 00:01:00", -20.0, -1.0),  # the same return, two minutes on
        ("b1", "B", "2024-02-20 10:00:00", -10.0, -1.0),  # another, a month later
    ]
    purchases = pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount", "quantity"])
    features = build_features(Dataset.from_frames(purchases=purchases), CUTOFF).set_index("customer_id")
    assert features.loc["B", ["refund_count", "refund_amount", "spend_30d", "orders_lifetime"]].tolist() == [
        2,
        60.0,
        -10.0,
        1,
    ]


def test_names_written_before_the_rename_are_known_by_their_new_names():
    """Süßwaren was s_waren, 本 and お茶 were blank and blank_2 (numbered by rank), Café caf."""
    from features.catalogue import Vocabulary, legacy_names, slug

    vocabulary = Vocabulary(categories=("Süßwaren", "本", "お茶", "Café", "dairy"), channels=("web",))
    assert legacy_names(vocabulary) == {
        "category_share_s_waren": "category_share_susswaren",
        "category_share_blank": f"category_share_{slug('本')}",
        "category_share_blank_2": f"category_share_{slug('お茶')}",
        "category_share_caf": "category_share_cafe",
    }
    assert slug("本").startswith("u") and legacy_names(None) == {}
    # a persona fit or model of then is labelled with the value, as now
    labels = describe(["category_share_s_waren", "category_share_blank_2"], vocabulary=vocabulary)
    assert [f.label for f in labels.values()] == ["share of spend on Süßwaren", "share of spend on お茶"]


def test_nanosecond_times_just_before_midnight_stay_before_the_cutoff(tmp_path):
    """DuckDB's cast of a Parquet TIMESTAMP_NS rounds: 23:59:59.9999995 the day before the cutoff
    became the cutoff itself, its order moved from the features to the label window."""
    from portrait.dataset import open_dataset
    from tests.conftest import write_tables

    ts = pd.to_datetime(
        ["2017-03-26 23:59:59.999999999", "2017-03-26 23:59:59.9999995", "2017-03-27 00:00:00"], format="ISO8601"
    )
    frame = pd.DataFrame(
        {"order_id": ["o1", "o2", "o3"], "customer_id": ["a", "b", "c"], "ts": ts.as_unit("ns"), "amount": 5.0}
    )
    folder = write_tables(tmp_path / "data", "parquet", purchases=frame)
    features = build_features(open_dataset(folder), "2017-03-27", families=["value"]).set_index("customer_id")
    assert features["orders_lifetime"].to_dict() == {"a": 1, "b": 1}
    labels = build_labels(open_dataset(folder), "2017-03-27", 7, pd.Series(["a", "b"])).set_index("customer_id")
    assert labels.loc[["a", "b"], "repurchase"].tolist() == [0, 0]


def test_orders_before_1970_have_their_weekday():
    """The weekday counted days from Sunday 1970-01-04: a negative remainder before it, and
    every weekday share of those orders was 0."""
    frame = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": "a",
            "ts": ["1969-12-30 10:00:00", "1969-12-31 10:00:00", "1950-06-15 10:00:00"],  # Tue, Wed, Thu
            "amount": 5.0,
        }
    )
    row = build_features(Dataset.from_frames(purchases=frame), "1970-02-01", families=["timing"]).iloc[0]
    assert (row["order_share_tuesday"], row["order_share_wednesday"], row["order_share_thursday"]) == pytest.approx(
        (1 / 3, 1 / 3, 1 / 3)
    )
