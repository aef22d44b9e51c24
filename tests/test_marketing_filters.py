"""The condition language: grammar, bounds, type checks, behaviour terms."""

from __future__ import annotations

import pandas as pd
import pytest

from marketing.filters import BehaviourTerm, FilterError, Schema, evaluate, parse_condition, parse_filter

SCHEMA = Schema({"spend_365d": "number", "customer_id": "text", "favourite_category": "text", "orders_90d": "number"})


def test_is_null_and_is_not_null_by_hand():
    frame = pd.DataFrame({"spend_365d": [1.0, None, 3.0], "favourite_category": ["a", None, "b"]})
    schema = Schema.of_frame(frame)
    assert evaluate(parse_filter("spend_365d is null", schema), frame).tolist() == [False, True, False]
    assert evaluate(parse_filter("favourite_category is not null and spend_365d > 2", schema), frame).tolist() == [
        False,
        False,
        True,
    ]


def test_true_and_false_are_one_and_zero_of_a_yes_no_number_column():
    """Refused where they compare in order or with text, they stay 1 and 0 with = and <>: a saved
    segment's ``newsletter = true`` on a 0/1 column keeps its members."""
    frame = pd.DataFrame({"newsletter": [1, 0, None], "region": ["true", "false", "true"]})
    schema = Schema.of_frame(frame)
    assert evaluate(parse_filter("newsletter = true", schema), frame).tolist() == [True, False, False]
    assert evaluate(parse_filter("newsletter <> true", schema), frame).tolist() == [False, True, False]
    assert evaluate(parse_filter("newsletter in (false)", schema), frame).tolist() == [False, True, False]
    assert evaluate(parse_filter("region = 'true'", schema), frame).tolist() == [True, False, True]


@pytest.mark.parametrize(
    "text, message",
    [
        ("(" * 45 + "spend_365d > 1" + ")" * 45, "nests parentheses 45 deep"),
        ("not " * 100 + "spend_365d > 1", "100 'not's"),
        (" or ".join(["spend_365d > 1"] * 1000), "joins 999 parts"),
        ("spend_365d > 1" + " " * 30_000, "characters long"),
        ("spend_365d between 'a' and 'z'", "compares text with a number: spend_365d is number"),
        ("customer_id = 1020", "quote the value: customer_id = '...'"),
        ("favourite_category in ('a', 2)", "compares text with a number"),
        ("spend_365d", "on its own is not a condition"),
        ("lower(favourite_category) = 'x'", r"^lower\(\.\.\.\) is not a function a condition can use"),
        # operators the parser reads as functions the marketer never wrote (was "abs(...) is not a function")
        ("@spend_365d > 1", r"^arithmetic and other operators \(such as @, \^, \*\*, ::, ->\) are not part of"),
        ("spend_365d in (1, 2) and spend_365d ^ 2 > 1", r"^arithmetic and other operators"),
        ("pow(spend_365d, 2) > 1", r"^pow\(\.\.\.\) is not a function a condition can use"),
        # no behaviour in a list's --where: where it is (the message said "is not a value")
        (
            "purchased(within_days = 3) > 0",
            r"^purchased\(\.\.\.\) is not available in a list's filter.*--segment NAME\)$",
        ),
        ("purchased(within_days = 3)", r"^purchased\(\.\.\.\) is not available in a list's filter"),
        # a date is shown as written (the message echoed "CAST('2017-01-01' AS DATE)")
        ("spend_365d > date '2017-01-01'", r"^a date \('2017-01-01'\) is not a value a condition takes: dates are"),
        # double quotes name a column, as in SQL
        ('favourite_category = "Dairy"', r"^unknown column 'Dairy'; a text value takes single quotes: 'Dairy'$"),
        ("spend_365d is 3", "only 'is null'"),
        ("1 = 1", "compares two values"),
        ("spend_365d > 1e999", "not a finite number"),
        # an escape string: the message said "'' is not a value or a column name"
        (
            "spend_365d > e'1'",
            r"^an escape or byte string \(e'\.\.\.', b'\.\.\.'\) is not a value; write text as 'text'$",
        ),
        ("spend_365d > 1; drop table x", "';' is not allowed"),
        # "= null" matches nobody in SQL (it said "'NULL' is not a value or a column name")
        (
            "favourite_category = null",
            r"^NULL is not a value to compare with: write column is null \(or is not null\)$",
        ),
        # an attribute named as personal data: withheld, not "unknown" with other attributes suggested
        (
            "attr_email = 'x'",
            r"^unknown column 'attr_email'; email is personal data by its name: such a customers column is withheld",
        ),
        # true and false are 1 and 0 of a yes/no number column: ordered, or beside text, refused
        # ("spend_365d > true" counted spend above 1)
        ("spend_365d > true", r"^'spend_365d > TRUE': true compares only with = or <> \(1 or 0 of a yes/no column\)"),
        ("spend_365d between false and true", r"false compares only with = or <>"),
        ("favourite_category = false", r"^'favourite_category = FALSE': favourite_category is text; quote the value: "),
        ("favourite_category in (true)", r"favourite_category is text; quote the value: favourite_category = 'true'"),
        # a quote not closed was "Error tokenizing ''; DROP TABLE x; -'"
        ("'; DROP TABLE x; --", r"^the quote ' at character 1 is not closed: write text as 'text'"),
        ("favourite_category = 'Dairy", r"^the quote ' at character 22 is not closed"),
        # at the very end sqlglot names nothing (an index error): found by reading the quotes
        ("favourite_category = 'O'Brien'", r"^the quote ' at character 30 is not closed"),
        ("favourite_category = '", r"^the quote ' at character 22 is not closed"),
        ('favourite_category = "', r"^the quote \" at character 22 is not closed"),
        ("spend_365d > 1\nand favourite_category = 'Dairy", r"^the quote ' at character 41 is not closed"),
        ("spend_365d >= 0 -- and spend_365d > 1000000000", r"comments \(-- or /\* \*/\) are not allowed"),
        ("spend_365d >= 0 /* and spend_365d > 9 */", r"comments \(-- or /\* \*/\) are not allowed"),
        ("favourite_category in ()", "an empty list"),
        ("spend_356d > 1", r"unknown column 'spend_356d'; did you mean one of \['spend_365d'"),
        (
            "repurchase_90d_percentile > 50",
            r"unknown column .*; a model's output is read from scores that hold it \(scored with that model: a "
            r"command's --scores DIR, the server's scores for the API\)$",
        ),
        (  # an attribute the scoring model left out (its families): said where it is
            "attr_gendr = 'F'",
            r"^unknown column 'attr_gendr'; a customers attribute is a column where the customers table has it \(in a "
            r"list: where the scoring model read the attributes family; a segment reads the data set itself",
        ),
        (
            "favourite_category ~ 'x'",
            r"^pattern matching \(~, LIKE, regular expressions\) is not available in a condition; compare with =",
        ),
        # where the parser stopped, in words (not sqlglot's "Required keyword ... <class ...>")
        ("spend_365d between 5 and", r"cannot parse condition .*: something is missing at 'and' \(character 24\)$"),
        ("(spend_365d > 1", r"cannot parse condition .*: Expecting \) at '1' \(character 15\)$"),
        # two words side by side were read as an alias ("0 AS x10") and shown so
        ("spend_365d > 0x10", r"'spend_365d > 0' is followed by 'x10' .*; numbers are written in decimal$"),
        ("spend_365d > 5\uff09", r"'spend_365d > 5' is followed by '\uff09' with nothing between them \(.*\?\)$"),
    ],
)
def test_filters_are_bounded_and_type_checked(text, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(text, SCHEMA)


def test_behaviour_calls_become_terms_with_their_arguments():
    condition = parse_condition(
        "purchased(category = 'Dairy', within_days = 45) >= 2 and spent(within_days = 30) > 100 "
        "and events('View', within_days = 14) >= 3 and not purchased(within_days = 14)",
        SCHEMA,
        behaviour=True,
    )
    assert condition.terms == [
        BehaviourTerm("purchased", (("category", "Dairy"),), None, 45),
        BehaviourTerm("spent", (), None, 30),
        BehaviourTerm("events", (), "view", 14),
        BehaviourTerm("purchased", (), None, 14),
    ]
    # the bare call in a boolean position means "at least one"
    assert f"NOT {condition.terms[3].column} > 0" in condition.tree.sql()


@pytest.mark.parametrize(
    "text, message",
    [
        ("purchased(within_days = 0) > 0", "at least 1 day, got 0"),
        ("purchased(within_days = -5) > 0", "at least 1 day, got -5"),
        ("purchased(within_days = 2.5) > 0", "whole number of days"),
        # 1.0 as a float: the fraction was lost without a word
        ("purchased(within_days = 0.99999999999999999999) > 0", "whole number of days, got 0.99999999999999999999"),
        ("purchased(within_days = '30') > 0", "whole number of days"),
        ("purchased(category = (select 1)) > 0", "must be quoted text"),
        ("purchased(colour = 'red') > 0", "not 'colour'"),
        ("events(within_days = 3) > 0", "needs an event type first"),
        ("spent(category = 'a', category = 'b') > 0", "category is given twice"),
        # the last of two windows silently won
        ("purchased(within_days = 30, within_days = 40) >= 1", "within_days is given twice"),
        ("events('view', type = 'search') > 0", "the event type is given twice"),
        (
            "sleep(5) > 0",
            r"^sleep\(\.\.\.\) is not a function a condition can use; the functions a condition can use are",
        ),
        # a hint that works when followed (it said "compare it, e.g. TAG('VIP') > 0", which then failed)
        ("tag('VIP')", r"^tag\(\.\.\.\) is not a function a condition can use"),
        # an operator beside a call a condition takes, or beside parentheses in quoted text: not
        # "purchased(...) is not a function" or "home(...) is not a function"
        ("purchased(within_days = 30) > 0 and @orders_365d > 1", r"^arithmetic and other operators"),
        ("favourite_category = 'Home (garden)' and @orders_365d > 1", r"^arithmetic and other operators"),
        # a term is a number, named by its call (was a runtime error naming an internal column)
        (
            "spent(within_days = 30) > 'abc'",
            r"^\"SPENT\(within_days = 30\) > 'abc'\" compares text with a number: spent\(within_days = 30\) is number; "
            r"compare it with a number \(no quotes\)$",
        ),
    ],
)
def test_behaviour_calls_are_checked(text, message):
    with pytest.raises(FilterError, match=message):
        parse_condition(text, SCHEMA, behaviour=True)


def test_the_same_call_is_the_same_column():
    a = parse_condition("purchased(within_days = 7) > 0", SCHEMA, behaviour=True).terms[0]
    b = parse_condition("purchased(within_days = 7) >= 3", SCHEMA, behaviour=True).terms[0]
    c = parse_condition("purchased(within_days = 8) >= 3", SCHEMA, behaviour=True).terms[0]
    assert a.column == b.column != c.column


def test_quoted_text_stays_a_value_however_it_looks():
    hostile = "x'); drop table purchases; --"
    condition = parse_condition("purchased(category = 'x''); drop table purchases; --') > 0", SCHEMA, behaviour=True)
    assert condition.terms[0].filters == (("category", hostile),)  # a bound parameter later, never SQL text


def test_behaviour_terms_sum_a_persons_merged_ids_in_the_order_asked():
    # a-web is merged into A (a shared email): A's terms count both ids' rows, under A only.
    from marketing.behaviour import behaviour_table
    from marketing.population import Population
    from portrait.dataset import Dataset

    purchases = pd.DataFrame(
        [
            ("o1", "A", "2024-02-20 10:00:00", 10.0, "Dairy"),
            ("o2", "a-web", "2024-02-21 10:00:00", 5.0, "dairy "),
            ("o3", "B", "2024-02-22 10:00:00", 7.0, "bakery"),
        ],
        columns=["order_id", "customer_id", "ts", "amount", "category"],
    )
    events = pd.DataFrame(
        [
            ("A", "2024-02-25 09:00:00", "view"),
            ("a-web", "2024-02-26 09:00:00", " View"),
            ("a-web", "2024-01-01 09:00:00", "view"),  # outside the 30 days
            ("a-web", "2024-03-01 00:00:00", "view"),  # at the as-of date
            ("B", "2024-02-27 09:00:00", "add_to_cart"),
        ],
        columns=["customer_id", "ts", "event_type"],
    )
    identities = pd.DataFrame({"customer_id": ["A", "a-web"], "id_type": ["email", "email"], "id_value": ["x", "x"]})
    dataset = Dataset.from_frames(purchases=purchases, events=events, identities=identities)
    terms = [
        BehaviourTerm("events", (), "view", 30),
        BehaviourTerm("purchased", (("category", "dairy"),), None, 30),
        BehaviourTerm("spent", (), None, 30),
    ]
    with Population(dataset, "2024-03-01") as population:
        customers = pd.Series(["Z", "B", "A"])  # Z is unknown: zeros
        table = behaviour_table(population.con, terms, population.as_of, customers, purchases="f_purchases")
    assert table["customer_id"].tolist() == ["Z", "B", "A"]
    values = table[[t.column for t in terms]].to_numpy().tolist()
    assert values == [[0.0, 0.0, 0.0], [0.0, 0.0, 7.0], [2.0, 2.0, 15.0]]


def test_a_value_a_column_never_holds_is_refused_and_a_case_slip_of_a_current_one_too():
    schema = Schema(
        {"rfm_group": "text", "favourite_category": "text"},
        values={"rfm_group": ("Champions", "Loyal")},
        current={"favourite_category": ("BEEF", "other")},
    )
    with pytest.raises(FilterError, match=r"rfm_group has no value 'Champion'; did you mean 'Champions'\?"):
        parse_condition("rfm_group = 'Champion'", schema)
    with pytest.raises(FilterError, match=r"rfm_group has no value 'loyal '; did you mean 'Loyal'\?"):
        parse_condition("rfm_group in ('Champions', 'loyal ')", schema)
    with pytest.raises(FilterError, match=r"favourite_category has no value 'beef'; did you mean 'BEEF'\?"):
        parse_condition("'beef' != favourite_category", schema)
    # not among today's top categories is no error: a saved segment keeps refreshing as the top moves
    assert parse_condition("favourite_category = 'TOYS' or rfm_group = 'Loyal'", schema).columns == [
        "favourite_category",
        "rfm_group",
    ]
    assert schema.absent == [("favourite_category", "TOYS")]  # a list may say why it is empty


def test_a_feature_name_written_before_the_rename_is_told_its_new_name():
    schema = Schema(
        {"category_share_susswaren": "number"}, renamed={"category_share_s_waren": "category_share_susswaren"}
    )
    with pytest.raises(
        FilterError,
        match=r"^unknown column 'category_share_s_waren': since 2026-12-06 it is 'category_share_susswaren' .*"
        r"segment create NAME --replace",
    ):
        parse_condition("category_share_s_waren > 0.2", schema)
    assert parse_condition("category_share_susswaren > 0.2", schema) is not None
