"""Labels from the window after a cutoff, and stacked training sets over several cutoffs.

Edge rules:

- The label window is ``[cutoff, cutoff + horizon_days)``; its rows are read, and the day
  before it (:data:`ORDER_SPAN_DAYS`) for orders it continues.
- ``repurchase`` is 1 when the customer has a purchase order in the window, judged on the
  order's lines in the window as the features judge one (``is_purchase``,
  :func:`portrait.contract.purchase_order`): a line that is not a refund (an order of $0.00
  lines is one, as the BTYD literature counts a transaction). A refund alone (refund lines
  only, such as a return in the window of an order bought before it) is not; nor is the rest
  of an order placed before the cutoff (a purchase line of the same customer and order in the
  day before it: an order whose lines straddle midnight), which the features count as an order
  before the cutoff: counted in the label too, it was a repurchase already made. The same order
  id more than a day earlier is another order (an order number used again per till or month).
- ``future_spend`` is the net spend in the window: refunds reduce it, and it can be negative;
  rounded to 6 decimals (money), so that it is the same in every run (a parallel sum's last
  bits are not).
- ``high_value`` is 1 when ``future_spend`` is positive and at or above the given quantile
  (default 0.8: the top 20%) of ``future_spend`` over all labelled customers, zeros included.
- A cutoff's window is complete when its last day is no later than the last day with a
  purchase in the data; :func:`build_training_set` refuses incomplete windows.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd

from features.build import build_features, parse_cutoff, vocabulary_as_of
from features.catalogue import money_sum
from features.config import FeatureConfig
from features.plan import timestamp_literal
from portrait.contract import purchase_line, purchase_order
from portrait.dataset import Dataset
from portrait.errors import PortraitError

LABELS = ("repurchase", "future_spend", "high_value")
# A purchase line of the same customer and order this many days before the cutoff makes the
# window's lines of that order the rest of an order already placed, not a repurchase.
ORDER_SPAN_DAYS = 1


def data_last_day(con: duckdb.DuckDBPyConnection) -> dt.date:
    """The day of the latest purchase: where label windows must end. A purchase dated after
    tomorrow is a placeholder (9999-12-31) or a wrong clock: taken as the data's end it would put
    the holdout centuries ahead, or let label windows run past the real data with nobody
    buying in them; refused, with the count."""
    last = con.execute("SELECT CAST(MAX(ts) AS DATE) FROM purchases").fetchall()[0][0]
    if last is None:
        raise PortraitError("the purchases table has no valid rows, so no label window can be built")
    # After tomorrow, as portrait validate counts "dated after tomorrow" (a zone ahead of the
    # server's may date today's lines tomorrow).
    beyond = dt.date.today() + dt.timedelta(days=2)
    if last >= beyond:
        later, real_last = con.execute(
            "SELECT COUNT(*) FILTER (WHERE ts >= $t), CAST(MAX(ts) FILTER (WHERE ts < $t) AS DATE) FROM purchases",
            {"t": dt.datetime.combine(beyond, dt.time())},
        ).fetchall()[0]
        raise PortraitError(
            f"{later:,} purchase line{'' if later == 1 else 's'} dated after tomorrow (the latest {last}; the "
            f"others end on {real_last}): placeholders or a wrong clock. Label windows cannot end there: fix or "
            "remove those lines (portrait validate counts them)"
        )
    return last


def build_labels(
    dataset: Dataset,
    cutoff: str | dt.date,
    horizon_days: int,
    customers: pd.Series,
    *,
    high_value_quantile: float = 0.8,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Labels for ``customers`` (the feature rows' ids) as of ``cutoff`` over ``horizon_days``."""
    if horizon_days < 1:
        raise PortraitError(f"horizon_days must be at least 1, got {horizon_days}")
    if not 0 < high_value_quantile < 1:
        raise PortraitError(f"high_value_quantile must be between 0 and 1, got {high_value_quantile}")
    cutoff = parse_cutoff(cutoff)
    end = cutoff + dt.timedelta(days=horizon_days)
    own_connection = con is None
    con = con or dataset.connect()
    try:
        span = cutoff - dt.timedelta(days=ORDER_SPAN_DAYS)
        start = timestamp_literal(cutoff)
        inside = f"CASE WHEN ts >= {start} THEN amount END"  # NULL before the window: neither a sale nor a refund
        # One read of the window and the day before it: an order with a purchase line in that day
        # was placed before the cutoff.
        window = con.execute(
            f"""SELECT customer_id, {money_sum("net")} AS future_spend,
                       MAX(CASE WHEN is_purchase AND NOT placed THEN 1 ELSE 0 END) AS repurchase
                FROM (SELECT customer_id, order_id, {money_sum(inside)} AS net,
                             {purchase_order(inside)} AS is_purchase,
                             COUNT(CASE WHEN ts < {start} AND {purchase_line()} THEN 1 END) > 0 AS placed
                      FROM purchases WHERE ts >= {timestamp_literal(span)} AND ts < {timestamp_literal(end)}
                      GROUP BY customer_id, order_id
                      HAVING COUNT(CASE WHEN ts >= {start} THEN 1 END) > 0)
                GROUP BY customer_id"""
        ).df()
    finally:
        if own_connection:
            con.close()
    labels = pd.DataFrame({"customer_id": customers.astype("str").to_numpy()})
    labels = labels.merge(window, on="customer_id", how="left")
    labels["future_spend"] = labels["future_spend"].fillna(0.0).astype("float64")
    labels["repurchase"] = labels["repurchase"].fillna(0).astype("int64")
    threshold = float(np.quantile(labels["future_spend"], high_value_quantile)) if len(labels) else 0.0
    labels["high_value"] = ((labels["future_spend"] >= threshold) & (labels["future_spend"] > 0)).astype("int64")
    labels.attrs["high_value_threshold"] = threshold
    return labels


def check_label_windows(cutoffs: list[dt.date], horizon_days: int, last_day: dt.date) -> None:
    incomplete = [c for c in cutoffs if c + dt.timedelta(days=horizon_days - 1) > last_day]
    if incomplete:
        latest = last_day - dt.timedelta(days=horizon_days - 1)
        raise PortraitError(
            f"the {horizon_days}-day label window after cutoff(s) "
            f"{', '.join(c.isoformat() for c in incomplete)} runs past the data's last purchase day "
            f"{last_day.isoformat()}; the latest cutoff with a complete window is {latest.isoformat()}"
        )


def build_training_set(
    dataset: Dataset,
    cutoffs: list[str | dt.date],
    horizon_days: int,
    config: FeatureConfig | None = None,
    *,
    high_value_quantile: float = 0.8,
    families=None,
    progress=None,
) -> pd.DataFrame:
    """Features and labels for each cutoff, stacked, with a ``cutoff`` column.

    All cutoffs share the vocabulary of the earliest one, so their columns agree. Refuses
    (``PortraitError``) any cutoff whose label window is not complete in the data.
    """
    parsed = sorted(parse_cutoff(c) for c in cutoffs)
    if not parsed:
        raise PortraitError("build_training_set needs at least one cutoff")
    if len(set(parsed)) != len(parsed):
        raise PortraitError(f"cutoffs repeat: {[c.isoformat() for c in parsed]}")
    config = config or FeatureConfig()
    con = dataset.connect()
    try:
        check_label_windows(parsed, horizon_days, data_last_day(con))
        vocabulary = vocabulary_as_of(con, parsed[0], config)
        frames = []
        for cutoff in parsed:
            if progress:
                progress(cutoff)
            features = build_features(dataset, cutoff, config, vocabulary=vocabulary, families=families, con=con)
            attributes = features.attrs["attributes"]  # one customers table for every cutoff
            labels = build_labels(
                dataset, cutoff, horizon_days, features["customer_id"], high_value_quantile=high_value_quantile, con=con
            )
            frame = features.merge(labels, on="customer_id", how="left", validate="one_to_one")
            # Placed by concatenation: inserting into a frame of one block per column warns.
            cutoff_column = pd.Series(pd.Timestamp(cutoff), index=frame.index, name="cutoff")
            frame = pd.concat([frame.iloc[:, :1], cutoff_column, frame.iloc[:, 1:]], axis=1)
            frames.append(frame)
    finally:
        con.close()
    stacked = pd.concat(frames, ignore_index=True)
    # Categories differ between cutoffs; align them so the stacked columns stay categorical.
    for column in frames[0].columns:
        if isinstance(frames[0][column].dtype, pd.CategoricalDtype):
            stacked[column] = stacked[column].astype("category")
    stacked.attrs["vocabulary"] = vocabulary.to_dict()
    stacked.attrs["attributes"] = attributes
    return stacked
