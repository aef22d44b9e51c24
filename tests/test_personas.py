"""Personas recover planted structure, carry ids across refits, and describe themselves."""

import datetime as dt
import json
import re
from html import escape

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import adjusted_rand_score

from features.build import build_features
from features.catalogue import Feature, describe
from models.persona_profile import (
    distinguishing,
    generate_name,
    lifts,
    name_personas,
    persona_feature_columns,
    portrait_table,
    spending_power,
    support_columns,
    trait_lifts,
)
from models.personas import Clip, PersonaModel, ShrinkShares, group_weights, share_counts, skewed
from models.pyfunc import StoredFit
from portrait.dataset import open_dataset
from portrait.errors import ConfigError, PortraitError
from portrait.synthetic import write_sample_data
from training import persona_report
from training.persona_report import distinguishing_traits, read_portrait_table, write_portrait
from training.personas import DEFAULT_FAMILIES, PersonaConfig, fit_personas, load_persona_config

CONFIG = PersonaConfig("personas", "unused", k_min=5, k_max=9)
EXPECTED_NAME = {
    "loyal_app_high_spender": " · app · full price",  # named by its brands; spend is not in names
    "promotion_hunter": "Promotion hunters",
    "payday_shopper": "Payday shoppers",
    "browser": "Browsers",
    "one_time_buyer": "One-time buyers",
    "lapsing_regular": "Laps",  # lapsing (overdue) or lapsed (silent for a year)
    "seasonal_gift_buyer": "Seasonal shoppers",
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("personas") / "data"
    write_sample_data(folder, customers=20000, seed=3)
    dataset = open_dataset(folder)
    truth = pd.read_csv(folder / "truth" / "personas.csv")
    return dataset, truth


@pytest.fixture(scope="module")
def fitted(planted):
    dataset, truth = planted
    features = build_features(dataset, "2025-01-01", families=DEFAULT_FAMILIES)
    return features, truth, fit_personas(CONFIG, features)


def _joined(features, fit, truth):
    return features[["customer_id"]].assign(label=fit.labels).merge(truth, on="customer_id")


def test_planted_personas_are_recovered(fitted):
    # Clustered on shape only (no spend or order counts), seed 3 at 20k: k=7, ARI 0.857; some
    # lapsing regulars whose active months included Oct-Dec join the seasonal shoppers.
    features, truth, fit = fitted
    joined = _joined(features, fit, truth)
    assert fit.model.k_ in (7, 8)
    assert adjusted_rand_score(joined["persona"], joined["label"]) >= 0.8
    assert set(fit.model.clustered_names_) <= set(persona_feature_columns(list(features.columns), aspects=("shape",)))
    assert {"spend_365d", "orders_lifetime", "orders_365d"}.isdisjoint(fit.model.clustered_names_)
    # every persona has a distinguishing non-volume feature
    assert (fit.table["distinguishing_count"] > 0).all()


def test_generated_names_describe_the_planted_behaviour(fitted):
    features, truth, fit = fitted
    joined = _joined(features, fit, truth)
    majority = joined.groupby("persona")["label"].agg(lambda s: s.mode()[0])
    share = joined.groupby("persona").apply(lambda g: (g["label"] == majority[g.name]).mean(), include_groups=False)
    recovered = share[share >= 0.8].index
    assert len(recovered) >= 5
    for persona in recovered:
        assert EXPECTED_NAME[persona] in fit.names[majority[persona]], (persona, fit.names[majority[persona]])


def test_refit_on_a_later_cutoff_keeps_ids_of_unchanged_personas(planted, fitted):
    dataset, truth = planted
    later_features, _, _ = fitted
    earlier_features = build_features(dataset, "2024-12-01", families=DEFAULT_FAMILIES)
    refit = PersonaConfig("personas", "unused", k=7)  # ids, not the k search, are under test here
    first = fit_personas(refit, earlier_features)
    previous = StoredFit(first.model, first.names, first.cluster_to_persona)
    second = fit_personas(refit, later_features, previous)
    before = _joined(earlier_features, first, truth).groupby("persona")["label"].agg(lambda s: s.mode()[0])
    after = _joined(later_features, second, truth).groupby("persona")["label"].agg(lambda s: s.mode()[0])
    # every planted persona is unchanged between the cutoffs, so each keeps its id and name
    assert (before == after).all(), pd.DataFrame({"before": before, "after": after})
    assert set(before) <= set(second.changes["kept"])
    assert not second.changes["gone"] and not second.changes["merged"]
    for persona in second.changes["kept"]:
        assert second.names[persona] == first.names[persona]


def test_a_refit_on_data_lacking_a_previous_feature_gives_new_ids_and_says_why(fitted):
    """A nightly refit where a category left the top list (its share feature is gone): the
    previous personas cannot label today's rows, so none is matched; new ids follow theirs."""
    features, _, fit = fitted
    previous = StoredFit(fit.model, fit.names, fit.cluster_to_persona)
    gone = next(c for c in fit.model.feature_names_ if c.startswith("category_share_"))
    refit = fit_personas(PersonaConfig("personas", "unused", k=3), features.head(600).drop(columns=[gone]), previous)
    first = max(fit.cluster_to_persona.values()) + 1
    assert sorted(refit.names) == [first, first + 1, first + 2]
    assert refit.changes["kept"] == [] and sorted(refit.changes["gone"]) == sorted(set(fit.cluster_to_persona.values()))
    assert f"lacks 1 of the features they were fitted on ({gone})" in refit.changes["note"]


def test_predict_assigns_any_feature_row(fitted):
    features, _, fit = fitted
    stored = StoredFit(fit.model, fit.names, fit.cluster_to_persona)
    assigned = stored.assign(features.head(50))
    assert assigned["persona_id"].tolist() == list(fit.labels[:50])


def test_portrait_table_and_page(fitted, tmp_path):
    _, _, fit = fitted
    table = fit.table
    assert table["customers"].sum() == len(fit.labels)
    assert table["share_of_customers"].sum() == pytest.approx(1.0)
    assert {"median_spend_365d", "lift_spend_365d", "top_categories", "top_channels", "mix_age_band"} <= set(
        table.columns
    )
    assert fit.lifts["persona_id"].tolist() == table["persona_id"].tolist()
    assert set(fit.model.feature_names_) <= set(fit.lifts.columns)
    paths = write_portrait(table, tmp_path, fit.lifts)
    html = paths["html"].read_text()
    # sizes, heat map, and one "what sets it apart" chart per persona
    assert html.count("data:image/png;base64,") == 2 + len(table)
    assert all(escape(name) in html for name in table["persona_name"])
    assert "Demographic mix" in paths["markdown"].read_text()
    assert pd.read_csv(paths["lifts"]).shape == fit.lifts.shape


def test_page_escapes_text_from_the_data(tmp_path):
    table = pd.DataFrame(
        {
            "persona_id": [0, 1],
            "persona_name": ["Regulars · <b>web</b>", "Occasional buyers"],
            "customers": [3, 1],
            "share_of_customers": [0.75, 0.25],
            "share_of_revenue": [0.9, 0.1],
            "lift_spend_365d": [1.2, 0.4],
            "top_categories": ["<script>alert(1)</script> (60%)", "milk (100%)"],
            "top_payment_methods": [None, None],
        }
    )
    page = write_portrait(table, tmp_path)["html"].read_text()
    assert "<script>alert" not in page and "<b>web</b>" not in page
    assert "alt='What sets Regulars · &lt;b&gt;web&lt;/b&gt; apart'" in page  # escaped once, not twice
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Payment methods" not in page  # no payment data: the line is left out, not shown empty
    # The Markdown page too: a viewer that renders HTML in Markdown runs no tag from the data,
    # and a newline in a value does not break a table row.
    table.loc[1, "top_categories"] = "fresh\nproduce | deli (100%)"
    text = write_portrait(table, tmp_path)["markdown"].read_text()
    assert "<script>" not in text and "<b>" not in text and "&lt;script>alert(1)&lt;/script>" in text
    assert "| fresh produce \\| deli (100%) |" in text


def test_markdown_text_is_one_line_without_tags_and_keeps_suppressed_counts():
    from portrait.pages import markdown, md_text

    assert md_text("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)>"
    assert md_text("we\r\nst|x") == "we st\\|x" and md_text("<10") == "<10" and md_text("AT&amp;T") == "AT&amp;amp;T"
    table = pd.DataFrame({"tier <b>|x": ["a\nb"], "n": [1.5]})
    assert markdown(table) == "| tier &lt;b>\\|x | n |\n| --- | --- |\n| a b | 1.50 |"


def test_distinguishing_traits_rank_by_distance_from_the_population():
    traits = distinguishing_traits(pd.Series({"a": 1.1, "b": 0.25, "c": 4.0, "d": np.nan, "e": 1.0}), top=3)
    assert traits.round(3).to_dict() == {"b": -2.0, "c": 2.0, "a": 0.138}
    # Half the places go to traits above the population: a persona named for payday shopping
    # (x1.9) shows it, although three tiny shares sit further below (x0.08 to x0.18).
    lifts = pd.Series({"grocery": 0.08, "morning": 0.10, "toys": 0.18, "payday": 1.9, "web": 1.2, "fresh": 0.9})
    shown = distinguishing_traits(lifts, top=4)
    assert list(shown.index) == ["grocery", "morning", "payday", "web"]


def test_persona_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[clustering]\nclusters = 5\n')
    with pytest.raises(ConfigError, match=r"unknown keys \['clusters'\]"):
        load_persona_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('data = "../data"\n', r"\[data\] must be a table"),  # a traceback (AttributeError) before
        ("clustering = 5\n", r"\[clustering\] must be a table"),
        ('[clustering]\nk_min = "four"\n', r'k_min must be a whole number, got "four"'),
        ("[clustering]\nk = 1\n", "k must be at least 2, got 1"),
        ("[clustering]\nk = 5.5\n", "k must be a whole number, got 5.5"),
        ('[clustering]\nbalance = "x"\n', 'balance must be a number, got "x"'),
        ("[clustering]\nrandom_state = true\n", "random_state must be a whole number, got true"),
        ("[clustering]\npca_components = 0\n", "pca_components must be a positive integer"),
        ('families = "value"\n', "families must be a list of family names"),
        ('name = "my personas"\n', "name must be letters, digits"),
        ("[data]\npath = 3\n", r"\[data\]: path must be 'demo' or a data set folder, got 3"),
        ("[clustering]\nbalance = nan\n", "balance must be a number, got nan"),  # a scikit-learn traceback
        ("[clustering]\nbalance = -3\n", "balance must be from 0 to 1, got -3"),
        ("[clustering]\nclip = nan\n", "clip must be a positive number of standard deviations, got nan"),
        ("[clustering]\nshrinkage = inf\n", "shrinkage must be a number, got inf"),
        ("[clustering]\nrandom_state = -1\n", "random_state must be a whole number from 0 to 4294967295, got -1"),
    ],
)
def test_persona_config_checks_every_value(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_persona_config(path)


def test_persona_config_reads_its_data_path_from_its_own_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "experiments" / "p.toml").write_text('[data]\npath = "../sales"\n')
    (project / "experiments" / "demo.toml").write_text('as_of = 2017-10-01\n[data]\npath = "demo"\n')
    monkeypatch.chdir(tmp_path)  # another folder: nothing resolves against it
    assert load_persona_config(project / "experiments" / "p.toml").data == str(project / "sales")
    demo = load_persona_config(project / "experiments" / "demo.toml")
    assert demo.data == "demo" and demo.demo_path == project / "data" / "completejourney"
    assert demo.as_of == dt.date(2017, 10, 1)


def test_shares_shrink_towards_the_population_by_order_count():
    columns = ["orders_lifetime", "channel_share_app", "orders_365d", "promo_share_365d", "spend_365d"]
    shares, counts = share_counts(columns)
    assert (shares, counts) == ([1, 3], [0, 2])
    X = np.array(
        [
            [1.0, 1.0, 1.0, 0.0, 10.0],  # one order: its shares are all 0 or 1
            [9.0, 0.0, 3.0, 1.0, 50.0],
            [2.0, np.nan, 0.0, np.nan, 0.0],  # no share known: takes the population's
        ]
    )
    shrink = ShrinkShares(shares, counts, strength=1.0).fit(X)
    # population shares weight each customer by their orders: app 1/10, promo 3/4
    np.testing.assert_allclose(shrink.population_, [0.1, 0.75])
    np.testing.assert_allclose(
        shrink.transform(X),
        [
            [1.0, (1 * 1.0 + 0.1) / 2, 1.0, (1 * 0.0 + 0.75) / 2, 10.0],
            [9.0, 0.1 / 10, 3.0, (3 * 1.0 + 0.75) / 4, 50.0],
            [2.0, 0.1, 0.0, 0.75, 0.0],
        ],
    )


def test_shares_and_their_order_counts_come_from_the_catalogue():
    columns = [
        "orders_lifetime",  # 0
        "channel_share_app",  # 1: per orders_lifetime
        "orders_365d",  # 2
        "promo_share_365d",  # 3: per orders_365d
        "promo_share_90d",  # 4: per orders_90d, which is absent: left out
        "category_share_other",  # 5: per orders_lifetime
        "premium_line_share",  # 6: shrunk by orders_lifetime like the spend shares
        "avg_discount_depth",  # 7: a share with no order count behind it
        "refund_rate",  # 8: likewise
        "cart_to_purchase_rate_90d",  # 9: likewise
        "order_share_weekend",  # 10: per orders_lifetime
        "noise",  # 11: not a feature
    ]
    assert share_counts(columns) == ([1, 3, 5, 6, 10], [0, 2, 0, 0, 0])
    assert share_counts(["promo_share_365d", "channel_share_app"]) == ([], [])  # no count column


def test_only_money_count_day_and_ratio_columns_are_logged():
    columns = [
        "spend_365d",  # money
        "orders_lifetime",  # count
        "days_since_last_purchase",  # days
        "promo_share_365d",  # share
        "category_share_dairy",  # share
        "overdue_ratio",  # ratio
        "price_level",  # ratio
        "spend_trend_90d",  # ratio
        "avg_discount_depth",  # share
        "view_to_cart_rate_90d",  # ratio
        "attr_household_size",  # numeric attribute, kind unknown to the catalogue: a number
        "noise",  # not a feature: a number
    ]
    # ratios are heavy-tailed too (a price level of 600 times the category median on real data)
    assert skewed(columns) == [True, True, True, False, False, True, True, True, False, True, True, True]


def test_default_persona_features_are_window_free_or_the_longest_window():
    columns = [
        "days_since_last_purchase",
        "orders_90d",
        "orders_365d",
        "promo_share_365d",
        "spend_trend_90d",
        "view_to_cart_rate_90d",
        "category_share_dairy",
        "attr_age_band",  # an attribute: describes personas, does not define them
        "days_since_signup_date",  # a date attribute (not in the catalogue)
        "customer_score",  # not a feature
    ]
    assert persona_feature_columns(columns) == [
        "days_since_last_purchase",
        "orders_365d",
        "promo_share_365d",
        "category_share_dairy",
    ]


def test_portrait_table_names_values_from_the_vocabulary():
    features = pd.DataFrame(
        {
            "spend_365d": [100.0, 300.0],
            "category_share_dairy_eggs": [0.6, 0.2],
            "category_share_fresh_food": [0.3, 0.4],
            "category_share_other": [0.1, 0.4],  # pooled: never a top category
            "payment_share_card": [1.0, 1.0],
        }
    )
    features.attrs["vocabulary"] = {"categories": ["Dairy & Eggs", "Fresh Food"], "payment_methods": ["Card"]}
    table = portrait_table(features, np.array([0, 0]), {0: "Regulars"})
    assert table.loc[0, "top_categories"] == "Dairy & Eggs (40%), Fresh Food (35%)"
    assert table.loc[0, "top_payment_methods"] == "Card (100%)"
    assert table.loc[0, "top_channels"] == ""
    features.attrs.clear()  # without the vocabulary: the value read from the name
    assert portrait_table(features, np.array([0, 0]), {0: "Regulars"}).loc[0, "top_categories"] == (
        "dairy eggs (40%), fresh food (35%)"
    )


def two_personas(**columns) -> pd.DataFrame:
    """A portrait table of two personas (their sizes), then ``columns`` (name: two values)."""
    sizes = {
        "persona_id": [0, 1],
        "persona_name": ["Regulars", "Occasional buyers"],
        "customers": [3, 1],
        "share_of_customers": [0.75, 0.25],
        "share_of_revenue": [0.9, 0.1],
    }
    return pd.DataFrame(sizes | columns)


def test_persona_page_shows_feature_labels_not_column_names(tmp_path, monkeypatch):
    ticks = []

    def record(fig: Figure) -> str:  # the tick labels of each chart instead of its PNG
        ticks.append([t.get_text() for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels())])
        return ""

    monkeypatch.setattr(persona_report, "_png", record)
    table = two_personas(
        median_spend_365d=[120.0, 10.0],
        median_days_since_last_purchase=[5.0, 60.0],
        lift_spend_365d=[1.2, 0.4],
        lift_promo_share_365d=[0.5, 2.5],
    )
    table.attrs["vocabulary"] = {"categories": ["Dairy & Eggs"]}
    lifts = pd.DataFrame(
        {
            "persona_id": [0, 1],
            "persona_name": ["Regulars", "Occasional buyers"],
            "spend_365d": [1.2, 0.4],
            "category_share_dairy_eggs": [2.0, 0.5],
        }
    )
    paths = write_portrait(table, tmp_path, lifts)
    html, page = paths["html"].read_text(), paths["markdown"].read_text()
    for shown in (html, page):
        assert "median spend in the last 365 days" in shown
        assert "median days since the last purchase" in shown
        assert "median_spend_365d" not in shown
    assert "- **Regulars**: share of spend on Dairy &amp; Eggs x2.00" not in page  # markdown is not HTML
    # the charts show how a persona shops: spend (volume, the value axis) is left out
    assert "- **Regulars**: share of spend on Dairy & Eggs x2.00\n" in page
    # the cards' charts (one per persona), then the sizes and the heat map
    assert len(ticks) == 4
    first_card, second_card, _, heat_map = ticks
    assert first_card[-1:] == second_card[-1:] == ["share of spend on Dairy & Eggs"]
    assert "spend in the last 365 days" not in first_card + second_card
    assert {"spend in the last 365 days", "share of orders with a discount in the last 365 days"} <= set(heat_map)
    assert not {"spend_365d", "promo_share_365d", "category_share_dairy_eggs"} & {t for f in ticks for t in f}
    # the CSV keeps the column names for machines
    assert "median_spend_365d" in paths["csv"].read_text()
    # a page made again from the written folder (portrait personas show) names the data value,
    # not the slug ("dairy eggs")
    again = write_portrait(read_portrait_table(tmp_path), tmp_path / "again", pd.read_csv(paths["lifts"]))
    assert "- **Regulars**: share of spend on Dairy & Eggs x2.00\n" in again["markdown"].read_text()


def test_unknown_algorithm_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[clustering]\nalgorithm = "dbscan"\n')
    with pytest.raises(ConfigError, match="algorithm must be one of"):
        load_persona_config(path)


@pytest.mark.parametrize(
    ("lift", "orders", "expected"),
    [
        ({"days_since_first_purchase": 0.2, "orders_365d": 0.3, "spend_365d": 0.2}, 1, "New customers"),
        ({"order_share_q4": 2.7, "overdue_ratio": 1.9, "days_since_last_purchase": 1.6}, 3, "Seasonal shoppers"),
        ({"days_since_last_purchase": 2.5, "spend_365d": 0.01}, 5, "Lapsed regulars"),
        ({"overdue_ratio": 2.0, "days_since_last_purchase": 1.0}, 6, "Lapsing regulars"),
        ({"promo_share_365d": 1.8, "price_level": 0.7}, 8, "Promotion hunters · value"),
        # the value level is not in the name (it is the spending-power axis); volume names only
        # a persona with no distinguishing shape trait
        ({"spend_365d": 6.9, "orders_365d": 2.9, "price_level": 1.3}, 15, "Regulars · full price"),
        ({"spend_365d": 0.3, "orders_365d": 0.5}, 4, "Occasional buyers"),
        ({"spend_365d": 3.0, "order_share_weekend": 1.9, "order_share_monday": 0.5}, 20, "Weekend shoppers"),
        ({"category_share_beers_ales": 2.0, "price_level": 0.7}, 20, "Beers ales buyers · value"),
        ({"price_level": 0.5}, 20, "Value shoppers"),  # not "Value shoppers · value"
        # engagement is named by the event type that stands out
        ({"interactions_per_order_365d": 3.0, "coupon_redeemed_count_365d": 4.0}, 20, "Coupon redeemers"),
        ({"interactions_per_order_365d": 3.0, "view_count_365d": 5.0}, 20, "Browsers"),
        ({"spend_365d": 1.1, "orders_365d": 1.2}, 40, "Mainstream shoppers"),
    ],
)
def test_names_come_from_the_most_distinguishing_traits(lift, orders, expected):
    assert generate_name(pd.Series(lift), pd.Series({"orders_lifetime": orders}, dtype="object")) == expected


def test_portrait_table_on_a_hand_written_frame():
    features = pd.DataFrame(
        {
            "spend_365d": [100.0, 300.0, 50.0, 50.0],
            "orders_365d": [2.0, 6.0, 1.0, 1.0],
            "channel_share_app": [1.0, 0.5, 0.0, 0.0],
            "channel_share_store": [0.0, 0.5, 1.0, 1.0],
            "attr_age_band": pd.Categorical(["25-34", None, None, None], categories=["25-34", "35-44"]),
        }
    )
    table = portrait_table(features, np.array([0, 0, 1, 1]), {0: "Regulars", 1: "Occasional buyers"})
    row0, row1 = table.to_dict("records")
    assert (row0["customers"], row0["share_of_customers"], row0["share_of_revenue"]) == (2, 0.5, 0.8)
    assert row0["median_spend_365d"] == 200.0
    assert row0["lift_spend_365d"] == pytest.approx(200 / 125)
    assert row0["top_channels"] == "app (75%), store (25%)"
    assert row0["mix_age_band"] == "25-34 (100%); known for 50%"
    assert row1["mix_age_band"] == ""  # nobody's age known: no made-up shares


def _two_group_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    heavy = rng.normal(loc=[500.0, 40.0, 0.1], scale=[20.0, 2.0, 0.02], size=(30, 3))
    light = rng.normal(loc=[20.0, 2.0, 0.8], scale=[5.0, 0.5, 0.05], size=(30, 3))
    frame = pd.DataFrame(np.vstack([heavy, light]), columns=["spend_365d", "orders_365d", "promo_share_365d"])
    return frame.assign(customer_id=[f"c{i}" for i in range(60)], favourite_channel="store", noise=rng.normal(size=60))


def test_a_fit_on_too_few_customers_says_so_before_clustering():
    config = PersonaConfig("p", "unused", features=("spend_365d", "orders_365d"), k=2)
    with pytest.raises(PortraitError, match=r"^39 customers are too few for up to 2 personas: need at least 40"):
        fit_personas(config, _two_group_frame().head(39))  # sklearn's ValueError traceback before
    searched = PersonaConfig("p", "unused", k_min=2, k_max=4)  # the largest k searched counts
    with pytest.raises(PortraitError, match="60 customers are too few for up to 4 personas: need at least 80"):
        fit_personas(searched, _two_group_frame())


def test_configured_features_are_the_only_ones_clustered_on():
    config = PersonaConfig("p", "unused", features=("spend_365d", "orders_365d"), k=2)
    fit = fit_personas(config, _two_group_frame())
    assert fit.model.feature_names_ == ["spend_365d", "orders_365d"]
    assert sorted(np.bincount(fit.labels)) == [30, 30]
    assert len(set(fit.labels[:30])) == 1 and fit.labels[0] != fit.labels[30]


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (("spend_365d", "basket_entropy"), r"features \['basket_entropy'\] are not built by families"),
        (("spend_365d", "favourite_channel"), r"features \['favourite_channel'\] are not numeric"),
    ],
)
def test_configured_features_must_exist_and_be_numeric(features, message):
    with pytest.raises(ConfigError, match=message):
        fit_personas(PersonaConfig("p", "unused", features=features, k=2), _two_group_frame())


def test_features_in_the_config_file_must_be_a_list(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nfeatures = "spend_365d"\n')
    with pytest.raises(ConfigError, match="features must be a non-empty list"):
        load_persona_config(path)
    path.write_text('name = "p"\nfeatures = ["spend_365d", "orders_365d"]\n')
    assert load_persona_config(path).features == ("spend_365d", "orders_365d")


def test_a_second_concurrent_fit_of_the_same_personas_stops_at_once(tmp_path, monkeypatch):
    import mlflow

    from portrait.files import LockHeld, exclusive_lock
    from tests.test_marketing_api_cli import run
    from training.personas import fit_lock_path, run_persona_fit

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    # First, so the variable is restored to what it was: mlflow.set_tracking_uri sets it too.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        mlflow.set_tracking_uri(uri)
        lock = fit_lock_path("my/personas")
        assert lock == tmp_path / ".mlflow.db.personas-fit-my_personas.lock"
        config = PersonaConfig("my/personas", str(tmp_path / "no data needed: the lock comes first"))
        with exclusive_lock(lock, "a personas fit of 'my/personas'"):  # the first fit, still running
            with pytest.raises(LockHeld, match=r"a personas fit of 'my/personas' is already running \(pid \d+"):
                run_persona_fit(config)
        # From the command line (a persona experiment's name is letters, digits, '_' or '-'): exit 2
        # with the message, nothing fitted.
        with exclusive_lock(fit_lock_path("my-personas"), "a personas fit of 'my-personas'"):
            # a folder that is no data set: the lock is said before the data is read (a path naming
            # no folder at all is said first, as the file's setting: no retry would fix it)
            (tmp_path / "personas.toml").write_text(f'name = "my-personas"\n[data]\npath = "{tmp_path}"\n')
            code, text = run("personas", "fit", str(tmp_path / "personas.toml"))
        assert code == 2 and "is already running" in text
        assert not (tmp_path / "mlflow.db").exists()
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_shape_features_leave_volume_out_and_keep_the_order_counts_as_support():
    columns = [
        "spend_365d",  # volume
        "orders_lifetime",  # volume: the count behind the lifetime shares
        "orders_365d",  # volume: the count behind promo_share_365d
        "orders_per_month_of_tenure",  # volume although a ratio
        "mean_days_between_orders",  # volume: the inverse of frequency
        "days_since_last_purchase",  # state
        "promo_share_365d",  # shape
        "order_share_weekend",  # shape
        "price_level",  # shape
        "recency_share_of_tenure",  # shape: the timeline's
        "interactions_per_order_365d",  # shape: engagement
        "favourite_channel",  # descriptive
    ]
    shape = persona_feature_columns(columns, aspects=("shape",))
    assert shape == [
        "promo_share_365d",
        "order_share_weekend",
        "price_level",
        "recency_share_of_tenure",
        "interactions_per_order_365d",
    ]
    assert support_columns(shape, columns) == ["orders_lifetime", "orders_365d"]
    assert persona_feature_columns(columns) == [c for c in columns if c != "orders_per_month_of_tenure"]


def test_catalogue_aspects_and_groups():
    meanings = describe(
        [
            "spend_365d",
            "promo_share_365d",
            "days_since_last_purchase",
            "favourite_category",
            "order_share_monday",
            "order_share_weekend",
            "order_share_q4",
            "category_share_dairy",
            "category_share_other",
            "payday_order_share",
        ]
    )
    assert {c: m.aspect for c, m in meanings.items()} == {
        "spend_365d": "volume",
        "promo_share_365d": "shape",
        "days_since_last_purchase": "state",
        "favourite_category": "descriptive",
        "order_share_monday": "shape",
        "order_share_weekend": "shape",
        "order_share_q4": "shape",
        "category_share_dairy": "shape",
        "category_share_other": "shape",
        "payday_order_share": "shape",
    }
    assert meanings["order_share_monday"].group == meanings["order_share_weekend"].group == "order_share_weekday"
    assert meanings["category_share_dairy"].group == meanings["category_share_other"].group == "category_share"
    assert meanings["payday_order_share"].group == "payday_order_share"  # a group of its own
    with pytest.raises(ValueError, match="aspect 'size' is not one of"):
        Feature("x", "value", None, "x", "orders", "1", aspect="size")


def test_a_group_of_columns_weighs_as_one_feature():
    columns = [
        "order_share_monday",
        "order_share_tuesday",
        "order_share_weekend",
        "order_share_q1",
        "promo_share_365d",
        "noise",
    ]
    np.testing.assert_allclose(
        group_weights(columns, 0.5), [1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(3), 1.0, 1.0, 1.0]
    )
    np.testing.assert_allclose(group_weights(columns, 0.0), np.ones(6))


def test_support_columns_shrink_the_shares_and_are_not_clustered():
    frame = pd.DataFrame(
        {
            "promo_share_365d": [1.0, 0.0, 0.5, 0.5],
            "orders_365d": [1, 1, 10, 10],
        }
    )
    model = PersonaModel(k=2, support=("orders_365d",), shrinkage=1.0, clip=None, balance=0.0, n_init=2).fit(frame)
    assert model.feature_names_ == ["promo_share_365d", "orders_365d"]
    assert model.clustered_names_ == ["promo_share_365d"]
    # population share 11/22 = 0.5; one order: (1 + 0.5) / 2 = 0.75 and 0.25; ten orders: 0.5
    Z = model.transform(frame)
    assert Z.shape == (4, 1)
    np.testing.assert_allclose(Z[:, 0], (np.array([0.75, 0.25, 0.5, 0.5]) - 0.5) / np.std([0.75, 0.25, 0.5, 0.5]))


def test_clipping_limits_standardised_values():
    np.testing.assert_allclose(Clip(3.0).transform([[-5.0, 1.0, 4.0]]), [[-3.0, 1.0, 3.0]])
    np.testing.assert_allclose(Clip(None).transform([[-5.0, 4.0]]), [[-5.0, 4.0]])


def test_spending_power_levels_are_quintiles_of_the_positive_spend():
    spend = pd.Series([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, np.nan])
    # quintile bounds of 10..50: 18, 26, 34, 42
    assert spending_power(spend).tolist() == ["low", "low", "lower-middle", "middle", "upper-middle", "high", "low"]


def test_distinguishing_features_are_non_volume_and_far_from_one():
    lift = pd.Series(
        {
            "spend_365d": 3.0,  # volume: never distinguishing
            "promo_share_365d": 1.49,  # below 1.5
            "order_share_weekend": 1.6,
            "price_level": 0.5,
            "days_since_last_purchase": 0.66,  # a state, at most 0.67
            "promo_share_90d": 3.0,  # a shorter window: repeats the 365-day share
            "noise": 5.0,  # not a feature
        }
    )
    traits = distinguishing(lift, describe(lift.index))
    assert traits.round(2).to_dict() == {
        "price_level": 0.5,
        "days_since_last_purchase": 0.66,
        "order_share_weekend": 1.6,
    }


def _shape_frame() -> pd.DataFrame:
    """Two personas that differ in when they shop, not in how much; everyone buys in store."""
    return pd.DataFrame(
        {
            "spend_365d": [100.0, 100.0, 100.0, 100.0],
            "orders_lifetime": [10, 10, 10, 10],
            "order_share_weekend": [0.9, 0.8, 0.1, 0.2],
            "order_share_evening": [0.2, 0.2, 0.2, 0.2],
            "price_level": [1.0, 1.0, 0.5, 0.5],
            "favourite_channel": ["store"] * 4,
        }
    )


def _times(frame: pd.DataFrame, labels: list[int], n: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """Each customer ``n`` times over (the same means and lifts): a trait needs at least 10
    customers holding it, 5 of them in a persona said to be high on it."""
    return frame.loc[frame.index.repeat(n)].reset_index(drop=True), np.repeat(labels, n)


def test_a_name_part_every_persona_shares_is_dropped():
    names = name_personas(*_times(_shape_frame(), [0, 0, 1, 1]))
    # weekend shares 0.85 and 0.15 against 0.5: lifts 1.7 and 0.3; price levels 1.0 and 0.5 against
    # 0.75: lifts 1.33 (full price, a suffix) and 0.67 (value, the core: not repeated as a suffix)
    assert names == {0: "Weekend shoppers · full price", 1: "Value shoppers"}  # no "· store": everyone's


def test_personas_with_the_same_strongest_trait_get_different_names():
    frame = pd.DataFrame(
        {
            "order_share_weekend": [0.6, 0.6, 0.9] + [0.1] * 5,
            "order_share_evening": [0.6, 0.6, 0.1] + [0.1] * 5,
            "favourite_channel": ["store"] * 8,
        }
    )
    names = name_personas(*_times(frame, [0, 0, 1, 2, 2, 2, 2, 2]))
    # weekend: mean 0.325, lifts 1.85 (0), 2.77 (1), 0.31 (2); evening: mean 0.225, lifts 2.67 (0),
    # 0.44 (1, 2). Both 0 and 1 shop at the weekend: the name goes to the stronger, 1; 0 is named
    # by its evenings. 2 only does less of both, which has no name: mainstream.
    assert names == {0: "Evening shoppers", 1: "Weekend shoppers", 2: "Mainstream shoppers"}


def test_a_trait_too_few_customers_hold_names_no_persona():
    """One night order in the population (and a persona of 32 customers) named "Night
    shoppers" at a small shop: a feature fewer than 10 customers hold has no lift to name by,
    nor does a persona with fewer than 5 holders of a feature it is high on."""
    frame = pd.DataFrame(
        {
            "order_share_night": [1.0] + [0.0] * 39,  # one customer of 40
            "order_share_weekend": [1.0] * 4 + [0.0] * 16 + [0.02] * 20,  # high in persona 0: 4 holders
            "order_share_evening": [0.8] * 10 + [0.1] * 30,
        }
    )
    labels = np.array([0] * 20 + [1] * 20)
    lift = trait_lifts(frame, labels)
    assert np.isnan(lift.loc[0, "order_share_night"]) and np.isnan(lift.loc[1, "order_share_night"])
    assert lifts(frame, labels).loc[0, "order_share_night"] == pytest.approx(2.0)  # the raw lift is kept
    assert lifts(frame, labels).loc[0, "order_share_weekend"] == pytest.approx(0.2 / (4.4 / 40))
    assert np.isnan(lift.loc[0, "order_share_weekend"])  # 4 holders in persona 0, though 24 hold it
    assert lift.loc[0, "order_share_evening"] == pytest.approx((8 + 1) / 20 / ((8 + 3) / 40))
    assert lift.loc[1, "order_share_weekend"] == pytest.approx(0.02 / (4.4 / 40))  # low, 20 holders: kept
    assert "Night" not in name_personas(frame, labels)[0]


def test_persona_config_checks_aspects_and_clip(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[clustering]\naspects = ["shape", "size"]\n')
    with pytest.raises(ConfigError, match="aspects must be a non-empty list of"):
        load_persona_config(path)
    path.write_text('name = "p"\n[clustering]\nclip = -1\n')
    with pytest.raises(ConfigError, match="clip must be a positive number"):
        load_persona_config(path)
    path.write_text('name = "p"\n[clustering]\naspects = ["shape", "state"]\nbalance = 0.25\n')
    config = load_persona_config(path)
    assert (config.aspects, config.balance, config.clip) == (("shape", "state"), 0.25, 3.0)


def test_personas_page_shows_stability_and_distinguishing_features(tmp_path):
    table = pd.DataFrame(
        {
            "persona_id": [0, 1],
            "persona_name": ["Weekend shoppers", "Value shoppers"],
            "customers": [3, 1],
            "share_of_customers": [0.75, 0.25],
            "share_of_revenue": [0.9, 0.1],
            "distinguishing_features": ["share of orders at the weekend x1.70", ""],
            "spending_power": ["low 0%, lower-middle 0%, middle 0%, upper-middle 33%, high 67%", "low 100%"],
        }
    )
    summary = {
        "k": 2,
        "stability_ari": 0.8123,
        "silhouette": 0.0861,
        "stable_from": 0.75,
        "k_range": [2, 5],
        "aspects": ["shape"],
        "clustered_features": 4,
        "customers": 4,
        "personas_distinguished": 1,
    }
    paths = write_portrait(table, tmp_path, summary=summary)
    html = paths["html"].read_text()
    assert "Bootstrap stability (adjusted Rand index between refits on bootstrap samples): 0.81, stable" in html
    assert "1 of 2 personas have a distinguishing feature other than volume" in html
    assert "<li>share of orders at the weekend x1.70</li>" in html
    assert "No distinguishing non-volume feature" in html  # the second persona, said plainly
    assert "Spending power (the value axis): low 100%" in html
    assert json.loads(paths["summary"].read_text())["stability_ari"] == 0.8123
    assert "Key features against all customers" not in html  # no lift column: no empty heat map
    unstable = write_portrait(table, tmp_path / "u", summary={**summary, "stability_ari": 0.6})["markdown"]
    assert "NOT stable (below 0.75" in unstable.read_text()


@pytest.mark.parametrize(
    "as_of, message",
    [
        (
            "2026-06-01",
            r"the latest purchase in the data is \d+ days before 2026-06-01: every purchase window is empty",
        ),
        ("2020-01-01", r"no customer has a purchase, event or signup before 2020-01-01: nothing to cluster"),
    ],
)
def test_a_fit_as_of_a_date_far_from_the_data_is_refused(tmp_path, monkeypatch, as_of, message):
    from tests.conftest import write_tables
    from tests.test_marketing_api_cli import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    purchases = pd.DataFrame(
        {"order_id": ["o1", "o2"], "customer_id": ["A", "B"], "ts": ["2024-01-05", "2024-01-06"], "amount": [5.0, 7.0]}
    )
    data = write_tables(tmp_path / "data", purchases=purchases)
    (tmp_path / "personas.toml").write_text(f'name = "far_personas"\n[data]\npath = "{data}"\n')
    code, text = run("personas", "fit", str(tmp_path / "personas.toml"), "--as-of", as_of)
    assert code == 2 and re.search(message, text), text
    assert "registered" not in text
    # A bad --out is refused before any work (it used to be found after a version was registered).
    for out, said in ((tmp_path, "is a folder, not a file"), (tmp_path / "x.txt", "writes .csv or .parquet files")):
        code, text = run("personas", "fit", str(tmp_path / "personas.toml"), "--out", str(out))
        assert code == 2 and said in text and "registered" not in text, text


def test_a_key_feature_zero_for_every_customer_is_named_once_not_shown_as_a_column(tmp_path):
    # The Complete Journey records no product views: the median views of every persona were a
    # column of zeros. It is said once, under the table, and not shown as a column.
    table = two_personas(
        median_spend_365d=[120.0, 10.0],
        mean_spend_365d=[130.0, 10.0],
        lift_spend_365d=[1.3, 0.1],
        median_view_count_365d=[0.0, 0.0],
        mean_view_count_365d=[0.0, 0.0],
        lift_view_count_365d=[float("nan"), float("nan")],
        median_discount_order_share=[float("nan"), float("nan")],  # CDNOW records no discount: missing, not 0
        mean_discount_order_share=[float("nan"), float("nan")],
        lift_discount_order_share=[float("nan"), float("nan")],
    )
    paths = write_portrait(table, tmp_path)
    note = (
        "Zero for every customer in this data set, not shown: product views in the last 365 days. "
        "Not recorded for anyone in this data set, not shown: share of orders with a discount."
    )
    for page in (paths["markdown"].read_text(), paths["html"].read_text()):
        assert "median spend in the last 365 days" in page
        assert "median product views" not in page
        assert note in page


def test_a_persona_whose_favourite_channel_is_outside_the_top_ones_has_no_channel_suffix():
    from models.persona_profile import name_parts

    lift = pd.Series({"orders_365d": 1.0})
    for channel, expected in (("app", ["app"]), ("other", [])):
        profile = pd.Series({"favourite_channel": channel, "favourite_channel_share": 0.8})
        assert name_parts(lift, profile)[1] == expected


def test_a_missing_alias_says_which_step_gives_it():
    """ "run portrait personas fit" was the advice after a fit too, when a promotion was missing,
    and for a misspelt alias."""
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException

    from training.personas import _no_alias_advice

    def client(*aliases):
        def registered(name):
            if not aliases:
                raise MlflowException(f"Registered Model with name={name} not found")
            return SimpleNamespace(aliases={a: str(i + 1) for i, held in enumerate(aliases) for a in held})

        return SimpleNamespace(get_registered_model=registered)

    fitted = client(["candidate"])
    assert _no_alias_advice(fitted, "personas", "champion") == (
        "no 'personas' model with alias 'champion' (its versions hold 'candidate'); try portrait promote personas"
    )
    assert _no_alias_advice(client(["candidate"], ["champion"]), "personas", "Candidate").endswith(
        "try --alias candidate or champion"
    )
    assert _no_alias_advice(client(), "personas", "champion") == (
        "no 'personas' model is registered; run portrait personas fit"
    )


def test_a_refits_changes_are_a_sentence_not_a_python_dict():
    from training.personas import changes_sentence

    changes = {"kept": [0, 1, 2], "new": [5], "gone": [3], "merged": [[4, 1]]}
    assert changes_sentence(changes) == "kept 0, 1, 2; new 5; gone 3; merged 4 into 1"
    assert changes_sentence({"kept": [], "new": [], "gone": [], "merged": []}) == "no change"
