from pathlib import Path

import pandas as pd
import pytest

from portrait.adapters.cdnow import import_cdnow
from portrait.adapters.completejourney import import_completejourney
from portrait.dataset import open_dataset
from portrait.errors import ContractError
from portrait.validate import validate

CDNOW_MASTER = """ customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
 00002 19970112  1   12.00
 00002 19970112  5   77.00
 00003 19970102  2   20.76
 00003 19970330  2   20.76
 00003 19970330  2   20.76
"""


def test_cdnow_sums_a_customers_day_into_one_order_and_keeps_every_dollar(tmp_path):
    raw = tmp_path / "CDNOW_master.txt"
    raw.write_text(CDNOW_MASTER)
    counts = import_cdnow(raw, tmp_path / "cdnow")
    assert counts == {"purchases": 4}
    con = open_dataset(tmp_path / "cdnow").connect()
    rows = con.execute(
        "SELECT order_id, customer_id, CAST(ts AS DATE), amount, quantity, channel FROM purchases ORDER BY 1"
    ).fetchall()
    assert [(r[0], r[1], str(r[2]), r[3], r[4], r[5]) for r in rows] == [
        ("00001-19970101", "00001", "1997-01-01", 11.77, 1.0, "web"),
        ("00002-19970112", "00002", "1997-01-12", 89.0, 6.0, "web"),
        ("00003-19970102", "00003", "1997-01-02", 20.76, 2.0, "web"),
        ("00003-19970330", "00003", "1997-03-30", 41.52, 4.0, "web"),
    ]


@pytest.mark.parametrize("form", ["bom", "gzip"])
def test_cdnow_saved_with_a_byte_order_mark_or_compressed_imports_the_same(tmp_path, form):
    """A byte-order mark (Notepad, Excel) made the whole file "not a CDNOW file"; a gzip file
    was refused with a dump of its binary first line."""
    import gzip

    raw = tmp_path / "CDNOW_master.txt"
    written = CDNOW_MASTER.encode()
    raw.write_bytes(b"\xef\xbb\xbf" + written if form == "bom" else gzip.compress(written))
    assert import_cdnow(raw, tmp_path / "cdnow") == {"purchases": 4}
    ids = pd.read_parquet(tmp_path / "cdnow" / "purchases.parquet")["customer_id"]
    assert sorted(ids.unique()) == ["00001", "00002", "00003"]
    for damaged in (b"\x1f\x8b" + b"not really gzip", gzip.compress(written)[:10] + b"\xff" * 40):
        raw.write_bytes(damaged)  # a header that is not gzip's; gzip's header with damaged data (zlib's error)
        with pytest.raises(ContractError, match=r"is a gzip file that cannot be decompressed .*nothing imported"):
            import_cdnow(raw, tmp_path / "other")


def test_cdnow_sample_format_without_header(tmp_path):
    raw = tmp_path / "CDNOW_sample.txt"
    raw.write_text("   4   1  19970101   2   29.33\n   4   1  19970118   2   29.73\n")
    import_cdnow(raw, tmp_path / "out")
    report = validate(open_dataset(tmp_path / "out"))
    assert report.tables[0].valid_rows == 2 and report.purchases_customers == 1


def test_cdnow_writes_typed_columns(tmp_path):
    import pyarrow.parquet as pq

    raw = tmp_path / "CDNOW_master.txt"
    raw.write_text(CDNOW_MASTER)
    import_cdnow(raw, tmp_path / "cdnow")
    schema = pq.read_schema(tmp_path / "cdnow" / "purchases.parquet")
    types = {name: str(schema.field(name).type) for name in schema.names}
    assert types == {
        "order_id": "string",
        "customer_id": "string",
        "ts": "timestamp[us]",
        "amount": "double",
        "quantity": "double",
        "channel": "string",
    }
    report = validate(open_dataset(tmp_path / "cdnow"))
    assert report.tables[0].valid_rows == 4 and not report.tables[0].quarantined


def test_cdnow_lines_that_cannot_be_split_are_set_aside_with_their_true_line_number(tmp_path):
    """A line with a sixth field, a byte that is not UTF-8, a blank line before them (counted):
    the rest is imported; ids are kept as written (NA is an id, not a missing value)."""
    raw = tmp_path / "CDNOW_master.txt"
    lines = (
        CDNOW_MASTER.encode() + b"\n NA 19970105  1   5.00\n 00006 19970105  1   5.00  77\n 00007 1997\xff0105 1 5.00\n"
    )
    raw.write_bytes(lines)
    counts = import_cdnow(raw, tmp_path / "out")
    assert counts == {"purchases": 5, "import_rejects": 2}
    rejects = pd.read_csv(tmp_path / "out" / "import_rejects.csv", dtype=str, keep_default_na=False)
    assert rejects[["line", "reason"]].to_dict("records") == [
        {"line": "10", "reason": "5 fields, expected 4"},
        {"line": "11", "reason": "not UTF-8"},
    ]
    purchases = pd.read_parquet(tmp_path / "out" / "purchases.parquet")
    assert "NA" in purchases["customer_id"].tolist()


def test_cdnow_rows_that_do_not_parse_are_set_aside_with_their_line(tmp_path):
    raw = tmp_path / "CDNOW_master.txt"
    raw.write_text(CDNOW_MASTER + " 00004 1997XX01  1   5.00\n 00005 19970105  1   abc\n")
    counts = import_cdnow(raw, tmp_path / "out")
    assert counts == {"purchases": 4, "import_rejects": 2}
    rejects = pd.read_csv(tmp_path / "out" / "import_rejects.csv", dtype=str)
    parse = "date, count or amount does not parse"
    assert rejects.drop(columns=["raw_line"]).to_dict("records") == [
        {
            "line": "8",
            "customer_id": "00004",
            "date": "1997XX01",
            "number_of_cds": "1",
            "dollar_value": "5.00",
            "reason": parse,
        },
        {
            "line": "9",
            "customer_id": "00005",
            "date": "19970105",
            "number_of_cds": "1",
            "dollar_value": "abc",
            "reason": parse,
        },
    ]
    assert rejects["raw_line"].tolist() == [" 00004 1997XX01  1   5.00", " 00005 19970105  1   abc"]
    report = validate(open_dataset(tmp_path / "out"))
    assert report.tables[0].valid_rows == 4


def test_cdnow_refuses_a_file_of_another_shape(tmp_path):
    raw = tmp_path / "other.txt"
    raw.write_text("a b\n1 2\n")
    with pytest.raises(ContractError, match="does not look like a CDNOW file"):
        import_cdnow(raw, tmp_path / "out")


def _completejourney_slice(folder: Path) -> Path:
    folder.mkdir()
    ts = pd.to_datetime(["2017-01-01 11:53:26", "2017-01-01 11:53:26", "2017-02-03 09:00:00"])
    pd.DataFrame(
        {
            "household_id": [900, 900, 1228],
            "store_id": [330, 330, 406],
            "basket_id": [31, 31, 32],
            "product_id": [1, 2, 1],
            "quantity": [1, 2, 1],
            "sales_value": [0.5, 3.0, 1.43],
            "retail_disc": [0.0, 0.6, 0.15],
            "coupon_disc": [0.0, 0.5, 0.0],
            "coupon_match_disc": [0.0, 0.1, 0.0],
            "week": [1, 1, 5],
            "transaction_timestamp": ts,
        }
    ).to_parquet(folder / "transactions.parquet")
    pd.DataFrame(
        {
            "product_id": [1, 2],
            "manufacturer_id": [2, 69],
            "department": ["GROCERY", "PASTRY"],
            "brand": ["National", "Private"],
            "product_category": ["FRZN ICE", None],
            "product_type": ["ICE", "BREAD"],
            "package_size": ["22 LB", None],
        }
    ).to_parquet(folder / "products.parquet")
    pd.DataFrame({"campaign_id": [1], "household_id": [900]}).to_parquet(folder / "campaigns.parquet")
    pd.DataFrame(
        {
            "campaign_id": [1],
            "campaign_type": ["Type B"],
            "start_date": pd.to_datetime(["2017-03-03"]),
            "end_date": pd.to_datetime(["2017-04-09"]),
        }
    ).to_parquet(folder / "campaign_descriptions.parquet")
    pd.DataFrame(
        {
            "household_id": [1228],
            "coupon_upc": [5],
            "campaign_id": [1],
            "redemption_date": pd.to_datetime(["2017-03-10"]),
        }
    ).to_parquet(folder / "coupon_redemptions.parquet")
    pd.DataFrame(
        {
            "household_id": [900],
            "age": ["65+"],
            "income": ["35-49K"],
            "home_ownership": ["Homeowner"],
            "marital_status": ["Married"],
            "household_size": ["2"],
            "household_comp": ["2 Adults No Kids"],
            "kids_count": ["0"],
        }
    ).to_parquet(folder / "demographics.parquet")
    return folder


def test_completejourney_maps_lines_campaigns_coupons_and_demographics(tmp_path):
    source = _completejourney_slice(tmp_path / "cj_raw")
    counts = import_completejourney(tmp_path / "cj", source_dir=source)
    assert counts == {"purchases": 3, "events": 2, "customers": 1}
    con = open_dataset(tmp_path / "cj").connect()
    lines = con.execute(
        "SELECT order_id, customer_id, amount, category, brand, channel, ROUND(discount, 2), store_id "
        "FROM purchases ORDER BY ts, product_id"
    ).fetchall()
    assert lines == [
        ("31", "900", 0.5, "FRZN ICE", "National", "store", 0.0, "330"),
        ("31", "900", 3.0, "PASTRY", "Private", "store", 1.2, "330"),  # department when no category
        ("32", "1228", 1.43, "FRZN ICE", "National", "store", 0.15, "406"),
    ]
    events = con.execute(
        "SELECT customer_id, CAST(ts AS DATE), event_type, category, value FROM events ORDER BY ts"
    ).fetchall()
    assert [(e[0], str(e[1]), *e[2:]) for e in events] == [  # the campaign id is no amount
        ("900", "2017-03-03", "campaign_received", "campaign 1", None),
        ("1228", "2017-03-10", "coupon_redeemed", "campaign 1", None),
    ]
    assert con.execute("SELECT customer_id, age_band, income_band FROM customers").fetchall() == [
        ("900", "65+", "35-49K")
    ]


@pytest.mark.slow
def test_completejourney_package_data_imports_and_validates_clean(tmp_path):
    import_completejourney(tmp_path / "cj")
    report = validate(open_dataset(tmp_path / "cj"))
    assert report.tables[0].rows == 1_469_307
    assert report.purchases_customers == 2_469
    assert report.quarantined_rows == 0


def test_a_text_file_that_is_not_cdnow_is_refused_not_imported_as_nothing(tmp_path):
    """A readme whose first line has four words was "imported": 0 purchases, exit 0, and the
    next command failed on an empty table."""
    from portrait.errors import PortraitError

    readme = tmp_path / "README.md"
    readme.write_text("CDNOW data set here\n\nThe master file has four columns per line.\nSee the paper.\n")
    with pytest.raises(PortraitError, match=r"README.md: none of its 3 non-blank lines is a CDNOW purchase"):
        import_cdnow(readme, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_import_refuses_a_folder_holding_another_data_set_and_replaces_its_own(tmp_path):
    from portrait.errors import PortraitError

    raw = tmp_path / "CDNOW_master.txt"
    raw.write_text(CDNOW_MASTER)
    import_cdnow(raw, tmp_path / "cdnow")
    assert import_cdnow(raw, tmp_path / "cdnow") == {"purchases": 4}  # the same import again: replaced
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"customer_id": ["a"], "ts": ["2024-01-01"], "event_type": ["view"]}).to_csv(
        other / "events.csv", index=False
    )
    with pytest.raises(PortraitError, match=r"already holds a data set \(events.csv\): write into a new or empty"):
        import_cdnow(raw, other)
    assert sorted(p.name for p in other.iterdir()) == ["events.csv"]  # nothing written
    renamed = tmp_path / "renamed"  # a data set whose purchases file has another name
    renamed.mkdir()
    (renamed / "sales_export.csv").write_text("order_id,customer_id,ts,amount\no1,c1,2024-01-01,5\n")
    (renamed / "portrait.toml").write_text('[tables.purchases]\nfile = "sales_export.csv"\n')
    with pytest.raises(PortraitError, match=r"already holds a data set \(tables named in portrait.toml\)"):
        import_cdnow(raw, renamed)
    # sample-data too refuses another data set's folder (it replaced the Complete Journey's tables
    # and left a stray identities file beside them), and writes its own folder again
    from portrait.synthetic import write_sample_data

    with pytest.raises(PortraitError, match=r"cdnow already holds a data set \(purchases.parquet, imported by"):
        write_sample_data(tmp_path / "cdnow", customers=5, seed=1)
    assert sorted(p.name for p in (tmp_path / "cdnow").iterdir()) == ["SOURCE.json", "purchases.parquet"]
    assert write_sample_data(tmp_path / "synthetic", customers=5, seed=1)["purchases"] > 0
    assert write_sample_data(tmp_path / "synthetic", customers=6, seed=1)["customers"] == 6
    with pytest.raises(PortraitError, match="imported by sample-data"):
        import_cdnow(raw, tmp_path / "synthetic")
    settings_only = tmp_path / "settings_only"  # privacy settings written before the first import
    settings_only.mkdir()
    (settings_only / "portrait.toml").write_text('[privacy]\nsensitive_columns = ["gender"]\n')
    assert import_cdnow(raw, settings_only) == {"purchases": 4}


def test_an_import_stopped_before_its_record_is_refused_as_a_data_set_until_run_again(tmp_path, monkeypatch):
    """Killed after its tables and before SOURCE.json, a folder looked like a finished import
    (or, killed between tables, one of some new tables beside old or missing ones)."""
    import json

    import portrait.adapters.cdnow as cdnow

    raw = tmp_path / "CDNOW_master.txt"
    raw.write_text(CDNOW_MASTER)

    def stopped(out_dir, info):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(cdnow, "write_provenance", stopped)
        with pytest.raises(KeyboardInterrupt):
            import_cdnow(raw, tmp_path / "cdnow")
    assert (tmp_path / "cdnow" / "purchases.parquet").exists()
    with pytest.raises(
        ContractError, match=r"an import into it \(portrait.adapters.cdnow\) did not finish.*run the import again"
    ):
        open_dataset(tmp_path / "cdnow")
    assert import_cdnow(raw, tmp_path / "cdnow") == {"purchases": 4}  # the same import again: finished
    assert json.loads((tmp_path / "cdnow" / "SOURCE.json").read_text())["complete"] is True
    assert open_dataset(tmp_path / "cdnow").has("purchases")
