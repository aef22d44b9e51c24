"""The per-month-of-tenure rates of the value family, by hand, point in time.

Cutoff 2024-03-01. A: orders on 2024-01-01 (30.00 net of a 0 discount) and 2024-02-15 (40.00),
a refund of 20.00 on 2024-02-20, and an order at the cutoff (not before it); B: one order of
12.00 on 2024-02-23 (tenure under a month); C: events only.
"""

import pandas as pd
import pytest

from features.build import build_features
from features.catalogue import MONTH_DAYS, describe
from portrait.dataset import Dataset

CUTOFF = "2024-03-01"
COLUMNS = ["order_id", "customer_id", "ts", "amount", "quantity", "category", "brand", "channel"]
PURCHASES = pd.DataFrame(
    [
        ("o1", "A", "2024-01-01 10:00:00", 30.0, 1, "books", "b1", "web"),
        ("o2", "A", "2024-02-15 19:30:00", 40.0, 2, "books", "b1", "web"),
        ("r1", "A", "2024-02-20 12:00:00", -20.0, -1, "books", "b1", "web"),
        ("o3", "A", "2024-03-01 00:00:00", 55.0, 1, "books", "b1", "web"),  # at the cutoff: after
        ("b1", "B", "2024-02-23 08:00:00", 12.0, 1, "toys", "b2", "web"),
    ],
    columns=COLUMNS,
)
EVENTS = pd.DataFrame([("C", "2024-02-01 09:00:00", "view")], columns=["customer_id", "ts", "event_type"])
LATER = pd.DataFrame(
    [
        ("o4", "A", "2024-03-02 10:00:00", 99.0, 1, "books", "b1", "web"),
        ("o5", "C", "2024-03-10 10:00:00", 10.0, 1, "toys", "b2", "web"),
        ("o6", "B", "2024-05-01 10:00:00", 10.0, 1, "toys", "b2", "web"),
    ],
    columns=COLUMNS,
)
RATES = [
    "orders_per_month_of_tenure",
    "spend_per_month_of_tenure",
    "active_days_per_month_of_tenure",
    "recency_share_of_tenure",
]


def build(purchases: pd.DataFrame) -> pd.DataFrame:
    return build_features(Dataset.from_frames(purchases=purchases, events=EVENTS), CUTOFF).set_index("customer_id")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return build(PURCHASES)


def test_rates_per_month_of_tenure_by_hand(features):
    # A: first purchase 60 days before the cutoff (2 months = 60 / 30.4375), 2 orders on 2
    # days, 50.00 net (refund deducted), last purchase 15 days before.
    months = 60 / MONTH_DAYS
    a = features.loc["A", RATES]
    assert a["orders_per_month_of_tenure"] == pytest.approx(2 / months)
    assert a["spend_per_month_of_tenure"] == pytest.approx(50 / months)
    assert a["active_days_per_month_of_tenure"] == pytest.approx(2 / months)
    assert a["recency_share_of_tenure"] == pytest.approx(15 / 60)
    # B: 7 days of tenure count as one month; one order, bought once so recency = tenure.
    b = features.loc["B", RATES]
    assert b["orders_per_month_of_tenure"] == pytest.approx(1.0)
    assert b["spend_per_month_of_tenure"] == pytest.approx(12.0)
    assert b["recency_share_of_tenure"] == pytest.approx(1.0)
    # C: no purchase yet, no rate.
    assert features.loc["C", RATES].isna().all()


def test_rates_read_nothing_at_or_after_the_cutoff(features):
    leaked = build(pd.concat([PURCHASES, LATER]))
    pd.testing.assert_frame_equal(features[RATES], leaked.loc[features.index, RATES])


def test_rates_carry_their_meaning():
    meanings = describe(RATES)
    assert {m.family for m in meanings.values()} == {"value"}
    assert all(m.window is None for m in meanings.values())
    # the rates are volume, not clustered by personas; the recency share is the timeline's shape
    assert {n for n, m in meanings.items() if m.cluster} == {"recency_share_of_tenure"}
    assert {n: m.aspect for n, m in meanings.items()} == {
        "orders_per_month_of_tenure": "volume",
        "spend_per_month_of_tenure": "volume",
        "active_days_per_month_of_tenure": "volume",
        "recency_share_of_tenure": "shape",
    }
    assert meanings["spend_per_month_of_tenure"].scale == "money"
    assert meanings["spend_per_month_of_tenure"].unit == "currency per month"
    assert meanings["recency_share_of_tenure"].scale == "share"
    assert meanings["orders_per_month_of_tenure"].label == "orders per month since the first purchase"


def test_a_rate_is_computed_from_the_spend_as_rounded_not_from_its_floating_residue():
    # D: one order of two lines, 0.70 + 0.20, 32 days before the cutoff. In floating point the
    # sum is 0.8999999999999999, and 0.8999999999999999 x 30.4375 / 32 = 0.85605468749999...,
    # which rounds down at 9 decimals, where 0.90 x 30.4375 / 32 = 0.8560546875 exactly rounds
    # half away from zero, up. A parallel sum's last bits differ from run to run, so a rate read
    # from the unrounded spend tipped either way between runs; read from the spend as the
    # table shows it (rounded to 9 decimals: 0.9), it is the same in every run.
    lines = pd.DataFrame(
        [
            ("d1", "D", "2024-01-29 10:00:00", 0.70, 1, "books", "b1", "web"),
            ("d1", "D", "2024-01-29 10:00:00", 0.20, 1, "toys", "b2", "web"),
        ],
        columns=COLUMNS,
    )
    d = build(lines).loc["D"]
    assert d["spend_lifetime"] == 0.9
    assert d["days_since_first_purchase"] == 32
    assert d["spend_per_month_of_tenure"] == 0.856054688
