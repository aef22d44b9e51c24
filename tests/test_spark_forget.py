"""Forgotten customers on Spark (portrait forget, issue 14): the Spark engine leaves out the same
rows as DuckDB, at the first view: the same rows forgotten, quarantined and merged, the same
ids in every final view, none of them the forgotten people's (the features built from those
views are the parity test's business, tests/test_spark_parity.py).

The data set: 300 synthetic customers; events as CSV with padded customer ids (both engines trim
CSV text before hashing it), a purchase line without a customer id (quarantined on both, never
taken for a forgotten one) and a new id sharing the phone of a forgotten person (its identities
row is left out, so it is merged with nobody; its purchase stays), both added after the forget
as a later import would. Two customers are forgotten: one merged with a second account through
identities (given by that account's id), one alone. Spark reads it through a ``file://`` URI
(Hadoop's file system, as a lake path would be), tombstones and salt included.

The session's one SparkSession (tests/conftest.py; marked ``spark``; skipped when pyspark or
Java is missing).
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from portrait.dataset import open_dataset
from portrait.errors import PortraitError
from portrait.forget import forget
from portrait.synthetic import write_sample_data
from portrait.validate import validate

pytestmark = pytest.mark.spark

AS_OF = "2024-10-01"
NEW_ID = "N00000001"  # not in the data before: shares a forgotten person's phone


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The data set (see the module docstring) after forgetting two customers, and who they were."""
    folder = tmp_path_factory.mktemp("spark_forget") / "data"
    write_sample_data(folder, customers=300, seed=7)
    con = open_dataset(folder).connect()
    try:
        merged = con.execute(
            "SELECT customer_id, person_id FROM identity_map WHERE customer_id <> person_id ORDER BY 1 LIMIT 1"
        ).fetchall()[0]
        alone = con.execute(
            "SELECT customer_id FROM purchases WHERE customer_id NOT IN (SELECT customer_id FROM identity_map "
            "WHERE customer_id <> person_id UNION SELECT person_id FROM identity_map WHERE customer_id <> person_id) "
            "GROUP BY 1 ORDER BY COUNT(*) DESC, 1 LIMIT 1"
        ).fetchall()[0][0]
    finally:
        con.close()
    person = {*merged, alone}  # every id of the two people

    events = pd.read_parquet(folder / "events.parquet")
    (folder / "events.parquet").unlink()
    events["customer_id"] = " " + events["customer_id"].astype("str") + " "  # an export's padding
    events["ts"] = events["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    events.to_csv(folder / "events.csv", index=False)

    result = forget(open_dataset(folder), [merged[0], alone], reason="test")
    assert result.tombstones_added >= 3 and (folder / ".portrait" / "tombstones.parquet").is_file()

    # A later import: a line without a customer id, and a new id sharing the forgotten phone.
    purchases = pd.read_parquet(folder / "purchases.parquet")
    purchases["customer_id"] = purchases["customer_id"].astype("str")
    extra = purchases.iloc[:2].copy()
    extra["order_id"] = ["NOID", "NEW"]
    extra["customer_id"] = [None, NEW_ID]
    extra["ts"] = pd.Timestamp("2024-06-01 12:00:00")
    pd.concat([purchases, extra], ignore_index=True).to_parquet(folder / "purchases.parquet", index=False)
    identities = pd.read_parquet(folder / "identities.parquet")
    phone = identities[(identities["customer_id"] == merged[0]) & (identities["id_type"] == "phone_hash")]
    assert len(phone) == 1
    shared = phone.assign(customer_id=NEW_ID)
    pd.concat([identities, shared], ignore_index=True).to_parquet(folder / "identities.parquet", index=False)
    return {"data": folder, "person": person, "given": [merged[0], alone]}


@pytest.fixture(scope="module")
def spark_views(spark, world):
    from portrait.spark_engine import spark_dataset

    # read through Hadoop's file system (a URI, as for a lake), tombstones and salt included
    engine, dataset = spark_dataset(spark, f"file://{world['data']}")
    yield engine, dataset
    engine.close()


def test_the_same_rows_are_forgotten_and_quarantined_and_merged(spark_views, world):
    from portrait.spark_engine import forgotten_counts, quarantine_counts

    engine, dataset = spark_views
    report = validate(open_dataset(world["data"]))
    duck_forgotten = {t.table: t.forgotten for t in report.tables}
    assert forgotten_counts(engine, dataset) == duck_forgotten
    assert all(duck_forgotten[t] > 0 for t in ("purchases", "events", "customers", "identities")), duck_forgotten
    duck_quarantined = {t.table: {k: v for k, v in t.quarantined.items() if v} for t in report.tables}
    assert quarantine_counts(engine, dataset) == duck_quarantined
    assert duck_quarantined["purchases"]["missing_customer_id"] == 1  # a NULL id is not taken for a forgotten one

    con = open_dataset(world["data"]).connect()
    try:
        duck_map = con.execute("SELECT customer_id, person_id FROM identity_map ORDER BY 1").df()
        duck_ids = {
            t: sorted(r[0] for r in con.execute(f"SELECT DISTINCT customer_id FROM {t}").fetchall())
            for t in ("purchases", "events", "customers")
        }
    finally:
        con.close()
    spark_map = engine.frame("SELECT customer_id, person_id FROM identity_map ORDER BY customer_id")
    assert spark_map.values.tolist() == duck_map.values.tolist()
    assert not world["person"] & (set(spark_map["customer_id"]) | set(spark_map["person_id"]))
    for table, ids in duck_ids.items():
        spark_ids = sorted(r[0] for r in engine.rows(f"SELECT DISTINCT customer_id FROM {table}"))
        assert spark_ids == ids, table
        assert not world["person"] & set(spark_ids), table
    # NEW_ID is kept, merged with nobody: the phone it shared is forgotten (its identities row too).
    assert NEW_ID in duck_ids["purchases"] and NEW_ID not in set(spark_map["customer_id"])


def test_tombstones_without_their_salt_are_an_error_on_spark(spark, world, tmp_path):
    from portrait.spark_engine import spark_dataset

    folder = tmp_path / "copy"
    shutil.copytree(world["data"], folder)
    salt = folder / ".portrait" / "tombstones.salt"
    salt.unlink()
    with pytest.raises(PortraitError, match=r"tombstones.parquet exists but its salt .*tombstones.salt is missing"):
        spark_dataset(spark, folder)
    salt.write_text("not a salt\n")
    with pytest.raises(PortraitError, match=r"salt file://.*tombstones.salt is missing or damaged"):
        spark_dataset(spark, f"file://{folder}")
