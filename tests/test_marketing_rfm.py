"""RFM scores and groups against a hand-written 12-customer frame."""

from __future__ import annotations

import pandas as pd
import pytest

from marketing.rfm import NO_PURCHASE, migration, quintile_scores, rfm_scores, rule_table_markdown, top_share_of_revenue

# customer: (days since last purchase, orders, net spend). L never bought.
FRAME = pd.DataFrame(
    [
        ("A", 1, 20, 2000.0),
        ("B", 2, 15, 1500.0),
        ("C", 3, 10, 900.0),
        ("D", 5, 1, 50.0),
        ("E", 10, 8, 800.0),
        ("F", 30, 5, 400.0),
        ("G", 60, 3, 300.0),
        ("H", 90, 2, 100.0),
        ("I", 120, 1, 30.0),
        ("J", 200, 12, 1200.0),
        ("K", 400, 1, 20.0),
        ("L", None, 0, 0.0),
    ],
    columns=["customer_id", "days_since_last_purchase", "orders_lifetime", "spend_lifetime"],
)
# Worked by hand: score = ceil(5 * average rank / 11) among the 11 buyers; FM = round half up
# of (F + M) / 2; group from the R x FM grid.
EXPECTED = {
    "A": (5, 5, 5, 5, "Champions"),
    "B": (5, 5, 5, 5, "Champions"),
    "C": (5, 4, 4, 4, "Champions"),
    "D": (4, 1, 2, 2, "Potential loyalists"),  # F ties D, I, K share rank 2 -> 1; FM 1.5 -> 2
    "E": (4, 4, 4, 4, "Loyal"),
    "F": (3, 3, 3, 3, "Need attention"),
    "G": (3, 3, 3, 3, "Need attention"),
    "H": (2, 2, 2, 2, "Hibernating"),
    "I": (2, 1, 1, 1, "Hibernating"),
    "J": (1, 5, 5, 5, "Can't lose"),
    "K": (1, 1, 1, 1, "Lost"),
}


def test_rfm_scores_and_groups_agree_with_the_hand_written_frame():
    rfm = rfm_scores(FRAME).set_index("customer_id")
    for customer, (r, f, m, fm, group) in EXPECTED.items():
        row = rfm.loc[customer]
        assert (row["rfm_r"], row["rfm_f"], row["rfm_m"], row["rfm_fm"], row["rfm_group"]) == (r, f, m, fm, group), (
            customer
        )
    assert rfm.loc["L", "rfm_group"] == NO_PURCHASE
    assert rfm.loc["L", ["rfm_r", "rfm_f", "rfm_m"]].isna().all()


def test_ties_share_a_score():
    scores = quintile_scores(pd.Series([1.0, 1.0, 1.0, 1.0, 5.0]))
    assert scores.tolist() == [3, 3, 3, 3, 5]  # average rank 2.5 -> ceil(2.5) = 3
    assert quintile_scores(pd.Series([10.0, 1.0]), higher_is_better=False).tolist() == [3, 5]


def test_one_order_is_the_lowest_frequency_when_most_customers_bought_once():
    # 7 of 10 bought once: their average rank is 4 of 10, which alone would give F = 2
    frame = pd.DataFrame(
        {
            "customer_id": list("ABCDEFGHIJ"),
            "days_since_last_purchase": [1.0] * 10,
            "orders_lifetime": [1, 1, 1, 1, 1, 1, 1, 2, 3, 4],
            "spend_lifetime": [10.0] * 10,
        }
    )
    assert quintile_scores(frame["orders_lifetime"].astype("float64")).tolist() == [2] * 7 + [4, 5, 5]
    assert rfm_scores(frame)["rfm_f"].tolist() == [1] * 7 + [4, 5, 5]


def test_top_share_of_revenue_by_hand():
    # top 20% of 11 buyers = 3 customers: 2000 + 1500 + 1200 of 7300
    assert top_share_of_revenue(FRAME) == pytest.approx(4700 / 7300)


def test_migration_counts_moves_and_newcomers():
    before = pd.DataFrame({"customer_id": ["A", "B"], "rfm_group": ["Loyal", "Lost"]})
    now = pd.DataFrame({"customer_id": ["A", "B", "C"], "rfm_group": ["Champions", "Lost", "New"]})
    table = migration(before, now)
    assert table.loc["Loyal", "Champions"] == 1 and table.loc["Lost", "Lost"] == 1
    assert table.loc["Not yet a customer", "New"] == 1 and table.to_numpy().sum() == 3


def test_rule_table_names_every_group_once_per_cell():
    text = rule_table_markdown()
    assert text.count("\n") == 6 and "Can't lose" in text and "Champions" in text


def test_docs_rfm_agrees_with_the_code():
    from pathlib import Path

    from marketing.rfm import rfm_doc

    docs = Path(__file__).resolve().parents[1] / "docs" / "rfm.md"
    assert docs.read_text().strip() == rfm_doc().strip()
