"""The /tags and /segments routes, and the tags/segment/rfm commands as a user runs them."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from marketing.segments import Evaluated, Segment, SegmentStore, record_refresh
from portrait.errors import PortraitError
from serving.marketing_routes import build_router
from tests.test_marketing_tags import EVENTS, PURCHASES


@pytest.fixture
def data_folder(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    EVENTS.to_csv(folder / "events.csv", index=False)
    return folder


def run(*args: str):
    """Invoke the CLI; a product error counts as exit 2 with its message, as in portrait_cli.main."""
    from portrait_cli.main import _register_later_commands, app

    _register_later_commands()
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, PortraitError):
        return 2, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_routes_serve_stored_tags_and_segments(tmp_path):
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("viewers", where="events('view') > 0", description="anyone who viewed"))
    store.save(Segment("empty", where="orders_lifetime > 1000"))
    record_refresh(store, Evaluated("viewers", pd.Series(["B", "C", "E"]), 10, dt.date(2024, 3, 1)))
    tags = tmp_path / "tags"
    tags.mkdir()
    pd.DataFrame(
        {"customer_id": ["A", "B", "A"], "tag": ["promotion-sensitive", "promotion-sensitive", "RFM: Lost"]}
    ).to_parquet(tags / "tags_2024-03-01.parquet")
    app = FastAPI()
    app.include_router(build_router(store.folder, tags, None))
    client = TestClient(app)
    listed = client.get("/tags").json()
    assert listed["as_of"] == "2024-03-01"
    assert listed["library"] == "retail.toml"  # the file's name, not its folder on the server
    by_name = {t["name"]: t for t in listed["tags"]}
    assert by_name["promotion-sensitive"]["customers"] == 2 and by_name["promotion-sensitive"]["kind"] == "rule"
    assert by_name["RFM: Lost"]["group"] == "value/rfm" and by_name["RFM: Lost"]["customers"] == 1
    assert by_name["VIP"]["kind"] == "manual" and by_name["VIP"]["customers"] == 0  # none in the stored table
    # the counts come from the summary written beside the table when it is that table's (not the
    # whole table read per request); a tag everyone left since the run before is not listed
    summary = tags / "tags_2024-03-01.summary.json"
    recorded = {
        "promotion-sensitive": {"customers": 7},
        "RFM: Lost": {"customers": 1},
        "RFM: Champions": {"customers": 0},
    }
    summary.write_text(json.dumps({"as_of": "2024-03-01", "tags": recorded}))
    by_name = {t["name"]: t for t in client.get("/tags").json()["tags"]}
    assert by_name["promotion-sensitive"]["customers"] == 7 and "RFM: Champions" not in by_name
    assert by_name["likely repurchaser"]["customers"] == 0 and not by_name["likely repurchaser"]["skipped"]
    # a model tag the run skipped (its scores missing) holds nobody because it was not applied:
    # no count, not 0, which a marketer would believe (a user's test)
    summary.write_text(json.dumps({"as_of": "2024-03-01", "tags": recorded, "skipped": ["likely repurchaser"]}))
    by_name = {t["name"]: t for t in client.get("/tags").json()["tags"]}
    assert by_name["likely repurchaser"]["customers"] is None and by_name["likely repurchaser"]["skipped"]
    assert by_name["promotion-sensitive"]["customers"] == 7 and not by_name["promotion-sensitive"]["skipped"]
    # the table's own record of what its run skipped, without a summary (a run stopped between the two)
    from marketing.tags import with_skipped

    held = pd.read_parquet(tags / "tags_2024-03-01.parquet")
    summary.unlink()
    with_skipped(held, ["high-value potential"]).to_parquet(tags / "tags_2024-03-01.parquet")
    by_name = {t["name"]: t for t in client.get("/tags").json()["tags"]}
    assert by_name["high-value potential"]["skipped"] and by_name["high-value potential"]["customers"] is None
    assert by_name["promotion-sensitive"]["customers"] == 2  # counted from the table
    held.to_parquet(tags / "tags_2024-03-01.parquet")
    summary.write_text(json.dumps({"as_of": "2024-03-01", "tags": recorded}))
    # the table rewritten after its summary (portrait forget removes a person from it): the table counts
    table = tags / "tags_2024-03-01.parquet"
    os.utime(table, ns=(summary.stat().st_mtime_ns + 1_000_000, summary.stat().st_mtime_ns + 1_000_000))
    by_name = {t["name"]: t for t in client.get("/tags").json()["tags"]}
    assert by_name["promotion-sensitive"]["customers"] == 2
    os.utime(table, ns=(summary.stat().st_mtime_ns - 1_000_000, summary.stat().st_mtime_ns - 1_000_000))
    for stale in ({"as_of": "2024-02-01", "tags": recorded}, {"as_of": "2024-03-01", "tags": {"VIP": {"n": 1}}}):
        summary.write_text(json.dumps(stale))  # another day's summary, or one edited by hand: the table counts
        by_name = {t["name"]: t for t in client.get("/tags").json()["tags"]}
        assert by_name["promotion-sensitive"]["customers"] == 2 and by_name["VIP"]["customers"] == 0
    segments = {s["name"]: s for s in client.get("/segments").json()["segments"]}
    assert segments["viewers"]["customers"] == 3 and segments["viewers"]["share"] == 0.3
    assert segments["empty"]["customers"] is None and segments["empty"]["as_of"] is None
    one = client.get("/segments/viewers").json()
    assert one["definition"] == "events('view') > 0" and one["as_of"] == "2024-03-01"
    page = client.get("/segments/viewers/customers", params={"limit": 2, "offset": 1}).json()
    assert page == {
        "name": "viewers",
        "as_of": "2024-03-01",
        "total": 3,
        "offset": 1,
        "limit": 2,
        "left_out": {},  # no consent rules given to this router
        "customer_ids": ["C", "E"],
    }
    assert client.get("/segments/nope").status_code == 404
    # a name no segment can have: a bad request, said without echoing a long one whole
    bad = client.get("/segments/" + "X" * 300 + "/customers")
    assert bad.status_code == 422 and "segment name 'XXXX" in bad.json()["detail"]
    assert "(300 characters)" in bad.json()["detail"] and "X" * 100 not in bad.json()["detail"]
    assert "not been refreshed" in client.get("/segments/empty/customers").json()["detail"]
    assert client.get("/segments/viewers/customers", params={"limit": 0}).status_code == 422
    # a file edited by hand: the listing goes on without it (naming it), the segment is a 503
    (store.folder / "edited.toml").write_text("where = 5\n")
    listing = client.get("/segments").json()
    assert sorted(s["name"] for s in listing["segments"]) == ["empty", "viewers"]
    assert listing["unreadable"] == ['edited.toml: where must be text, where = "..." (got 5)']
    broken = client.get("/segments/edited/customers")
    assert broken.status_code == 503 and "where must be text" in broken.json()["detail"]


def test_segment_commands_as_a_user(tmp_path, data_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run(
        "segment",
        "create",
        "browsers",
        "--where",
        "events('view', within_days = 14) >= 3 and not purchased(within_days = 14)",
    )
    assert code == 0 and "saved segment 'browsers'" in text
    # counted on the data first: a value no row has is an error, and nothing is saved
    code, text = run(
        "segment", "create", "toys", "--where", "purchased(category = 'toys') > 0",
        "--data", str(data_folder), "--as-of", "2024-03-01",
    )  # fmt: skip
    assert code == 2 and "has category = 'toys'" in text
    assert not (tmp_path / "segments" / "toys.toml").exists()
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2024-03-01")
    assert code == 0 and "browsers" in text
    assert SegmentStore(tmp_path / "segments").history("browsers")["customers"].tolist() == [1]
    code, text = run(
        "segment",
        "export",
        "browsers",
        "--data",
        str(data_folder),
        "--as-of",
        "2024-03-01",
        "--out",
        "b.csv",
        "--columns",
        "orders_lifetime,rfm_group",
    )
    assert code == 0 and pd.read_csv(tmp_path / "b.csv").to_dict("list") == {
        "customer_id": ["B"],
        "orders_lifetime": [1],
        "rfm_group": ["At risk"],  # R 2 (oldest of 3), F 3 (tie at rank 1.5 of 3), M 5: FM 4
    }
    code, text = run(
        "segment", "count", "--data", str(data_folder), "--as-of", "2024-03-01", "--where", "orders_lifetime > 100"
    )
    assert code == 0 and "has no customers" in text  # a warning, not an error
    code, text = run("segment", "show", "browsers")
    assert code == 0 and "size: 1 customer," in text
    (tmp_path / "segments" / "edited.toml").write_text("include = 'browsers'\n")  # edited by hand
    code, text = run("segment", "list")
    assert code == 2 and text.startswith("segments/edited.toml: include must be a list of names")
    code, text = run("segment", "list", "--segments", str(tmp_path / "segmnets"))  # a typo: not "no segments"
    assert code == 2 and text == f"--segments {tmp_path / 'segmnets'}: no such folder"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--where", "spend_356d > 1"], "unknown column 'spend_356d'; did you mean"),
        (["--where", "purchased(within_days = 0) > 0"], "at least 1 day"),
        (["--where", "spend_365d > 1; drop table purchases"], "';' is not allowed"),
        (["--tag", "loyal repurchasers"], "no tag 'loyal repurchasers'"),
        (["--include", "nothing"], "refers to segment 'nothing'"),
        (["--where", "(" * 40 + "spend_365d > 1" + ")" * 40], "nests parentheses"),
    ],
)
def test_bad_segments_exit_non_zero_and_save_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, text = run("segment", "create", "bad", *args)
    assert code != 0 and message in text.replace("\n", " ")
    assert not (tmp_path / "segments" / "bad.toml").exists()


def test_manual_tags_from_the_command_line(tmp_path, data_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.csv").write_text("customer_id\nA\nC\nnobody\n\n")
    code, text = run("tags", "assign", "VIP", "--ids", "ids.csv", "--data", str(data_folder), "--note", "launch guests")
    assert code == 0 and "assigned 'VIP' to 2 customers ->" in text and "1 id(s) rejected" in text
    assert pd.read_csv(tmp_path / "ids.rejected.csv")["customer_id"].tolist() == ["nobody"]
    code, text = run("tags", "assign", "promotion-sensitive", "--ids", "ids.csv", "--data", str(data_folder))
    assert code == 2 and "is a rule tag" in text
    code, text = run("tags", "assign", "RFM: Lost", "--ids", "ids.csv", "--data", str(data_folder))
    assert code == 2 and "tag 'RFM: Lost' is one of a group's tags: its members come from the group's rule" in text
    code, text = run("tags", "apply", str(data_folder), "--as-of", dt.date.today().isoformat(), "--out", "out")
    tags = pd.read_parquet(next((tmp_path / "out").glob("tags_*.parquet")))
    assert sorted(tags.loc[tags["tag"] == "VIP", "customer_id"]) == ["A", "C"]
    (tmp_path / "some.csv").write_text("customer_id\nA\nB\n")  # B never held it
    code, text = run("tags", "remove", "VIP", "--ids", "some.csv", "--data", str(data_folder))
    assert code == 0 and "removed 'VIP' from 1 customer ->" in text
    assert "; 1 listed customer did not hold it (nothing recorded for them)" in text
    code, text = run("tags", "remove", "VIP", "--ids", "ids.csv", "--data", str(data_folder))
    assert code == 0 and "removed 'VIP' from 1 customer" in text  # C; A no longer holds it
    code, text = run("tags", "remove", "VIP", "--ids", "ids.csv", "--data", str(data_folder))
    assert code == 0 and "nobody listed holds 'VIP': 2 listed customers did not hold it" in text
    log = pd.read_parquet(tmp_path / "tags" / "manual.parquet")
    assert sorted(log.loc[log["action"] == "remove", "customer_id"]) == ["A", "C"]  # B never recorded
    for week_date in ("2027-W18", "20270501"):  # Python reads both as dates; the help says YYYY-MM-DD
        code, text = run(
            "tags", "assign", "VIP", "--ids", "ids.csv", "--data", str(data_folder), "--expires", week_date
        )
        assert code == 2 and text == f"--expires {week_date!r} is not a date (YYYY-MM-DD)"


def test_a_manual_tags_expiry_is_in_the_future_of_the_data_sets_day(tmp_path, data_folder, monkeypatch):
    """Checked against the server's date, an expiry that was already today where the data set's
    times are (UTC+14) was accepted, and the tag never held. A zone whose date now differs from
    the server's (UTC) one: ahead after 10:00 UTC, behind before."""
    from zoneinfo import ZoneInfo

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.csv").write_text("customer_id\nA\n")
    zone = "Pacific/Kiritimati" if dt.datetime.now(dt.UTC).hour >= 10 else "Pacific/Pago_Pago"
    (data_folder / "portrait.toml").write_text(f'timezone = "{zone}"\n')
    today = dt.datetime.now(ZoneInfo(zone)).date()
    assign = ("tags", "assign", "VIP", "--ids", "ids.csv", "--data", str(data_folder), "--expires")
    code, text = run(*assign, today.isoformat())
    assert code == 2 and f"is not in the future (today is {today} in the data set's zone)" in text
    code, text = run(*assign, (today + dt.timedelta(days=1)).isoformat())
    assert code == 0 and "assigned 'VIP' to 1 customer" in text


def test_rfm_command_writes_scores_groups_and_migration(tmp_path, data_folder):
    code, text = run(
        "rfm", str(data_folder), "--as-of", "2024-03-01", "--previous", "2024-02-01", "--out", str(tmp_path / "rfm")
    )
    assert code == 0 and "top 20% of buyers" in text
    scores = pd.read_parquet(tmp_path / "rfm" / "rfm_2024-03-01.parquet")
    assert set(scores["customer_id"]) == {"A", "B", "C"}
    migration = pd.read_csv(tmp_path / "rfm" / "rfm_migration_2024-02-01_2024-03-01.csv")
    assert migration.drop(columns="from").to_numpy().sum() == 3
    # a date with a time at midnight names the file by its date, not by the text given
    code, text = run(
        "rfm",
        str(data_folder),
        "--as-of",
        "2024-03-01",
        "--previous",
        "2024-02-01 00:00",
        "--out",
        str(tmp_path / "rfm"),
    )
    assert code == 0 and sorted(p.name for p in (tmp_path / "rfm").glob("rfm_migration_*")) == [
        "rfm_migration_2024-02-01_2024-03-01.csv"
    ]


def test_a_list_keeps_only_the_given_customers_in_score_order():
    from serving.lists import build_list

    scores = pd.DataFrame(
        {"customer_id": ["A", "B", "C"], "m_score": [0.9, 0.5, 0.7], "m_percentile": [100.0, 33.3, 66.7]}
    )
    features = pd.DataFrame({"customer_id": ["A", "B", "C"], "orders_90d": [1, 2, 3]})
    rows = build_list(scores, features, "m", customers={"B", "C"})
    assert rows["customer_id"].tolist() == ["C", "B"]
    assert build_list(scores, features, "m", customers=set()).empty


def test_tags_and_segment_refresh_name_a_wrong_engine_option(data_folder, tmp_path):
    code, message = run(
        "tags", "apply", str(data_folder), "--as-of", "2024-03-01", "--out", str(tmp_path / "t"), "--engine", "flink"
    )
    assert code == 2 and "unknown engine 'flink'; choose one of duckdb, spark" in message
    code, message = run(
        "tags",
        "apply",
        str(data_folder),
        "--as-of",
        "2024-03-01",
        "--out",
        str(tmp_path / "t"),
        "--spark-master",
        "local[1]",
    )
    assert code == 2 and "--spark-master is an option of --engine spark" in message
    SegmentStore(tmp_path / "segments").save(Segment("viewers", where="events('view') > 0"))
    code, message = run(
        "segment",
        "refresh",
        "--data",
        str(data_folder),
        "--as-of",
        "2024-03-01",
        "--segments",
        str(tmp_path / "segments"),
        "--engine",
        "flink",
    )
    assert code == 2 and "unknown engine 'flink'" in message
    assert not (tmp_path / "t").exists()


def test_segment_count_and_create_take_the_engine_options(data_folder, tmp_path):
    segments = ["--segments", str(tmp_path / "segments")]
    common = ["--data", str(data_folder), "--as-of", "2024-03-01", *segments]
    code, message = run("segment", "count", "--where", "events('view') > 0", *common, "--engine", "flink")
    assert code == 2 and "unknown engine 'flink'; choose one of duckdb, spark" in message
    code, message = run("segment", "create", "viewers", "--where", "events('view') > 0", *common, "--engine", "flink")
    assert code == 2 and "unknown engine 'flink'" in message
    assert not (tmp_path / "segments").exists() or not SegmentStore(tmp_path / "segments").names()
    code, message = run("segment", "create", "viewers", "--where", "events('view') > 0", *segments, "--engine", "spark")
    assert code == 2 and "give --data and --as-of too" in message
    code, message = run("segment", "count", "--where", "events('view') > 0", *common, "--spark-master", "local[1]")
    assert code == 2 and "--spark-master is an option of --engine spark" in message
    code, message = run("segment", "count", "--where", "events('view') > 0", *common, "--engine", "duckdb")
    assert code == 0 and "preview:" in message


def test_text_that_looks_like_markup_is_printed_as_it_is(tmp_path, data_folder, monkeypatch):
    """Paths, names and descriptions a user chose are text, not rich markup: a closing tag with
    nothing open was a MarkupError traceback, and ``[b]`` vanished from the output."""
    monkeypatch.chdir(tmp_path)
    description = "bought [b]twice[/b] then went quiet [/red]"
    code, text = run("segment", "create", "quiet", "--description", description, "--where", "orders_lifetime >= 2")
    assert code == 0, text
    code, text = run("segment", "show", "quiet")
    assert code == 0 and f"quiet — {description}\n" in text
    out = tmp_path / "rfm[/red] [b]x"
    code, text = run("rfm", str(data_folder), "--as-of", "2024-03-01", "--out", str(out))
    assert code == 0 and str(out / "rfm_2024-03-01.parquet") in text
    assert (out / "rfm_2024-03-01.parquet").is_file()
    code, text = run("validate", str(data_folder), "--out", str(tmp_path / "checks [/yellow]"))
    assert code == 0 and f"report: {tmp_path / 'checks [/yellow]' / 'report.json'}\n" in text


def test_the_tag_library_tree_shows_every_definition_whole():
    """The tree wraps long definitions at the width (80 columns in a log) and crops none."""
    from marketing.tags import load_library

    code, text = run("tags", "list")
    assert code == 0, text
    flat = "".join(ch for ch in text if not ch.isspace() and ch not in "│├└─")
    for tag in load_library().tags:
        assert "".join(tag.definition().split()) in flat, tag.name


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("spend_lifetime > 500; drop table x", "';' is not allowed"),
        ("spend_lifetme > 500", r"unknown column 'spend_lifetme'; did you mean one of \['spend_lifetime'"),
        ("favourite_category > 3", "compares text with a number"),
    ],
)
def test_listing_a_tag_library_checks_its_conditions(tmp_path, where, message):
    """`tags list --file` is how a library is checked before a night's run: it printed a broken
    condition and exited 0; only `tags apply` refused it."""
    library = tmp_path / "tags.toml"
    library.write_text(
        f'[groups.habits]\ndescription = "x"\n\n[[tags]]\nname = "bad"\ngroup = "habits"\nwhere = "{where}"\n'
    )
    code, text = run("tags", "list", "--file", str(library))
    assert code == 2 and re.search(f"^tag 'bad' \\({re.escape(str(library))}\\): .*{message}", text), text
    fine = tmp_path / "fine.toml"
    # what `tags apply` takes on data with those columns: an attribute's levels, a date attribute's days
    fine.write_text(
        '[groups.age]\ndescription = "a"\nexclusive = "levels"\nfeature = "attr_age"\nvalues = ["young", "old"]\n'
        'bounds = [40]\nno_purchase = "none"\n\n'
        '[groups.habits]\ndescription = "x"\n\n[[tags]]\nname = "ok"\ngroup = "habits"\n'
        "where = \"attr_age_band = '25-34' and purchased(category = 'Dairy', within_days = 30) >= 2 and rfm_group = "
        "'Champions' and repurchase_90d_percentile >= 80 and days_since_signup_date < 400\"\n"
    )
    code, text = run("tags", "list", "--file", str(fine))
    assert code == 0, text


def test_rfm_says_so_when_nobody_bought_before_the_date_or_the_date_is_long_after_the_data(tmp_path, data_folder):
    import json

    code, text = run("rfm", str(data_folder), "--as-of", "2000-01-01", "--out", str(tmp_path / "early"))
    assert code == 2 and "no customer has a purchase, event or signup before 2000-01-01" in text
    assert not (tmp_path / "early").exists()  # as features build: an empty table is no answer
    # customers (they viewed) but no purchase yet: the table, and a note instead of a share
    events_only = tmp_path / "events_only"
    events_only.mkdir()
    later = pd.read_csv(data_folder / "purchases.csv").assign(ts="2024-03-05 10:00:00")  # after the date
    later.to_csv(events_only / "purchases.csv", index=False)
    (events_only / "events.csv").write_text((data_folder / "events.csv").read_text())
    code, text = run("rfm", str(events_only), "--as-of", "2024-03-01", "--out", str(tmp_path / "no_revenue"))
    assert code == 0 and "note: no customer has revenue before 2024-03-01" in text and "nan" not in text
    summary = json.loads((tmp_path / "no_revenue" / "rfm_2024-03-01.summary.json").read_text())  # no NaN
    assert summary["top_20pct_share_of_revenue"] is None and summary["customers"] > 0
    code, text = run("rfm", str(data_folder), "--as-of", "2030-01-01", "--out", str(tmp_path / "late"))
    assert code == 0 and "note: the latest purchase in the data is" in text and "days before 2030-01-01" in text
    code, text = run("rfm", str(data_folder), "--as-of", "2024-03-01", "--out", str(tmp_path / "now"))
    assert code == 0 and "note:" not in text


def test_a_segment_saved_without_data_is_refused_a_value_no_rfm_group_has(tmp_path, monkeypatch):
    """The RFM groups are the same names on any data: 'Champion' was saved without --data and
    failed only at the nightly refresh."""
    monkeypatch.chdir(tmp_path)
    code, text = run("segment", "create", "s1", "--where", "rfm_group = 'Champion'")
    assert code == 2 and "rfm_group has no value 'Champion'; did you mean 'Champions'?" in text
    assert not (tmp_path / "segments").exists()
    code, text = run("segment", "create", "s1", "--where", "rfm_group = 'Champions'")
    assert code == 0, text


def test_tags_and_segments_refuse_a_date_before_the_data(tmp_path, data_folder, monkeypatch):
    """tags apply wrote an empty table with exit 0 (the next run then said everyone entered);
    segment refresh recorded a row of zeros, and a category that exists was "no purchases row
    has category = ...". As features build and rfm: refused, nothing written or recorded."""
    monkeypatch.chdir(tmp_path)
    early = "no customer has a purchase, event or signup before 2000-01-01"
    code, text = run("tags", "apply", str(data_folder), "--as-of", "2000-01-01", "--out", str(tmp_path / "tags"))
    assert (
        code == 2
        and early in text
        and "no customers to tag (is the as-of date before the data?); nothing written" in text
    )
    assert not (tmp_path / "tags").exists()
    code, text = run("segment", "create", "buyers", "--where", "orders_lifetime >= 1")
    assert code == 0, text
    for command in (["segment", "count", "--where", "orders_lifetime >= 1"], ["segment", "refresh"]):
        code, text = run(*command, "--data", str(data_folder), "--as-of", "2000-01-01")
        assert code == 2 and early in text, text
    assert not (tmp_path / "segments" / "buyers.history.csv").exists()
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2024-03-01")
    assert code == 0 and (tmp_path / "segments" / "buyers.history.csv").exists()


def test_features_tags_and_segments_say_so_when_the_date_is_long_after_the_data(tmp_path, data_folder):
    late = "note: the latest purchase in the data is"
    out = tmp_path / "features.parquet"
    code, text = run("features", "build", str(data_folder), "--as-of", "2000-01-01", "--out", str(out))
    assert code == 2 and "no customer has a purchase, event or signup before 2000-01-01" in text
    assert not out.exists()  # an empty table is no answer: nothing written
    code, text = run("features", "build", str(data_folder), "--as-of", "2030-01-01", "--out", str(out))
    assert code == 0 and late in text and "days before 2030-01-01" in text and out.exists()
    code, text = run("tags", "apply", str(data_folder), "--as-of", "2030-01-01", "--out", str(tmp_path / "tags"))
    assert code == 0 and late in text
    where = ["--where", "orders_lifetime >= 1"]
    code, text = run("segment", "count", "--data", str(data_folder), "--as-of", "2030-01-01", *where)
    assert code == 0 and late in text
    code, text = run("segment", "count", "--data", str(data_folder), "--as-of", "2024-03-01", *where)
    assert code == 0 and "note:" not in text
    # a refresh records history: as of a date past the data every member would "leave"; refused
    segments = ["--segments", str(tmp_path / "segments")]
    assert run("segment", "create", "buyers", *where, *segments)[0] == 0
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2030-01-01", *segments)
    assert code == 2 and "segments are not refreshed as of a date past the data" in text
    assert not (tmp_path / "segments" / "buyers.history.csv").exists()
    code, text = run("features", "build", str(data_folder), "--as-of", "2024-03-01", "--out", str(out))
    assert code == 0 and "note:" not in text


def test_one_segment_that_cannot_be_evaluated_stops_neither_the_others_nor_goes_unnamed(
    tmp_path, data_folder, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("dairy", where="purchased(category = 'dairy') > 0"))
    store.save(Segment("toys", where="purchased(category = 'toys') > 0"))  # no toys sold yet
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2024-03-01")
    assert code == 2
    assert "1 of 2 segments not refreshed: segment 'toys': no purchases row has category = 'toys'" in (
        " ".join(text.split())
    )
    assert store.history("dairy")["customers"].tolist() == [2] and store.history("toys").empty


def test_a_segment_replaced_while_a_refresh_evaluates_it_is_not_recorded_with_the_old_members(
    tmp_path, data_folder, monkeypatch
):
    """segment create --replace clears the history; a refresh that had evaluated the previous
    definition recorded its members and a history row under the new one all the same (a review)."""
    import marketing.segments as segments_module

    monkeypatch.chdir(tmp_path)
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("dairy", where="purchased(category = 'dairy') > 0"))
    store.save(Segment("repeaters", where="orders_lifetime >= 2"))
    evaluate_each = segments_module.evaluate_each

    def replaced_meanwhile(evaluator, chosen):
        answer = evaluate_each(evaluator, chosen)
        store.save(Segment("dairy", where="orders_lifetime >= 1"), replace=True)  # another user, meanwhile
        return answer

    monkeypatch.setattr(segments_module, "evaluate_each", replaced_meanwhile)
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2024-03-01")
    assert code == 2
    assert "1 of 2 segments not refreshed: segment 'dairy': its definition was replaced or deleted while it was" in (
        " ".join(text.split())
    )
    assert store.history("dairy").empty and not store.members_path("dairy").exists()
    assert len(store.history("repeaters")) == 1


def test_a_runs_segment_answers_with_its_entered_and_left(tmp_path):
    from serving.routes.segments import segment_info

    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("viewers", where="events('view') > 0"))
    run = tmp_path / "run_segments"
    run.mkdir()
    sizes = {"customers": 5, "base": 10, "share": 0.5, "reads": "events('view') > 0"}
    (run / "summary.json").write_text(
        json.dumps({"as_of": "2024-03-01", "segments": {"viewers": {**sizes, "entered": 3, "left": 1}}})
    )
    info = segment_info(store, "viewers", run_members=run)
    assert (info.customers, info.entered, info.left, info.as_of) == (5, 3, 1, "2024-03-01")
    (run / "summary.json").write_text(json.dumps({"as_of": "2024-03-01", "segments": {"viewers": sizes}}))
    assert segment_info(store, "viewers", run_members=run).entered is None  # a run written before they were counted


def test_a_manual_tag_counts_people_not_the_ids_listed():
    from marketing.cli import _people

    known = pd.DataFrame({"given_id": ["C6", "C7", "C1"], "customer_id": ["C6", "C6", "C1"]})  # C7 is C6
    assert _people(known, 3) == "2 customers (3 ids listed)"
    assert _people(known.iloc[2:], 1) == "1 customer"


def test_a_command_with_one_target_a_folder_writes_none_of_its_files(tmp_path, data_folder):
    out = tmp_path / "out"
    (out / "crowd.html").mkdir(parents=True)
    code, text = run("crowd", "report", "--all", "--data", str(data_folder), "--as-of", "2024-03-01", "--out", str(out))
    assert code == 2 and "crowd.html: it is a folder" in text
    assert sorted(p.name for p in out.iterdir()) == ["crowd.html"]  # crowd.csv and .md were written before
    (out / "rfm_2024-03-01.summary.json").mkdir()
    code, text = run("rfm", str(data_folder), "--as-of", "2024-03-01", "--out", str(out))
    assert code == 2 and "summary.json: it is a folder" in text
    assert sorted(p.name for p in out.iterdir()) == ["crowd.html", "rfm_2024-03-01.summary.json"]


def test_a_tag_value_nobody_holds_is_said_with_the_closest(tmp_path, data_folder):
    args = ["--data", str(data_folder), "--as-of", "2024-03-01", "--segments", str(tmp_path / "segments")]
    code, text = run("segment", "count", "--tag", "interest: Diary", *args)
    text = " ".join(text.split())
    assert code == 0 and "0 customers" in text
    assert (
        "nobody holds the tag 'interest: Diary' as of 2024-03-01; did you mean ['interest: Dairy', 'interest: Bakery']?"
        in text
    )
    code, text = run("segment", "count", "--tag", "interest: Dairy", *args)
    assert code == 0 and "nobody holds" not in text


def test_segment_create_leaves_a_customers_attribute_to_the_data(tmp_path, monkeypatch):
    """An attribute's kind is the data's: a CSV's age of many values is a number, a date
    column becomes days_since_<column>. Without --data the condition is saved for the data to
    check; with it, the data's columns decide before anything is saved."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "shop"
    folder.mkdir()
    ids = [f"C{i}" for i in range(20)]
    pd.DataFrame(
        {"order_id": ids, "customer_id": ids, "ts": "2024-01-05", "amount": 10.0, "product_id": "p", "category": "x"}
    ).to_csv(folder / "purchases.csv", index=False)
    pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": ["2023-01-01"] * 15 + ["2024-01-01"] * 5,
            "age": [str(40 + 2 * i) for i in range(20)],
        }
    ).to_csv(folder / "customers.csv", index=False)
    code, text = run("segment", "create", "older", "--where", "attr_age >= 60")
    assert code == 0 and "saved segment 'older'" in text
    assert "note: whether attr_age is a number or text depends on the data" in text
    data = ("--data", str(folder), "--as-of", "2024-03-01")
    code, text = run(
        "segment", "create", "older-members", "--where", "days_since_signup_date > 200 and attr_age >= 60", *data
    )
    assert code == 0 and "older-members: 5 customers" in text  # ages 60-68 signed up in 2023
    code, text = run("segment", "create", "quoted", "--where", "attr_age >= '60'", *data)
    assert code == 2 and "attr_age is number" in text
    assert sorted(p.name for p in (tmp_path / "segments").glob("*.toml")) == ["older-members.toml", "older.toml"]
    code, text = run("segment", "refresh", *data)
    assert code == 0 and "older" in text


def test_a_segment_refresh_records_under_its_folders_lock_and_not_after_a_forget(tmp_path, data_folder, monkeypatch):
    """Two refreshes, or a refresh and a forget, each rewrote what the other had written; and a
    refresh that evaluated its members before a forget wrote the forgotten person back."""
    import marketing.segments as segments
    from portrait.files import LockHeld, exclusive_lock
    from portrait.outputs import SEGMENT_RECORD_LOCK

    monkeypatch.chdir(tmp_path)
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("dairy", where="purchased(category = 'dairy') > 0"))
    recorded, real_record = [], segments.record_refresh

    def probing(segment_store, result):  # is the folder's lock held while it records?
        try:
            with exclusive_lock(segment_store.folder / SEGMENT_RECORD_LOCK, "a probe"):
                recorded.append("unlocked")
        except LockHeld:
            recorded.append("locked")
        return real_record(segment_store, result)

    monkeypatch.setattr(segments, "record_refresh", probing)
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2024-03-01")
    assert code == 0 and recorded == ["locked"], text
    before = store.history("dairy")

    def forgotten_meanwhile(evaluator, chosen):  # a forget writes its tombstone during the evaluation
        (data_folder / ".portrait").mkdir(exist_ok=True)
        (data_folder / ".portrait" / "tombstones.parquet").write_bytes(b"a tombstone")
        return real_evaluate(evaluator, chosen)

    real_evaluate = segments.evaluate_each
    monkeypatch.setattr(segments, "evaluate_each", forgotten_meanwhile)
    code, text = run("segment", "refresh", "--data", str(data_folder), "--as-of", "2024-03-02")
    assert code == 2 and "forgotten (portrait forget) while the segments were evaluated: nothing was recorded" in text
    pd.testing.assert_frame_equal(store.history("dairy"), before)


def test_segment_counts_errors_name_no_segment_the_user_did_not_name(tmp_path, data_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run("segment", "count", "--data", str(data_folder), "--as-of", "2024-03-01", "--where", "nosuch > 1")
    assert code == 2 and text.startswith("the definition: unknown column 'nosuch'") and "preview" not in text


def test_identity_resolve_of_a_data_set_without_identities_is_no_error(tmp_path):
    """A data set without the optional identities table is valid: exit 0, said (it was exit 2,
    "something to fix first"); asked for a map file, it is still an error (nothing to write)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,a,2024-01-05,1\n")
    code, text = run("identity", "resolve", str(folder))
    assert code == 0 and "has no identities table: every customer id is its own person" in text
    code, text = run("identity", "resolve", str(folder), "--out", str(tmp_path / "map.parquet"))
    assert code == 2 and "has no identities table; nothing to merge" in text


def test_a_segment_on_a_persona_saved_without_data_says_when_the_name_is_checked(tmp_path):
    """A misspelt persona was saved without a word, then failed every refresh of the folder."""
    code, text = run("segment", "create", "p1", "--persona", "Coupon redeemer", "--segments", str(tmp_path / "s"))
    assert code == 0 and "note: persona 'Coupon redeemer' is looked up in the scores' personas at refresh" in text


def test_tags_apply_shows_a_dash_for_a_model_tag_no_earlier_run_computed(data_folder, tmp_path):
    """The summary's entered and left are None for it (and for a redefined tag): the table
    formatted None as a number, a traceback on the first run with --scores after runs without."""
    out = tmp_path / "tags"
    code, text = run("tags", "apply", str(data_folder), "--as-of", "2024-03-01", "--out", str(out))
    assert code == 0, text
    scores = tmp_path / "scores"
    scores.mkdir()
    pd.DataFrame({"customer_id": ["A", "B", "C"], "repurchase_90d_percentile": [90.0, 10.0, 85.0]}).to_parquet(
        scores / "scores_2024-03-01.parquet"
    )
    code, text = run(
        "tags", "apply", str(data_folder), "--as-of", "2024-03-02", "--out", str(out), "--scores", str(scores)
    )
    assert code == 0, text
    row = next(line for line in text.splitlines() if "likely repurchaser" in line)
    assert [cell.strip() for cell in row.split("│")[-3:-1]] == ["-", "-"], row
