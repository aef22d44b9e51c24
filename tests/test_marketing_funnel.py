"""The funnel (marketing/funnel.py, portrait funnel): counts by hand, point-in-time, groups,
suppression, every error path, and a pandas reference on synthetic data."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from marketing.funnel import (
    ALL_CUSTOMERS,
    FunnelError,
    compute_funnel,
    parse_steps,
    persona_groups,
    suppress,
    tag_groups,
)
from portrait.dataset import Dataset, open_dataset
from portrait.errors import PortraitError
from tests.conftest import write_tables

AS_OF = dt.date(2024, 3, 1)
DAYS = 30  # window: 2024-01-31 00:00 <= ts < 2024-03-01 00:00
STEPS = ["view", "add_to_cart", "purchase", "repurchase"]
P_COLUMNS = ["order_id", "customer_id", "ts", "amount", "quantity"]
E_COLUMNS = ["customer_id", "ts", "event_type"]
PURCHASES = pd.DataFrame(
    [
        ("a1", "A", "2024-02-01 11:00:00", 20.0, 1),
        ("a2", "A", "2024-02-10 09:00:00", 5.0, 1),
        ("b1", "B", "2024-02-06 10:00:00", 10.0, 1),
        ("e1", "E", "2024-02-04 10:00:00", 10.0, 1),
        ("f0", "F", "2024-02-05 12:00:00", 10.0, 1),  # before F's view and cart: not step 3
        # an exchange netting below 0 is a purchase (it sells a line), as the features count it
        ("fr", "F", "2024-02-12 12:00:00", 5.0, 1),
        ("fr", "F", "2024-02-12 12:00:00", -10.0, -1),
        ("fs", "F", "2024-02-13 12:00:00", -7.0, -1),  # a return alone is not a purchase (no step 4)
        ("g1", "G", "2024-02-15 10:00:00", 0.0, 1),  # the order's first line is free...
        ("g1", "G", "2024-02-15 10:05:00", 30.0, 1),  # ...it counts at its first timestamp, 10:00
        ("g2", "G", "2024-02-20 10:00:00", 30.0, 1),
        ("z1", "Z", "2023-06-01 10:00:00", 30.0, 1),  # long before the window
    ],
    columns=P_COLUMNS,
)
EVENTS = pd.DataFrame(
    [
        # A views, carts, buys, buys again.
        ("A", "2024-02-01 10:00:00", "view"),
        ("A", "2024-02-01 10:30:00", "add_to_cart"),
        # B carts before viewing: does not reach the cart in order.
        ("B", "2024-02-05 10:00:00", "add_to_cart"),
        ("B", "2024-02-05 11:00:00", "view"),
        # C only views.
        ("C", "2024-02-07 10:00:00", "view"),
        ("C", "2024-02-08 10:00:00", "view"),
        # D's cart is at the as-of date: outside the window.
        ("D", "2024-02-20 10:00:00", "view"),
        ("D", "2024-03-01 00:00:00", "add_to_cart"),
        # E viewed before the window starts.
        ("E", "2024-01-20 10:00:00", "view"),
        ("E", "2024-02-03 10:00:00", "add_to_cart"),
        # F: a cart at the very time of the view does not count (strictly after); the next does.
        ("F", "2024-02-10 12:00:00", "view"),
        ("F", "2024-02-10 12:00:00", "add_to_cart"),
        ("F", "2024-02-11 12:00:00", "add_to_cart"),
        # G: event types are compared after trimming, case-insensitively.
        ("G", "2024-02-15 08:00:00", " View "),
        ("G", "2024-02-15 09:00:00", "ADD_TO_CART"),
        ("G", "2024-02-16 09:00:00", "search"),
    ],
    columns=E_COLUMNS,
)
# Rows at or after the as-of date: the funnel as of AS_OF may not change with them.
LATER_PURCHASES = pd.DataFrame(
    [
        ("c1", "C", "2024-03-01 00:00:00", 50.0, 1),
        ("d1", "D", "2024-03-02 10:00:00", 50.0, 1),
        ("b2", "B", "2024-03-03 10:00:00", 50.0, 1),
    ],
    columns=P_COLUMNS,
)
LATER_EVENTS = pd.DataFrame(
    [
        ("C", "2024-03-01 00:00:00", "add_to_cart"),
        ("B", "2024-03-01 08:00:00", "add_to_cart"),
        ("H", "2024-03-02 08:00:00", "view"),
    ],
    columns=E_COLUMNS,
)
# By hand: step 1 (view in the window): A, B, C, D, F, G. Step 2 (cart after the view): A after
# 0.5 h, F after 24 h, G after 1 h. Step 3 (an order after the cart): A 0.5 h, F 24 h (the
# exchange fr; f0 is too early), G 1 h. Step 4 (an order after that one; F's return fs is
# none): A 214 h, G 120 h.
EXPECTED = pd.DataFrame(
    {
        "step": STEPS,
        "customers": [6, 3, 3, 2],
        "conversion_from_previous": [None, 3 / 6, 3 / 3, 2 / 3],
        "conversion_from_first": [1.0, 3 / 6, 3 / 6, 2 / 6],
        "drop_off": [None, 3, 0, 1],
        "median_hours_from_previous": [None, 1.0, 1.0, 167.0],
    }
)


@pytest.fixture
def data(tmp_path) -> Path:
    return write_tables(tmp_path / "data", purchases=PURCHASES, events=EVENTS)


def funnel_of(folder: Path, steps=STEPS, days=DAYS, as_of=AS_OF, groups=None, by=None):
    con = open_dataset(folder).connect()
    try:
        return compute_funnel(con, as_of, steps, days, groups=groups, by=by)
    finally:
        con.close()


def rows(funnel, group=ALL_CUSTOMERS) -> pd.DataFrame:
    return funnel.table[funnel.table["group"] == group].reset_index(drop=True)


def test_funnel_by_hand(data):
    table = rows(funnel_of(data))
    pd.testing.assert_frame_equal(
        table[EXPECTED.columns].astype({"drop_off": "float64"}),
        EXPECTED.astype({"conversion_from_previous": "float64", "drop_off": "float64"}),
        check_dtype=False,
    )


def test_rows_at_or_after_the_as_of_date_change_nothing(data, tmp_path):
    later = write_tables(
        tmp_path / "later",
        purchases=pd.concat([PURCHASES, LATER_PURCHASES]),
        events=pd.concat([EVENTS, LATER_EVENTS]),
    )
    pd.testing.assert_frame_equal(funnel_of(later).table, funnel_of(data).table)


def test_the_window_and_repeated_steps(data):
    # Within 14 days (from 2024-02-16): only D's view is in the window, nobody carts after it.
    assert rows(funnel_of(data, days=14))["customers"].tolist() == [1, 0, 0, 0]
    # The same type twice: a second view strictly after the first (C only).
    assert rows(funnel_of(data, steps=["view", "view"]))["customers"].tolist() == [6, 1]
    # Purchase first: A, B, E, F (f0), G buy; A (a2), F (f1), G (g2) buy again; then nobody views.
    table = rows(funnel_of(data, steps=["purchase", "repurchase", "view"]))
    assert table["customers"].tolist() == [5, 3, 0]


def test_groups_count_a_customer_in_each_of_hers(data):
    groups = pd.DataFrame(
        {"customer_id": ["A", "B", "C", "F", "G", "A", "nobody"], "group": ["t1", "t1", "t1", "t2", "t2", "t2", "t2"]}
    )
    funnel = funnel_of(data, groups=groups, by="tag")
    assert funnel.groups == [ALL_CUSTOMERS, "t1", "t2"]
    assert rows(funnel, "t1")["customers"].tolist() == [3, 1, 1, 1]
    assert rows(funnel, "t2")["customers"].tolist() == [3, 3, 3, 2]
    assert rows(funnel, "t2")["median_hours_from_previous"].tolist()[1:] == [1.0, 1.0, 167.0]


def test_small_cells_and_what_is_computed_from_them_are_suppressed(data):
    funnel = funnel_of(data)
    shown = suppress(funnel.table, 10)
    assert shown["customers"].tolist() == ["<10"] * 4
    for column in ("conversion_from_previous", "conversion_from_first", "drop_off", "median_hours_from_previous"):
        assert set(shown[column]) <= {"<10", ""}, column
    shown = suppress(funnel.table, 3)
    assert shown["customers"].tolist() == [6, 3, 3, "<3"]
    assert shown["conversion_from_previous"].tolist() == ["", 0.5, 1.0, "<3"]
    # 3 - 3 = 0 is shown (both counts are); 3 - <3 is not
    assert shown["drop_off"].tolist() == ["", 3, 0, "<3"]
    assert shown["median_hours_from_previous"].tolist() == ["", 1.0, 1.0, "<3"]
    # A suppressed first step hides every rate from the first.
    assert set(suppress(funnel.table, 7)["conversion_from_first"]) == {"<7"}


def test_personas_come_from_the_newest_scores_not_after_the_as_of_date(data, tmp_path):
    scores = tmp_path / "scores"
    scores.mkdir()
    pd.DataFrame(
        {"customer_id": ["A", "F", "G", "C"], "persona_name": ["Buyers", "Buyers", "Buyers", None]}
    ).to_parquet(scores / "scores_2024-02-01.parquet")
    pd.DataFrame({"customer_id": ["A"], "persona_name": ["Future"]}).to_parquet(scores / "scores_2024-04-01.parquet")
    groups, date = persona_groups(scores, AS_OF)
    assert date == dt.date(2024, 2, 1) and set(groups["group"]) == {"Buyers"}
    funnel = funnel_of(data, groups=groups, by="persona")
    assert funnel.groups == [ALL_CUSTOMERS, "Buyers"]
    assert rows(funnel, "Buyers")["customers"].tolist() == [3, 3, 3, 2]
    with pytest.raises(PortraitError, match="no scores .* as of 2024-01-01 or earlier"):
        persona_groups(scores, dt.date(2024, 1, 1))


def test_tags_file_rules(tmp_path):
    folder = tmp_path / "tags"
    folder.mkdir()
    pd.DataFrame({"customer_id": ["A"], "tag": ["VIP"], "group": ["g"], "kind": ["manual"], "since": ["x"]}).to_parquet(
        folder / "tags_2024-02-01.parquet"
    )
    pd.DataFrame({"customer_id": ["B"], "tag": ["VIP"]}).to_parquet(folder / "tags_2024-05-01.parquet")
    groups, date = tag_groups(folder, AS_OF)  # a folder: the newest not after the as-of date
    assert date == dt.date(2024, 2, 1) and groups["customer_id"].tolist() == ["A"]
    with pytest.raises(FunnelError, match="after --as-of 2024-03-01: later tags would leak the future"):
        tag_groups(folder / "tags_2024-05-01.parquet", AS_OF)
    with pytest.raises(FunnelError, match="does not exist"):
        tag_groups(folder / "nope.parquet", AS_OF)
    with pytest.raises(FunnelError, match="--by tag needs --tags-file"):
        tag_groups(None, AS_OF)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("view", r"at least two steps, got \['view'\]"),
        ("view,,purchase", "empty step name"),
        ("view,repurchase", "'repurchase' needs a 'purchase' step before it"),
    ],
)
def test_bad_step_lists(steps, message):
    with pytest.raises(FunnelError, match=message):
        parse_steps(steps)


def test_an_unknown_step_lists_the_known_ones_and_the_closest(data):
    with pytest.raises(FunnelError) as error:
        funnel_of(data, steps=["view", "add_to_chart", "purchase"])
    text = str(error.value)
    assert "unknown step 'add_to_chart'" in text and "closest: ['add_to_cart']" in text
    assert "event types ['add_to_cart', 'search', 'view'] and ['purchase', 'repurchase']" in text
    # A known type nobody has in the window is not an error: nobody reaches it.
    assert rows(funnel_of(data, steps=["view", "search"], days=10))["customers"].tolist() == [1, 0]


def test_a_step_the_data_has_only_from_the_as_of_date_on_is_reached_by_nobody_then(data, tmp_path, caplog):
    """It was an "unknown step" (a typo) as of a date before the type was first tracked."""
    tracked_later = LATER_EVENTS.iloc[[2]].assign(event_type="wishlist")
    later = write_tables(
        tmp_path / "later", purchases=PURCHASES, events=pd.concat([EVENTS, LATER_EVENTS, tracked_later])
    )
    with caplog.at_level("WARNING"):
        table = rows(funnel_of(later, steps=["view", "wishlist"]))
    assert table["customers"].tolist()[1] == 0
    assert "'wishlist' occurs only on or after 2024-03-01: nobody reaches it before then" in " ".join(caplog.messages)


def test_event_steps_without_an_events_table():
    con = Dataset.from_frames(purchases=PURCHASES).connect()
    try:
        with pytest.raises(FunnelError, match=r"no events table, so the only steps are \['purchase', 'repurchase'\]"):
            compute_funnel(con, AS_OF, ["view", "purchase"], DAYS)
        # The purchases end on 2024-02-20: the day after is the last as-of date in range.
        funnel = compute_funnel(con, dt.date(2024, 2, 21), ["purchase", "repurchase"], DAYS)
        assert funnel.table["customers"].tolist() == [5, 3]
    finally:
        con.close()


@pytest.mark.parametrize("days", [0, -3, 36_601, 99_999_999])  # the last past the calendar's start
def test_the_window_must_be_positive_and_at_most_a_century(data, days):
    with pytest.raises(FunnelError, match=f"--within-days must be a whole number of days from 1 to 36,600, got {days}"):
        funnel_of(data, days=days)


@pytest.mark.parametrize("as_of", [dt.date(2023, 6, 1), dt.date(2020, 1, 1), dt.date(2024, 4, 1)])
def test_an_as_of_date_outside_the_data(data, as_of):
    # The data runs from 2023-06-01 (Z's order) to 2024-03-01 (D's cart at midnight); a 30-day
    # window as of 2024-04-01 starts on 2024-03-02, after it.
    with pytest.raises(
        FunnelError, match=r"outside the data's range: .* from 2023-06-01 to 2024-03-01, .* to 2024-03-31 \(a window"
    ):
        funnel_of(data, as_of=as_of)
    funnel_of(data, as_of=dt.date(2024, 3, 2))  # the day after the last is still in range


def test_an_as_of_date_days_after_the_data_counts_the_window_that_reaches_it(data):
    """A weekend without a new export: the window still holds the data's last days."""
    later = rows(funnel_of(data, as_of=dt.date(2024, 3, 4), days=DAYS + 3))  # from 2024-01-31, as below
    assert len(later) == 4 and later.equals(rows(funnel_of(data, as_of=dt.date(2024, 3, 2), days=DAYS + 1)))


def run(*args: str):
    """The CLI as a user runs it; a product error is exit 2 with its message, as in portrait_cli.main."""
    from portrait_cli.main import _register_later_commands, app

    _register_later_commands()
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, PortraitError):
        return 2, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_cli_writes_the_csv_and_chart(data, tmp_path):
    # a folder name past the 80 columns a log file gets: the paths printed stay whole lines
    out = tmp_path / ("a_long_folder_name_" * 5) / "out"
    code, text = run(
        "funnel", str(data), "--as-of", "2024-03-01", "--steps", "view,add_to_cart,purchase,repurchase",
        "--within-days", "30", "--out", str(out), "--min-cell", "3",
    )  # fmt: skip
    assert code == 0, text
    assert "1. view" in text and f"funnel: {out / 'funnel.csv'}\n" in text
    written = pd.read_csv(out / "funnel.csv", dtype=str, keep_default_na=False)
    assert list(written.columns) == [
        "group", "step", "customers", "conversion_from_previous", "conversion_from_first", "drop_off",
        "median_hours_from_previous",
    ]  # fmt: skip
    assert written["customers"].tolist() == ["6", "3", "3", "<3"]
    assert written["conversion_from_first"].tolist() == ["1.0", "0.5", "0.5", "<3"]
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_by_tag_and_by_segment(data, tmp_path):
    from marketing.segments import Segment, SegmentStore

    tags = tmp_path / "tags_2024-03-01.parquet"
    pd.DataFrame({"customer_id": ["A", "F", "G", "B"], "tag": ["buyer", "buyer", "buyer", "other"]}).to_parquet(tags)
    code, text = run(
        "funnel", str(data), "--as-of", "2024-03-01", "--steps", "view,add_to_cart,purchase", "--within-days", "30",
        "--by", "tag", "--tags-file", str(tags), "--out", str(tmp_path / "by_tag"), "--min-cell", "1",
    )  # fmt: skip
    assert code == 0, text
    written = pd.read_csv(tmp_path / "by_tag" / "funnel.csv", dtype=str)
    assert written[written["group"] == "buyer"]["customers"].tolist() == ["3", "3", "3"]
    assert written[written["group"] == "other"]["customers"].tolist() == ["1", "<1", "<1"]  # 0 is below 1

    scores = tmp_path / "scores"
    scores.mkdir()
    pd.DataFrame({"customer_id": ["A", "B"], "persona_name": ["Loyal", "Browsers"]}).to_parquet(
        scores / "scores_2024-02-15.parquet"
    )
    code, text = run(
        "funnel", str(data), "--as-of", "2024-03-01", "--steps", "view,add_to_cart", "--within-days", "30",
        "--by", "persona", "--scores", str(scores), "--out", str(tmp_path / "by_persona"), "--min-cell", "1",
    )  # fmt: skip
    assert code == 0, text
    assert "personas from the scores of 2024-02-15" in text
    written = pd.read_csv(tmp_path / "by_persona" / "funnel.csv", dtype=str)
    assert written["group"].drop_duplicates().tolist() == [ALL_CUSTOMERS, "Browsers", "Loyal"]
    assert written[written["group"] == "Loyal"]["customers"].tolist() == ["1", "1"]

    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("two_orders", where="purchased(within_days = 60) >= 2"))  # A, F, G
    store.save(Segment("viewed_twice", where="events('view', within_days = 60) >= 2"))  # C
    code, text = run(
        "funnel", str(data), "--as-of", "2024-03-01", "--steps", "view,add_to_cart,purchase,repurchase",
        "--within-days", "30", "--by", "segment", "--segments", str(store.folder), "--out", str(tmp_path / "by_seg"),
        "--min-cell", "1",
    )  # fmt: skip
    assert code == 0, text
    written = pd.read_csv(tmp_path / "by_seg" / "funnel.csv", dtype=str)
    assert written[written["group"] == "two_orders"]["customers"].tolist() == ["3", "3", "3", "2"]
    assert written[written["group"] == "viewed_twice"]["customers"].tolist() == ["1", "<1", "<1", "<1"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "view"], "at least two steps"),
        (["--steps", "view,add_to_chart"], r"unknown step 'add_to_chart'.*closest: \['add_to_cart'\]"),
        (["--within-days", "0"], "--within-days must be a whole number of days from 1 to 36,600"),
        (["--as-of", "2031-01-01"], "outside the data's range"),
        (["--by", "persona"], "--by persona needs --scores DIR"),
        (["--by", "tag"], "--by tag needs --tags-file"),
        (["--by", "region"], r"--by 'region': choose one of \['persona', 'segment', 'tag'\]"),
        (["--min-cell", "0"], "--min-cell must be a whole number of at least 1"),
        (["--by", "segment", "--segments", "{tmp}/none"], "no saved segments in"),
    ],
)
def test_cli_errors(data, tmp_path, extra, message):
    options = {"--steps": "view,add_to_cart", "--within-days": "30", "--as-of": "2024-03-01"}
    rest = []
    for i in range(0, len(extra), 2):
        value = extra[i + 1].replace("{tmp}", str(tmp_path))
        if extra[i] in options:
            options[extra[i]] = value
        else:
            rest += [extra[i], value]
    args = [x for pair in options.items() for x in pair]
    code, text = run("funnel", str(data), *args, *rest, "--out", str(tmp_path / "out"))
    assert code == 2
    assert re.search(message, text), text
    assert not (tmp_path / "out" / "funnel.csv").exists()


def test_an_error_exits_non_zero_without_a_traceback(data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "portrait_cli", "funnel", str(data), "--as-of", "2024-03-01", "--steps", "view",
         "--within-days", "30", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "a funnel needs at least two steps" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- realistic data


def reference_funnel(con, as_of: dt.date, steps: list[str], days: int) -> list[int]:
    """The same funnel in pandas, customer by customer through merge_asof (an independent check)."""
    start = dt.datetime.combine(as_of - dt.timedelta(days=days), dt.time())
    end = dt.datetime.combine(as_of, dt.time())
    events = con.execute(
        "SELECT CAST(customer_id AS VARCHAR) AS customer_id, LOWER(TRIM(event_type)) AS kind, ts FROM events "
        "WHERE ts >= ? AND ts < ?",
        [start, end],
    ).df()
    orders = con.execute(
        "SELECT CAST(customer_id AS VARCHAR) AS customer_id, 'purchase' AS kind, MIN(ts) AS ts FROM purchases "
        "WHERE ts >= ? AND ts < ? GROUP BY customer_id, order_id HAVING MAX(amount) > 0",
        [start, end],
    ).df()
    rows_ = pd.concat([events, orders], ignore_index=True)
    kind = {s: ("purchase" if s in ("purchase", "repurchase") else s) for s in steps}
    first = rows_[rows_["kind"] == kind[steps[0]]].groupby("customer_id", as_index=False)["ts"].min()
    counts = [len(first)]
    reached = first.rename(columns={"ts": "t"})
    for step in steps[1:]:
        candidates = rows_[rows_["kind"] == kind[step]][["customer_id", "ts"]].sort_values("ts")
        reached = pd.merge_asof(
            reached.sort_values("t"),
            candidates.rename(columns={"ts": "next"}).assign(t=lambda f: f["next"]),
            on="t",
            by="customer_id",
            direction="forward",
            allow_exact_matches=False,
        ).dropna(subset=["next"])
        reached = reached[["customer_id", "next"]].rename(columns={"next": "t"})
        counts.append(len(reached))
    return counts


def test_on_synthetic_customers_it_agrees_with_a_pandas_reference(small_synthetic, tmp_path):
    as_of = dt.date(2024, 7, 1)
    con = open_dataset(small_synthetic).connect()
    try:
        funnel = compute_funnel(con, as_of, STEPS, 90)
        expected = reference_funnel(con, as_of, STEPS, 90)
    finally:
        con.close()
    table = rows(funnel)
    counts = table["customers"].tolist()
    assert counts == expected
    assert counts[0] > 1000 and counts == sorted(counts, reverse=True) and counts[-1] > 0
    assert table["median_hours_from_previous"].iloc[1:].gt(0).all()
    code, text = run(
        "funnel", str(small_synthetic), "--as-of", "2024-07-01", "--steps", ",".join(STEPS), "--within-days", "90",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, text
    written = pd.read_csv(tmp_path / "out" / "funnel.csv")
    assert written["customers"].astype(int).tolist() == counts


def test_waits_across_a_change_to_summer_time_are_measured_as_time_passed():
    """In Paris on 2024-03-31 clocks jump from 02:00 to 03:00: a view at 01:30 and a purchase at
    03:30 local are an hour apart, not two (the wait was local times' difference)."""
    from portrait.dataset import Dataset

    events = pd.DataFrame({"customer_id": ["a"], "ts": ["2024-03-31 01:30:00"], "event_type": ["view"]})
    purchases = pd.DataFrame({"order_id": ["o1"], "customer_id": ["a"], "ts": ["2024-03-31 03:30:00"], "amount": [5.0]})
    data = Dataset.from_frames(timezone="Europe/Paris", purchases=purchases, events=events)
    con = data.connect()
    try:
        funnel = compute_funnel(con, dt.date(2024, 4, 2), ["view", "purchase"], 7, timezone="Europe/Paris")
        as_local_times = compute_funnel(con, dt.date(2024, 4, 2), ["view", "purchase"], 7)  # UTC: no change
    finally:
        con.close()
    assert funnel.table.loc[1, "median_hours_from_previous"] == pytest.approx(1.0)
    assert as_local_times.table.loc[1, "median_hours_from_previous"] == pytest.approx(2.0)
