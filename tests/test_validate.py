import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.build import build_features
from portrait.dataset import Dataset, open_dataset
from portrait.errors import ConfigError, ContractError
from portrait.validate import checked, validate
from tests.conftest import write_tables

GOOD = {"order_id": "o1", "customer_id": "a", "ts": "2024-01-05 10:00:00", "amount": "12.50"}


def purchases(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **row} for row in rows])


def test_each_row_problem_is_counted_by_reason_and_quarantined(tmp_path, monkeypatch):
    frame = purchases(
        {},  # good
        {"order_id": "o2"},  # good
        {"order_id": "o2"},  # exact copy of the line above: duplicate_line
        {"customer_id": None},  # missing_customer_id
        {"customer_id": "   "},  # blank counts as missing
        {"ts": "5th of May"},  # unparseable_ts
        {"amount": "twelve"},  # non_numeric_amount
        {"order_id": "o3", "discount": "-1"},  # negative_discount
        {"order_id": "o4", "discount": "2"},  # good
        {"order_id": "o5", "quantity": "-1", "amount": "5.00"},  # negative_quantity_positive_amount
        {"order_id": "o6", "quantity": "-1", "amount": "-5.00"},  # good: a return
        {"order_id": "o7", "quantity": "1", "amount": "-5.00"},  # good: a refund of one unit
        {"order_id": "o8", "quantity": "0", "amount": "5.00"},  # good: sold by weight
    )
    folder = write_tables(tmp_path / "data", purchases=frame)
    report = validate(open_dataset(folder), tmp_path / "out")
    table = report.tables[0]
    assert table.rows == 13
    assert table.valid_rows == 6
    assert table.quarantined == {
        "duplicate_line": 1,
        "missing_customer_id": 2,
        "negative_discount": 1,
        "non_numeric_amount": 1,
        "negative_quantity_positive_amount": 1,
        "unparseable_ts": 1,
    }
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine" / "purchases.parquet")
    assert quarantine["_rows"].sum() == 7  # every bad row accounted for: 6 + 7 == 13
    bad_ts = quarantine[quarantine["_reject_reason"] == "unparseable_ts"]
    assert bad_ts["ts"].tolist() == ["5th of May"]  # the raw value is kept for inspection
    assert (tmp_path / "out" / "report.json").exists()
    # The data corrected and validated into the same folder: the old quarantine goes too.
    write_tables(tmp_path / "data", purchases=purchases({}))
    # ... and stopped while writing its report, it leaves no report of the old quarantine (which
    # is gone): the old report said 7 rows were in quarantine/purchases.parquet
    import portrait.validate as validate_module

    def stopped(text, path, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(validate_module, "atomic_write_text", stopped)
        with pytest.raises(KeyboardInterrupt):
            validate(open_dataset(folder), tmp_path / "out")
    assert not (tmp_path / "out" / "quarantine" / "purchases.parquet").exists()
    assert not (tmp_path / "out" / "report.json").exists()
    assert validate(open_dataset(folder), tmp_path / "out").quarantined_rows == 0
    assert not (tmp_path / "out" / "quarantine" / "purchases.parquet").exists()
    # Another data set's quarantine of a table this one does not have goes too (it stayed, its
    # rows beside a report saying nothing was quarantined)
    (tmp_path / "out" / "quarantine").mkdir(exist_ok=True)
    pd.DataFrame({"customer_id": ["x"], "_reject_reason": ["malformed_row"]}).to_parquet(
        tmp_path / "out" / "quarantine" / "customers.parquet"
    )
    assert validate(open_dataset(folder), tmp_path / "out").quarantined_rows == 0
    assert not list((tmp_path / "out" / "quarantine").iterdir())


def test_nothing_is_written_to_quarantine_when_all_rows_are_good(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    report = validate(open_dataset(folder), tmp_path / "out")
    assert report.quarantined_rows == 0
    assert not (tmp_path / "out" / "quarantine").exists()


def test_a_log_of_dates_without_times_is_said(tmp_path):
    dates = write_tables(
        tmp_path / "dates", purchases=purchases({"ts": "2024-01-01"}, {"order_id": "o2", "ts": "2024-01-02"})
    )
    note = [n for n in validate(open_dataset(dates)).notes if "every time is midnight" in n]
    assert note == [
        "purchases: every time is midnight (dates without a time of day): the features of the time of day (the "
        "shares of orders at night, in the morning, afternoon and evening) are left empty, and crowd reports "
        "give no time of day"
    ]
    timed = write_tables(
        tmp_path / "timed", purchases=purchases({"ts": "2024-01-01"}, {"order_id": "o2", "ts": "2024-01-02 09:30"})
    )
    # one date without a time beside a timed line: not every time is midnight, but that one may be a date
    notes = [n for n in validate(open_dataset(timed)).notes if "midnight" in n]
    assert len(notes) == 1 and notes[0].startswith("purchases: 1 of 2 lines (50.0%) are at midnight exactly")


def test_missing_required_table_is_a_hard_error(tmp_path):
    folder = write_tables(tmp_path / "data", events=pd.DataFrame({"customer_id": ["a"]}))
    with pytest.raises(ContractError, match="required table 'purchases' not found"):
        open_dataset(folder)


def test_missing_required_column_names_table_and_column(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}).drop(columns="amount"))
    with pytest.raises(ContractError, match=r"purchases\.amount: required column 'amount' is missing"):
        validate(open_dataset(folder))
    # A column the contract does not know is offered as the one to name in portrait.toml.
    renamed = purchases({}).rename(columns={"amount": "revenue"})
    folder = write_tables(tmp_path / "other", purchases=renamed)
    with pytest.raises(ContractError, match=r"\[tables\.purchases\.columns\] amount = \"revenue\""):
        validate(open_dataset(folder))


def test_a_column_that_is_mostly_unparseable_is_a_hard_error_with_examples(tmp_path):
    frame = purchases(*[{"ts": f"day {i}"} for i in range(5)], {})
    folder = write_tables(tmp_path / "data", purchases=frame)
    with pytest.raises(ContractError, match=r"(?s)purchases\.ts: 5 of 6 values cannot be parsed.*example rows:.*day 0"):
        validate(open_dataset(folder))
    # an example row's values that hold an e-mail address or a phone number are withheld (the
    # message reaches the terminal, a refresh's log and its manifest)
    contacts = ["john.doe@example.com", "call +44 7700 900555", "Toys"]
    frame = purchases(*[{"ts": f"day {i}", "category": contacts[i % 3]} for i in range(5)], {})
    folder = write_tables(tmp_path / "contacts", purchases=frame)
    with pytest.raises(ContractError) as error:
        validate(open_dataset(folder))
    shown = str(error.value)
    assert "example.com" not in shown and "7700" not in shown
    assert shown.count("'category': '(withheld: personal data)'") == 2 and "'category': 'Toys'" in shown
    assert "'ts': 'day 0'" in shown
    # Decimal commas: the message names the setting that reads them (decimal = ","), not the
    # timestamp format (it named it for a number column).
    frame = purchases(*[{"amount": f"{i},50"} for i in range(5)], {})
    folder = write_tables(tmp_path / "commas", purchases=frame)
    (folder / "portrait.toml").write_text('[tables.purchases]\ntimestamp_format = "%Y-%m-%d %H:%M:%S"\n')
    with pytest.raises(
        ContractError,
        match=r"purchases\.amount: 5 of 6 values cannot be parsed as a number; .*"
        r"For a comma \('21,99'\), set decimal = \",\" in the \[tables\.purchases\] section of portrait\.toml",
    ):
        validate(open_dataset(folder))


def test_numbers_with_a_decimal_comma_are_read_with_the_setting_and_anything_else_quarantined(tmp_path):
    """A European export: ``12,50``. With decimal = "," a point, a thousands separator or a
    currency sign does not parse (quarantined, counted), rather than be guessed."""
    lines = [
        "order_id;customer_id;ts;amount;quantity;discount",
        "o1;c1;2024-01-05;12,50;2;0,5",
        "o2;c1;2024-01-06;-3;1;",
        "o3;c2;2024-01-07;,75;1;0",
        "o4;c2;2024-01-08;1.234,50;1;0",  # thousands separator: not guessed
        "o5;c3;2024-01-09;21.99;1;0",  # a point under decimal = ","
        "o6;c3;2024-01-10;3,00 EUR;1;0",
    ]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "purchases.csv").write_text("\n".join(lines) + "\n")
    (folder / "portrait.toml").write_text('[tables.purchases]\ndelimiter = ";"\ndecimal = ","\n')
    dataset = open_dataset(folder)
    report = validate(dataset)
    assert report.tables[0].valid_rows == 3 and report.tables[0].quarantined == {"non_numeric_amount": 3}
    con = dataset.connect()
    try:
        rows = con.execute("SELECT order_id, amount, discount FROM purchases ORDER BY order_id").fetchall()
    finally:
        con.close()
    assert rows == [("o1", 12.5, 0.5), ("o2", -3.0, None), ("o3", 0.75, 0.0)]
    # the customers table's numbers too (an income of 3600,15 read as one category per customer)
    incomes = ["3600,15", "1086,5", "20"] + [f"{100 * (i % 12)},5" for i in range(27)]  # 15 values, 30 people
    (folder / "customers.csv").write_text(
        "customer_id;income\n" + "".join(f"c{i + 1};{v}\n" for i, v in enumerate(incomes))
    )
    (folder / "portrait.toml").write_text(
        '[tables.purchases]\ndelimiter = ";"\ndecimal = ","\n[tables.customers]\ndelimiter = ";"\ndecimal = ","\n'
    )
    with_customers = open_dataset(folder)
    from features.build import attribute_kinds

    con = with_customers.connect()
    try:
        assert attribute_kinds(con, ",")["income"] == "number"
    finally:
        con.close()
    frame = build_features(with_customers, "2024-02-01").set_index("customer_id")
    assert frame.loc["c1", "attr_income"] == 3600.15 and frame.loc["c2", "attr_income"] == 1086.5
    for setting, said in (
        ('decimal = "x"', r'decimal must be "\." or ",", got \'x\''),
        ('delimiter = ","\ndecimal = ","', "decimal and delimiter are both ','"),
    ):
        (folder / "portrait.toml").write_text(f"[tables.purchases]\n{setting}\n")
        with pytest.raises(ConfigError, match=said):
            open_dataset(folder)


def test_an_empty_purchases_table_is_a_hard_error(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}).iloc[0:0])
    with pytest.raises(ContractError, match="purchases table has no rows"):
        validate(open_dataset(folder))


def test_config_renames_columns_and_reads_other_timestamp_formats(tmp_path):
    export = pd.DataFrame(
        {
            "InvoiceNo": ["i1", "i2"],
            "CustomerID": ["c1", "c2"],
            "When": ["05/01/2024", "06/01/2024"],
            "amount": ["1.5", "2"],
        }
    )
    folder = tmp_path / "data"
    folder.mkdir()
    export.to_csv(folder / "sales_export.csv", index=False)
    (folder / "portrait.toml").write_text(
        '[tables.purchases]\nfile = "sales_export.csv"\ntimestamp_format = "%d/%m/%Y"\n'
        '[tables.purchases.columns]\norder_id = "InvoiceNo"\ncustomer_id = "CustomerID"\nts = "When"\n'
    )
    con = open_dataset(folder).connect()
    rows = con.execute("SELECT order_id, customer_id, ts, amount FROM purchases ORDER BY 1").fetchall()
    assert [(r[0], r[1], str(r[2]), r[3]) for r in rows] == [
        ("i1", "c1", "2024-01-05 00:00:00", 1.5),
        ("i2", "c2", "2024-01-06 00:00:00", 2.0),
    ]


def test_a_table_file_that_is_a_folder_is_named_as_such(tmp_path):
    folder = tmp_path / "data"
    (folder / "purchases.csv").mkdir(parents=True)
    with pytest.raises(ContractError, match=r"purchases\.csv is a folder, not a file: .* a folder named purchases/"):
        open_dataset(folder)


def test_config_with_an_unknown_key_is_refused(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    (folder / "portrait.toml").write_text("[tables.purchases]\ncolumns = {}\ncolumn_map = {}\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['column_map'\]"):
        open_dataset(folder)


@pytest.mark.parametrize(
    ("settings", "message"),
    [  # each was a TypeError or NotImplementedError traceback
        ('delimiter = ";;"', "delimiter must be one character such as .* got ';;'"),
        ('file = "/etc/passwd"', "file '/etc/passwd' must be inside the data set folder"),
        ('file = "../elsewhere.csv"', "file '../elsewhere.csv' must be inside the data set folder"),
        ("file = 5", "file must be a file name or pattern in the folder"),
        ("timestamp_format = 5", "timestamp_format must be text, got 5"),
        ("columns = { ts = 5 }", r"\.columns must map contract names to the export's column names"),
    ],
)
def test_table_settings_of_the_wrong_kind_are_refused_naming_them(tmp_path, settings, message):
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    (folder / "portrait.toml").write_text(f"[tables.purchases]\n{settings}\n")
    with pytest.raises(ConfigError, match=message):
        open_dataset(folder)


def test_a_header_read_as_one_column_names_the_delimiter_to_set(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    (folder / "portrait.toml").write_text('[tables.purchases]\ndelimiter = "|"\n')
    with pytest.raises(ContractError, match=r"the header was read as one column: is the file separated by ','\?"):
        validate(open_dataset(folder))


def test_excels_separator_line_is_named_as_what_to_delete(tmp_path):
    """A first line ``sep=;`` (Excel's) is read as the header: the message proposed mapping
    order_id to 'column1', which cannot work."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "purchases.csv").write_text("sep=;\norder_id;customer_id;ts;amount\nO1;C1;2024-01-02;5\n")
    with pytest.raises(ContractError, match=r"the file starts with Excel's 'sep=' line, read as its header: delete"):
        validate(open_dataset(folder))


def test_one_export_column_read_as_two_contract_columns_is_refused(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    (folder / "portrait.toml").write_text('[tables.purchases.columns]\norder_id = "customer_id"\n')
    with pytest.raises(
        ContractError, match="column 'customer_id' of .* would be read as both order_id and customer_id"
    ):
        validate(open_dataset(folder))


def test_config_renaming_a_column_the_contract_lacks_is_refused(tmp_path):
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    (folder / "portrait.toml").write_text('[tables.purchases.columns]\nprice = "Price"\n')
    with pytest.raises(ConfigError, match="renames 'price', which is not a contract column"):
        open_dataset(folder)


def test_an_optional_column_mapped_to_a_name_the_file_lacks_is_refused_not_read_as_absent(tmp_path):
    """``quantity = "Mengen"`` for a header saying ``Menge``: the column read as absent, every
    quantity empty and a negative quantity's line counted as a sale, without a word."""
    frame = purchases({"quantity": -1.0}, {}).rename(columns={"quantity": "Menge"})
    folder = write_tables(tmp_path / "data", purchases=frame)
    (folder / "portrait.toml").write_text('[tables.purchases.columns]\nquantity = "Mengen"\n')
    with pytest.raises(
        ContractError,
        match=r"column 'quantity' is mapped to 'Mengen' in portrait.toml, which is not a column of .*; "
        r"did you mean 'Menge'\? Its columns are \[.*\] \(remove the mapping if the export has no quantity\)",
    ):
        validate(open_dataset(folder))
    (folder / "portrait.toml").write_text('[tables.purchases.columns]\nquantity = "Menge"\n')
    assert validate(open_dataset(folder)).tables[0].quarantined == {"negative_quantity_positive_amount": 1}


def test_a_required_column_mapped_to_a_name_the_file_lacks_names_the_closest_column(tmp_path):
    """``amount = "Betrg"`` for a header saying ``Betrag``: the message listed every column but did
    not name the likely one, as it does for an optional column."""
    frame = purchases({}).rename(columns={"amount": "Betrag"})
    folder = write_tables(tmp_path / "data", purchases=frame)
    (folder / "portrait.toml").write_text('[tables.purchases.columns]\namount = "Betrg"\n')
    with pytest.raises(
        ContractError,
        match=r"required column 'amount' \(renamed from 'Betrg' in the config\) is missing from .*; its columns are "
        r"\[.*\]; did you mean 'Betrag'\? \(the mapping in portrait.toml\)$",
    ):
        validate(open_dataset(folder))


def test_a_table_split_into_part_files_reads_as_one(tmp_path):
    frame = purchases({"order_id": "o1"}, {"order_id": "o2"}, {"order_id": "o3"})
    parts = tmp_path / "data" / "purchases"
    parts.mkdir(parents=True)
    frame.iloc[:2].to_parquet(parts / "part-0.parquet", index=False)
    frame.iloc[2:].to_parquet(parts / "part-1.parquet", index=False)
    report = validate(open_dataset(tmp_path / "data"))
    assert report.tables[0].valid_rows == 3


def test_customers_with_conflicting_rows_are_quarantined_and_exact_copies_kept_once(tmp_path):
    customers = pd.DataFrame(
        {"customer_id": ["a", "a", "b", "b", "c"], "region": ["north", "south", "east", "east", "west"]}
    )
    report = validate(Dataset.from_frames(purchases=purchases({}), customers=customers), tmp_path)
    table = next(t for t in report.tables if t.table == "customers")
    assert table.valid_rows == 2  # b once, c
    assert table.quarantined == {"conflicting_customer_rows": 2, "duplicate_row": 1}


@pytest.mark.parametrize("source", ["csv", "parquet", "frame"])
def test_only_exact_copies_of_purchase_lines_are_dropped(tmp_path, source):
    # Lines sharing order, product and timestamp go through the all-columns comparison; a line
    # differing in any column (a value, or NULL against a value) is kept, exact copies once.
    line = {**GOOD, "product_id": "p1", "category": "dairy", "quantity": "1"}
    frame = pd.DataFrame(
        [
            line,
            line,
            line,  # two exact copies of the first line: dropped
            {**line, "amount": "13.00"},  # same key, another amount: kept
            {**line, "category": None},  # NULL where the first line has a value: kept
            {**line, "category": None},  # its exact copy (NULLs count as equal): dropped
            {**line, "product_id": None},  # a NULL in the key itself: kept once
            {**line, "product_id": None},  # dropped
            {**line, "quantity": None},  # NULL quantity: kept
            {**line, "order_id": "o2"},  # another order: kept
        ]
    )
    if source == "frame":
        dataset = Dataset.from_frames(purchases=frame.astype({"amount": float, "quantity": float}))
    else:
        dataset = open_dataset(write_tables(tmp_path / "data", source, purchases=frame))
    con = dataset.connect()
    kept = con.execute("SELECT amount, category, product_id, quantity, order_id FROM clean_purchases").fetchall()
    assert sorted(kept, key=repr) == sorted(
        [
            (12.5, "dairy", "p1", 1.0, "o1"),
            (13.0, "dairy", "p1", 1.0, "o1"),
            (12.5, None, "p1", 1.0, "o1"),
            (12.5, "dairy", None, 1.0, "o1"),
            (12.5, "dairy", "p1", None, "o1"),
            (12.5, "dairy", "p1", 1.0, "o2"),
        ],
        key=repr,
    )
    # The same rows as a DISTINCT over every column, and the dropped copies counted as such.
    differ = "SELECT COUNT(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {})"
    assert con.execute(differ.format("clean_purchases", "(SELECT DISTINCT * FROM typed_purchases)")).fetchall() == [
        (0,)
    ]
    assert con.execute(differ.format("(SELECT DISTINCT * FROM typed_purchases)", "clean_purchases")).fetchall() == [
        (0,)
    ]
    table = validate(dataset).tables[0]
    assert (table.rows, table.valid_rows, table.quarantined) == (10, 6, {"duplicate_line": 4})


def test_lines_told_apart_only_by_a_line_id_are_separate_lines_once_it_is_mapped(tmp_path):
    # An export with one row per order item: two items alike in every contract column (two
    # units bought as two lines) differ only in the export's item number.
    export = pd.DataFrame(
        {
            "order_id": ["o1", "o1", "o1", "o2"],
            "customer_id": ["a", "a", "a", "b"],
            "ts": ["2024-01-05"] * 4,
            "amount": ["9.99", "9.99", "9.99", "5"],
            "item_no": ["1", "2", "2", "1"],  # the third row repeats the second: a true copy
        }
    )
    folder = tmp_path / "data"
    folder.mkdir()
    export.to_csv(folder / "purchases.csv", index=False)
    unmapped = validate(open_dataset(folder))
    assert unmapped.tables[0].quarantined == {"duplicate_line": 2}
    assert any(
        "2 rows (50.0%) equal another line in every contract column" in note
        and 'map it as line_id in portrait.toml ([tables.purchases.columns] line_id = "...")' in note
        for note in unmapped.notes
    ), unmapped.notes
    (folder / "portrait.toml").write_text('[tables.purchases.columns]\nline_id = "item_no"\n')
    mapped = validate(open_dataset(folder))
    assert (mapped.tables[0].valid_rows, mapped.tables[0].quarantined) == (3, {"duplicate_line": 1})
    assert any("1 row (25.0%)" in note and "in 'item_no', the line id" in note for note in mapped.notes)
    con = open_dataset(folder).connect()
    assert con.execute("SELECT SUM(amount) FROM purchases").fetchall() == [(9.99 * 2 + 5,)]
    # a few copies among many lines are said too (under 1% they went unsaid: CDNOW read through a
    # mapping lost 255 same-day repeat lines, $4,332.88, with a count in the table alone)
    many = pd.DataFrame({"order_id": [f"o{i}" for i in range(299)], "customer_id": "a", "ts": "2024-01-05"})
    many = pd.concat([many.assign(amount="5"), many.head(1).assign(amount="5")], ignore_index=True)
    many.to_csv(folder / "purchases.csv", index=False)
    (folder / "portrait.toml").unlink()
    few = validate(open_dataset(folder))
    said = "1 row (0.3%) equals another line in every contract column and was quarantined"
    assert any(said in note for note in few.notes), few.notes


def test_copies_of_identities_rows_are_said_without_the_purchases_line_id_advice(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    pd.DataFrame({"order_id": ["o1"], "customer_id": ["a"], "ts": ["2024-01-05"], "amount": ["5"]}).to_csv(
        folder / "purchases.csv", index=False
    )
    pd.DataFrame({"customer_id": ["a", "a", "b"], "id_type": ["device"] * 3, "id_value": ["d1", "d1", "d1"]}).to_csv(
        folder / "identities.csv", index=False
    )
    report = validate(open_dataset(folder))
    table = next(t for t in report.tables if t.table == "identities")
    assert table.quarantined == {"duplicate_line": 1}
    note = next(n for n in report.notes if n.startswith("identities: 1 row"))
    assert note.endswith("and was quarantined as copies (duplicate_line)") and "line_id" not in note, note


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_purchases_without_repeated_keys_are_read_once(tmp_path, source):
    # No two lines share order, product and timestamp: no line can have a copy, so the clean
    # view of a Parquet file reads it once (its repeated keys were found once, at connect); a
    # CSV keeps finding them in each read (each read of it stores its rejects again).
    line = {**GOOD, "product_id": "p1"}
    frame = pd.DataFrame([line, {**line, "product_id": "p2"}, {**line, "order_id": "o2"}])
    con = open_dataset(write_tables(tmp_path / "data", source, purchases=frame)).connect()
    plan = con.execute("EXPLAIN SELECT * FROM clean_purchases").fetchall()[0][1].upper()
    scans = plan.count("READ_PARQUET") + plan.count("READ_CSV")
    assert scans == (1 if source == "parquet" else 3)
    rows = "SELECT order_id, product_id FROM {} ORDER BY ALL"
    assert con.execute(rows.format("clean_purchases")).fetchall() == [("o1", "p1"), ("o1", "p2"), ("o2", "p1")]
    assert con.execute(rows.format("(SELECT DISTINCT * FROM typed_purchases)")).fetchall() == [
        ("o1", "p1"),
        ("o1", "p2"),
        ("o2", "p1"),
    ]


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_customer_ids_with_spaces_around_them_in_a_parquet_file_are_kept_and_said(tmp_path, source):
    frame = purchases({"customer_id": "a "}, {"order_id": "o2", "customer_id": " a"}, {"order_id": "o3"})
    report = validate(open_dataset(write_tables(tmp_path / "data", source, purchases=frame)))
    table = report.tables[0]
    assert table.valid_rows == 3
    notes = [n for n in report.notes if "spaces around the id" in n]
    if source == "csv":  # a CSV's cells are trimmed: all three are customer 'a'
        assert table.padded_customer_ids == 0 and notes == []
    else:
        assert table.padded_customer_ids == 2
        assert notes == [
            "purchases.customer_id: 2 values with spaces around the id, kept as written (only a CSV file's "
            "cells are trimmed): 'C1 ' and 'C1' are two customers to every table; trim them where the file is "
            "written if they are one"
        ]


def test_numbers_no_export_means_are_quarantined_as_implausible(tmp_path):
    """1e300 passed validate and then broke the feature build (an exact money sum overflowed)."""
    frame = purchases({"amount": 1e300}, {"order_id": "o2", "amount": -2e15}, {"order_id": "o3", "quantity": 1e16})
    folder = write_tables(tmp_path / "data", purchases=pd.concat([frame, purchases({"order_id": "o4"})]))
    report = validate(open_dataset(folder))
    assert report.tables[0].quarantined == {"implausible_amount": 2, "implausible_quantity": 1}
    assert report.tables[0].valid_rows == 1
    assert len(build_features(open_dataset(folder), "2030-01-01")) == 1


def test_whole_number_customer_ids_in_a_parquet_file_are_read(tmp_path):
    """Integer ids (allowed by the contract) have no spaces to look for: the check of padded
    ids was a DuckDB binder error on them (found by a review)."""
    frame = purchases({"customer_id": 101}, {"order_id": "o2", "customer_id": 102})
    customers = pd.DataFrame({"customer_id": [101, 102], "region": ["north", "south"]})
    report = validate(open_dataset(write_tables(tmp_path / "data", "parquet", purchases=frame, customers=customers)))
    assert [(t.table, t.valid_rows, t.padded_customer_ids) for t in report.tables] == [
        ("purchases", 2, 0),
        ("customers", 2, 0),
    ]


def test_nan_in_an_optional_float_column_means_missing_not_bad(tmp_path):
    frame = purchases({}).assign(amount=12.5, discount=float("nan"))
    report = validate(Dataset.from_frames(purchases=frame))
    assert report.quarantined_rows == 0


def test_events_missing_type_are_quarantined(tmp_path):
    events = pd.DataFrame({"customer_id": ["a", "a"], "ts": ["2024-01-01", "2024-01-02"], "event_type": ["view", None]})
    report = validate(Dataset.from_frames(purchases=purchases({}), events=events))
    table = next(t for t in report.tables if t.table == "events")
    assert table.quarantined == {"missing_event_type": 1}


def test_synthetic_data_validates_clean(small_synthetic: Path):
    report = validate(open_dataset(small_synthetic))
    assert report.quarantined_rows == 0
    assert report.identities is not None and report.identities.merged_persons > 0


def test_a_table_file_or_any_other_file_is_not_a_data_set(tmp_path):
    folder = write_tables(tmp_path / "data", "parquet", purchases=purchases({}))
    with pytest.raises(ContractError, match=r"purchases.parquet is a table file, not a data set: give the folder"):
        open_dataset(folder / "purchases.parquet")
    other = tmp_path / "notes.db"
    other.write_text("not a database")
    with pytest.raises(
        ContractError, match=r"notes.db is neither a data set folder nor a DuckDB file: give the folder"
    ):
        open_dataset(other)  # DuckDB's own "Catalog Error: Cannot launch in-memory database" before


def test_a_table_found_twice_in_a_folder_is_an_error_not_a_silent_choice(tmp_path):
    folder = write_tables(tmp_path / "data", "parquet", purchases=purchases({}))
    purchases({"order_id": "o2"}).to_csv(folder / "purchases.csv", index=False)
    with pytest.raises(ContractError, match=r"holds the table more than once: purchases.parquet, purchases.csv"):
        open_dataset(folder)
    (folder / "purchases.csv").unlink()
    (folder / "purchases").mkdir()
    purchases({"order_id": "o3"}).to_csv(folder / "purchases" / "part-1.csv", index=False)
    with pytest.raises(ContractError, match=r"purchases.parquet, purchases/ \(1 part files\)"):
        open_dataset(folder)


def test_a_link_to_nothing_is_an_error_not_a_table_without_rows(tmp_path):
    """A symbolic link whose target is gone (a share not mounted): the events table, or one of
    its part files, was skipped without a word (exit 0, features without those events)."""
    folder = write_tables(tmp_path / "data", "csv", purchases=purchases({}))
    (folder / "events.csv").symlink_to(tmp_path / "share" / "events.csv")
    with pytest.raises(ContractError, match=r"events.csv is a link to .*share/events.csv, which does not exist"):
        open_dataset(folder)
    (folder / "events.csv").unlink()
    (folder / "events").mkdir()
    events = pd.DataFrame({"customer_id": ["a"], "ts": ["2024-01-06"], "event_type": ["view"]})
    events.to_csv(folder / "events" / "part-0.csv", index=False)
    (folder / "events" / "part-1.csv").symlink_to(tmp_path / "share" / "part-1.csv")
    with pytest.raises(ContractError, match=r"part-1.csv is a link to .*, which does not exist.*fix the link"):
        open_dataset(folder)
    (folder / "events" / "part-1.csv").unlink()
    (folder / "events" / "year=2024").symlink_to(tmp_path / "share" / "year=2024")  # a key=value folder of parts
    with pytest.raises(ContractError, match=r"year=2024 is a link to .*, which does not exist"):
        open_dataset(folder)
    (folder / "events" / "year=2024").unlink()
    (folder / "events" / ".#part-9.csv").symlink_to("user@host.123")  # an editor's lock file: hidden, not a part
    assert open_dataset(folder).has("events")  # the good part alone reads
    shutil.rmtree(folder / "events")
    (folder / "events").symlink_to(tmp_path / "share" / "events")  # the part folder itself
    with pytest.raises(ContractError, match=r"/events is a link to .*, which does not exist"):
        open_dataset(folder)
    (folder / "events").unlink()
    # named by a pattern in portrait.toml: its hidden matches are not parts, a visible one is
    (folder / "exports").mkdir()
    events.to_csv(folder / "exports" / "events-1.csv", index=False)
    (folder / "exports" / ".#events-2.csv").symlink_to("user@host.123")
    (folder / "portrait.toml").write_text('[tables.events]\nfile = "exports/*.csv"\n')
    assert open_dataset(folder).has("events")
    (folder / "exports" / "events-3.csv").symlink_to(tmp_path / "share" / "events-3.csv")
    with pytest.raises(ContractError, match=r"events-3.csv is a link to .*, which does not exist"):
        open_dataset(folder)
    (folder / "portrait.toml").unlink()
    shutil.rmtree(folder / "exports")
    (folder / "purchases.csv").rename(tmp_path / "purchases.csv")
    (folder / "purchases.csv").symlink_to(tmp_path / "moved" / "purchases.csv")  # was "not found"
    with pytest.raises(ContractError, match=r"purchases.csv is a link to .*moved/purchases.csv, which does not"):
        open_dataset(folder)


@pytest.mark.parametrize("source", ["csv", "parquet", "frame"])
def test_a_contract_column_found_twice_is_an_error_not_a_silent_choice(tmp_path, source):
    # "amount" twice (DuckDB would read the second as amount_1) or "amount" beside "Amount"
    frame = purchases({}).assign(category="dairy")
    frame.columns = ["order_id", "customer_id", "ts", "amount", "Amount"]
    if source == "frame":
        dataset = Dataset.from_frames(purchases=frame)
    elif source == "csv":
        folder = tmp_path / "data"
        folder.mkdir()
        (folder / "purchases.csv").write_text("order_id,customer_id,ts,amount,amount\no1,a,2024-01-05,12.5,dairy\n")
        dataset = open_dataset(folder)
    else:
        dataset = open_dataset(write_tables(tmp_path / "data", "parquet", purchases=frame))
    with pytest.raises(ContractError, match=r"column 'amount' (appears twice in the header|is amount and Amount)"):
        validate(dataset)


def test_a_customers_column_twice_in_the_header_is_refused(tmp_path):
    """Region and region in a customers export: DuckDB read the second as region_1, an
    attribute (attr_region_1, a crowd report's "region 1") named by no column of the file."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,c1,2024-01-05,12.5\n")
    (folder / "customers.csv").write_text("customer_id,Region,region,age\nc1,N,n,30\nc2,S,s,40\n")
    with pytest.raises(
        ContractError,
        match=r"column 'region' appears twice in the header of .*customers.csv \(compared without case; the second "
        r"was read as 'region_1'\)",
    ):
        validate(open_dataset(folder))


def test_placeholder_dates_are_kept_and_said(tmp_path):
    frame = purchases(
        {},
        {"order_id": "o2", "ts": "9999-12-31 23:59:59"},
        {"order_id": "o3", "ts": "0001-01-01"},
        {"order_id": "o4", "ts": "1970-01-01 00:00:00"},  # a zero Unix time: was not counted
        {"order_id": "o5", "ts": "1970-01-01 00:00:01"},
    )
    report = validate(open_dataset(write_tables(tmp_path / "data", purchases=frame)))
    assert report.tables[0].valid_rows == 5
    assert report.notes[-1].startswith(
        "purchases: 3 lines dated before 1970 (or at its first instant, a zero time's date) or after tomorrow "
        "(the data runs from 0001-01-01"
    )
    assert not any(
        "dated before 1970" in note
        for note in validate(open_dataset(write_tables(tmp_path / "ok", purchases=purchases({})))).notes
    )


def test_an_order_id_used_again_on_another_day_is_said(tmp_path):
    """Order numbers that start again per till or per month: the features would count two
    visits as one order. A return days later, or lines minutes apart, are one order."""
    frame = purchases(
        {"order_id": "1001", "ts": "2024-01-02 10:00:00", "amount": "10"},
        {"order_id": "1001", "ts": "2024-02-05 09:00:00", "amount": "30"},  # the number again, a month on
        {"order_id": "o2", "ts": "2024-01-03 10:00:00", "amount": "10"},
        {"order_id": "o2", "ts": "2024-01-04 09:59:00", "amount": "5"},  # 23 h 59 min later: one order
        {"order_id": "o3", "ts": "2024-01-03 10:00:00", "amount": "10"},
        {"order_id": "o3", "ts": "2024-01-20 10:00:00", "amount": "-10"},  # returned later: one order
        {"order_id": "1001", "customer_id": "b", "ts": "2024-03-01 10:00:00", "amount": "7"},  # another's
    )
    notes = validate(open_dataset(write_tables(tmp_path / "data", purchases=frame))).notes
    said = [n for n in notes if "apart" in n]
    assert said == [
        "purchases: 1 order has sold lines more than 1 day apart (e.g. order 1001: 2024-01-02 10:00:00 to "
        "2024-02-05 09:00:00); the features count each as one purchase, at its first line's time (a refund is "
        "dated by its own lines). If order ids start again (per till, per store or per period), export ids that "
        "are unique (e.g. the date, the store and the number together); if lines were added to an order later "
        "(an exchange), that is how they count"
    ]
    good = purchases({}, {"order_id": "o2", "ts": "2024-01-06 09:00:00"})
    assert not any("apart" in n for n in validate(open_dataset(write_tables(tmp_path / "ok", purchases=good))).notes)


def test_the_returns_are_counted_as_read(tmp_path):
    """Refund lines, the money they give back against the sold lines', and the orders of refund
    lines alone: a returns-heavy shop sees how its returns were booked and read."""
    frame = purchases(
        {"order_id": "o1", "amount": "60"},
        {"order_id": "o1", "amount": "40", "product_id": "p2"},
        {"order_id": "o1", "amount": "-40", "ts": "2024-01-20 10:00:00"},  # inside its order
        {"order_id": "r1", "amount": "-20", "ts": "2024-01-21 10:00:00"},  # its own id
        {"order_id": "o2", "amount": "0"},
    )
    report = validate(open_dataset(write_tables(tmp_path / "data", purchases=frame)))
    assert (report.purchases_lines, report.purchases_refund_lines, report.purchases_refund_orders) == (5, 2, 1)
    assert (report.purchases_sold_money, report.purchases_refunded_money) == (100.0, 60.0)
    assert report.returns_sentence() == (
        "2 refund lines (40.0% of the lines) give back 60.0% of the money of the sold lines; 1 order of refund "
        "lines alone (returns booked under their own id), 1 refund line inside orders with a purchase; 1 order "
        "of $0.00 lines alone, counted as a purchase order (free goods, as the BTYD literature counts a "
        "transaction): leave out of the export any that are not purchases (store credit, loyalty entries)"
    )
    assert report.purchases_zero_orders == 1
    inside = purchases({"order_id": "1001", "amount": "10"}, {"order_id": "1001", "amount": "-5", "product_id": "p2"})
    one = validate(open_dataset(write_tables(tmp_path / "inside", purchases=inside)))
    assert one.returns_sentence() == (
        "1 refund line (50.0% of the lines) gives back 50.0% of the money of the sold lines; every one inside "
        "an order with a purchase"
    )
    none = validate(open_dataset(write_tables(tmp_path / "ok", purchases=purchases({}))))
    assert none.returns_sentence() == "no refund lines (amount below 0)"


def test_a_file_without_a_header_line_is_refused_without_repeating_its_first_row(tmp_path, caplog):
    """Its first row is read as the column names: the privacy checks logged
    'identities.alice@example.com: values look like e-mail addresses', and the missing-column
    message listed it."""
    folder = write_tables(tmp_path / "data", purchases=purchases({}))
    (folder / "identities.csv").write_text("C1,email,alice@example.com\nC2,phone,+44 7700 900123\n")
    with pytest.raises(ContractError, match="the first line of .*identities.csv holds 1 value") as error:
        validate(open_dataset(folder))
    assert "alice" not in str(error.value) and "alice" not in caplog.text


def _parts(folder: Path, **texts: str) -> Path:
    (folder / "purchases").mkdir(parents=True)
    for name, text in texts.items():
        (folder / "purchases" / f"{name}.csv").write_text(text)
    return folder


def test_a_header_repeated_in_another_order_inside_a_file_stops_the_check(tmp_path):
    # two exports pasted into one file: the second's amount and quantity would be read swapped
    first = "order_id,customer_id,ts,amount,quantity\no1,c1,2024-01-05,10.0,1\n"
    second = "order_id,customer_id,ts,quantity,amount\no2,c1,2024-03-05,1,30.0\n"
    data = _parts(tmp_path / "d", all=first + second)
    with pytest.raises(
        ContractError, match=r"1 line\(s\) of .*all.csv repeat the header with the columns in another order"
    ):
        validate(open_dataset(data))
    with pytest.raises(ContractError, match=r"repeat the header with the columns in another order"):
        checked(open_dataset(data))  # what every command reading the data set runs first


def test_customer_ids_in_scientific_notation_are_said(tmp_path):
    """Ids a spreadsheet mangled (1.23457E+11, 4.5E+03) were taken without a word (a user's test)."""
    folder = tmp_path / "sci"
    folder.mkdir()
    (folder / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount\no1,1.23457E+11,2026-01-05 10:00:00,12.5\no2,4.5E+03,2026-01-06 11:00:00,3\n"
        "o3,c7,2026-01-07 13:30:00,4\no4,1E5X,2026-01-07 14:30:00,4\n"
    )
    notes = [n for n in validate(open_dataset(folder)).notes if "scientific notation" in n]
    assert len(notes) == 1 and notes[0].startswith("purchases.customer_id: 2 values in scientific notation")


def test_dates_without_a_time_among_timed_lines_are_said(tmp_path):
    """'2026-10-12' beside '2026-10-13 10:00:00' read as midnight, a night order, without a word
    (a user's test); a log with a real midnight among many times is not said."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount\no1,a,2026-01-05 10:00:00,12.5\no2,b,2026-01-06,3\no3,c,2026-01-07 13:30,4\n"
    )
    said = "purchases: 1 of 3 lines (33.3%) are at midnight exactly, where the others have a time of day"
    assert any(note.startswith(said) for note in validate(open_dataset(folder)).notes)
    timed = tmp_path / "timed"
    timed.mkdir()
    lines = "".join(f"o{i},c{i},2026-01-05 {1 + i % 23:02d}:{i % 60:02d}:00,1\n" for i in range(1, 200))
    (timed / "purchases.csv").write_text("order_id,customer_id,ts,amount\no0,c0,2026-01-05 00:00:00,1\n" + lines)
    assert not any("midnight" in note for note in validate(open_dataset(timed)).notes)


def test_a_header_repeated_in_the_same_order_is_one_quarantined_line(tmp_path):
    """Said as what it is (it was unparseable_ts), and its customer_id, the word, is no customer
    whose every line was quarantined (a user's test)."""
    first = "order_id,customer_id,ts,amount\no1,c1,2024-01-05,10.0\n"
    data = _parts(tmp_path / "d", all=first + first.replace("o1", "o2"))
    report = validate(open_dataset(data))
    table = report.tables[0]
    assert (table.rows, table.valid_rows, table.quarantined) == (3, 2, {"repeated_header": 1})
    assert not any("every purchase line quarantined" in note for note in report.notes)


def test_a_required_column_missing_from_some_files_headers_is_refused_naming_them(tmp_path):
    rows = "o1,c1,2024-01-05,10.0\n"
    data = _parts(
        tmp_path / "d",
        q1="order_id,customer_id,ts,amount\n" + rows,
        q2="order_id,customer_id,ts,net_amount\n" + rows,
        q3="order_id,customer_id,ts,net_amount\n" + rows,
    )
    message = (
        r"required column 'amount' is in the header of some files of purchases but not of q2.csv, q3.csv "
        r"\(other columns in their headers: \['net_amount'\]\): all of their rows would miss amount"
    )
    with pytest.raises(ContractError, match=message):
        validate(open_dataset(data))


def test_an_optional_column_missing_from_some_files_is_said(tmp_path):
    data = _parts(
        tmp_path / "d",
        old="order_id,customer_id,ts,amount\no1,c1,2024-01-05,10.0\n",
        new="order_id,customer_id,ts,amount,discount\no1,c1,2024-01-05,10.0,0\no2,c1,2024-02-05,5.0,1\n",
    )
    report = validate(open_dataset(data))
    assert report.tables[0].partial_columns == {"discount": [str(data / "purchases" / "old.csv")]}
    assert (
        "purchases.discount: not in the header of old.csv, which other files of purchases have: the rows of that "
        "file read it as missing; a line exported both there and in a file with the column is not found as a copy"
    ) in report.notes
    # a column every file has, or none has, is not said
    assert not any("quantity" in note for note in report.notes)


def test_a_field_of_megabytes_is_read_and_duckdbs_line_size_error_is_said_in_one_line(tmp_path):
    (tmp_path / "d").mkdir()
    big = "x" * (3 << 20)  # past DuckDB's default of 2 MB a line
    (tmp_path / "d" / "purchases.csv").write_text(
        f"order_id,customer_id,ts,amount,category\no1,c1,2024-01-05,1.0,a\no2,c1,2024-01-06,2.0,{big}\n"
    )
    assert validate(open_dataset(tmp_path / "d")).tables[0].valid_rows == 2

    import duckdb

    from portrait.errors import read_error_reason

    with pytest.raises(duckdb.Error) as raised:
        duckdb.sql(f"SELECT * FROM read_csv('{tmp_path / 'd' / 'purchases.csv'}', max_line_size = 1048576)").fetchall()
    reason = read_error_reason(raised.value)
    # the line named by its number in the file (DuckDB's "Line:" counts within its buffer)
    assert reason.startswith(f"line 3 of {tmp_path / 'd' / 'purchases.csv'} holds 3,145,7")
    assert "more than the 1,048,576 a CSV line may hold" in reason and "xxx" not in reason
    from portrait.errors import _first_line_longer

    compressed = tmp_path / "d" / "purchases.csv.gz"  # its bytes are not its lines: not scanned (up to 2 GB)
    compressed.write_bytes(b"x" * 100)
    assert _first_line_longer(str(compressed), 10) is None
    assert _first_line_longer(str(tmp_path / "d" / "purchases.csv"), 1 << 20) == 3


def test_ids_that_differ_only_by_leading_zeros_are_said(tmp_path):
    rows = "order_id,customer_id,ts,amount\n" + "".join(
        f"o{i},{cid},2024-01-0{i + 1},1\n" for i, cid in enumerate(["00123", "123", "0042", "42", "042", "7"])
    )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "purchases.csv").write_text(rows.replace(",0042,", ", 0042 ,"))  # a CSV's cells are trimmed
    report = validate(open_dataset(tmp_path / "d"))
    assert report.tables[0].zero_padded_customer_ids == 3  # 123 once, 42 twice
    assert any(
        n.startswith("purchases.customer_id: 3 values equal another id but for leading zeros or a trailing '.0'")
        for n in report.notes
    )
    # a float column's '.0' in the same table (it was said across tables only)
    (tmp_path / "d" / "purchases.csv").write_text(rows.replace(",00123,", ",123.0,").replace(",042,", ",42.0,"))
    assert validate(open_dataset(tmp_path / "d")).tables[0].zero_padded_customer_ids == 3  # 123 once, 42 twice
    (tmp_path / "d" / "purchases.csv").write_text(
        rows.replace(",00123,", ",99123,").replace(",0042,", ",1042,").replace(",042,", ",2042,")
    )
    assert validate(open_dataset(tmp_path / "d")).tables[0].zero_padded_customer_ids == 0


def test_event_types_without_features_of_their_own_are_said(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,a,2024-01-05,1\n")
    (tmp_path / "d" / "events.csv").write_text(
        "customer_id,ts,event_type\na,2024-01-05,view\na,2024-01-06,Chat_Message\na,2024-01-07,chat_message\n"
        "a,2024-01-07,live\n,2024-01-07,quarantined_one\n"
    )
    report = validate(open_dataset(tmp_path / "d"))
    events = next(t for t in report.tables if t.table == "events")
    assert events.other_event_types == {"chat_message": 2, "live": 1}  # of valid rows, compared as the features do
    assert (
        "events.event_type: types without features of their own (chat_message 2, live 1): counted only in the "
        "event totals (event_count_*, days since the last event, active days)"
    ) in report.notes
    (tmp_path / "d" / "events.csv").write_text("customer_id,ts,event_type\na,2024-01-05,View \n")
    assert not next(t for t in validate(open_dataset(tmp_path / "d")).tables if t.table == "events").other_event_types
    # types holding an e-mail address or a phone number are counted, not written out (report.json keeps them)
    (tmp_path / "d" / "events.csv").write_text(
        "customer_id,ts,event_type\na,2024-01-05,mail to jo@example.com\na,2024-01-06,call 07700 900123\n"
    )
    events = next(t for t in validate(open_dataset(tmp_path / "d")).tables if t.table == "events")
    assert events.other_event_types == {"(a type holding personal data)": 2}


def test_a_part_whose_header_has_a_bom_before_quoted_names_is_read_with_the_others(tmp_path):
    rows = "o1,c1,2024-01-05,10.0\n"
    data = _parts(tmp_path / "d", p1="order_id,customer_id,ts,amount\n" + rows)
    (data / "purchases" / "p2.csv").write_bytes(
        b'\xef\xbb\xbf"order_id","customer_id","ts","amount"\n' + rows.replace("o1", "o2").encode()
    )
    assert validate(open_dataset(data)).tables[0].valid_rows == 2


def test_a_header_in_another_order_stops_a_table_without_numbers_or_times_too(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,c1,2024-01-05,1\n")
    (tmp_path / "d" / "identities.csv").write_text(
        "customer_id,id_type,id_value\nc1,email_hash,h1\nc2,email_hash,h2\nid_value,id_type,customer_id\nh3,email_hash,c3\n"
    )
    with pytest.raises(
        ContractError, match=r"1 line\(s\) of .*identities.csv repeat the header with the columns in another order"
    ):
        validate(open_dataset(tmp_path / "d"))


def test_hidden_lock_and_macos_files_in_a_tables_folder_are_not_read_as_parts(tmp_path, caplog):
    data = _parts(tmp_path / "d", p1="order_id,customer_id,ts,amount\no1,c1,2024-01-05,10.0\n")
    (data / "purchases" / "__MACOSX").mkdir()
    for junk in ("._p1.csv", "__MACOSX/._p1.csv", "~$p2.csv", ".~lock.p1.csv#.csv"):
        (data / "purchases" / junk).write_bytes(b"\x00\x05\x16\x07 not a table")
    with caplog.at_level("WARNING"):
        dataset = open_dataset(data)
    assert [p.name for p in dataset.sources["purchases"].files] == ["p1.csv"]
    assert "purchases/: 4 file(s) not read as parts: hidden, a lock file, a macOS copy" in caplog.text
    assert validate(dataset).tables[0].valid_rows == 1


def test_a_configured_glob_skips_what_a_folder_of_parts_skips(tmp_path):
    line = "order_id,customer_id,ts,amount\no1,c1,2024-01-05,10.0\n"
    data = tmp_path / "d"
    (data / "orders" / "_temporary" / "0").mkdir(parents=True)
    (data / "orders" / "p1.csv").write_text(line)
    (data / "orders" / "_temporary" / "0" / "p2.csv").write_text(line.replace("o1", "o2"))
    (data / "portrait.toml").write_text('[tables.purchases]\nfile = "orders/**/*.csv"\n')
    assert [p.name for p in open_dataset(data).sources["purchases"].files] == ["p1.csv"]
    (data / "orders" / "_delta_log").mkdir()
    with pytest.raises(ContractError, match="orders is a Delta table"):
        open_dataset(data)
    (data / "_landing").mkdir()  # a folder the user names as written is theirs to name
    (data / "_landing" / "sales.csv").write_text(line)
    (data / "portrait.toml").write_text('[tables.purchases]\nfile = "_landing/sales.csv"\n')
    assert [p.name for p in open_dataset(data).sources["purchases"].files] == ["sales.csv"]


def test_a_failed_spark_jobs_attempts_are_not_read_as_parts(tmp_path):
    """A failed job leaves _temporary/.../part-*.csv beside the parts: read, they added rows."""
    line = "order_id,customer_id,ts,amount\no1,c1,2024-01-05,10.0\n"
    data = _parts(tmp_path / "d", p1=line)
    attempt = data / "purchases" / "_temporary" / "0" / "_temporary" / "attempt_01"
    attempt.mkdir(parents=True)
    (attempt / "part-00000.csv").write_text(line.replace("o1", "o2"))
    dataset = open_dataset(data)
    assert [p.name for p in dataset.sources["purchases"].files] == ["p1.csv"]
    assert validate(dataset).tables[0].valid_rows == 1


@pytest.mark.parametrize(
    ("marker", "kind"),
    [
        ("_delta_log/00000000000000000001.json", "a Delta table"),
        (".hoodie/hoodie.properties", "a Hudi table"),
        ("metadata/v2.metadata.json", "an Iceberg table"),
    ],
)
def test_a_table_formats_folder_is_refused_not_read_with_its_replaced_files(tmp_path, marker, kind):
    """A Delta UPDATE leaves the replaced Parquet files beside the new ones: read as parts, every
    customer's spend doubled (a DELETE for an erasure would bring the rows back)."""
    data = _parts(tmp_path / "d", p1="order_id,customer_id,ts,amount\no1,c1,2024-01-05,10.0\n")
    (data / "purchases" / marker).parent.mkdir(parents=True)
    (data / "purchases" / marker).write_text("{}")
    with pytest.raises(ContractError, match=f"purchases is {kind} .*export the table's current version as Parquet"):
        open_dataset(data)


def test_text_in_decomposed_unicode_is_said_per_column(tmp_path):
    """'Café' composed (NFC) and decomposed (NFD, as some Mac tools write it) are two values:
    said, with the count, and kept as written."""
    frame = purchases(
        {"order_id": "o1", "category": "Caf\u00e9"},
        {"order_id": "o2", "category": "Cafe\u0301", "customer_id": "Ju\u0308rgen"},
        {"order_id": "o3", "category": "Tea"},
    )
    report = validate(open_dataset(write_tables(tmp_path / "data", purchases=frame)))
    assert report.tables[0].decomposed_text == {"category": 1, "customer_id": 1}
    said = [n for n in report.notes if "decomposed Unicode" in n]
    assert [n.split(":")[0] for n in said] == ["purchases.customer_id", "purchases.category"] or [
        n.split(":")[0] for n in said
    ] == ["purchases.category", "purchases.customer_id"]
    assert "1 value in decomposed Unicode" in said[0] and "Export the files in NFC" in said[0]
    plain = validate(open_dataset(write_tables(tmp_path / "ok", purchases=purchases({"category": "Caf\u00e9"}))))
    assert plain.tables[0].decomposed_text == {}


def test_a_word_for_no_customer_or_no_order_is_quarantined_not_read_as_one_customer(tmp_path):
    """An export writes its guest orders' customer as NULL, N/A, \\N...: read as an id, they
    were one customer holding every guest order (8% of a real-looking export's orders made
    'NULL' its best customer, first on a list). "0" and "nullable" stay ids."""
    frame = purchases(
        {"order_id": "o1", "customer_id": "NULL"},
        {"order_id": "o2", "customer_id": " n/a "},
        {"order_id": "o3", "customer_id": "\\N"},
        {"order_id": "o4", "customer_id": "#N/A"},
        {"order_id": "o5", "customer_id": "None"},
        {"order_id": "null", "customer_id": "b"},  # an order id that says "none"
        {"order_id": "o6", "customer_id": "0"},
        {"order_id": "o7", "customer_id": "nullable"},
        {"order_id": "o8", "customer_id": "a"},
    )
    folder = write_tables(tmp_path / "data", purchases=frame)
    report = validate(open_dataset(folder))
    assert report.tables[0].quarantined == {"placeholder_customer_id": 5, "placeholder_order_id": 1}
    events = pd.DataFrame({"customer_id": ["a", "Unknown"], "ts": ["2024-01-01", "2024-01-02"], "event_type": "view"})
    report = validate(Dataset.from_frames(purchases=purchases({}), events=events))
    assert next(t for t in report.tables if t.table == "events").quarantined == {"placeholder_customer_id": 1}
    built = build_features(open_dataset(folder), "2024-02-01", families=["value"])
    assert sorted(built["customer_id"]) == ["0", "a", "nullable"]


def test_a_customer_id_of_spaces_alone_in_parquet_is_no_customer(tmp_path):
    """A padded CHAR column's guest orders ("        "): Parquet ids are not trimmed, and they
    were one customer with every guest order."""
    frame = purchases(
        {"order_id": "o1", "customer_id": "        "},
        {"order_id": "o2", "customer_id": " " * 36},  # CHAR(36), a UUID's width
        {"order_id": "o3", "customer_id": " a"},
    )
    folder = write_tables(tmp_path / "data", "parquet", purchases=frame)
    assert validate(open_dataset(folder)).tables[0].quarantined == {"placeholder_customer_id": 2}


def test_customer_ids_written_differently_in_another_table_are_said():
    """Purchases with ids 1.0, 2.0 (a float column's text) and customers with 1, 2 (or 00001):
    every attribute came out empty and both tables passed their checks without a word."""
    bought = pd.DataFrame(
        {"order_id": [f"o{i}" for i in range(1, 21)], "customer_id": [f"{i}.0" for i in range(1, 21)]}
    ).assign(ts="2024-01-05 10:00:00", amount="10")
    customers = pd.DataFrame({"customer_id": [f"{i:05d}" for i in range(1, 21)], "region": "Nord"})
    events = pd.DataFrame({"customer_id": ["w1", "w2"], "ts": ["2024-01-01", "2024-01-02"], "event_type": "view"})
    notes = validate(Dataset.from_frames(purchases=bought, customers=customers, events=events)).notes
    assert (
        "customers.customer_id: 0 of its 20 ids are ids of the purchases as written, 20 once leading zeros or a "
        "trailing '.0' are ignored ('00123' or '123.0' against '123'): the files write the ids differently"
    ) in "\n".join(notes)
    assert "events.customer_id: none of its 2 ids is the id of a customer in the purchases" in "\n".join(notes)
    same = customers.assign(customer_id=[f"{i}.0" for i in range(1, 21)])
    notes = validate(Dataset.from_frames(purchases=bought, customers=same)).notes
    assert not [n for n in notes if "customers.customer_id" in n]


def test_digits_separated_by_underscores_are_not_a_number(tmp_path):
    """DuckDB reads '1_000' as 1000 and '1_2.5_0' as 12.5; with decimal = "," the same text
    was quarantined: the two settings now agree."""
    good = [{"order_id": f"g{i}", "amount": "10"} for i in range(20)]
    frame = purchases({"order_id": "o1", "amount": "1_000"}, {"order_id": "o2", "amount": "1_2.5_0"}, *good)
    report = validate(open_dataset(write_tables(tmp_path / "data", purchases=frame)))
    assert report.tables[0].quarantined == {"non_numeric_amount": 2} and report.tables[0].valid_rows == 20


def test_int96_timestamps_are_said_since_their_zone_is_not_known(tmp_path):
    """Spark's legacy INT96 times are UTC instants (Impala's local times): read as wall-clock
    times in a Paris data set, a Spark export's 00:49 was 22:49 the evening before, unsaid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "data"
    folder.mkdir()
    table = pa.table(
        {"order_id": ["o1"], "customer_id": ["a"], "ts": pa.array([dt.datetime(2017, 8, 13, 22, 49)]), "amount": [5.0]}
    )
    pq.write_table(table, folder / "purchases.parquet", use_deprecated_int96_timestamps=True)
    (folder / "portrait.toml").write_text('timezone = "Europe/Paris"\n')
    notes = validate(open_dataset(folder)).notes
    assert any(
        n.startswith("purchases.ts: stored as INT96 in 1 Parquet file(s)") and "Spark writes INT96" in n for n in notes
    )


def test_customers_with_every_line_quarantined_are_said(tmp_path):
    """A night's export with a negative discount on all of a customer's lines: they read as
    customers who never bought (a Champion published as "No purchase yet"), unsaid. A guest
    (placeholder id) is no customer; one with a good line left is not counted."""
    frame = purchases(
        {"order_id": "o1", "customer_id": "a", "discount": "-1"},
        {"order_id": "o2", "customer_id": "a", "discount": "-2"},
        {"order_id": "o3", "customer_id": "b", "discount": "-1"},
        {"order_id": "o4", "customer_id": "b"},
        {"order_id": "o5", "customer_id": "NULL"},
        {"order_id": "o6", "customer_id": "c"},
    )
    notes = validate(open_dataset(write_tables(tmp_path / "data", purchases=frame))).notes
    assert (
        "purchases: 1 customer has every purchase line quarantined: until the lines are fixed, read as customers who "
        "never bought (RFM 'No purchase yet', their purchase tags left) where their events or a customers "
        "signup_date place them before the date, and left out of features, scores and reports otherwise"
    ) in notes
    clean = validate(open_dataset(write_tables(tmp_path / "ok", purchases=purchases({})))).notes
    assert not any("every purchase line quarantined" in n for n in clean)


def test_customers_rows_of_merged_ids_not_read_are_counted(tmp_path):
    """A, B merged into one person, each with a customers row: one row's attributes are read
    (the person's own id's) and B's not, which validation said nowhere."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,A,2024-01-05,1\no2,B,2024-01-06,2\n")
    (folder / "customers.csv").write_text("customer_id,tier\nA,gold\nB,bronze\nC,silver\n")
    (folder / "identities.csv").write_text("customer_id,id_type,id_value\nA,device,d1\nB,device,d1\n")
    report = validate(open_dataset(folder))
    assert (
        "customers: 1 person merged from several ids has a customers row under more than one of them (2 rows): the "
        "attributes are read from one (the person's own id's, else the smallest id's), the other 1 not"
    ) in report.notes
    (folder / "identities.csv").write_text("customer_id,id_type,id_value\nA,device,d1\nC,device,d2\n")
    assert not [n for n in validate(open_dataset(folder)).notes if "merged from several ids" in n]
