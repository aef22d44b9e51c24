"""FeatureColumns: a scores table's features read a few columns at a time (serving/feature_columns.py)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import serving.feature_columns as feature_columns
from serving.feature_columns import FeatureColumns


@pytest.fixture
def features_file(tmp_path):
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "orders_90d": np.array([1, 0, 5], dtype="int64"),
            "spend_365d": [10.0, 0.0, 99.5],
            "favourite_channel": pd.Categorical(["web", None, "store"]),
        }
    )
    path = tmp_path / "features_2024-01-01.parquet"
    frame.to_parquet(path, index=False)
    return path


def test_columns_come_in_the_scores_order_and_a_customer_without_features_reads_as_missing(features_file):
    scores_ids = pd.Series(["c", "x", "a"], name="customer_id")  # x has no feature row
    columns = FeatureColumns(features_file, scores_ids)
    assert columns.columns == ["customer_id", "orders_90d", "spend_365d", "favourite_channel"]
    read = columns.read(["spend_365d", "favourite_channel", "orders_90d"])
    assert read["customer_id"].tolist() == ["c", "x", "a"]
    assert read["spend_365d"].tolist()[0::2] == [99.5, 10.0] and np.isnan(read["spend_365d"][1])
    assert read["orders_90d"].tolist()[0::2] == [5, 1] and np.isnan(read["orders_90d"][1])  # as a left merge gives
    assert isinstance(read["favourite_channel"].dtype, pd.CategoricalDtype)
    assert read["favourite_channel"].tolist()[0::2] == ["store", "web"] and pd.isna(read["favourite_channel"][1])
    assert columns.in_order_of(scores_ids) and not columns.in_order_of(scores_ids.iloc[::-1])
    with pytest.raises(KeyError, match="no feature column 'nope'"):
        columns.read(["nope"])


def test_a_page_s_rows_are_read_in_its_order_with_every_column(features_file):
    columns = FeatureColumns(features_file, pd.Series(["a", "b", "c"]))
    rows = columns.rows(["c", "a"])
    assert rows["customer_id"].tolist() == ["c", "a"] and rows["orders_90d"].tolist() == [5, 1]
    assert list(rows.columns) == columns.columns
    assert columns.rows([]).empty


def test_the_file_held_is_the_one_opened_with_the_scores_not_a_re_score_written_since(features_file):
    """A re-score of the same date replaces the file (a rename) while a worker holds the old
    scores: its lists must read the features those scores came from."""
    columns = FeatureColumns(features_file, pd.Series(["a", "b", "c"]))
    newer = features_file.with_name("new.parquet")
    pd.DataFrame({"customer_id": ["a", "b", "c"], "orders_90d": [7, 7, 7], "spend_365d": [1.0] * 3}).to_parquet(newer)
    os.replace(newer, features_file)
    assert columns.read(["orders_90d"])["orders_90d"].tolist() == [1, 0, 5]
    assert columns.rows(["b"])["spend_365d"].tolist() == [0.0]


def test_columns_read_are_kept_up_to_a_bound_and_read_again_after(features_file, monkeypatch):
    monkeypatch.setattr(feature_columns, "KEPT_COLUMNS", 1)
    columns = FeatureColumns(features_file, pd.Series(["a", "b", "c"]))
    reads = []
    original = columns._read
    monkeypatch.setattr(columns, "_read", lambda names: reads.append(names) or original(names))
    columns.read(["spend_365d"])
    columns.read(["spend_365d"])  # kept
    columns.read(["orders_90d"])  # spend_365d no longer kept
    columns.read(["spend_365d"])
    # the ids once, for the scores' order; spend_365d twice
    assert reads == [["spend_365d"], ["customer_id"], ["orders_90d"], ["spend_365d"]]


def test_a_frame_is_served_like_the_file(features_file):
    frame = pd.read_parquet(features_file)
    ids = pd.Series(["c", "x", "a"])
    from_file = FeatureColumns(features_file, ids).read(["orders_90d", "favourite_channel"])
    pd.testing.assert_frame_equal(FeatureColumns(frame, ids).read(["orders_90d", "favourite_channel"]), from_file)


def test_a_model_missing_features_named_after_values_hears_they_were_renamed():
    from types import SimpleNamespace

    from portrait.errors import PortraitError
    from serving.score import check_model_features

    model = SimpleNamespace(
        name="m", version=3, features=["orders_lifetime", "category_share_s_waren"], meta={}, is_personas=False
    )
    with pytest.raises(
        PortraitError, match=r"category_share_s_waren'\]; features named after a value .* renamed on 2026-12-06"
    ):
        check_model_features(model, ["orders_lifetime", "category_share_susswaren"])
    # with the built table's vocabulary: what the model's name is called now
    frame = pd.DataFrame({"orders_lifetime": [1], "category_share_susswaren": [0.5]})
    frame.attrs["vocabulary"] = {"categories": ["Süßwaren"], "brands": [], "channels": [], "payment_methods": []}
    with pytest.raises(
        PortraitError, match=r"renamed on 2026-12-06 \(category_share_s_waren is now category_share_susswaren\)"
    ):
        check_model_features(model, frame.columns, frame=frame)
    # the customers table gone (no attribute at all): said so, without the renaming paragraph
    model = SimpleNamespace(
        name="m", version=3, features=["orders_lifetime", "attr_region"], meta={}, is_personas=False
    )
    with pytest.raises(PortraitError, match=r"those come from the customers table") as gone:
        check_model_features(model, ["orders_lifetime"])
    assert "renamed" not in str(gone.value)
    with pytest.raises(PortraitError, match=r"renamed on 2026-12-06"):  # one attribute there, another not
        check_model_features(model, ["orders_lifetime", "attr_regi_n"])
