import pandas as pd
import pytest

from portrait.dataset import Dataset
from portrait.errors import PortraitError
from portrait.identity import explain, hash_identities_file, resolve, summarize

LINKS = pd.DataFrame(
    {
        "customer_id": ["web-7", "app-3", "app-3", "store-9", "solo", "x1", "x2"],
        "id_type": ["phone", "phone", "email", "email", "phone", "card", "card"],
        "id_value": ["p1", "p1", "e1", "e1", "p2", "k1", "k1"],
    }
)


def test_ids_sharing_an_identifier_merge_transitively_into_the_smallest_id():
    mapping = resolve(LINKS)
    assert dict(zip(mapping["customer_id"], mapping["person_id"], strict=True)) == {
        "app-3": "app-3",
        "store-9": "app-3",
        "web-7": "app-3",  # web-7 -phone- app-3 -email- store-9
        "solo": "solo",
        "x1": "x1",
        "x2": "x1",
    }


def test_same_identifier_value_under_another_type_does_not_merge():
    links = pd.DataFrame({"customer_id": ["a", "b"], "id_type": ["phone", "email"], "id_value": ["1", "1"]})
    assert resolve(links)["person_id"].tolist() == ["a", "b"]


def test_merge_does_not_depend_on_row_order():
    shuffled = LINKS.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(resolve(LINKS), resolve(shuffled))


def test_summary_counts_merged_ids_and_people():
    summary = summarize(resolve(LINKS))
    assert (summary.customer_ids, summary.persons, summary.merged_ids, summary.merged_persons) == (6, 3, 5, 2)


def _dataset() -> Dataset:
    purchases = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["web-7", "store-9", "solo"],
            "ts": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "amount": [1.0, 2.0, 3.0],
        }
    )
    customers = pd.DataFrame({"customer_id": ["store-9", "app-3"], "region": ["south", "north"]})
    return Dataset.from_frames(purchases=purchases, customers=customers, identities=LINKS)


def test_mapping_applies_to_every_table_and_keeps_the_persons_own_attributes():
    con = _dataset().connect()
    assert con.execute("SELECT customer_id FROM purchases ORDER BY order_id").fetchall() == [
        ("app-3",),
        ("app-3",),
        ("solo",),
    ]
    assert con.execute("SELECT customer_id, region FROM customers").fetchall() == [("app-3", "north")]


def _unsalted(value: str) -> list[str]:
    import hashlib

    digest = hashlib.sha256(value.encode()).hexdigest()
    return [digest, digest[:10]]


def test_explain_names_the_shared_identifiers_by_type_and_count_without_a_salt():
    result = explain(_dataset().connect(), "store-9")
    assert result == {
        "person_id": "app-3",
        "customer_ids": ["app-3", "store-9", "web-7"],
        "shared_identifiers": [
            {"id_type": "email", "customer_ids": ["app-3", "store-9"], "identifiers": 1},
            {"id_type": "phone", "customer_ids": ["app-3", "web-7"], "identifiers": 1},
        ],
        "unlinked_identifiers": [],
    }
    # Neither the values nor any unsalted hash of them (brute-forceable for a phone number).
    for value in ("e1", "p1"):
        assert all(shown not in str(result) for shown in [value, *_unsalted(value)])


def test_explain_with_the_salt_shows_the_hashes_identity_hash_writes(tmp_path):
    source = tmp_path / "identities.csv"
    LINKS.to_csv(source, index=False)
    assert hash_identities_file(source, tmp_path / "hashed.parquet", salt="pepper") == (len(LINKS), len(LINKS))
    hashed = pd.read_parquet(tmp_path / "hashed.parquet")
    written = dict(zip(LINKS["id_value"], hashed["id_value"], strict=True))
    result = explain(_dataset().connect(), "store-9", salt="pepper")
    assert [(s["id_type"], s["salted_hashes"]) for s in result["shared_identifiers"]] == [
        ("email", [written["e1"]]),
        ("phone", [written["p1"]]),
    ]
    assert all(shown not in str(result) for shown in ["p1", *_unsalted("p1")])


def test_identity_explain_command_prints_no_unsalted_hash(tmp_path, monkeypatch):
    from tests.test_marketing_api_cli import run

    folder = tmp_path / "data"
    folder.mkdir()
    LINKS.assign(id_value=["+447700900001", "+447700900001", "e1", "e1", "p2", "k1", "k1"]).to_csv(
        folder / "identities.csv", index=False
    )
    pd.DataFrame({"order_id": ["o1"], "customer_id": ["web-7"], "ts": ["2024-01-01"], "amount": [1.0]}).to_csv(
        folder / "purchases.csv", index=False
    )
    monkeypatch.delenv("PORTRAIT_IDENTITY_SALT", raising=False)
    code, text = run("identity", "explain", "web-7", "--data", str(folder))
    assert code == 0
    assert "1 phone identifier shared by app-3, web-7" in text and "1 email identifier shared by app-3, store-9" in text
    assert "set PORTRAIT_IDENTITY_SALT" in text
    assert not any(shown in text for shown in ["+447700900001", *_unsalted("+447700900001")])
    monkeypatch.setenv("PORTRAIT_IDENTITY_SALT", "pepper")
    code, text = run("identity", "explain", "web-7", "--data", str(folder))
    import hashlib

    salted = hashlib.sha256(b"pepper+447700900001").hexdigest()
    assert code == 0 and f"phone (salted hash {salted}) is shared by app-3, web-7" in text
    assert not any(shown in text for shown in _unsalted("+447700900001"))


def test_explain_an_unknown_id_says_so():
    with pytest.raises(PortraitError, match="'nobody' is not in the identities table"):
        explain(_dataset().connect(), "nobody")


def test_hashing_replaces_values_with_salted_hashes(tmp_path, monkeypatch):
    source = tmp_path / "identities.csv"
    LINKS.to_csv(source, index=False)
    monkeypatch.setenv("PORTRAIT_IDENTITY_SALT", "pepper")
    hash_identities_file(source, tmp_path / "a.parquet")
    hashed = pd.read_parquet(tmp_path / "a.parquet")
    assert not set(hashed["id_value"]) & set(LINKS["id_value"])
    assert hashed["id_value"].str.len().eq(64).all()
    # same salt, same merge; another salt, other hashes
    assert resolve(hashed)["person_id"].tolist() == resolve(LINKS)["person_id"].tolist()
    hash_identities_file(source, tmp_path / "b.parquet", salt="other")
    assert not set(pd.read_parquet(tmp_path / "b.parquet")["id_value"]) & set(hashed["id_value"])


def test_hashing_refuses_to_overwrite_its_source_a_csv_name_or_hashing_twice(tmp_path):
    source = tmp_path / "identities.csv"
    LINKS.to_csv(source, index=False)
    before = source.read_bytes()
    with pytest.raises(PortraitError, match="is the source itself"):
        hash_identities_file(source, source, salt="pepper")
    with pytest.raises(PortraitError, match="written as Parquet"):
        hash_identities_file(source, tmp_path / "hashed.csv", salt="pepper")
    assert source.read_bytes() == before and not (tmp_path / "hashed.csv").exists()
    hash_identities_file(source, tmp_path / "hashed.parquet", salt="pepper")
    with pytest.raises(PortraitError, match="every id_value is already a SHA-256 hex digest"):
        hash_identities_file(tmp_path / "hashed.parquet", tmp_path / "twice.parquet", salt="pepper")
    assert not (tmp_path / "twice.parquet").exists()


def test_hashing_without_a_salt_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTRAIT_IDENTITY_SALT", raising=False)
    LINKS.to_csv(tmp_path / "identities.csv", index=False)
    with pytest.raises(PortraitError, match="set PORTRAIT_IDENTITY_SALT"):
        hash_identities_file(tmp_path / "identities.csv", tmp_path / "out.parquet")


def test_the_map_built_on_a_connection_equals_the_full_graphs():
    # register_identity_map builds the graph from shared identifiers only; every id must still
    # map exactly as resolving the whole table does (chains, unshared ids, same value other type).
    from portrait.dataset import Dataset

    purchases = pd.DataFrame(
        {"order_id": ["o1"], "customer_id": ["solo"], "ts": ["2024-01-01 10:00:00"], "amount": [1.0]}
    )
    con = Dataset.from_frames(purchases=purchases, identities=LINKS).connect()
    built = con.execute("SELECT customer_id, person_id FROM identity_map ORDER BY customer_id").df()
    expected = resolve(LINKS)
    assert built.to_dict("list") == {
        "customer_id": expected["customer_id"].tolist(),
        "person_id": expected["person_id"].tolist(),
    }


@pytest.mark.parametrize(
    "content, message",
    [
        (b"customer_id,id_type,id_value\nA,phone,111\nB,phone,222\nC,phone\n", r"line 4 has 2 fields, the header 3"),
        (b"customer_id,id_type,id_value\nA,phone,111\nD,phone,444,extra\n", r"line 3 has 4 fields, the header 3"),
        (b"customer_id,id_type,id_value\nA,phone,111\nB,phone,2\xff22\n", r"line 3: byte b'\\xff' .* is not UTF-8"),
        (b'customer_id,id_type,id_value\nA,phone,"11\n', r"line 2: unexpected end of data"),
        (
            b"customer_id,id_type,value\nA,phone,111\n",
            r"no id_value column: .* 3 field\(s\), of them customer_id, id_type;",
        ),
        # no header line: the first row's identifiers are not repeated in the message
        (b"C1,email,alice@example.com\n", r"3 field\(s\), none of them customer_id, id_type or id_value;(?!.*alice)"),
        (b"", r"is empty: expected a header line"),
        # an old Mac file: one line to the reader, a traceback (new-line character seen in unquoted field)
        (b"customer_id,id_type,id_value\rC1,email,a@x.com\r", r"lines end with a carriage return alone(?!.*a@x)"),
    ],
)
def test_hashing_reads_the_csv_strictly_and_writes_nothing_on_a_bad_line(tmp_path, monkeypatch, content, message):
    from tests.test_marketing_api_cli import run

    source = tmp_path / "ids.csv"
    source.write_bytes(content)
    target = tmp_path / "out" / "hashed.parquet"
    target.parent.mkdir()
    target.write_bytes(b"the previous copy")
    with pytest.raises(PortraitError, match=message) as raised:
        hash_identities_file(source, target, salt="pepper")
    assert str(raised.value).startswith(str(source))  # names the file
    assert target.read_bytes() == b"the previous copy"
    assert [p.name for p in target.parent.iterdir()] == ["hashed.parquet"]  # no temporary file left
    monkeypatch.setenv("PORTRAIT_IDENTITY_SALT", "pepper")
    code, text = run("identity", "hash", str(source), "--out", str(target))
    assert code == 2 and str(source) in text
    assert target.read_bytes() == b"the previous copy"


def test_hashing_a_strict_csv_keeps_quoted_fields_and_other_delimiters(tmp_path):
    (tmp_path / "a.csv").write_text('customer_id,id_type,id_value\nA,phone,111\n"B, jr",phone,222\n\n')
    (tmp_path / "b.csv").write_text("customer_id;id_type;id_value\nA;phone;111\n")
    assert hash_identities_file(tmp_path / "a.csv", tmp_path / "a.parquet", salt="pepper") == (2, 2)
    assert hash_identities_file(tmp_path / "b.csv", tmp_path / "b.parquet", salt="pepper") == (1, 1)
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert a["customer_id"].tolist() == ["A", "B, jr"]
    import hashlib

    assert a["id_value"].tolist() == [
        hashlib.sha256(b"pepper111").hexdigest(),
        hashlib.sha256(b"pepper222").hexdigest(),
    ]
    assert pd.read_parquet(tmp_path / "b.parquet")["id_value"].tolist() == [hashlib.sha256(b"pepper111").hexdigest()]


PLACEHOLDERS = (
    "customer_id,id_type,id_value\n"
    "A,email,a@x.com\nB,email,a@x.com\n"  # a real shared identifier: A and B are one person
    "C,phone,N/A\nD,phone,null\nE,phone,0\nF,phone,000-000\nG,phone,unknown\nH,phone,N/A\n"
    "C,email, \nD,email, \nE,email,e@x.com \nF,email,e@x.com\n"  # CSV values are trimmed
)


def _persons(folder) -> dict[str, str]:
    from portrait.dataset import open_dataset

    con = open_dataset(folder).connect()
    rows = con.execute("SELECT customer_id, person_id FROM identity_map WHERE customer_id <> person_id").fetchall()
    return dict(rows)


def test_placeholder_identifiers_are_quarantined_and_merge_nobody(tmp_path):
    from portrait.dataset import open_dataset
    from portrait.validate import validate

    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount\n" + "".join(f"o{c},{c},2024-01-01,1\n" for c in "ABCDEFGH")
    )
    (folder / "identities.csv").write_text(PLACEHOLDERS)
    # only the real shared values merge: A~B (a@x.com), E~F (e@x.com, trimmed); C, D, G and H
    # share only placeholders and blanks
    assert _persons(folder) == {"B": "A", "F": "E"}
    report = validate(open_dataset(folder))
    reasons = next(t for t in report.tables if t.table == "identities").quarantined
    assert reasons == {"placeholder_id_value": 6, "missing_id_value": 2}


def test_the_hashed_copy_merges_the_same_people_as_the_source(tmp_path):
    folder, hashed = tmp_path / "raw", tmp_path / "hashed"
    for target in (folder, hashed):
        target.mkdir()
        (target / "purchases.csv").write_text(
            "order_id,customer_id,ts,amount\n" + "".join(f"o{c},{c},2024-01-01,1\n" for c in "ABCDEFGH")
        )
    (folder / "identities.csv").write_text(PLACEHOLDERS)
    rows, values = hash_identities_file(folder / "identities.csv", hashed / "identities.parquet", salt="pepper")
    # the blanks and placeholders stay empty: not counted as hashed (it said 3 of 3 with one N/A)
    assert (rows, values) == (
        PLACEHOLDERS.count("\n") - 1,
        int(pd.read_parquet(hashed / "identities.parquet")["id_value"].notna().sum()),
    )
    assert values == rows - 8
    assert _persons(hashed) == _persons(folder) == {"B": "A", "F": "E"}


def test_an_identifier_shared_by_more_than_the_limit_links_nobody_and_is_reported(tmp_path):
    """One value held by dozens of ids (the hash of an empty e-mail, a store's own card) would
    merge them all into one person; it links nobody, and validate says how many such values."""
    from portrait.dataset import open_dataset
    from portrait.identity import MAX_IDS_PER_IDENTIFIER
    from portrait.validate import validate

    many = [f"c{i:02d}" for i in range(MAX_IDS_PER_IDENTIFIER + 5)]
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount\n" + "".join(f"o{c},{c},2024-01-01,1\n" for c in many)
    )
    rows = [f"{c},email,samehash\n" for c in many] + ["c00,phone,p1\n", "c01,phone,p1\n"]
    (folder / "identities.csv").write_text("customer_id,id_type,id_value\n" + "".join(rows))
    assert _persons(folder) == {"c01": "c00"}  # only the phone two ids share merges them
    report = validate(open_dataset(folder))
    summary = report.identities
    assert (summary.merged_ids, summary.largest_person) == (2, 2)
    assert (summary.unlinked_identifiers, summary.unlinked_identifier_ids) == (1, MAX_IDS_PER_IDENTIFIER + 5)
    assert (
        f"identities: 1 identifier value(s) are each held by more than {MAX_IDS_PER_IDENTIFIER} customer ids "
        f"({MAX_IDS_PER_IDENTIFIER + 5} in all) and link nobody"
    ) in " ".join(report.notes)
    assert "samehash" not in " ".join(report.notes)
    # explain shows the phone as what joined them, and the e-mail as too widely held to link anyone
    with open_dataset(folder).connect() as con:
        explained = explain(con, "c01")
    assert [(s["id_type"], s["customer_ids"]) for s in explained["shared_identifiers"]] == [("phone", ["c00", "c01"])]
    assert explained["unlinked_identifiers"] == [
        {"id_type": "email", "identifiers": 1, "most_ids_holding_one": MAX_IDS_PER_IDENTIFIER + 5}
    ]


def test_a_chain_of_ids_longer_than_the_limit_is_one_person_and_is_reported():
    ids = [f"c{i:02d}" for i in range(25)]
    links = pd.DataFrame(  # c00 -k0- c01 -k1- c02 ...: each value shared by two ids only
        {"customer_id": ids[:-1] + ids[1:], "id_type": ["card"] * 48, "id_value": [f"k{i}" for i in range(24)] * 2}
    )
    summary = summarize(resolve(links))
    assert (summary.persons, summary.largest_person) == (1, 25)
    assert summary.warnings() == [
        "identities: one person is 25 customer ids chained through shared identifiers; check it with portrait "
        "identity explain"
    ]


JUDGED_LINKS = pd.DataFrame(
    {
        "customer_id": [
            "zed1",
            "anna.smith@example.com",
            "+44 7700 900123",
            "0770 0900124",
            "0770 0900125",
            "0100000001",
            "W77",
        ],
        "id_type": ["device"] * 7,
        "id_value": ["d1", "d1", "d1", "d2", "d2", "d3", "d3"],
    }
)


def test_the_person_id_is_the_smallest_id_that_does_not_look_like_an_email_or_a_phone_number():
    """An opaque buyer merged with an e-mail-shaped id became person 'anna.smith@...' ('+' and
    digits sort before letters), which then keyed every output. Two personal ids alone: the
    smallest. An id of digits alone (a loyalty number as often as a phone's) is not judged."""
    purchases = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["zed1", "0770 0900124", "0770 0900125"],
            "ts": ["2024-01-05 10:00:00"] * 3,
            "amount": [1.0, 2.0, 3.0],
        }
    )
    con = Dataset.from_frames(purchases=purchases, identities=JUDGED_LINKS).connect()
    mapping = dict(con.execute("SELECT customer_id, person_id FROM identity_map").fetchall())
    assert mapping == {
        "zed1": "zed1",
        "anna.smith@example.com": "zed1",
        "+44 7700 900123": "zed1",
        "0770 0900124": "0770 0900124",
        "0770 0900125": "0770 0900124",
        "0100000001": "0100000001",
        "W77": "0100000001",
    }
    assert con.execute("SELECT DISTINCT customer_id FROM purchases ORDER BY 1").fetchall() == [
        ("0770 0900124",),
        ("zed1",),
    ]
