"""Tags, segments and behaviour terms on hand-written data; point-in-time; planted personas."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from features.build import build_features
from marketing import manual
from marketing.filters import FilterError
from marketing.population import Population
from marketing.segments import BrokenSegment, Segment, SegmentEvaluator, SegmentStore, record_refresh
from marketing.tags import apply_tags, load_library, movement
from portrait.dataset import Dataset, open_dataset
from portrait.errors import ConfigError, PortraitError

AS_OF = "2024-03-01"
COLUMNS = ["order_id", "customer_id", "ts", "amount", "quantity", "category", "discount"]
PURCHASES = pd.DataFrame(
    [
        ("o1", "A", "2024-01-20 10:00:00", 10.0, 1, "Dairy", 0.0),
        ("o2", "A", "2024-02-10 10:00:00", 20.0, 1, "dairy ", 0.0),  # case and spaces do not matter
        ("o3", "A", "2024-02-25 10:00:00", 15.0, 1, "Dairy", 0.0),
        ("o3", "A", "2024-02-25 10:00:00", 5.0, 1, "Bakery", 0.0),
        ("r1", "A", "2024-02-26 10:00:00", -5.0, -1, "Dairy", 0.0),  # a refund is not a purchase
        ("b1", "B", "2023-06-01 10:00:00", 100.0, 1, "Bakery", 10.0),
        ("c1", "C", "2024-02-28 10:00:00", 30.0, 1, "Dairy", 0.0),
    ],
    columns=COLUMNS,
)
EVENTS = pd.DataFrame(
    [
        ("B", "2024-02-20 09:00:00", "view"),
        ("B", "2024-02-25 09:00:00", "view"),
        ("B", "2024-02-27 09:00:00", "View"),
        ("B", "2024-02-27 09:05:00", "add_to_cart"),
        ("C", "2024-02-29 23:59:59", "view"),
    ],
    columns=["customer_id", "ts", "event_type"],
)
# Rows at or after the as-of date: nothing computed as of AS_OF may change with them.
LATER_PURCHASES = pd.DataFrame(
    [
        ("late1", "A", "2024-03-01 00:00:00", 999.0, 1, "Dairy", 0.0),
        ("late2", "B", "2024-03-02 10:00:00", 50.0, 1, "Dairy", 50.0),
        ("late3", "D", "2024-03-03 10:00:00", 50.0, 1, "Dairy", 0.0),
    ],
    columns=COLUMNS,
)
LATER_EVENTS = pd.DataFrame(
    [("C", "2024-03-01 00:00:00", "view"), ("C", "2024-03-01 08:00:00", "view"), ("A", "2024-03-02 08:00:00", "view")],
    columns=["customer_id", "ts", "event_type"],
)
TERMS = (
    "purchased(category = 'dairy', within_days = 45)",
    "spent(within_days = 30)",
    "events('view', within_days = 14)",
    "purchased(within_days = 14)",
)
# By hand: windows start at 2024-01-16 (45 days), 2024-01-31 (30) and 2024-02-16 (14).
EXPECTED_TERMS = {"A": [3, 35.0, 0, 1], "B": [0, 0.0, 3, 0], "C": [1, 30.0, 1, 1]}


def dataset(later: bool = False) -> Dataset:
    purchases = pd.concat([PURCHASES, LATER_PURCHASES]) if later else PURCHASES
    events = pd.concat([EVENTS, LATER_EVENTS]) if later else EVENTS
    return Dataset.from_frames(purchases=purchases, events=events)


def term_values(ds: Dataset) -> dict[str, list[float]]:
    from marketing.filters import parse_condition

    with Population(ds, AS_OF) as population:
        conditions = [parse_condition(f"{t} >= 0", population.schema(), behaviour=True) for t in TERMS]
        frame = population.frame(conditions).set_index("customer_id")
        columns = [c.terms[0].column for c in conditions]
        return {customer: frame.loc[customer, columns].tolist() for customer in frame.index}


def test_behaviour_terms_by_hand():
    assert term_values(dataset()) == EXPECTED_TERMS


def test_behaviour_terms_ignore_rows_at_or_after_the_as_of_date():
    assert term_values(dataset(later=True)) == EXPECTED_TERMS


def test_an_unknown_category_names_the_closest_values():
    segment = Segment("s", where="purchased(category = 'diary') > 0")
    with Population(dataset(), AS_OF) as population:
        evaluator = SegmentEvaluator(population, SegmentStore(Path("/nonexistent")), load_library())
        with pytest.raises(
            # as the data writes them ('Dairy'): shown lower-cased, they read as values that differ
            FilterError,
            match=r"no purchases row has category = 'diary' \(compared without case\); "
            r"closest: \['Dairy'",
        ):
            evaluator.evaluate(segment)


def test_a_value_the_data_has_only_from_the_as_of_date_on_is_held_by_nobody_then(caplog):
    """Toys first sold on the as-of date, searches first tracked after it: nobody has
    them before, which is no typo (a saved segment is backfilled across the day they start)."""
    toys = LATER_PURCHASES.iloc[[0]].assign(order_id="late9", category="Toys")
    searches = LATER_EVENTS.iloc[[2]].assign(event_type="search")
    later = Dataset.from_frames(
        purchases=pd.concat([PURCHASES, toys]), events=pd.concat([EVENTS, LATER_EVENTS, searches])
    )
    from marketing.filters import parse_condition

    with caplog.at_level("WARNING"), Population(later, AS_OF) as population:
        conditions = [
            parse_condition(t, population.schema(), behaviour=True)
            for t in ("purchased(category = 'toys') >= 0", "events('search') >= 0")
        ]
        frame = population.frame(conditions)
    assert frame[[c.terms[0].column for c in conditions]].to_numpy().sum() == 0 and len(frame) == 3
    said = " ".join(caplog.messages)
    assert "purchases.category = 'toys' occurs only on or after 2024-03-01: nobody has it before then" in said
    assert "events.event_type = 'search' occurs only on or after 2024-03-01" in said


def test_purchased_without_a_filter_counts_the_orders_the_features_count():
    """A $0.00 order is a purchase order, so is an exchange netting below 0 (H's sells a line)
    and lines that cancel to a floating residue (0.3 - 0.1 - 0.2); a return alone (R's) is
    not: purchased(within_days = 30) agrees with orders_30d; with a category, an order with a
    matching line above 0 counts."""
    from marketing.filters import parse_condition

    rows = [
        ("f1", "F", "2024-02-25 10:00:00", 0.0, "milk"),
        ("h1", "H", "2024-02-20 10:00:00", 5.0, "milk"),
        ("h1", "H", "2024-02-20 10:00:00", -10.0, "bread"),
        ("g1", "G", "2024-02-21 10:00:00", 0.3, "milk"),
        ("g1", "G", "2024-02-21 10:00:00", -0.1, "milk"),
        ("g1", "G", "2024-02-21 10:00:00", -0.2, "milk"),
        ("a1", "A", "2024-02-22 10:00:00", 10.0, "milk"),
        ("a2", "A", "2024-02-23 10:00:00", 4.0, "bread"),
        ("a0", "A", "2023-02-22 10:00:00", 10.0, "milk"),
        ("r1", "R", "2024-02-24 10:00:00", -10.0, "milk"),
    ]
    data = Dataset.from_frames(
        purchases=pd.DataFrame(rows, columns=["order_id", "customer_id", "ts", "amount", "category"])
    )
    terms = ["purchased(within_days = 30)", "purchased(category = 'milk', within_days = 30)"]
    with Population(data, AS_OF) as population:
        conditions = [parse_condition(f"{t} >= 0", population.schema(), behaviour=True) for t in terms]
        frame = population.frame(conditions).set_index("customer_id")
        values = {c: frame.loc[c, [x.terms[0].column for x in conditions]].tolist() for c in "AFGHR"}
    assert values == {"A": [2, 1], "F": [1, 0], "G": [1, 1], "H": [1, 1], "R": [0, 0]}
    features = build_features(data, AS_OF).set_index("customer_id")
    assert features["orders_30d"].to_dict() == {"A": 2, "F": 1, "G": 1, "H": 1, "R": 0}


def test_the_closest_values_never_echo_a_value_holding_personal_data():
    """An event type holding an address (a payload written into event_type) is not suggested."""
    payload = pd.DataFrame(
        {"customer_id": ["A"], "ts": ["2024-02-01 10:00:00"], "event_type": ["unsubscribe: bob.unsub@example.com"]}
    )
    data = Dataset.from_frames(purchases=PURCHASES, events=pd.concat([EVENTS, payload]))
    segment = Segment("s", where="events('unsubscribe: bob') > 0")
    with Population(data, AS_OF) as population:
        evaluator = SegmentEvaluator(population, SegmentStore(Path("/nonexistent")), load_library())
        with pytest.raises(
            FilterError,
            match="has event_type = 'unsubscribe: bob' \\(compared without case\\); none is close; 2 values, such as",
        ) as raised:
            evaluator.evaluate(segment)
    assert "example.com" not in str(raised.value)


def members(ds: Dataset, segment: Segment, store: SegmentStore | None = None) -> list[str]:
    with Population(ds, AS_OF) as population:
        evaluator = SegmentEvaluator(population, store or SegmentStore(Path("/nonexistent")), load_library())
        return sorted(evaluator.evaluate(segment).members)


@pytest.mark.parametrize("later", [False, True])
def test_segments_by_hand_and_point_in_time(later):
    ds = dataset(later)
    browsing = Segment("b", where="events('view', within_days = 14) >= 3 and not purchased(within_days = 14)")
    assert members(ds, browsing) == ["B"]
    assert members(ds, Segment("d", where="purchased(category = 'dairy', within_days = 45) >= 2")) == ["A"]
    assert members(ds, Segment("n", where="spent(within_days = 30) > 30 or orders_lifetime = 1")) == ["A", "B", "C"]
    assert members(ds, Segment("t", tags=["buyer level: junior"])) == ["A"]  # 3 orders, the refund not counted


def test_tags_by_hand_and_point_in_time():
    def tags(ds):
        with Population(ds, AS_OF) as population:
            return apply_tags(load_library(), population).tags

    now = tags(dataset())
    by_customer = now.groupby("customer_id")["tag"].apply(set)
    # spend_365d 45 (A), 100 (B), 30 (C): quintile bounds 36, 42, 56, 78 of the positive values
    assert {"spending power: middle", "buyer level: junior", "frequency: low"} <= by_customer["A"]
    assert {"spending power: high", "buyer level: novice"} <= by_customer["B"]
    assert {"spending power: low", "buyer level: novice", "interest: Dairy"} <= by_customer["C"]
    assert (now["since"] == dt.date(2024, 3, 1)).all()
    pd.testing.assert_frame_equal(now, tags(dataset(later=True)))


def test_segments_combine_include_exclude_and_record_entered_and_left(tmp_path):
    store = SegmentStore(tmp_path)
    store.save(Segment("dairy", where="purchased(category = 'dairy') > 0"))  # A, C
    store.save(Segment("viewers", where="events('view') > 0"))  # B, C
    store.save(
        Segment("both", include=["dairy", "viewers"], exclude=["quiet"])
        if False
        else Segment("all", include=["dairy", "viewers"])
    )
    store.save(Segment("dairy_not_viewers", include=["dairy"], exclude=["viewers"]))
    assert members(dataset(), store.load("all"), store) == ["A", "B", "C"]
    assert members(dataset(), store.load("dairy_not_viewers"), store) == ["A"]
    # excludes alone: everyone but their members (refused before: "has no condition")
    store.save(Segment("not_viewers", exclude=["viewers"]))
    assert members(dataset(), store.load("not_viewers"), store) == ["A"]
    assert store.load("not_viewers").definition() == "everyone - segment 'viewers'"
    with Population(dataset(), AS_OF) as population:
        result = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    first = record_refresh(store, result)
    assert (first["customers"], first["entered"], first["left"]) == (2, None, None)
    with Population(dataset(later=True), "2024-03-04") as population:
        result = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    second = record_refresh(store, result)
    assert (second["customers"], second["entered"], second["left"]) == (4, 2, 0)  # B and D bought dairy
    assert store.history("dairy")["as_of"].tolist() == ["2024-03-01", "2024-03-04"]
    # a backfill: a date before the stored members' is added to the history in date order,
    # without entered and left, and the newer members stay
    with Population(dataset(), "2024-02-01") as population:
        result = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    backfill = record_refresh(store, result)
    assert (backfill["entered"], backfill["left"]) == (None, None)
    assert store.history("dairy")["as_of"].tolist() == ["2024-02-01", "2024-03-01", "2024-03-04"]
    assert set(store.members("dairy")["as_of"]) == {"2024-03-04"} and len(store.members("dairy")) == 4
    # whole numbers in the file, blank where unknown (entered was written 2.0 beside a blank)
    rows = store.history_path("dairy").read_text().splitlines()
    assert rows[-1].endswith(",4,4,1.0,2,0") and rows[1].endswith(",,")
    # a re-run of the latest date replaces its row (one per date) and keeps its entered and
    # left while the members are the same; other members: the date before's are not kept
    with Population(dataset(later=True), "2024-03-04") as population:
        result = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    again = record_refresh(store, result)
    assert (again["customers"], again["entered"], again["left"]) == (4, 2, 0)
    assert store.history("dairy")["as_of"].tolist() == ["2024-02-01", "2024-03-01", "2024-03-04"]
    with Population(dataset(), "2024-03-04") as population:  # the data without its later rows
        result = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    corrected = record_refresh(store, result)
    assert (corrected["customers"], corrected["entered"], corrected["left"]) == (2, None, None)
    history = store.history("dairy")
    assert history["as_of"].tolist() == ["2024-02-01", "2024-03-01", "2024-03-04"]
    assert history["customers"].tolist() == [1, 2, 2]
    # a new description keeps them; another definition drops the members and the history, which
    # were shown as the new definition's size (and compared with it at the next refresh)
    described = Segment("dairy", description="for the spring brief", where=store.load("dairy").where)
    assert store.refreshes_replaced(described) is None
    store.save(described, replace=True)
    assert len(store.history("dairy")) == 3 and store.members_path("dairy").exists()
    other = Segment("dairy", where="orders_lifetime >= 1")
    assert store.refreshes_replaced(other) == 3 and store.refreshes_replaced(Segment("new", where="x > 1")) is None
    store.save(other, replace=True)
    assert store.history("dairy").empty and not store.members_path("dairy").exists()
    with Population(dataset(), AS_OF) as population:
        result = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    assert record_refresh(store, result)["entered"] is None  # no earlier members of another definition


def test_a_segment_refreshed_to_nobody_keeps_its_date(tmp_path):
    """Its members file had no row to carry the date: a backfill took the newer (empty) members
    for older ones and replaced them, and a profile of an earlier date counted the segment as
    checked (``serving.profile`` reads the date the same way)."""
    from marketing.segments import members_as_of
    from serving.profile import _members_date

    store = SegmentStore(tmp_path)
    store.save(Segment("nobody", where="orders_lifetime > 100000"))
    with Population(dataset(later=True), "2024-03-04") as population:
        record_refresh(store, SegmentEvaluator(population, store, load_library()).evaluate(store.load("nobody")))
    path = store.members_path("nobody")
    assert members_as_of(path) == "2024-03-04" and _members_date(path) == dt.date(2024, 3, 4)
    with Population(dataset(), "2024-02-01") as population:  # a backfill leaves the newer members
        backfill = record_refresh(
            store, SegmentEvaluator(population, store, load_library()).evaluate(store.load("nobody"))
        )
    assert (backfill["entered"], backfill["left"]) == (None, None)
    assert members_as_of(path) == "2024-03-04"
    # a file written empty before the date was stored with it: the history's latest date
    pd.DataFrame({"customer_id": pd.Series([], dtype="str"), "as_of": pd.Series([], dtype="str")}).to_parquet(path)
    assert members_as_of(path) == "2024-03-04" and _members_date(path) == dt.date(2024, 3, 4)


def test_one_evaluator_evaluates_a_segment_of_tags_after_one_of_conditions(tmp_path):
    # crowd compare and --compare-to evaluate two segments on one evaluator: the second's tags,
    # or an included segment's condition, were not built by the first (an AttributeError)
    store = SegmentStore(tmp_path)
    store.save(Segment("dairy", where="purchased(category = 'dairy') > 0"))  # A, C
    store.save(Segment("juniors", tags=["buyer level: junior"]))  # A
    store.save(Segment("viewers", where="events('view') > 0"))  # B, C
    store.save(Segment("juniors_or_viewers", include=["juniors", "viewers"]))
    with Population(dataset(), AS_OF) as population:
        evaluator = SegmentEvaluator(population, store, load_library())
        assert sorted(evaluator.evaluate(store.load("dairy")).members) == ["A", "C"]
        assert sorted(evaluator.evaluate(store.load("juniors")).members) == ["A"]
        assert sorted(evaluator.evaluate(store.load("juniors_or_viewers")).members) == ["A", "B", "C"]
        assert sorted(evaluator.evaluate(store.load("dairy")).members) == ["A", "C"]


@pytest.mark.parametrize(
    "segments, message",
    [
        (
            [Segment("b", include=["kept"]), Segment("kept", where="orders_lifetime > 1", include=["b"])],
            "cycle: b -> kept -> b",
        ),
        ([Segment("a", where="orders_lifetime > 0", exclude=["a"])], "cycle: a -> a"),
        ([Segment("a", include=["missing"])], "refers to segment 'missing', which does not exist"),
        ([Segment("a")], "has no condition and includes or excludes nothing"),
    ],
)
def test_bad_segments_are_refused_and_nothing_is_saved(tmp_path, segments, message):
    store = SegmentStore(tmp_path)
    store.save(Segment("kept", where="orders_lifetime > 0"))
    with pytest.raises(ConfigError, match=message):
        for segment in segments:
            store.save(segment, replace=segment.name == "kept")
    assert store.load("kept").where == "orders_lifetime > 0" and store.load("kept").include == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b'include = "kept"\n', r'include must be a list of names, include = \["..."\] \(got \'kept\'\)'),
        (b"where = 5\n", r'where must be text, where = "..." \(got 5\)'),
        (b'tags = ["a", 3]\n', "tags must be a list of names"),
        (b"\xff\xfewhere = 'x'\n", "not UTF-8 text"),
        (b"where = \n", "not valid TOML"),
    ],
)
def test_a_segment_file_edited_by_hand_is_refused_with_what_is_wrong(tmp_path, content, message):
    store = SegmentStore(tmp_path)
    (tmp_path / "edited.toml").write_bytes(content)
    with pytest.raises(BrokenSegment, match=message):
        store.load("edited")


def test_a_segment_not_found_names_its_folder_whole_and_where_segments_are_read(tmp_path, monkeypatch):
    """ "no segment 'x' in segments/" named a relative folder that did not exist, without saying
    where else segments are read from (the demo saves them in outputs/segments)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PortraitError, match=r"no segment 'quiet' in .*segments/: no such folder \(segments are read "):
        SegmentStore(Path("segments")).load("quiet")
    store = SegmentStore(tmp_path / "kept")
    store.save(Segment("quiet_buyers", where="orders_lifetime > 0"))
    with pytest.raises(
        PortraitError, match=rf"^no segment 'quiet_buyer' in {tmp_path / 'kept'}/; did you mean \['quiet_buyers'\]\?$"
    ):
        store.load("quiet_buyer")


def test_a_segment_file_edited_by_hand_keeps_a_persona_number_and_a_bare_date(tmp_path):
    (tmp_path / "edited.toml").write_text("persona = 2\ncreated_at = 2025-01-31\n")
    segment = SegmentStore(tmp_path).load("edited")
    assert (segment.persona, segment.created_at) == ("2", "2025-01-31")


def test_a_segment_file_edited_to_include_itself_is_refused_not_a_recursion(tmp_path):
    store = SegmentStore(tmp_path)
    store.save(Segment("kept", where="orders_lifetime > 0"))
    (tmp_path / "loop.toml").write_text('where = "orders_lifetime > 0"\ninclude = ["loop"]\n')
    with Population(dataset(), AS_OF) as population:
        evaluator = SegmentEvaluator(population, store, load_library())
        with pytest.raises(BrokenSegment, match="in a cycle: loop -> loop"):
            evaluator.evaluate(store.load("loop"))


def test_a_segment_in_use_cannot_be_deleted(tmp_path):
    store = SegmentStore(tmp_path)
    store.save(Segment("base", where="orders_lifetime > 0"))
    store.save(Segment("user", include=["base"]))
    with pytest.raises(ConfigError, match=r"used by \['user'\]"):
        store.delete("base")
    with pytest.raises(ConfigError, match="segment name 'Bad Name'"):
        store.save(Segment("Bad Name", where="orders_lifetime > 0"))


LIBRARY_ERRORS = [
    (
        '[groups.a]\n[[tags]]\nname = "x"\ngroup = "a"\nwhere = "orders_90d > 1"\n[[tags]]\nname = "x"\ngroup = "a"\nwhere = "orders_90d > 2"\n',
        "tag 'x' is defined twice",
    ),
    # a rule tag named as a value of an each tag: both counted under one name (3,050 rows for 2,238 customers)
    (
        '[groups.a]\n[[tags]]\nname = "persona"\ngroup = "a"\neach = "persona_name"\n'
        '[[tags]]\nname = "persona: Mainstream shoppers"\ngroup = "a"\nwhere = "orders_90d > 1"\n',
        "tag 'persona: Mainstream shoppers' takes a name of the tags of 'persona' \\(each = persona_name\\)",
    ),
    ('[groups.a]\n[[tags]]\nname = "x"\ngroup = "b"\nwhere = "orders_90d > 1"\n', "in group 'b', which is not defined"),
    ('[groups."a/b"]\n', "inside 'a', which is not defined"),
    (
        '[groups.a]\n[[tags]]\nname = "x"\ngroup = "a"\nkind = "manual"\nwhere = "orders_90d > 1"\n',
        "manual tag 'x' is assigned by hand",
    ),
    (
        '[groups.a]\nexclusive = "levels"\nfeature = "spend_365d"\nbounds = [1, 2]\nvalues = ["l", "h"]\n',
        "needs 3 values, got 2",
    ),
    (
        '[groups.a]\nexclusive = "rules"\n[[tags]]\nname = "x"\ngroup = "a"\nwhere = "orders_90d > 1"\n',
        "needs two or more plain rule tags",
    ),
    ('[groups.a]\ncolour = "red"\n', "unknown keys \\['colour'\\]"),
    # edited by hand: a value of the wrong type is named, not misread nor a traceback
    ("groups = 3\n", "groups must be tables"),
    ('groups = ["a"]\n', "groups must be tables"),
    ('tags = "x"\n', "tags must be \\[\\[tags\\]\\] entries"),
    (
        '[groups.a]\nexclusive = "levels"\nfeature = "spend_365d"\nquantiles = "x"\nvalues = ["a", "b"]\n',
        "group 'a': quantiles must be a list of numbers",
    ),
    ('[groups.a]\nvalues = "xyz"\n', "group 'a': values must be a list of names"),
    ('[groups.a]\nbounds = [1, "2"]\n', "bounds must be a list of numbers"),
    ("[groups.a]\nfeature = 5\n", "group 'a': feature must be text, feature = \"...\" \\(got 5\\)"),
    ('[groups.a]\n[[tags]]\nname = 5\ngroup = "a"\nwhere = "orders_90d > 1"\n', "a tag's name must be text"),
    ('[groups.a]\n[[tags]]\nname = "x"\ngroup = ["a"]\nwhere = "orders_90d > 1"\n', "tag 'x': group must be text"),
    ('[groups.a]\n[[tags]]\nname = "x"\ngroup = "a"\nwhere = 5\n', "tag 'x': where must be text"),
]


@pytest.mark.parametrize("text, message", LIBRARY_ERRORS)
def test_bad_libraries_are_refused(tmp_path, text, message):
    path = tmp_path / "tags.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_library(path)


def test_a_library_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "tags.toml"
    path.write_bytes(b"\xff\xfe[groups.a]\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_library(path)


@pytest.mark.parametrize(
    "library, message",
    [
        (
            '[groups.a]\n[[tags]]\nname = "x"\ngroup = "a"\neach = "avg_order_value"\n',  # A's is 16.67
            "each = 'avg_order_value' has 3 distinct values with fractions; each takes a column of names or codes",
        ),
        (
            '[groups.a]\nexclusive = "levels"\nfeature = "favourite_category"\nbounds = [1]\nvalues = ["l", "h"]\n',
            "feature 'favourite_category' is text; levels cut a number",
        ),
    ],
)
def test_columns_of_the_wrong_kind_for_each_and_levels_are_refused(tmp_path, library, message):
    """(A number column of codes, rfm_r's 1-5 or a decile, still makes one tag per value: see below.)"""
    path = tmp_path / "tags.toml"
    path.write_text(library)
    with Population(dataset(), AS_OF) as population:
        with pytest.raises(FilterError, match=message):
            apply_tags(load_library(path), population)


def test_each_over_a_number_column_of_codes_makes_one_tag_per_code(tmp_path, monkeypatch):
    import marketing.tags

    path = tmp_path / "tags.toml"
    path.write_text('[groups.a]\n[[tags]]\nname = "orders"\ngroup = "a"\neach = "orders_lifetime"\n')
    with Population(dataset(), AS_OF) as population:
        tags = apply_tags(load_library(path), population).tags
    assert sorted(set(tags["tag"])) == ["orders: 1", "orders: 3"]  # A has 3 orders, B and C one each
    monkeypatch.setattr(marketing.tags, "MAX_EACH_VALUES", 1)  # more values than a tag may make: refused
    with Population(dataset(), AS_OF) as population:
        with pytest.raises(FilterError, match="each = 'orders_lifetime' has 2 distinct values; each takes"):
            apply_tags(load_library(path), population)


def test_an_exclusive_group_that_overlaps_or_leaves_customers_out_says_how_many(tmp_path):
    path = tmp_path / "tags.toml"
    path.write_text(
        '[groups.f]\nexclusive = "rules"\n'
        '[[tags]]\nname = "some"\ngroup = "f"\nwhere = "orders_lifetime >= 1"\n'
        '[[tags]]\nname = "many"\ngroup = "f"\nwhere = "orders_lifetime >= 3"\n'
    )
    with Population(dataset(), AS_OF) as population:
        with pytest.raises(FilterError, match="1 customers match more than one of its tags"):
            apply_tags(load_library(path), population)
    path.write_text(path.read_text().replace("orders_lifetime >= 1", "orders_lifetime = 1").replace(">= 3", ">= 5"))
    with Population(dataset(), AS_OF) as population:
        with pytest.raises(FilterError, match="1 customers match none"):
            apply_tags(load_library(path), population)


@pytest.mark.parametrize(
    "note, message",
    [
        ("call john@example.com", "--note holds an e-mail address or a phone number"),
        ("ring +44 7700 900123 first", "--note holds an e-mail address or a phone number"),
        ("x" * 201, "--note is 201 characters; at most 200"),
    ],
)
def test_a_manual_tag_note_with_personal_details_is_refused_and_nothing_written(tmp_path, note, message):
    store = tmp_path / "manual.parquet"
    with pytest.raises(PortraitError, match=message):
        manual.record(store, "assign", "VIP", pd.Series(["A"]), pd.Series(["A"]), note=note)
    assert not store.exists()


def test_manual_tags_hold_from_assignment_until_expiry_or_removal(tmp_path):
    store = tmp_path / "manual.parquet"
    ids = pd.Series(["A", "B"])
    manual.record(store, "assign", "VIP", ids, ids, by="ann", note="key accounts", expires=dt.date(2999, 1, 1))
    manual.record(store, "remove", "VIP", pd.Series(["B"]), pd.Series(["B"]), by="bob")
    today = dt.date.today()
    held = manual.holders(store, today)
    assert held["customer_id"].tolist() == ["A"] and held["tag"].tolist() == ["VIP"]
    assert manual.holders(store, today - dt.timedelta(days=1)).empty  # not yet assigned then
    # ... and tags as of that earlier date say so, rather than leave the tag out without a word
    assert manual.assigned_later(store, today - dt.timedelta(days=1)) == 1  # A (B was removed since)
    assert manual.assigned_later(store, today) == 0
    log = manual.read_log(store)
    assert log["by"].tolist() == ["ann", "ann", "bob"] and log["note"].iloc[0] == "key accounts"


def test_a_manual_tag_follows_its_customer_into_a_person_merged_since(tmp_path):
    """VIP given to B; then an identities table merges B with A (one shared e-mail): the tag was
    matched against the persons by the id stored, and nobody held it (nor a "complained"
    exclusion). B and A both holding it: once, since the first."""
    store = tmp_path / "manual.parquet"
    log = pd.DataFrame(
        {
            "action": ["assign", "assign"],
            "tag": ["VIP", "VIP"],
            "customer_id": ["B", "A"],
            "given_id": ["B", "A"],
            "at": pd.Series(pd.to_datetime(["2024-02-01", "2024-02-10"], utc=True)).astype("datetime64[us, UTC]"),
            "by": ["ann", "ann"],
            "note": [None, None],
            "expires": [None, None],
        }
    )
    log.iloc[:1].to_parquet(store)
    identities = pd.DataFrame({"customer_id": ["A", "B"], "id_type": "email_hash", "id_value": "h1"})
    merged = Dataset.from_frames(purchases=PURCHASES, events=EVENTS, identities=identities)
    with Population(merged, AS_OF) as population:
        tags = apply_tags(load_library(), population, manual_store=store).tags
    person = tags.loc[tags["tag"] == "VIP", ["customer_id", "since"]]
    assert person["customer_id"].tolist() == ["A"] and person["since"].tolist() == [dt.date(2024, 2, 1)]
    log.to_parquet(store)  # both ids hold it
    with Population(merged, AS_OF) as population:
        tags = apply_tags(load_library(), population, manual_store=store).tags
    assert tags.loc[tags["tag"] == "VIP", "since"].tolist() == [dt.date(2024, 2, 1)]


def test_a_manual_tag_holds_from_its_day_in_the_data_sets_zone(tmp_path):
    """Given at 00:30 in Berlin on 2026-06-02 (22:30 UTC on 06-01): it holds as of the Berlin
    day 06-02 and not as of 06-01 (counted in UTC days, it held a day early)."""
    store = tmp_path / "manual.parquet"
    at = pd.Timestamp("2026-06-01 22:30", tz="UTC")
    log = pd.DataFrame(
        {
            "action": ["assign"],
            "tag": ["VIP"],
            "customer_id": ["A"],
            "given_id": ["A"],
            "at": pd.Series([at]).astype("datetime64[us, UTC]"),
            "by": ["ann"],
            "note": [None],
            "expires": [None],
        }
    )
    log.to_parquet(store)
    berlin = "Europe/Berlin"
    assert manual.holders(store, dt.date(2026, 6, 1), timezone=berlin).empty
    held = manual.holders(store, dt.date(2026, 6, 2), timezone=berlin)
    assert held["customer_id"].tolist() == ["A"] and held["since"].tolist() == [dt.date(2026, 6, 2)]
    assert manual.assigned_later(store, dt.date(2026, 6, 1), timezone=berlin) == 1
    assert manual.holders(store, dt.date(2026, 6, 1))["since"].tolist() == [dt.date(2026, 6, 1)]  # UTC days
    # a midnight that happens twice (the Azores turn clocks back from 01:00 on 2024-10-27): no error
    assert manual.holders(store, dt.date(2024, 10, 26), timezone="Atlantic/Azores").empty
    assert manual.assigned_later(store, dt.date(2024, 10, 26), timezone="Atlantic/Azores") == 1


def test_a_store_that_is_not_a_manual_tags_log_is_refused_and_left_as_it_is(tmp_path):
    ids = pd.Series(["A"])
    table = tmp_path / "customers.parquet"  # a data set's table, given as the store by mistake
    pd.DataFrame({"customer_id": ["A", "B"], "region": ["n", "s"]}).to_parquet(table, index=False)
    before = table.read_bytes()
    with pytest.raises(PortraitError, match="is named like a data set table"):
        manual.record(table, "assign", "VIP", ids, ids)
    other = tmp_path / "other.parquet"
    table.rename(other)
    with pytest.raises(
        PortraitError, match=r"other.parquet is not a manual tags log \(columns \['customer_id', 'region'\]"
    ):
        manual.record(other, "assign", "VIP", ids, ids)
    with pytest.raises(PortraitError, match="is not a manual tags log"):
        manual.holders(other, dt.date(2024, 1, 1))
    assert other.read_bytes() == before
    text = tmp_path / "log.parquet"
    text.write_text("customer_id\nA\n")
    with pytest.raises(PortraitError, match="log.parquet is not a Parquet file"):
        manual.holders(text, dt.date(2024, 1, 1))


def test_tag_movement_counts_entered_and_left():
    before = pd.DataFrame({"customer_id": ["A", "B"], "tag": ["x", "x"]})
    now = pd.DataFrame({"customer_id": ["B", "C", "C"], "tag": ["x", "x", "y"]})
    table = movement(now, before).set_index("tag")
    assert table.loc["x"].tolist() == [2, 1, 1] and table.loc["y"].tolist() == [1, 1, 0]


def test_planted_promotion_hunters_and_loyal_spenders_are_tagged(small_synthetic):
    truth = pd.read_csv(small_synthetic / "truth" / "personas.csv", dtype=str).set_index("customer_id")["persona"]
    with Population(open_dataset(small_synthetic), "2025-01-01") as population:
        tags = apply_tags(load_library(), population).tags
    persona = truth.reindex(tags["customer_id"].unique())
    for tag, planted in (("promotion-sensitive", "promotion_hunter"), ("loyal repurchaser", "loyal_app_high_spender")):
        holders = set(tags.loc[tags["tag"] == tag, "customer_id"])
        has = persona.index.isin(list(holders))
        inside = has[persona.to_numpy() == planted].mean()
        outside = has[persona.to_numpy() != planted].mean()
        assert inside >= 0.70 and outside <= 0.20, (tag, inside, outside)


def test_model_tags_need_scores_and_never_read_later_scores(tmp_path):
    scores = pd.DataFrame({"customer_id": ["A", "B", "C"], "repurchase_90d_percentile": [90.0, 10.0, 85.0]})
    scores.to_parquet(tmp_path / "scores_2024-04-01.parquet")
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        with pytest.raises(PortraitError, match="later scores would leak the future"):
            apply_tags(load_library(), population)
    scores.to_parquet(tmp_path / "scores_2024-02-01.parquet")
    library_path = tmp_path / "lib.toml"
    library_path.write_text(
        '[groups.p]\n[[tags]]\nname = "likely"\ngroup = "p"\nkind = "model"\nwhere = "repurchase_90d_percentile >= 80"\n'
    )
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        applied = apply_tags(load_library(library_path), population)
    assert sorted(applied.tags.loc[applied.tags["tag"] == "likely", "customer_id"]) == ["A", "C"]
    assert any("scores as of 2024-02-01" in note for note in applied.notes)


def _scores_of_one_model(folder: Path) -> Path:
    """Scores of the repurchase model alone in ``folder``, and a library of three model tags
    (on it, on the high-value model, on personas) written there; returns the library's path."""
    scores = pd.DataFrame({"customer_id": ["A", "B", "C"], "repurchase_90d_percentile": [90.0, 10.0, 85.0]})
    scores.to_parquet(folder / "scores_2024-02-01.parquet")
    library_path = folder / "lib.toml"
    library_path.write_text(
        "[groups.p]\n"
        '[[tags]]\nname = "likely"\ngroup = "p"\nkind = "model"\nwhere = "repurchase_90d_percentile >= 80"\n'
        '[[tags]]\nname = "valuable"\ngroup = "p"\nkind = "model"\nwhere = "high_value_90d_percentile >= 80"\n'
        '[[tags]]\nname = "persona"\ngroup = "p"\nkind = "model"\neach = "persona_name"\n'
    )
    return library_path


def test_model_tags_of_models_not_scored_are_skipped_with_a_note_and_typos_stay_errors(tmp_path):
    # Scores of one model and no personas: the persona tags and the high-value tag are skipped.
    library_path = _scores_of_one_model(tmp_path)
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        applied = apply_tags(load_library(library_path), population)
    assert set(applied.tags.loc[applied.tags["kind"] == "model", "tag"]) == {"likely"}
    assert (
        "model tags skipped (the scores hold no high_value_90d_percentile, persona_name): persona, valuable"
        in applied.notes
    )
    library_path.write_text(
        '[groups.p]\n[[tags]]\nname = "typo"\ngroup = "p"\nkind = "model"\nwhere = "repurchase_90d_percentle >= 80"\n'
    )
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        with pytest.raises(PortraitError, match="unknown column 'repurchase_90d_percentle'"):
            apply_tags(load_library(library_path), population)


def test_a_segment_or_crowd_of_a_model_tag_not_computed_is_refused_not_empty(tmp_path):
    """Asked for a model tag whose scores were missing, a segment, a list and a crowd selected
    nobody and said nothing (a marketer read "nobody has high-value potential"), and the count's
    hint suggested another tag as if this one were misspelt."""
    from marketing.crowd import Crowd, CrowdData

    library_path = _scores_of_one_model(tmp_path)
    library, store = load_library(library_path), SegmentStore(tmp_path / "segments")
    with Population(dataset(), AS_OF, scores_dir=tmp_path) as population:
        evaluator = SegmentEvaluator(population, store, library)
        assert sorted(evaluator.evaluate(Segment("ok", tags=["likely"])).members) == ["A", "C"]
        for segment, tag, reason in (
            (Segment("hv", tags=["valuable"]), "valuable", "the scores hold no high_value_90d_percentile"),
            (Segment("not_hv", not_tags=["valuable"]), "valuable", "the scores hold no high_value_90d_percentile"),
            (Segment("p", tags=["persona: Savers"]), "persona: Savers", "the scores hold no persona_name"),
        ):
            with pytest.raises(
                PortraitError, match=rf"^segment '{segment.name}': tag '{tag}' is a model tag, and {reason}"
            ):
                evaluator.evaluate(segment)
        # a persona condition was a KeyError traceback (segment count, refresh, the nightly job)
        with pytest.raises(
            PortraitError,
            match=r"^segment 'savers': persona 'Savers' is a persona condition, and the scores hold no personas",
        ):
            evaluator.evaluate(Segment("savers", persona="Savers"))
        crowds = CrowdData(population, library, segments=store)
        with pytest.raises(PortraitError, match=r"^the crowd: tag 'valuable' is a model tag, and the scores hold no"):
            crowds.mask(Crowd("tag", "valuable"))
    with Population(dataset(), AS_OF) as population:
        with pytest.raises(PortraitError, match=r"tag 'likely' is a model tag, and no scores folder \(--scores DIR\)"):
            SegmentEvaluator(population, store, library).evaluate(Segment("s", tags=["likely"]))


def _apply_and_record(library, out: Path, as_of: str, scores_dir) -> tuple[pd.DataFrame, dict]:
    """One run as write_tags makes it: the tags as of ``as_of`` (scores from ``scores_dir``, or
    none), carried from the previous run in ``out``, written there with the tags it skipped and
    its summary."""
    import json

    from marketing.tags import previous_tags, tags_file, tags_summary, with_since, with_skipped

    with Population(dataset(), as_of, scores_dir=scores_dir) as population:
        applied = apply_tags(library, population)
    day = dt.date.fromisoformat(as_of)
    previous, previous_date = previous_tags(out, day)
    tags = with_since(applied.tags, previous)
    summary = tags_summary(library, applied, tags, day, previous, previous_date)
    with_skipped(tags, applied.skipped).to_parquet(tags_file(out, day))
    tags_file(out, day).with_suffix(".summary.json").write_text(json.dumps(summary, default=str))
    return tags, summary


def test_a_run_without_scores_neither_empties_the_model_tags_nor_restarts_their_history(tmp_path):
    """A run without --scores reported every model tag's customers as having left, and the next
    run with scores dated their tags from that run: their history was lost."""

    scores = pd.DataFrame({"customer_id": ["A", "B", "C"], "repurchase_90d_percentile": [90.0, 10.0, 85.0]})
    scores.to_parquet(tmp_path / "scores_2024-03-01.parquet")
    library = load_library_text(
        tmp_path,
        '[groups.p]\n[[tags]]\nname = "likely"\ngroup = "p"\nkind = "model"\nwhere = "repurchase_90d_percentile >= 80"\n'
        '[[tags]]\nname = "buyer"\ngroup = "p"\nwhere = "orders_lifetime >= 1"\n'
        '[[tags]]\nname = "nobody"\ngroup = "p"\nwhere = "orders_lifetime > 1000"\n',
    )
    out = tmp_path / "tags"
    out.mkdir()

    def run(as_of: str, scores_dir):
        return _apply_and_record(library, out, as_of, scores_dir)

    first, first_summary = run("2024-03-01", tmp_path)
    assert sorted(first.loc[first["tag"] == "likely", "customer_id"]) == ["A", "C"]
    # a tag nobody holds is listed with 0 (it was left out, as if never computed)
    assert first_summary["tags"]["nobody"]["customers"] == 0
    _, without = run("2024-03-02", None)
    assert without["skipped"] == ["likely"] and "likely" not in without["tags"]
    assert without["tags"]["buyer"]["left"] == 0
    assert without["tags"]["nobody"] == {"customers": 0, "entered": 0, "left": 0, "reads": "orders_lifetime > 1000"}
    again, summary = run("2024-03-03", tmp_path)  # the scores of 03-01, the newest not after
    likely = again[again["tag"] == "likely"]
    assert sorted(likely["customer_id"]) == ["A", "C"]
    assert set(likely["since"]) == {dt.date(2024, 3, 1)}  # carried from the run that computed it
    assert summary["tags"]["likely"] == {
        "customers": 2,
        "entered": 0,
        "left": 0,
        "reads": "repurchase_90d_percentile >= 80",
    }


def test_a_model_tag_no_earlier_run_computed_has_no_movement(tmp_path):
    """Runs without --scores, then one with: every holder of the model tag was counted as having
    "entered" (248 "new" high-value customers on the demo); no earlier run computed it, so there
    is nothing to compare with, as on a first run."""

    scores = pd.DataFrame({"customer_id": ["A", "B", "C"], "repurchase_90d_percentile": [90.0, 10.0, 85.0]})
    scores.to_parquet(tmp_path / "scores_2024-03-01.parquet")
    library = load_library_text(
        tmp_path,
        '[groups.p]\n[[tags]]\nname = "likely"\ngroup = "p"\nkind = "model"\nwhere = "repurchase_90d_percentile >= 80"\n'
        '[[tags]]\nname = "buyer"\ngroup = "p"\nwhere = "orders_lifetime >= 1"\n',
    )
    out = tmp_path / "tags"
    out.mkdir()

    def run(as_of: str, scores_dir) -> dict:
        return _apply_and_record(library, out, as_of, scores_dir)[1]

    run("2024-03-01", None)
    run("2024-03-02", None)
    summary = run("2024-03-03", tmp_path)
    assert summary["tags"]["likely"] == {
        "customers": 2,
        "entered": None,
        "left": None,
        "reads": "repurchase_90d_percentile >= 80",
    }
    assert summary["tags"]["buyer"]["entered"] == 0  # computed every time: counted
    assert run("2024-03-04", tmp_path)["tags"]["likely"]["entered"] == 0  # from here on, counted


def test_a_run_stopped_before_its_summary_still_says_which_tags_it_skipped(tmp_path):
    """The table records the tags its run skipped (written with it, in its metadata): killed
    between the table and its summary, the next run took the skipped model tag for one nobody
    held, and everyone holding it "entered" it (4,002 of 20,000 in a helper's run)."""
    from marketing.tags import previous_tags, tags_file, with_since, with_skipped

    out = tmp_path / "tags"
    out.mkdir()
    held = pd.DataFrame(
        {"customer_id": ["A", "B"], "tag": ["likely", "buyer"], "group": ["p", "p"], "kind": ["model", "rule"]}
    )
    with_since(held, None).to_parquet(tags_file(out, dt.date(2024, 3, 1)))
    without_scores = with_since(held[held["tag"] == "buyer"], None)
    with_skipped(without_scores, ["likely"]).to_parquet(tags_file(out, dt.date(2024, 3, 2)))  # no summary
    previous, day = previous_tags(out, dt.date(2024, 3, 3))
    assert day == dt.date(2024, 3, 2)
    assert sorted(previous["tag"]) == ["buyer", "likely"]  # likely carried from the run that computed it


def load_library_text(folder: Path, text: str):
    path = folder / "library.toml"
    path.write_text(text)
    return load_library(path)


def test_behaviour_terms_read_the_features_purchases_when_they_can():
    # The features' read of purchases holds category, brand, channel and payment method; a
    # product_id filter needs the purchases view, and both give the same answers.
    from marketing.behaviour import behaviour_table
    from marketing.filters import BehaviourTerm

    terms = [BehaviourTerm("purchased", (("category", "dairy"),), None, 45), BehaviourTerm("spent", (), None, 30)]
    with Population(dataset(), AS_OF) as population:
        customers = population.frame()["customer_id"]
        from_read = behaviour_table(population.con, terms, population.as_of, customers, purchases="f_purchases")
        from_view = behaviour_table(population.con, terms, population.as_of, customers)
    pd.testing.assert_frame_equal(from_read, from_view)
    assert from_read.set_index("customer_id").loc["A"].tolist() == [3.0, 35.0]


def test_segments_with_tags_build_the_features_once(monkeypatch):
    import marketing.population as population_module

    builds = []
    real = population_module.build_features
    monkeypatch.setattr(population_module, "build_features", lambda *a, **k: builds.append(1) or real(*a, **k))
    segment = Segment("d", where="purchased(category = 'dairy') > 0", tags=["buyer level: junior"])
    assert members(dataset(), segment) == ["A"]
    assert len(builds) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C1\nC2\n", ["C1", "C2"]),  # no header: the first line is an id too
        ("customer_id\nC1\nC2\n", ["C1", "C2"]),
        ("\ufeffCustomer_ID \r\n C1\r\nC2\r\n", ["C1", "C2"]),  # BOM, case, spaces, CRLF
        ("name,customer_id\nx,C1\ny,C2\n", ["C1", "C2"]),
        ("id\nC1\n", ["id", "C1"]),  # another header is read as an id: the caller reports it unknown
    ],
)
def test_id_files_never_lose_their_first_id(tmp_path, text, expected):
    path = tmp_path / "ids.csv"
    path.write_bytes(text.encode())
    assert manual.read_ids(path).tolist() == expected


def test_id_files_without_ids_or_with_several_unnamed_columns_are_errors(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("customer_id\n")
    with pytest.raises(PortraitError, match="no customer ids in the file"):
        manual.read_ids(path)
    path.write_text("a@example.com,C1\n")
    with pytest.raises(PortraitError, match=r"2 fields and no customer_id\)$") as caught:
        manual.read_ids(path)
    assert "example.com" not in str(caught.value)


def test_a_failed_segment_is_named_once():
    from marketing.segments import failures_message

    failed = [("b", "segment 'b': unknown column 'x'"), ("c", "no purchases row before 2024-03-01")]
    assert failures_message(failed) == (
        "segment 'b': unknown column 'x'; segment 'c': no purchases row before 2024-03-01"
    )


def test_what_a_tag_reads_is_its_condition_its_each_column_or_its_levels_feature():
    library = load_library()
    assert library.reads("promotion-sensitive") == "discount_order_share >= 0.5 and orders_lifetime >= 3"
    assert library.reads("interest: BEEF") == "favourite_category != 'other' favourite_category"
    assert library.reads("spending power: high") == "spend_365d"
    assert library.reads("VIP") == "" and library.reads("no such tag") == ""  # manual; unknown


def test_a_tag_everyone_left_since_the_last_run_is_said(tmp_path):
    from marketing.tags import previous_tags, tags_file, tags_summary, with_since

    library = load_library_text(
        tmp_path, '[groups.p]\n[[tags]]\nname = "recent"\ngroup = "p"\nwhere = "days_since_last_purchase <= 7"\n'
    )
    out = tmp_path / "tags"
    out.mkdir()

    def run(as_of: str) -> dict:
        with Population(dataset(), as_of) as population:
            applied = apply_tags(library, population)
        day = dt.date.fromisoformat(as_of)
        previous, previous_date = previous_tags(out, day)
        tags = with_since(applied.tags, previous)
        tags.to_parquet(tags_file(out, day))
        return tags_summary(library, applied, tags, day, previous, previous_date)

    assert run("2024-03-01")["tags"]["recent"]["customers"] == 2  # A (02-25) and C (02-28)
    later = run("2024-03-20")
    assert later["tags"]["recent"] == {
        "customers": 0,
        "entered": 0,
        "left": 2,
        "reads": "days_since_last_purchase <= 7",
    }
    # no value named: no question about values (a manual tag's reason: the next test)
    assert later["notes"] == ["tag 'recent': nobody holds it now; 2 held it on 2024-03-01"]


def test_a_tag_redefined_or_dropped_since_the_previous_run_is_said_not_counted(tmp_path):
    """A library edit between runs (lapsing's threshold moved) was published as customers
    entering and leaving (254 entered), and a tag renamed away as everyone leaving it."""
    from marketing.tags import write_tags

    def library(days: int, extra: str = ""):
        text = f'[groups.p]\n[[tags]]\nname = "recent"\ngroup = "p"\nwhere = "days_since_last_purchase <= {days}"\n'
        folder = tmp_path / f"lib{days}{len(extra)}"
        folder.mkdir()
        return load_library_text(folder, text + extra)

    out = tmp_path / "tags"
    out.mkdir()
    old = library(7, '[[tags]]\nname = "old"\ngroup = "p"\nwhere = "orders_lifetime >= 1"\n')
    for lib, as_of in ((old, "2024-03-01"), (library(30), "2024-03-02")):
        with Population(dataset(), as_of) as population:
            applied = apply_tags(lib, population)
        _, summary, _ = write_tags(lib, applied, dt.date.fromisoformat(as_of), out, out)
    assert (summary["tags"]["recent"]["entered"], summary["tags"]["recent"]["left"]) == (None, None)
    assert summary["notes"] == [
        "tag 'old': nobody holds it now; 3 held it on 2024-03-01 (it is no longer in the tag library)",
        "tag 'recent': its definition changed since the run of 2024-03-01 (it read days_since_last_purchase <= 7; "
        "now days_since_last_purchase <= 30): who entered and left is not counted across the change",
    ]


def test_a_manual_tag_everyone_left_is_said_to_have_expired(tmp_path):
    from marketing.tags import tags_summary

    library = load_library_text(tmp_path, '[groups.v]\n[[tags]]\nname = "VIP"\ngroup = "v"\nkind = "manual"\n')
    (tmp_path / "d").mkdir()
    dairy = load_library_text(
        tmp_path / "d", '[groups.p]\n[[tags]]\nname = "dairy"\ngroup = "p"\nwhere = "favourite_category = \'Dairy\'"\n'
    )
    retail = load_library()  # the shipped library: RFM groups, levels and `each` tags
    for lib, name, why in (
        (library, "VIP", " (its assignments expired or were removed: tags assign gives it again)"),
        (dairy, "dairy", " (does a value it names no longer occur, or no longer rank among the top ones?)"),
        # a group's tag (not one of the library's tags: it stopped the summary with an error)
        (retail, "RFM: Champions", ""),
        (retail, "interest: Dairy", " (does a value it names no longer occur, or no longer rank among the top ones?)"),
    ):
        before = pd.DataFrame({"customer_id": ["A"], "tag": [name], "group": ["g"], "kind": ["x"], "since": ["d"]})
        applied = SimpleNamespace(tags=before.iloc[:0], skipped=(), customers=3, coverage={}, notes=[])
        summary = tags_summary(lib, applied, before.iloc[:0], dt.date(2024, 3, 20), before, dt.date(2024, 3, 1))
        assert summary["notes"] == [f"tag {name!r}: nobody holds it now; 1 held it on 2024-03-01{why}"]


def test_writes_to_the_manual_tags_log_wait_for_each_other(tmp_path):
    """Without a lock two assignments at once each rewrote the log they had read (8 at once kept
    20 of 40 rows), and one read before a forget and written after it brought the person back."""
    import threading

    store = tmp_path / "manual.parquet"
    ids = pd.Series(["A"])
    with manual.store_lock(store):  # another command's write, in progress
        waiting = threading.Thread(target=manual.record, args=(store, "assign", "VIP", ids, ids))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not store.exists()
    waiting.join(30)
    writers = [
        threading.Thread(
            target=manual.record, args=(store, "assign", f"T{i}", pd.Series([f"C{i}"]), pd.Series([f"C{i}"]))
        )
        for i in range(8)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert sorted(manual.read_log(store)["tag"]) == ["T0", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "VIP"]
    with manual.store_lock(store):  # a forget waits as well
        forgetting = threading.Thread(target=manual.forget_ids, args=(store, ["A"]))
        forgetting.start()
        forgetting.join(0.5)
        assert forgetting.is_alive()
    forgetting.join(30)
    assert "A" not in set(manual.read_log(store)["customer_id"])


def test_a_segment_refresh_stopped_between_its_writes_is_repaired_by_running_it_again(tmp_path, monkeypatch):
    """Stopped after the history was written and before the members: the members are still the
    earlier date's, and running the date again counts entered and left against them (written
    the other way round, the re-run found its own members and lost entered and left for good)."""
    import marketing.segments as segments

    store = SegmentStore(tmp_path)
    store.save(Segment("dairy", where="purchased(category = 'dairy') > 0"))
    with Population(dataset(), AS_OF) as population:
        record_refresh(store, SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy")))
    with Population(dataset(later=True), "2024-03-04") as population:
        later = SegmentEvaluator(population, store, load_library()).evaluate(store.load("dairy"))
    written, calls = segments.atomic_write, []

    def stopped_at_the_second_write(frame, path, **options):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return written(frame, path, **options)

    monkeypatch.setattr(segments, "atomic_write", stopped_at_the_second_write)
    with pytest.raises(KeyboardInterrupt):
        record_refresh(store, later)
    monkeypatch.setattr(segments, "atomic_write", written)
    again = record_refresh(store, later)
    assert (again["customers"], again["entered"], again["left"]) == (4, 2, 0)
    assert store.history("dairy")["entered"].tolist()[-1] == 2
    import threading

    def record_after_the_other():
        with store.recording():
            pass

    with store.recording():  # another refresh recording: this one waits, then records
        waiting = threading.Thread(target=record_after_the_other)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()
    waiting.join(30)
    assert not waiting.is_alive()


def test_a_tag_name_in_another_case_is_suggested(tmp_path):
    """`tags assign vip` found no 'vip' and suggested nothing: difflib compares with case."""
    library = load_library_text(
        tmp_path, '[groups.s]\n[[tags]]\nname = "VIP"\ngroup = "s"\nkind = "manual"\ndescription = "by hand"\n'
    )
    with pytest.raises(PortraitError, match=r"no tag 'vip' in .*; did you mean \['VIP'\]\?$"):
        library.tag("vip")
    with pytest.raises(PortraitError, match=r"no tag 'Vip' in .*; did you mean \['VIP'\]\?$"):
        library.check_tag("Vip")
