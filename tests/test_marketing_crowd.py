"""Crowd portraits: hand-written figures, suppression, point-in-time, planted personas, CLI."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from marketing.crowd import (
    Coded,
    Crowd,
    CrowdData,
    Dimension,
    _categorical,
    bands,
    cell_mask,
    crowd_from_options,
    names_years,
    parse_crowd,
    top_values,
)
from marketing.crowd_compare import compare, crosstab, holm, suppressed_comparison, suppressed_crosstab, write_compare
from marketing.crowd_report import (
    crowd_report,
    hidden_counts,
    pooled_dimension,
    report_json,
    suppressed_dimensions,
    suppression_mask,
)
from marketing.crowd_trend import crowd_trend, trend_dates
from marketing.population import Population
from marketing.segments import SegmentStore
from marketing.tags import load_library
from portrait.dataset import Dataset, open_dataset
from portrait.errors import PortraitError

AS_OF = "2024-03-01"
AS_DATE = dt.date.fromisoformat(AS_OF)
COLUMNS = ["order_id", "customer_id", "ts", "amount", "quantity", "category", "discount", "payment_method"]
PURCHASES = pd.DataFrame(
    [
        ("a1", "A", "2024-01-10 10:00:00", 10.0, 1, "Dairy", 0.0, "cash"),
        ("a2", "A", "2024-02-01 10:00:00", 15.0, 1, "Dairy", 2.0, "card"),
        ("a2", "A", "2024-02-01 10:00:00", 5.0, 1, "Bakery", 0.0, "card"),
        ("b1", "B", "2024-02-05 10:00:00", 100.0, 2, "Bakery", 0.0, "card"),
        ("c1", "C", "2023-12-01 10:00:00", 8.0, 1, "Dairy", 1.0, "cash"),
        ("c2", "C", "2024-01-05 10:00:00", 8.0, 1, "Dairy", 1.0, "cash"),
        ("c3", "C", "2024-02-20 10:00:00", 30.0, 1, "Meat", 3.0, "cash"),
        ("d1", "D", "2023-11-01 10:00:00", 50.0, 1, "Meat", 0.0, "card"),
        ("d2", "D", "2023-12-01 10:00:00", 50.0, 1, "Meat", 0.0, "card"),
        ("d3", "D", "2024-01-01 10:00:00", 50.0, 1, "Meat", 5.0, "card"),
        ("d4", "D", "2024-02-01 10:00:00", 50.0, 1, "Meat", 0.0, "card"),
    ],
    columns=COLUMNS,
)
# The store of each order. A: one order in s1, one (two lines, 20.00) in s2.
STORES = {"a1": "s1", "a2": "s2", "b1": "s2", "c1": "s1", "c2": "s1", "c3": "s2"}
PURCHASES = PURCHASES.assign(store_id=PURCHASES["order_id"].map(STORES).fillna("s3"))
EVENTS = pd.DataFrame([("E", "2024-02-10 09:00:00", "view")], columns=["customer_id", "ts", "event_type"])
CUSTOMERS = pd.DataFrame(
    {"customer_id": ["A", "B", "C", "D", "E"], "age_band": ["25-34", "25-34", "35-44", None, "35-44"]}
)
# At or after the as-of date: nothing in a portrait as of AS_OF may change with these.
LATER = pd.DataFrame(
    [
        ("late1", "A", "2024-03-01 00:00:00", 999.0, 1, "Meat", 9.0, "card"),
        ("late2", "B", "2024-03-05 10:00:00", 50.0, 1, "Dairy", 0.0, "cash"),
        ("late3", "F", "2024-03-06 10:00:00", 50.0, 1, "Dairy", 0.0, "cash"),
    ],
    columns=COLUMNS,
)


def dataset(later: bool = False) -> Dataset:
    purchases = pd.concat([PURCHASES, LATER]) if later else PURCHASES
    return Dataset.from_frames(purchases=purchases, events=EVENTS, customers=CUSTOMERS)


def hand_report(ds: Dataset, min_cell: int = 1):
    with Population(ds, AS_OF) as population:
        data = CrowdData(population, load_library())
        crowd = data.mask(Crowd("where", "orders_lifetime >= 2"))
        report = crowd_report(data, crowd, data.mask(Crowd("all")), crowd_name="c", base_name="all", min_cell=min_cell)
        return report, data.ids[crowd].tolist()


def rows(report, dimension: str) -> dict[str, tuple[int, int, float]]:
    table = report.dimensions[report.dimensions["dimension"] == dimension]
    return {r.value: (r.count, r.base_count, round(r.tgi, 1)) for r in table.itertuples()}


def test_portrait_of_a_hand_written_crowd():
    report, members = hand_report(dataset())
    assert members == ["A", "C", "D"] and report.size == 3 and report.base_size == 5
    # By hand: A 2 orders, C 3, D 4; base adds B (1 order) and E (an event, no order).
    assert rows(report, "repeat_orders") == {
        "none": (0, 1, 0.0),
        "1": (0, 1, 0.0),
        "2": (1, 1, 166.7),
        "3": (1, 1, 166.7),
        "4+": (1, 1, 166.7),
    }
    # A: 1 of 2 orders discounted, C: 3 of 3, D: 1 of 4, B: none; E has no order.
    assert rows(report, "promotion_sensitivity") == {
        "none (no discounted order)": (0, 1, 0.0),
        "some (under half of orders)": (1, 1, 166.7),
        "high (half of orders or more)": (2, 2, 166.7),
        "unknown": (0, 1, 0.0),
    }
    assert rows(report, "age_band") == {"25-34": (1, 2, 83.3), "35-44": (1, 2, 83.3), "unknown": (1, 1, 166.7)}
    # A paid one order by cash and one by card: a tie goes to the first name, card.
    assert rows(report, "favourite_payment") == {"card": (2, 3, 111.1), "cash": (1, 1, 166.7), "unknown": (0, 1, 0.0)}
    # Stores count orders, not lines or spend: A's tie (one order each) goes to s1, C has 2 in s1.
    assert rows(report, "favourite_store") == {
        "s1": (2, 2, 166.7),
        "s2": (0, 1, 0.0),
        "s3": (1, 1, 166.7),
        "unknown": (0, 1, 0.0),
    }
    assert rows(report, "favourite_category")["Meat"] == (2, 2, 166.7)
    figures = report.figures.set_index("measure")
    assert figures.loc["revenue, last 365 days", "crowd"] == pytest.approx(276.0)  # 30 + 46 + 200
    assert figures.loc["share of revenue", "crowd"] == pytest.approx(276.0 / 376.0)
    # Lines of the last 365 days: Meat 230 (C, D), Dairy 41 (A, C), Bakery 5 (A; B too in the base).
    categories = report.categories.set_index("value")
    assert categories["spend"].to_dict() == {"Meat": 230.0, "Dairy": 41.0, "Bakery": 5.0}
    assert categories.loc["Bakery", "tgi"] == pytest.approx(100 * (1 / 3) / (2 / 5))
    assert categories.loc["Meat", "avg_unit_price"] == pytest.approx(230.0 / 5)
    assert report.cross_sell["rate"] == pytest.approx(1 / 9) and report.cross_sell["base_rate"] == pytest.approx(1 / 10)


def everyone_report(purchases: pd.DataFrame):
    """The crowd report of everyone against everyone, small cells shown."""
    with Population(Dataset.from_frames(purchases=purchases), AS_OF) as population:
        data = CrowdData(population, load_library())
        everyone = data.mask(Crowd("all"))
        return crowd_report(data, everyone, everyone, crowd_name="all", base_name="all", min_cell=1)


def test_a_purchase_refunded_in_parts_is_no_purchase_whatever_the_order_of_addition():
    from marketing.behaviour import behaviour_table
    from marketing.filters import BehaviourTerm

    # 0.1 + 0.2 - 0.3 is 5.6e-17 in floating point, not 0: a fully refunded purchase must not
    # make Z a buyer of Electronics in one run and not in the next
    purchases = pd.DataFrame(
        [
            ("o1", "Z", "2024-01-05 10:00:00", 0.1, 1, "Electronics", 0.0, "card"),
            ("o1", "Z", "2024-01-05 10:00:00", 0.2, 2, "Electronics", 0.0, "card"),
            ("o2", "Z", "2024-01-07 10:00:00", -0.3, -3, "Electronics", 0.0, "card"),
            ("o3", "Z", "2024-01-10 10:00:00", 20.0, 1, "Dairy", 0.0, "card"),
        ],
        columns=COLUMNS,
    )
    with Population(Dataset.from_frames(purchases=purchases), AS_OF) as population:
        data = CrowdData(population, load_library())
        table = data.per_customer("category")
        kept = population.con.execute(f"SELECT value, spend FROM {table} ORDER BY value").fetchall()
        term = BehaviourTerm("spent", filters=(("category", "Electronics"),))
        spent = behaviour_table(population.con, [term], dt.date.fromisoformat(AS_OF), pd.Series(["Z"]))
    assert kept == [("Dairy", 20.0)]
    assert spent[term.column].tolist() == [0.0]


def test_refunds_are_deducted_and_a_refund_alone_is_no_purchase():
    purchases = pd.DataFrame(
        [
            ("o1", "Z", "2024-01-05 10:00:00", 500.0, 1, "Electronics", 0.0, "card"),
            ("o2", "Z", "2024-01-07 10:00:00", -500.0, -1, "Electronics", 0.0, "card"),  # all of it returned
            ("o3", "Z", "2024-01-10 10:00:00", 20.0, 1, "Dairy", 0.0, "card"),
            ("o4", "Y", "2024-01-10 10:00:00", 30.0, 1, "Dairy", 0.0, "card"),
            ("o5", "Y", "2024-01-11 10:00:00", 60.0, 3, "Meat", 0.0, "card"),
            ("o6", "Y", "2024-01-12 10:00:00", -20.0, -1, "Meat", 0.0, "card"),  # one of three returned
            ("o7", "X", "2024-01-10 10:00:00", -30.0, -1, "Dairy", 0.0, "card"),  # a refund alone
        ],
        columns=COLUMNS,
    )
    report = everyone_report(purchases)
    categories = report.categories.set_index("value")
    # net: Z's electronics are gone, Y's meat is 40 for 2 units
    assert categories["spend"].to_dict() == {"Dairy": 50.0, "Meat": 40.0}
    assert categories.loc["Meat", "avg_unit_price"] == pytest.approx(20.0)
    assert rows(report, "favourite_category")["Dairy"][0] == 1  # Z (Y's favourite is Meat, 40 > 30)
    figures = report.figures.set_index("measure")
    assert figures.loc["share who bought in the last 365 days", "crowd"] == pytest.approx(2 / 3)  # not X


def test_a_refund_in_the_window_alone_is_not_buying_and_a_line_without_a_quantity_is_one_unit():
    """W bought dairy long before the last 365 days and returned some inside them: no dairy
    buyer there. V's meat order has a line without a quantity: 4 units for 20.00."""
    purchases = pd.DataFrame(
        [
            ("w1", "W", "2022-06-01 10:00:00", 100.0, 1, "Dairy", 0.0, "card"),
            ("w2", "W", "2024-01-05 10:00:00", -30.0, -1, "Dairy", 0.0, "card"),
            ("w3", "W", "2024-01-06 10:00:00", 12.0, 1, "Meat", 0.0, "card"),
            ("v1", "V", "2024-02-01 10:00:00", 10.0, None, "Meat", 0.0, "card"),
            ("v1", "V", "2024-02-01 10:00:00", 10.0, 3, "Meat", 0.0, "card"),
        ],
        columns=COLUMNS,
    )
    report = everyone_report(purchases)
    categories = report.categories.set_index("value")
    assert list(categories.index) == ["Meat"]
    assert categories.loc["Meat", ["spend", "buyers"]].tolist() == [32.0, 2]
    assert categories.loc["Meat", "avg_unit_price"] == pytest.approx(32.0 / 5)


def test_shares_and_unknown_add_to_one_in_every_dimension():
    report, _ = hand_report(dataset())
    sums = report.dimensions.groupby("dimension")[["share", "base_share"]].sum()
    assert np.allclose(sums.to_numpy(), 1.0)
    assert set(report.dimensions["dimension"]) >= {"spending_power", "buyer_level", "rfm_group", "persona"}


def test_rows_at_or_after_the_as_of_date_change_nothing():
    before, _ = hand_report(dataset())
    after, _ = hand_report(dataset(later=True))
    pd.testing.assert_frame_equal(before.dimensions, after.dimensions)
    pd.testing.assert_frame_equal(before.figures, after.figures)
    pd.testing.assert_frame_equal(before.categories, after.categories)


def test_values_of_two_dimensions_that_hold_the_same_customers_are_hidden_together():
    """A buyer level's "novice" base share was hidden (to protect a small level) while "orders
    ever placed: 1", the same customers, printed it. Values holding the same customers are
    linked: one hidden hides both."""
    from marketing.crowd_report import dimension_table

    level = ["novice"] * 12 + ["regular"] * 3 + ["loyal"] * 15
    orders = ["1"] * 12 + ["2+"] * 18  # "1" holds exactly the novices
    dims = pd.DataFrame({"level": pd.Categorical(level), "orders": pd.Categorical(orders)})
    everyone = np.ones(30, dtype=bool)
    table = dimension_table(dims, everyone, everyone, {})
    cells = list(zip(table["dimension"], table["value"], strict=True))
    linked = dict(zip(cells, table["linked"], strict=True))
    assert linked[("level", "novice")] == linked[("orders", "1")] >= 0
    assert [c for c in cells if linked[c] == -1] == [("level", "loyal"), ("level", "regular"), ("orders", "2+")]
    counts, groups = table["count"].to_numpy(), table["dimension"].to_numpy()
    alone = dict(zip(cells, suppression_mask(counts, 5, groups), strict=True))
    # regular (3) hidden, novice (12) hidden beside it; "1" (12) shown: 30 - 15 - 12 = 3 regulars
    assert alone[("level", "novice")] and not alone[("orders", "1")]
    together = dict(zip(cells, suppression_mask(counts, 5, groups, linked=table["linked"].to_numpy()), strict=True))
    assert together[("orders", "1")] and together[("orders", "2+")] and not together[("level", "loyal")]


def test_small_counts_are_suppressed_with_a_second_cell_where_one_would_be_recoverable():
    assert suppression_mask(np.array([5, 1, 20]), 3).tolist() == [True, True, False]
    assert suppression_mask(np.array([1, 2, 30]), 3).tolist() == [True, True, False]
    assert suppression_mask(np.array([1, 30, 2, 40]), 3, np.array([0, 0, 1, 1])).tolist() == [True, True, True, True]
    # the count hidden second may be large: shown as hidden, never as "<3"
    assert hidden_counts(np.array([5, 1, 20]), np.array([True, True, False]), 3).tolist() == ["hidden", "<3", "20"]
    report, _ = hand_report(dataset(), min_cell=2)
    shown = suppressed_dimensions(report).set_index(["dimension", "value"])
    assert shown.loc[("age_band", "25-34"), "count"] == "<2"
    assert shown.loc[("age_band", "25-34"), "share"] == "" and shown.loc[("age_band", "25-34"), "tgi"] == ""
    # the three promotion sensitivities held by one customer each are one row, their values not
    # printed; high (2 customers) is then hidden beside it, else the crowd minus it gives that row
    pooled = "other values (3, each held by fewer than 2 customers)"
    assert shown.loc[("promotion_sensitivity", pooled), "count"] == "<2"
    assert shown.loc[("promotion_sensitivity", "high (half of orders or more)"), "count"] == "hidden"
    assert list(shown.loc["promotion_sensitivity"].index) == ["high (half of orders or more)", pooled]
    answer = report_json(report)
    assert answer["customers"] == 3
    # persona, known for nobody without scores, is one note as on the page, not "unknown" rows
    assert "persona" not in {row["dimension"] for row in answer["dimensions"]}
    assert "persona" in set(report.dimensions["dimension"])
    assert answer["notes"][-1].startswith(f"Not known for anyone in this data set: {report.labels['persona']}, ")
    assert all(row["count"] in ("<2", "hidden") or int(row["count"]) >= 2 for row in answer["dimensions"])
    # Bakery (1 buyer) is left out of the top categories: its place in the order by spend would
    # tell what that one customer spent
    assert report.categories["value"].tolist() == ["Meat", "Dairy", "Bakery"]
    assert [(row["value"], row["buyers"]) for row in answer["top_categories"]] == [("Meat", "2"), ("Dairy", "2")]


def test_a_crowd_smaller_than_the_minimum_cell_shows_no_figure():
    report, _ = hand_report(dataset(), min_cell=10)
    answer = report_json(report)
    assert answer["customers"] == "<10"
    assert {row["count"] for row in answer["dimensions"]} == {"<10"}
    assert answer["top_categories"] == []  # not even in an order: what the few bought most
    assert all(row["mean"] is None and row["index"] is None for row in answer["activity"])
    figures = {row["measure"]: row["crowd"] for row in answer["figures"]}
    assert figures["customers"] == "<10" and figures["share of revenue"] is None


def test_the_values_listed_are_the_populations_never_only_a_small_crowds_or_bases():
    """Rows listed only for the values the crowds (or a report's base) held: for a crowd of one
    against an empty one, every row was that customer's value, a whole profile under "<10"."""
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        everyone = data.mask(Crowd("all"))
        one = data.mask(Crowd("where", "orders_lifetime = 1"))  # B alone
        nobody = data.mask(Crowd("where", "orders_lifetime > 100"))
        assert one.sum() == 1 and nobody.sum() == 0
        # min_cell 1: no value is pooled (pooled_rare_values), so the values themselves compare
        population_values = crowd_report(data, everyone, everyone, crowd_name="all", base_name="all", min_cell=1)
        expected = population_values.dimensions.groupby("dimension")["value"].apply(set).to_dict()
        small_base = crowd_report(data, nobody, one, crowd_name="none", base_name="B", min_cell=1)
        compared = compare(data, {"B": one, "none": nobody})
    assert len(expected) > 5 and any(len(values) > 1 for values in expected.values())
    assert small_base.dimensions.groupby("dimension")["value"].apply(set).to_dict() == expected
    assert compared.table.groupby("dimension")["value"].apply(set).to_dict() == expected


@pytest.fixture
def drawn_texts(monkeypatch) -> list[str]:
    """The texts charts draw (Axes.text), in order."""
    import matplotlib.axes

    written = []
    real_text = matplotlib.axes.Axes.text

    def text(ax, x, y, s, *args, **kwargs):
        written.append(s)
        return real_text(ax, x, y, s, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", text)
    return written


def test_a_chart_labels_a_cell_hidden_second_as_hidden_never_under_the_minimum(drawn_texts):
    """The bar charts wrote "<N" beside every hidden value, also beside one hidden only so that a
    small one cannot be worked out, which may hold a hundred customers."""
    from marketing.crowd_page import _share_chart

    report, _ = hand_report(dataset(), min_cell=1)
    rows = suppressed_dimensions(report)
    name = next(d for d, g in rows.groupby("dimension") if (g["share"] != "").sum() >= 2)
    rows = rows[rows["dimension"] == name].reset_index(drop=True)
    shown_first = rows.index[rows["share"] != ""][0]
    rows.loc[shown_first, ["count", "share", "tgi"]] = ["hidden", "", ""]  # as a second hidden cell shows
    assert _share_chart(name, name, rows, report) is not None
    assert "hidden" in drawn_texts  # beside the value hidden second, where "<1" was written


def test_letters_no_installed_font_has_draw_without_a_warning_per_letter():
    import warnings

    from portrait import pages

    plt = pages.pyplot()
    fig, ax = plt.subplots()
    ax.set_title("\u65e5\u672c J-Pop")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pages.png(fig)


def test_a_crosstab_hides_enough_that_no_hidden_count_can_be_worked_out():
    from marketing.crowd_compare import suppressed_crosstab

    # 3 x 3 counts, one under 5 (r1, c1 = 2): its row and its column each need a second hidden
    # cell, and so do the row and column of those
    cells = [("r1", "c1", 2), ("r1", "c2", 30), ("r1", "c3", 40)]
    cells += [("r2", "c1", 20), ("r2", "c2", 50), ("r2", "c3", 60)]
    cells += [("r3", "c1", 70), ("r3", "c2", 80), ("r3", "c3", 90)]
    table = pd.DataFrame(cells, columns=["row", "column", "count"])
    hide = suppression_mask(table["count"].to_numpy(), 5, table["row"].to_numpy(), table["column"].to_numpy())
    hidden = set(table.loc[hide, ["row", "column"]].itertuples(index=False, name=None))
    assert hidden == {("r1", "c1"), ("r1", "c2"), ("r2", "c1"), ("r2", "c2")}
    for axis in ("row", "column"):  # never exactly one hidden cell in a row or a column
        assert set(table.loc[hide].groupby(axis).size()) <= {2, 3}
    totals = {axis: table.groupby(axis)["count"].transform("sum") for axis in ("row", "column")}
    table["row_pct"], table["col_pct"] = table["count"] / totals["row"], table["count"] / totals["column"]
    shown = suppressed_crosstab(table, 5).set_index(["row", "column"])
    assert shown.loc[("r1", "c1"), "count"] == "<5" and shown.loc[("r2", "c2"), "count"] == "hidden"
    # a shown count over its percentage would give its row's (column's) total: none where the
    # row (column) hides a cell
    assert (shown.loc["r1", "row_pct"] == "").all() and (shown.loc["r2", "row_pct"] == "").all()
    assert (shown.loc["r3", "row_pct"] != "").all()
    assert (shown.xs("c1", level="column")["col_pct"] == "").all()
    assert (shown.xs("c3", level="column")["col_pct"] != "").all()


def test_activity_means_are_hidden_with_their_reach_and_activities_nobody_has_are_left_out():
    from marketing.crowd_report import suppressed_activity

    activity = pd.DataFrame(
        {
            "measure": ["views", "clicks", "calls"],
            "label": ["views", "clicks", "calls"],
            "reach": [30, 2, 0],
            "base_reach": [300, 40, 0],
            "mean": [3.0, 0.02, 0.0],  # clicks: 2 customers' 2 clicks over a crowd of 100
            "base_mean": [2.0, 0.1, 0.0],
            "reach_share": [0.3, 0.02, 0.0],
            "base_reach_share": [0.3, 0.04, 0.0],
            "index": [150.0, 20.0, np.nan],
        }
    )
    shown = suppressed_activity(activity, size=100, min_cell=10).set_index("measure")
    assert shown.index.tolist() == ["views", "clicks"]  # nobody in the base made a call
    assert shown.loc["views", "mean"] == 3.0 and shown.loc["views", "reach"] == "30"
    assert shown.loc["clicks", "reach"] == "<10"
    assert shown.loc["clicks", ["mean", "index", "reach_share"]].isna().all()


def test_bands_cut_at_quintiles_of_everyone():
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    assert bands(values).tolist() == ["1.00-1.80", "1.80-2.60", "2.60-3.40", "3.40-4.20", "4.20-5.00", None]
    years = pd.Series([1950.0, 1960.0, 1970.0, 1980.0, 1990.0, 2000.0])
    assert bands(years, years=True).tolist() == ["1950-1960", "1960-1970", "1970-1980", "1980-1990"] + ["1990-2000"] * 2
    assert bands(years)[0] == "1,950-1,960"  # an amount's bands keep the separator
    assert [names_years(n) for n in ("birth_year", "yob", "signup_yr", "years_as_member", "yearly_spend")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_dimension_values_keep_the_most_common_then_other_and_unknown_last():
    values = ["b", "a", None, "c", "a", "b", " ", "d", "a", "unknown", "10.00-20.00", "2.00-10.00"]
    kept = top_values(values, 2)
    assert [kept.labels[c] if c >= 0 else None for c in kept.codes] == [
        "b",
        "a",
        None,
        "other",
        "a",
        "b",
        "other",
        "other",
        "a",
        "other",
        "other",
        "other",
    ]
    column = _categorical(values, Dimension("x", "x", order=("d", "c")))
    assert list(column.categories) == ["d", "c", "2.00-10.00", "10.00-20.00", "a", "b", "unknown"]
    assert column.tolist() == [
        "b",
        "a",
        "unknown",
        "c",
        "a",
        "b",
        "unknown",
        "d",
        "a",
        "unknown",
        "10.00-20.00",
        "2.00-10.00",
    ]
    unused = _categorical(Coded(np.array([1, 1, -1]), ["never", "seen"]), None)
    assert list(unused.categories) == ["seen", "unknown"] and unused.tolist() == ["seen", "seen", "unknown"]


def test_holm_adjusts_p_values_in_order():
    adjusted = holm(np.array([0.01, 0.04, np.nan, 0.03]))
    assert adjusted[0] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and np.isnan(adjusted[2])


def test_crosstab_drill_down_and_comparison_on_hand_written_data(tmp_path):
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        everyone = data.mask(Crowd("all"))
        table = crosstab(data, everyone, "age_band", "favourite_payment").set_index(["row", "column"])
        assert table.loc[("25-34", "card"), "count"] == 2 and table.loc[("35-44", "cash"), "count"] == 1
        assert table.loc[("35-44", "cash"), "row_pct"] == pytest.approx(0.5)
        # a crowd of one (C): every value the base holds is a row or a column, not only C's, which
        # a table of hidden counts would otherwise still tell
        alone = crosstab(data, cell_mask(data, "favourite_payment = cash"), "age_band", "favourite_payment")
        assert list(pd.unique(alone["row"])) == ["25-34", "35-44", "unknown"]
        assert list(pd.unique(alone["column"])) == ["card", "cash", "unknown"]
        assert alone["count"].sum() == 1 and len(alone) == 9
        shown = suppressed_crosstab(alone, 10)
        assert len(shown) == 9 and set(shown["count"]) <= {"<10", "hidden"}
        with pytest.raises(PortraitError, match="rows and columns are both 'age_band'"):  # a pandas traceback before
            crosstab(data, everyone, "age_band", "age_band")
        cell = cell_mask(data, "favourite_payment = cash")
        assert data.ids[cell].tolist() == ["C"]
        with pytest.raises(PortraitError, match=r"no value 'cheque'; closest: \['cash'\] \(of its 3 values\)$"):
            cell_mask(data, "favourite_payment = cheque", min_cell=1)  # the near ones were called "values"
        with pytest.raises(PortraitError, match=r"no value 'xyz'; its values: \['card', 'cash', 'unknown'\]$"):
            cell_mask(data, "favourite_payment = xyz", min_cell=1)
        # values a report pools (held by fewer than min_cell) are not printed by the error either
        with pytest.raises(PortraitError, match=r"no value 'xyz'; its values: \['card'\]; values fewer than 2 "):
            cell_mask(data, "favourite_payment = xyz", min_cell=2)
        with pytest.raises(PortraitError, match=r"no value 'cheque'; none of its 3 values is held by 10 customers"):
            cell_mask(data, "favourite_payment = cheque")
        with pytest.raises(PortraitError, match="unknown dimension 'payment'.*favourite_payment"):
            cell_mask(data, "payment = cash")
        with pytest.raises(PortraitError, match="DIMENSION = VALUE"):
            cell_mask(data, "favourite_payment")
        with pytest.raises(PortraitError, match="is a report's pooled row: each of its values is held by too few"):
            cell_mask(data, "favourite_payment = other values (2, each held by fewer than 10 customers)")
        result = compare(data, {"buyers": data.mask(Crowd("where", "orders_lifetime >= 1")), "all": everyone})
        assert result.sizes == {"buyers": 4, "all": 5} and result.overlap == 4
        top = result.table.iloc[0]
        assert top["difference"] == pytest.approx(result.table["difference"].max())
        # Every count hidden: the rows come by dimension and value, not by their true
        # difference, whose order would tell the small crowd's values.
        hidden = suppressed_comparison(result, 10)
        assert (hidden["difference"] == "").all()
        assert list(zip(hidden["dimension"], hidden["value"], strict=True)) == sorted(
            zip(result.table["dimension"], result.table["value"], strict=True)
        )
        written = write_compare(result, data, 10, tmp_path / "cmp")  # every count hidden: said, not an empty table
        text = written["md"].read_text()
        assert "No difference can be shown: in every row a crowd's count is under 10" in text
        assert "no value has enough customers in every crowd for a chi-square test" in text
        assert "No difference can be shown" in written["html"].read_text()
        some = suppressed_comparison(result, 1)  # zero counts hidden: the shown rows first, largest first
        visible = some["difference"] != ""
        assert visible.any() and (~visible).any() and not visible[visible.idxmin() :].any()
        assert some.loc[visible, "difference"].astype(float).is_monotonic_decreasing
        rest = some.loc[~visible]
        assert list(zip(rest["dimension"], rest["value"], strict=True)) == sorted(
            zip(rest["dimension"], rest["value"], strict=True)
        )


def test_pooled_dimension_makes_the_rare_values_one_value_last():
    column = pd.Series(pd.Categorical(["b", "a", "b", None, "c", "b", "a"], categories=["a", "b", "c", "never"]))
    pooled = pooled_dimension(column, 3)
    other = "other values (2, each held by fewer than 3 customers)"
    assert list(pooled.cat.categories) == ["b", "never", other]  # nobody holds "never": left as it was
    assert pooled.tolist()[:3] == [other if v != "b" else "b" for v in ["b", "a", "b"]]
    assert pd.isna(pooled.iloc[3]) and pooled.iloc[4] == other
    assert pooled_dimension(column, 1) is column and pooled_dimension(column, 2).cat.categories[-1] == (
        "other values (1, each held by fewer than 2 customers)"
    )


def test_crosstab_and_comparison_pool_values_fewer_than_min_cell_hold(tmp_path):
    # a value held by one customer was printed beside its hidden count: a name column's names
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        everyone = data.mask(Crowd("all"))
        table = crosstab(data, everyone, "age_band", "favourite_payment", 2).set_index(["row", "column"])
        one, two = (f"other values ({n}, each held by fewer than 2 customers)" for n in (1, 2))
        assert list(pd.unique(table.index.get_level_values(0))) == ["25-34", "35-44", one]  # "unknown" 1
        assert list(pd.unique(table.index.get_level_values(1))) == ["card", two]  # cash 1, unknown 1
        assert table.loc[("35-44", two), "count"] == 2 and table.loc[(one, "card"), "count"] == 1
        assert table["count"].sum() == 5
        result = compare(data, {"buyers": data.mask(Crowd("where", "orders_lifetime >= 1")), "all": everyone}, 2)
        ages = result.table[result.table["dimension"] == "age_band"].set_index("value")
        assert ages.loc[one, ["count_1", "count_2"]].tolist() == [1, 1]
        assert ages.loc["35-44", ["count_1", "count_2"]].tolist() == [1, 2]
        assert "unknown" not in ages.index
        written = write_compare(result, data, 2, tmp_path / "cmp")
        assert "fewer than 2 customers of the whole data set hold are one row or column" in written["md"].read_text()
        rows = pd.read_csv(written["csv"])
        assert rows.loc[rows["dimension"] == "age_band", "value"].tolist() == ["25-34", "35-44", one]


def test_a_text_attributes_value_off_only_in_case_or_spaces_is_refused_with_the_one_meant():
    """attr_region = 'South' matched nobody without a word where the data says 'south' (a user's
    test), while a favourite category was checked so; a value nobody holds stays allowed."""
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        assert population.schema().current["attr_age_band"] == ("25-34", "35-44")
        with pytest.raises(PortraitError, match=r"attr_age_band has no value '25-34 '; did you mean '25-34'\?"):
            data.mask(Crowd("where", "attr_age_band = '25-34 '"))
        assert data.ids[data.mask(Crowd("where", "attr_age_band = '35-44'"))].tolist() == ["C", "E"]
        assert not data.mask(Crowd("where", "attr_age_band = '65+'")).any()  # nobody holds it: allowed
        # a person's id names a crowd as it names a list's rows (it was an unknown column here)
        assert data.ids[data.mask(Crowd("where", "customer_id in ('A', 'C')"))].tolist() == ["A", "C"]


def test_crowd_options_name_exactly_one_crowd():
    assert crowd_from_options(tag="lapsing") == Crowd("tag", "lapsing")
    assert crowd_from_options(bought_category="dairy", within_days=30) == Crowd("bought_category", "dairy", 30)
    with pytest.raises(PortraitError, match="exactly one crowd"):
        crowd_from_options()
    with pytest.raises(PortraitError, match=r"exactly one crowd.*segment, tag"):
        crowd_from_options(segment="s", tag="t")
    with pytest.raises(PortraitError, match="positive number of days"):
        crowd_from_options(bought_category="dairy", within_days=0)
    with pytest.raises(PortraitError, match="segment:NAME"):
        parse_crowd("lapsing")
    assert parse_crowd("tag: lapsing") == Crowd("tag", "lapsing")


def test_unknown_crowds_are_clear_errors(tmp_path):
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library(), segments=SegmentStore(tmp_path))
        with pytest.raises(PortraitError, match=rf"^no saved segment 'nope' in {tmp_path}/; saved: \[\]$"):
            data.mask(Crowd("segment", "nope"))
        missing = CrowdData(population, load_library(), segments=SegmentStore(tmp_path / "none"))
        with pytest.raises(PortraitError, match=r"none/: no such folder \(segments are read from --segments DIR"):
            missing.mask(Crowd("segment", "nope"))
        with pytest.raises(PortraitError, match="no tag 'lapsng'.*lapsing"):
            data.mask(Crowd("tag", "lapsng"))
        with pytest.raises(PortraitError, match="needs a scores folder"):
            data.mask(Crowd("persona", "x"))
        with pytest.raises(PortraitError, match="category = 'diary'.*Dairy"):
            data.mask(Crowd("bought_category", "diary"))
        assert data.ids[data.mask(Crowd("bought_category", "dairy", 60))].tolist() == ["A", "C"]  # from 2024-01-01
        assert data.ids[data.mask(Crowd("bought_category", "dairy", 40))].tolist() == ["A"]  # from 2024-01-21


def test_a_persona_crowd_is_named_by_its_name_or_its_id(tmp_path):
    """As lists and segments take them: /crowds/report?persona=3 answered 404 where
    /lists/...?persona=3 served the persona."""
    scores = pd.DataFrame(
        {
            "customer_id": ["A", "B", "C"],
            "persona_id": [3.0, 5.0, 3.0],
            "persona_name": ["Mainstream", "Lapsed", "Mainstream"],
        }
    )
    scores.to_parquet(tmp_path / "scores_2024-02-01.parquet")
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        data = CrowdData(population, load_library(), segments=SegmentStore(tmp_path / "segments"))
        by_name, by_id = data.mask(Crowd("persona", "Mainstream")), data.mask(Crowd("persona", "3"))
        assert data.ids[by_id].tolist() == data.ids[by_name].tolist() == ["A", "C"]
        # a report of persona 3 is headed by its name (it said "persona '3'")
        assert data.named(Crowd("persona", "3")) == Crowd("persona", "Mainstream")
        assert data.named(Crowd("persona", "3")).describe() == "persona 'Mainstream'"
        assert data.named(Crowd("persona", "Lapsed")) == Crowd("persona", "Lapsed")
        assert data.named(Crowd("persona", "9")) == Crowd("persona", "9")  # unknown: the mask says so
        assert data.named(Crowd("tag", "3")) == Crowd("tag", "3")
        with pytest.raises(PortraitError, match=r"no persona '9' in the scores; personas: .* \(or their ids\)"):
            data.mask(Crowd("persona", "9"))
    # scores without the personas model's: said so, without a command-line option (the API
    # answers with it too); without scores the option is named (test_unknown_crowds_are_clear_errors)
    scores.drop(columns=["persona_id", "persona_name"]).assign(m_percentile=50.0).to_parquet(
        tmp_path / "scores_2024-02-01.parquet"
    )
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        data = CrowdData(population, load_library(), segments=SegmentStore(tmp_path / "segments"))
        with pytest.raises(
            PortraitError,
            match=r"^a persona crowd needs scores with personas, and these hold none \(score with the personas model\)$",
        ):
            data.mask(Crowd("persona", "Mainstream"))


def test_a_persona_is_named_by_its_name_or_its_id_wherever_one_is_asked_for():
    """The one reading of a persona (lists, segments, crowd reports): a name, or an id as a
    caller writes it, an id stored as 3.0 being 3 (lists and segments compared "3.0" with "3")."""
    from marketing.population import persona_named

    known = pd.DataFrame({"persona_id": [3.0, 5.0, None], "persona_name": ["Mainstream", "Lapsed", None]})
    assert persona_named(known, "Lapsed") == "Lapsed"
    assert persona_named(known, "3") == persona_named(known, "3.0") == "Mainstream"
    assert persona_named(known, "4") is None and persona_named(known, "lapsed") is None
    assert persona_named(known[["persona_name"]], "3") is None  # no ids to read it as one


def test_trend_points_ignore_rows_after_them():
    dates = [dt.date(2024, 2, 1), dt.date(2024, 3, 1)]
    crowd = Crowd("where", "orders_lifetime >= 2")
    before = crowd_trend(dataset(), crowd, dates, load_library())
    after = crowd_trend(dataset(later=True), crowd, dates, load_library())
    pd.testing.assert_frame_equal(before, after)
    # As of 2024-02-01: A has 1 order, C 2, D 3 -> C, D; as of 2024-03-01 A joins.
    assert before["customers"].tolist() == [2, 3] and before["entered"].tolist()[1] == 1
    # Revenue of the second point: members' net spend from 2024-02-01: A 20, C 30, D 50.
    assert before["revenue"].tolist()[1] == pytest.approx(100.0)
    # A filter with a behaviour term and an RFM column (always true for these buyers) finds the
    # same crowd: its columns are built with the point's own
    mixed = Crowd("where", "orders_lifetime >= 2 and purchased(within_days = 3650) >= 1 and rfm_f >= 1")
    assert crowd_trend(dataset(), mixed, dates, load_library())["customers"].tolist() == [2, 3]
    with pytest.raises(PortraitError, match=r"^no purchase before 2020-01-01: every date is before the data's range$"):
        crowd_trend(dataset(), crowd, [dt.date(2020, 1, 1)], load_library())  # said "from None to None" before
    with pytest.raises(
        PortraitError, match=r"outside the data's range \(purchases from 2023-11-01 to 2024-02-20\): 2026-01-01;"
    ):
        crowd_trend(dataset(), crowd, [dt.date(2024, 3, 1), dt.date(2026, 1, 1)], load_library())
    with pytest.raises(PortraitError, match="week or month"):
        trend_dates("2024-01-01", "2024-03-01", "day")
    assert trend_dates("2024-01-31", "2024-04-30", "month") == [
        dt.date(2024, 1, 31),
        dt.date(2024, 2, 29),
        dt.date(2024, 3, 31),
        dt.date(2024, 4, 30),
    ]


# ------------------------------------------------------------------ planted personas


@pytest.fixture(scope="module")
def planted(small_synthetic, tmp_path_factory) -> Path:
    """The session's synthetic data with each customer's planted persona as an attribute."""
    folder = tmp_path_factory.mktemp("planted") / "data"
    shutil.copytree(small_synthetic, folder)
    truth = pd.read_csv(folder / "truth" / "personas.csv", dtype=str)
    customers = pd.read_parquet(folder / "customers.parquet")
    customers = customers.merge(truth.rename(columns={"persona": "planted"}), on="customer_id", how="left")
    customers.to_parquet(folder / "customers.parquet", index=False)
    return folder


def test_planted_promotion_hunters_are_promotion_sensitive(planted):
    with Population(open_dataset(planted), "2025-01-01") as population:
        data = CrowdData(population, load_library())
        hunters = data.mask(Crowd("where", "attr_planted = 'promotion_hunter'"))
        report = crowd_report(data, hunters, data.mask(Crowd("all")), crowd_name="hunters", base_name="all")
    sensitivity = rows(report, "promotion_sensitivity")
    assert sensitivity["high (half of orders or more)"][2] >= 150
    assert rows(report, "planted")["promotion_hunter"][2] > 300  # the crowd is what it says


def test_a_monthly_trends_first_period_is_the_calendar_month_before_it():
    """As of 2024-02-01 every month: the first point's period is January (it was one step's
    length before it, 29 days: from 2024-01-03)."""
    dates = trend_dates("2024-02-01", "2024-03-01", "month")
    table = crowd_trend(dataset(), Crowd("all"), dates, load_library(), every="month")
    assert table["period_start"].tolist() == ["2024-01-01", "2024-02-01"]
    # the range allows one calendar month after the last purchase (2024-03-06 with the later
    # rows), wherever --from falls: the first step, 29 days in February, refused 04-06
    from_february = trend_dates("2024-02-06", "2024-04-06", "month")
    assert len(crowd_trend(dataset(later=True), Crowd("all"), from_february, load_library(), every="month")) == 3
    weekly = trend_dates("2024-02-01", "2024-02-08", "week")
    assert crowd_trend(dataset(), Crowd("all"), weekly, load_library(), every="week")["period_start"].tolist() == [
        "2024-01-25",
        "2024-02-01",
    ]


def test_a_trend_of_a_crowd_hidden_at_every_point_says_so_instead_of_empty_panels(tmp_path, drawn_texts):
    from marketing.crowd_trend import write_trend

    dates = [dt.date(2024, 2, 1), dt.date(2024, 3, 1)]
    crowd = Crowd("where", "orders_lifetime >= 2")
    table = crowd_trend(dataset(), crowd, dates, load_library())  # 2 and 3 customers
    paths = write_trend(table, crowd, 10, tmp_path)
    assert any("fewer than 10 customers at every point, so nothing is drawn" in t for t in drawn_texts)
    # the crowd's text (a condition, a tag's name) is the user's: escaped in the page's heading
    written = write_trend(table, Crowd("where", "x = '<script>alert(1)</script>'"), 10, tmp_path / "odd")
    assert "<script>" not in written["html"].read_text() and "&lt;script&gt;" in written["html"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*.tmp"))


def test_planted_seasonal_buyers_trend_peaks_in_the_fourth_quarter(planted):
    crowd = Crowd("where", "attr_planted = 'seasonal_gift_buyer'")
    dates = trend_dates("2024-02-01", "2025-01-01", "month")
    table = crowd_trend(open_dataset(planted), crowd, dates, load_library())
    peak = table.loc[table["revenue"].idxmax(), "period_start"]
    assert dt.date.fromisoformat(peak).month in (10, 11, 12), table[["period_start", "revenue"]]


# ------------------------------------------------------------------ the commands


def run(*args) -> tuple[int, str]:
    """Invoke the CLI; a product error counts as exit 2 with its message, as in portrait_cli.main."""
    from portrait_cli.main import _register_later_commands, app

    _register_later_commands()
    result = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(result.exception, PortraitError):
        return 2, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture()
def data_folder(tmp_path) -> Path:
    from tests.conftest import write_tables

    return write_tables(tmp_path / "data", purchases=PURCHASES, events=EVENTS, customers=CUSTOMERS)


def test_a_purchases_table_without_a_readable_row_is_said_as_such_not_as_an_early_date(tmp_path):
    from tests.conftest import write_tables

    folder = write_tables(tmp_path / "data", purchases=PURCHASES.iloc[:0])  # the header alone
    code, output = run("crowd", "report", "--all", "--data", folder, "--as-of", AS_OF, "--out", tmp_path / "r")
    assert code == 2 and "the purchases table has no rows" in output  # the data set's checks say it first
    folder = write_tables(tmp_path / "early", purchases=PURCHASES)
    code, output = run("crowd", "report", "--all", "--data", folder, "--as-of", "2000-01-01", "--out", tmp_path / "r")
    assert code == 2 and "no purchase before 2000-01-01: the as-of date is before the data's range" in output


def test_crowd_commands_as_a_user(tmp_path, data_folder):
    common = ["--data", data_folder, "--as-of", AS_OF, "--min-cell", "1"]
    code, output = run("crowd", "report", "--where", "orders_lifetime >= 2", *common, "--out", tmp_path / "r")
    assert code == 0, output
    table = pd.read_csv(tmp_path / "r" / "crowd.csv", dtype=str)
    assert list(table.columns) == ["dimension", "value", "count", "share", "base_share", "tgi"]
    page = (tmp_path / "r" / "crowd.html").read_text()
    assert "orders ever placed" in page and "repeat_orders" not in page.split("<h2>Every dimension")[0]
    # the categories shown are the top 10 by spend: a note that spoke of small counts alone read as
    # if every category outside it had fewer than min-cell buyers
    markdown = (tmp_path / "r" / "crowd.md").read_text()
    assert "## Top 10 categories by the crowd's spend (last 365 days)" in markdown
    assert "The 10 with the most spend.\n" in markdown  # --min-cell 1: nothing left out for its few buyers
    code, output = run(
        "crowd", "crosstab", "--rows", "age_band", "--cols", "favourite_payment", *common, "--out", tmp_path / "x"
    )
    assert code == 0, output
    assert (tmp_path / "x" / "crosstab.html").exists()
    out = tmp_path / "cell.csv"
    code, output = run(
        "crowd",
        "export",
        "--all",
        "--cell",
        "favourite_payment = cash",
        "--data",
        data_folder,
        "--as-of",
        AS_OF,
        "--out",
        out,
    )
    assert code == 0, output
    assert pd.read_csv(out)["customer_id"].tolist() == ["C"]
    assert "no consent rule applies" in " ".join(output.split())  # as segment export says it
    code, output = run("crowd", "report", "--where", "orders_lifetime >= 50", *common, "--out", tmp_path / "empty")
    assert code == 0 and "empty" in output
    assert "no customers" in (tmp_path / "empty" / "crowd.md").read_text()
    # a misspelt value of an `each` tag: an empty crowd that says why, as segment count does
    code, output = run("crowd", "report", "--tag", "interest: Meatt", *common, "--out", tmp_path / "typo")
    said = f"nobody holds the tag 'interest: Meatt' as of {AS_OF}; did you mean ['interest: Meat', "
    assert code == 0 and said in " ".join(output.split())
    assert said in (tmp_path / "typo" / "crowd.md").read_text()


def test_a_persona_given_by_its_id_is_reported_by_its_name(tmp_path, data_folder):
    scores = pd.DataFrame(
        {
            "customer_id": list("ABCDE"),
            "persona_id": [3.0, 5.0, 3.0, 5.0, 3.0],
            "persona_name": ["Mainstream", "Lapsed"] * 2 + ["Mainstream"],
        }
    )
    (tmp_path / "scores").mkdir()
    scores.to_parquet(tmp_path / "scores" / "scores_2024-02-01.parquet")
    common = ["--data", data_folder, "--as-of", AS_OF, "--scores", tmp_path / "scores", "--min-cell", "1"]
    code, output = run("crowd", "report", "--persona", "3", *common, "--out", tmp_path / "r")
    assert code == 0, output
    assert (tmp_path / "r" / "crowd.md").read_text().startswith("# Crowd portrait: persona 'Mainstream'\n")
    # one persona named both ways is one crowd: two columns of the same customers under two names
    code, output = run("crowd", "compare", "persona:3", "persona:Mainstream", *common, "--out", tmp_path / "c")
    assert code != 0 and "each crowd may be named once (a persona by its name or by its id)" in output, output
    assert not (tmp_path / "c").exists()
    # the API's report, as the command's (it answered "persona '3'")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving.crowd_routes import build_crowd_router

    app = FastAPI()
    app.include_router(
        build_crowd_router(
            data_folder, AS_OF, scores_dir=tmp_path / "scores", segments_dir=None, tags_library=None, least_cell=1
        )
    )
    client = TestClient(app)
    answer = client.get("/crowds/report", params={"persona": "3", "min_cell": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["crowd"] == "persona 'Mainstream'" and answer.json()["customers"] == 3
    cell = client.get("/crowds/customers", params={"persona": "3", "cell": "favourite_payment = card"})
    assert cell.status_code == 200 and cell.json()["crowd"] == "persona 'Mainstream'", cell.text  # the drill-down too
    # the date scored again (a new personas model): answered from the new scores, not the kept answer
    scores.assign(persona_id=3.0, persona_name="Mainstream").to_parquet(
        tmp_path / "scores" / "scores_2024-02-01.parquet"
    )
    assert client.get("/crowds/report", params={"persona": "3", "min_cell": 1}).json()["customers"] == 5
    # a trend of it: its files and the command name the persona too
    trend = crowd_trend(
        dataset(),
        Crowd("persona", "3"),
        [dt.date(2024, 2, 15), AS_DATE],
        load_library(),
        scores_dir=tmp_path / "scores",
    )
    assert trend.attrs["crowd"] == "persona 'Mainstream'" and trend["customers"].tolist() == [5, 5]


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "--out", "o"], "exactly one crowd"),
        (["report", "--tag", "lapsng", "--out", "o"], "no tag 'lapsng'"),
        (["crosstab", "--rows", "agee", "--cols", "favourite_payment", "--out", "o"], "unknown dimension 'agee'"),
        (["compare", "tag:lapsing", "--out", "o"], "2 to 6 crowds"),
        (["report", "--where", "orders_lifetime >= 1; drop table x", "--out", "o"], "not allowed"),
        (["report", "--all", "--out", "o", "--as-of", "2023-01-01"], "before the data's range"),
        (["report", "--all", "--out", "o", "--as-of", "2026-01-01"], "after the last purchase (2024-02-20)"),
    ],
)
def test_bad_crowd_commands_exit_non_zero(tmp_path, data_folder, args, message):
    args = [str(tmp_path / "o") if a == "o" else a for a in args]  # never the working folder
    as_of = [] if "--as-of" in args else ["--as-of", AS_OF]
    code, output = run("crowd", *args, "--data", data_folder, *as_of)
    assert code != 0
    assert message in output and "Traceback" not in output


def test_quadrant_finds_the_engaged_customer_who_does_not_buy(tmp_path):
    from marketing.crowd_quadrant import POTENTIAL, potential_high_spenders, quadrant, write_quadrant

    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        result = quadrant(data, data.mask(Crowd("all")), window=90)
        # Only E has an interaction (and no spend); 90 days back from 2024-03-01 is 2023-12-02:
        # spend A 30, B 100, C 38, D 100 (d2 on 2023-12-01 is out), E 0 -> percentiles (share of the
        # crowd strictly lower) 20, 60, 40, 60, 0.
        cells = result.customers.set_index("customer_id")
        assert cells.loc["E", "cell"] == POTENTIAL and cells.loc["E", "engagement_pct"] == 80.0
        assert cells["spend_pct"].to_dict() == {"A": 20.0, "B": 60.0, "C": 40.0, "D": 60.0, "E": 0.0}
        assert cells.loc["B", "cell"].startswith("quiet spenders") and cells.loc["A", "cell"].startswith("low value")
        ranked, how = potential_high_spenders(data, result)
        assert ranked["customer_id"].tolist() == ["E"] and "engagement" in how
        recorded = []
        paths, _, written = write_quadrant(data, result, "all", 1, tmp_path, audited=lambda n, left: recorded.append(n))
        odd, _, _ = write_quadrant(
            data, result, "<b>big</b> spender", 1, tmp_path / "odd", audited=lambda n, left: None
        )
        assert "<b>big" not in odd["html"].read_text() and "&lt;b&gt;big" in odd["html"].read_text()
        assert pd.read_csv(paths["potential"])["customer_id"].tolist() == ["E"]
        # the ids file is a pull of customer ids: recorded (it was not), once it is written whole
        assert written == 1 and recorded == [1]
        assert pd.read_csv(paths["csv"])["customers"].astype(str).tolist()[0] == "1"
        with pytest.raises(PortraitError, match="one of \\[30, 90, 180, 365\\]"):
            quadrant(data, data.mask(Crowd("all")), window=60)


def _crowd_api(tmp_path, data_folder, segment, least_cell: int):
    """The crowd routes alone over ``data_folder`` with ``segment`` saved: (its store, a client)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving.crowd_routes import build_crowd_router

    store = SegmentStore(tmp_path / "segments")
    store.save(segment)
    app = FastAPI()
    app.include_router(
        build_crowd_router(
            data_folder, AS_OF, scores_dir=None, segments_dir=store.folder, tags_library=None, least_cell=least_cell
        )
    )
    return store, TestClient(app)


def test_a_segment_edited_since_a_report_is_answered_by_its_new_definition(tmp_path, data_folder):
    """The reports and drill-downs were kept by crowd and date: a segment edited to another
    condition was answered with its old members, a drill-down the sensitive-attribute check had
    just allowed for the new definition giving the ids of the old one (a user's test)."""
    import os

    from marketing.segments import Segment

    store, client = _crowd_api(tmp_path, data_folder, Segment("chosen", where="orders_lifetime >= 2"), least_cell=1)

    def report():
        answer = client.get("/crowds/report", params={"segment": "chosen", "min_cell": 1})
        assert answer.status_code == 200, answer.text
        return answer.json()["customers"]

    def cell():
        answer = client.get("/crowds/customers", params={"segment": "chosen", "cell": "favourite_payment = card"})
        assert answer.status_code == 200, answer.text
        return answer.json()["customer_ids"]

    before, before_ids = report(), cell()
    assert before == 3 and before_ids
    # the same size, and its modification time set back (cp -p, a coarse clock): still seen
    path = store.path("chosen")
    before_stat = path.stat()
    store.save(Segment("chosen", where="orders_lifetime >= 9"), replace=True)
    assert path.stat().st_size == before_stat.st_size
    os.utime(path, ns=(before_stat.st_atime_ns, before_stat.st_mtime_ns))
    assert report() == 0 and cell() == []


def test_crowd_report_route_answers_suppressed_json_and_404_for_unknown_crowds(tmp_path, data_folder):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from marketing.segments import Segment
    from serving.crowd_routes import build_crowd_router

    store, client = _crowd_api(tmp_path, data_folder, Segment("repeaters", where="orders_lifetime >= 2"), least_cell=2)
    answer = client.get("/crowds/report", params={"segment": "repeaters", "min_cell": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customers"] == 3 and body["as_of"] == AS_OF
    shown = {(r["dimension"], r["value"]): r for r in body["dimensions"]}
    assert shown[("age_band", "25-34")]["count"] == "<2" and shown[("age_band", "25-34")]["share"] == ""
    small = client.get("/crowds/report", params={"segment": "repeaters", "min_cell": 10}).json()
    assert small["customers"] == "<10" and {r["count"] for r in small["dimensions"]} == {"<10"}
    missing = client.get("/crowds/report", params={"segment": "nobody"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    assert client.get("/crowds/report", params={"tag": "lapsng"}).status_code == 404
    # an unknown crowd is answered before any data is read (it cost 1.3-1.9 s of CPU per request)
    import serving.routes.crowds as crowd_routes

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read for an unknown crowd")

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(crowd_routes, "_crowd_data", no_data)
        assert client.get("/crowds/report", params={"segment": "nobody"}).status_code == 404
        assert client.get("/crowds/report", params={"tag": "lapsng"}).status_code == 404
        assert (
            client.get("/crowds/customers", params={"segment": "nobody", "cell": "age_band = 25-34"}).status_code == 404
        )
        assert client.get("/crowds/report", params={"segment": "../x"}).status_code == 422
        # a date of thousands of digits is refused by its length before it is read (it was read,
        # and the product's error repeated it whole; the app's handler cuts what FastAPI's repeats)
        for route, cell in (("report", {}), ("customers", {"cell": "age_band = 25-34"})):
            long_date = client.get(f"/crowds/{route}", params={"segment": "repeaters", "as_of": "2" * 5000, **cell})
            assert long_date.status_code == 422
            assert long_date.json()["detail"][0]["msg"] == "String should have at most 32 characters"
    # a page starts at most 10,000,000 rows in, as a list's (a 500-digit offset was taken)
    params = {"segment": "repeaters", "cell": "age_band = 25-34", "offset": "9" * 500}
    assert client.get("/crowds/customers", params=params).status_code == 422
    assert client.get("/crowds/report").status_code == 422
    assert client.get("/crowds/report", params={"tag": "lapsing", "segment": "repeaters"}).status_code == 422
    # served with scores of a later date: a report as of an earlier date is computed without them
    # (it was a 422 "no scores as of ..." for a segment of attributes alone)
    scores = tmp_path / "scores"
    scores.mkdir()
    pd.DataFrame({"customer_id": ["A"], "m_score": [0.5]}).to_parquet(scores / "scores_2024-06-01.parquet")
    later = FastAPI()
    later.include_router(
        build_crowd_router(
            data_folder, "2024-06-01", scores_dir=scores, segments_dir=store.folder, tags_library=None, least_cell=2
        )
    )
    earlier = TestClient(later).get("/crowds/report", params={"segment": "repeaters", "as_of": AS_OF, "min_cell": 2})
    assert earlier.status_code == 200, earlier.text
    assert earlier.json()["customers"] == 3 and earlier.json()["as_of"] == AS_OF
    # the server's own floor: a caller may hide more, never less (the API's default is 10)
    app = FastAPI()
    app.include_router(build_crowd_router(data_folder, AS_OF, scores_dir=None, segments_dir=None, tags_library=None))
    lowered = TestClient(app).get("/crowds/report", params={"segment": "repeaters", "min_cell": 9})
    assert lowered.status_code == 422 and "greater than or equal to 10" in lowered.text


def test_a_report_cell_drills_down_to_its_customers_through_the_api(tmp_path, data_folder):
    import json

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from marketing.segments import Segment
    from serving.routes.crowds import CrowdSources, build_crowds_router

    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("repeaters", where="orders_lifetime >= 2"))
    log = tmp_path / "audit.log"
    fixed = CrowdSources(data_folder, AS_OF, None)
    app = FastAPI()
    app.include_router(build_crowds_router(lambda: fixed, segments_dir=store.folder, tags_library=None, audit_log=log))
    client = TestClient(app)
    # Repeaters A, C, D; A's payment tie goes to card, D pays by card, C by cash.
    answer = client.get("/crowds/customers", params={"segment": "repeaters", "cell": "favourite_payment = card"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customer_ids"] == ["A", "D"] and body["total"] == 2 and body["cell"] == "favourite_payment = card"
    page = client.get(
        "/crowds/customers", params={"segment": "repeaters", "cell": "favourite_payment = card", "offset": 1}
    ).json()
    assert page["customer_ids"] == ["D"] and page["total"] == 2
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["count"] for line in lines] == [2, 1] and lines[0]["what"] == "GET /crowds/customers"
    assert "A" not in json.dumps(lines[0]["filter"])  # the log holds the filter and the count, never ids
    bad = client.get("/crowds/customers", params={"segment": "repeaters", "cell": "payment = card"})
    assert bad.status_code == 422 and "unknown dimension 'payment'" in bad.json()["detail"]
    missing = client.get("/crowds/customers", params={"segment": "nobody", "cell": "favourite_payment = card"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]


def test_drill_downs_and_reports_follow_a_new_opt_out_and_a_forgotten_person(tmp_path, data_folder):
    """Answers are kept per worker: a later opt-out (suppression file) or a `portrait forget`
    must be out of the very next answer, not of the next restart."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from marketing.segments import Segment
    from portrait.dataset import open_dataset
    from portrait.forget import forget
    from serving.routes.crowds import CrowdSources, build_crowds_router

    (data_folder / "suppressed.csv").write_text("customer_id\nnobody\n")
    (data_folder / "portrait.toml").write_text('[privacy]\nsuppression_file = "suppressed.csv"\n')
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("repeaters", where="orders_lifetime >= 2"))
    fixed = CrowdSources(data_folder, AS_OF, None)
    app = FastAPI()
    app.include_router(build_crowds_router(lambda: fixed, segments_dir=store.folder, tags_library=None, least_cell=1))
    client = TestClient(app)
    params = {"segment": "repeaters", "cell": "favourite_payment = card"}

    def report_customers() -> int:
        answer = client.get("/crowds/report", params={"segment": "repeaters", "min_cell": 1})
        assert answer.status_code == 200, answer.text
        return answer.json()["customers"]

    assert client.get("/crowds/customers", params=params).json()["customer_ids"] == ["A", "D"]
    assert report_customers() == 3
    (data_folder / "suppressed.csv").write_text("customer_id\nA\n")
    body = client.get("/crowds/customers", params=params).json()
    assert body["customer_ids"] == ["D"] and body["left_out"] == {"suppressed": 1}
    forget(open_dataset(data_folder), ["D"], reason="test")
    assert client.get("/crowds/customers", params=params).json()["customer_ids"] == []
    assert report_customers() == 2  # D's rows are gone from the data set


def test_favourite_spend_ties_within_rounding_noise_go_to_the_first_name():
    # 0.1 + 0.2 sums to 0.30000000000000004: still a tie with 0.3, so "Alpha" wins by name.
    lines = pd.DataFrame(
        [
            ("z1", "Z", "2024-01-10 10:00:00", 0.1, 1, "Bakery", 0.0, "cash"),
            ("z1", "Z", "2024-01-10 10:00:00", 0.2, 1, "Bakery", 0.0, "cash"),
            ("z2", "Z", "2024-01-11 10:00:00", 0.3, 1, "Alpha", 0.0, "cash"),
        ],
        columns=COLUMNS,
    )
    with Population(Dataset.from_frames(purchases=lines), AS_OF) as population:
        data = CrowdData(population, load_library())
        assert data.dimensions["favourite_category"].astype(str).tolist() == ["Alpha"]


def test_a_category_holding_an_email_or_phone_number_is_never_named_in_a_report(caplog):
    """A product named after a person's contact: the crowd's favourite and its top-category
    table show it withheld, each such value under its own number (sorted by the value: the cake
    is #1), never merged (Z's favourite is the one value of most spend, a tie of 2 and 2 going
    to the first name); the others are named as before."""
    from portrait.privacy import PERSONAL_VALUE

    lines = pd.DataFrame(
        [
            ("p1", "Z", "2024-01-10 10:00:00", 1.0, 1, "Bakery", 0.0, "cash"),
            ("p1", "Z", "2024-01-10 10:00:00", 2.0, 1, "Cake for anna.smith@example.com", 0.0, "cash"),
            ("p2", "Z", "2024-01-12 10:00:00", 2.0, 1, "Call +44 (0)20 7946 0958", 0.0, "cash"),
            ("p3", "Y", "2024-01-11 10:00:00", 0.3, 1, "Alpha", 0.0, "cash"),
        ],
        columns=COLUMNS,
    )
    with caplog.at_level("WARNING"), Population(Dataset.from_frames(purchases=lines), AS_OF) as population:
        data = CrowdData(population, load_library())
        favourites = dict(zip(data.ids, data.dimensions["favourite_category"].astype(str), strict=True))
        everyone = data.mask(Crowd("all"))
        report = crowd_report(data, everyone, everyone, crowd_name="all", base_name="all", min_cell=1)
    first, second = "(withheld: personal data #1)", "(withheld: personal data #2)"
    assert PERSONAL_VALUE == "(withheld: personal data)"
    assert favourites == {"Y": "Alpha", "Z": first}
    shown = dict(zip(report.categories["value"], report.categories["spend"], strict=True))
    assert shown == {first: 2.0, second: 2.0, "Bakery": 1.0, "Alpha": 0.3}
    assert "2 category value(s) hold an e-mail address or a phone number" in caplog.text
    assert "anna" not in caplog.text and "7946" not in caplog.text


def test_a_trend_with_too_many_points_says_so_without_a_wrong_count():
    from marketing.crowd_trend import trend_dates

    with pytest.raises(PortraitError, match=r"more than 120 points from 1990-01-01 to 2030-01-01 every month"):
        trend_dates("1990-01-01", "2030-01-01", "month")


def test_a_top_category_share_is_of_all_the_crowds_category_spend_not_of_the_rows_shown():
    from marketing.crowd_report import _top

    found = pd.DataFrame(
        {
            "value": [f"c{i:02d}" for i in range(12)],
            "spend": [100.0] * 2 + [10.0] * 10,  # 300 in all; the top 10 hold 280
            "units": [1.0] * 12,
            "buyers": [5] * 12,
            "base_buyers": [50] * 12,
            "base_spend": [1000.0] * 12,
        }
    )
    top = _top(found, n_crowd=20, n_base=200, top=10)
    assert len(top) == 10 and top["share_of_spend"].iloc[0] == pytest.approx(100 / 300)
    assert top["share_of_spend"].sum() == pytest.approx(280 / 300)


def test_an_empty_crowd_is_shown_as_0_wherever_its_size_is_shown():
    """An empty crowd read "<10" in compare, as a report's base and in a trend, beside notes that
    it was empty: 0 tells nothing of anyone."""
    from marketing.crowd_compare import _figures
    from marketing.crowd_report import crowd_size_shown, figures_shown

    assert [crowd_size_shown(n, 10) for n in (0, 3, 12)] == [0, "<10", 12]
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        nobody = data.mask(Crowd("where", "orders_lifetime > 100"))
        everyone = data.mask(Crowd("all"))
        compared = compare(data, {"none": nobody, "all": everyone})
        report = crowd_report(data, everyone, nobody, crowd_name="all", base_name="none", min_cell=10)
        trend = crowd_trend(dataset(), Crowd("where", "orders_lifetime > 100"), [dt.date(2024, 3, 1)], load_library())
    assert str(_figures(compared, 10).loc["customers", "none"]) == "0"
    assert str(figures_shown(report).set_index("measure").loc["customers", "base"]) == "0"
    # the API's answer: "customers" said "<10" where its own figures said 0
    with Population(dataset(), AS_OF) as population:
        data = CrowdData(population, load_library())
        empty = crowd_report(data, nobody, everyone, crowd_name="none", base_name="all", min_cell=10)
    answer = report_json(empty)
    assert answer["customers"] == 0 == next(f["crowd"] for f in answer["figures"] if f["measure"] == "customers")
    from marketing.crowd_trend import suppressed_trend

    assert suppressed_trend(trend, 10)["customers"].tolist() == ["0"]


def test_a_number_column_whose_bands_would_take_a_columns_name_keeps_both():
    # an export with both age (a number) and age_band (text): the bands of age were dropped
    customers = CUSTOMERS.assign(age=[30, 41, 52, 63, 74])
    ds = Dataset.from_frames(purchases=PURCHASES, events=EVENTS, customers=customers)
    with Population(ds, AS_OF) as population:
        data = CrowdData(population, load_library())
        report = crowd_report(
            data, data.mask(Crowd("all")), data.mask(Crowd("all")), crowd_name="a", base_name="a", min_cell=1
        )
    assert rows(report, "age_band") == {"25-34": (2, 2, 100.0), "35-44": (2, 2, 100.0), "unknown": (1, 1, 100.0)}
    assert sum(count for count, _, _ in rows(report, "age_quintile_band").values()) == 5
    # so a sensitive column is refused under every name its dimension may take (serving.routes.crowds)
    from marketing.crowd import attribute_dimension_names

    assert attribute_dimension_names("Age") == ("age", "age_band", "age_quintile_band")


def test_a_number_column_whose_bands_would_take_a_report_dimensions_name_keeps_both():
    customers = CUSTOMERS.assign(order_value=[30, 41, 52, 63, 74])  # order_value_band is the report's own
    ds = Dataset.from_frames(purchases=PURCHASES, events=EVENTS, customers=customers)
    with Population(ds, AS_OF) as population:
        data = CrowdData(population, load_library())
        report = crowd_report(
            data, data.mask(Crowd("all")), data.mask(Crowd("all")), crowd_name="a", base_name="a", min_cell=1
        )
    assert sum(count for count, _, _ in rows(report, "order_value_quintile_band").values()) == 5
    assert "unknown" in rows(report, "order_value_band")  # the report's average order value bands, as before


def test_the_favourite_payment_counts_purchase_orders_as_the_features_do():
    """C's refund (shipping too) exceeds its order and E's exchange nets -10: each placed one
    purchase order, paid by card, as orders_lifetime counts it."""
    purchases = pd.DataFrame(
        [
            ("c1", "C", "2024-01-05 10:00:00", 100.0, 1, "Dairy", 0.0, "card"),
            ("c1", "C", "2024-01-20 10:00:00", -104.95, -1, "Dairy", 0.0, "card"),
            ("e1", "E", "2024-01-05 10:00:00", 5.0, 1, "Dairy", 0.0, "card"),
            ("e1", "E", "2024-01-05 10:00:00", -15.0, -1, "Dairy", 0.0, "card"),
            ("r1", "R", "2024-01-05 10:00:00", -15.0, -1, "Dairy", 0.0, "cash"),  # a refund alone
        ],
        columns=COLUMNS,
    )
    with Population(Dataset.from_frames(purchases=purchases), AS_OF) as population:
        data = CrowdData(population, load_library())
        table = data.per_customer("payment_method")
        kept = population.con.execute(f"SELECT customer_id, value, orders FROM {table} ORDER BY ALL").fetchall()
    assert kept == [("C", "card", 1), ("E", "card", 1)]


def test_a_customers_column_in_another_script_is_a_dimension_by_its_own_name():
    from features.catalogue import slug

    purchases = pd.DataFrame(
        [
            ("o1", "C1", "2024-01-05 10:00:00", 12.0, 1, "Dairy", 0.0, "card"),
            ("o2", "C2", "2024-02-05 10:00:00", 9.8, 1, "Dairy", 0.0, "card"),
        ],
        columns=COLUMNS,
    )
    customers = pd.DataFrame({"customer_id": ["C1", "C2"], "地域": ["東京", "大阪"]})
    with Population(Dataset.from_frames(purchases=purchases, customers=customers), AS_OF) as population:
        data = CrowdData(population, load_library())
        assert data.check_dimension("地域") == slug("地域")
        assert data.check_dimension("rfm_group") == "rfm_group"
        table = crosstab(data, data.mask(Crowd("all")), "地域", "rfm_group")
    assert set(table["row"]) == {"東京", "大阪"}


def test_a_numeric_customers_column_is_asked_for_by_its_name_even_beside_its_bands_name():
    purchases = pd.DataFrame(
        [(f"o{i}", f"C{i}", "2024-01-05 10:00:00", 12.0, 1, "Dairy", 0.0, "card") for i in range(6)], columns=COLUMNS
    )
    customers = pd.DataFrame(
        {"customer_id": [f"C{i}" for i in range(6)], "年齢": [20, 30, 40, 50, 60, 70], "age": [1, 2, 3, 4, 5, 6]}
        | {"age_band": ["a", "a", "b", "b", "c", "c"]}
    )
    with Population(Dataset.from_frames(purchases=purchases, customers=customers), AS_OF) as population:
        data = CrowdData(population, load_library())
        assert data.check_dimension("年齢") == "u1910bd_band"
        assert data.check_dimension("age") == "age_quintile_band"  # not the text column age_band
        assert data.check_dimension("age_band") == "age_band"


def test_a_favourite_weekday_shared_by_two_days_is_a_tie_not_the_first_day():
    """One order on a Monday and one on a Friday: no favourite weekday. The first day in the
    week's order was taken, which made Monday the favourite of a quarter of CDNOW."""
    lines = pd.DataFrame(
        [
            ("t1", "T", "2024-01-01 10:00:00", 10.0),  # Monday
            ("t2", "T", "2024-01-05 10:00:00", 10.0),  # Friday
            ("f1", "F", "2024-01-01 10:00:00", 10.0),  # Monday
            ("f2", "F", "2024-01-05 18:00:00", 10.0),  # Friday
            ("f3", "F", "2024-01-12 19:00:00", 10.0),  # Friday
        ],
        columns=["order_id", "customer_id", "ts", "amount"],
    )
    with Population(Dataset.from_frames(purchases=lines), AS_OF) as population:
        dims = CrowdData(population, load_library()).dimensions.set_index(population.frame()["customer_id"])
    assert dims.loc["T", "favourite_weekday"] == "tied" and dims.loc["F", "favourite_weekday"] == "Friday"
    assert dims.loc["T", "favourite_daypart"] == "morning (06-12 h)"
    assert dims.loc["F", "favourite_daypart"] == "evening (18-24 h)"


@pytest.mark.parametrize("days", [0, -3, 36_601, 99_999_999_999])
def test_a_crowd_window_outside_one_to_a_century_is_refused_not_an_overflow(days):
    """--within-days 3000000 was an OverflowError traceback (a window before year 1)."""
    from marketing.crowd import crowd_from_options

    with pytest.raises(
        PortraitError,
        match=rf"^--within-days must be a whole number of days from 1 to 36,600, got {days} \(a positive number of days, at most a century\)$",
    ):
        crowd_from_options(bought_category="FLUID MILK PRODUCTS", within_days=days)
    assert crowd_from_options(bought_category="FLUID MILK PRODUCTS", within_days=36_600).within_days == 36_600


def test_the_page_rounds_each_share_once():
    """The page formatted the CSV's shares, already rounded to 4 decimals: 216 of 2,469 (8.748%)
    read 8.8% on the page and 8.7% in every other output."""
    from marketing.crowd_page import markdown_page

    report, _ = hand_report(dataset(), min_cell=1)
    shown = suppressed_dimensions(report)
    row = int(np.flatnonzero((shown["share"] != "").to_numpy() & (shown["base_share"] != "hidden").to_numpy())[0])
    report.dimensions.loc[report.dimensions.index[row], ["share", "base_share"]] = [216 / 2469, 0.123449]
    assert suppressed_dimensions(report).loc[row, ["share", "base_share"]].tolist() == ["0.0875", "0.1234"]
    page = markdown_page(report)
    value = str(shown.loc[row, "value"])
    line = next(line for line in page.splitlines() if line.startswith(f"| {value} "))
    assert "| 8.7% |" in line and "| 12.3% |" in line
