"""Spark against DuckDB on one small synthetic data set with every table (issue 14 §3).

Every feature from the Spark engine (local[2]) equals DuckDB's: exact for counts, ids and
text, within a relative 1e-9 for floats (plus 1.5e-9 absolute: both engines round floats to 9
decimals, and a sum differing in its last bits can round to the neighbouring 9th decimal), with
the same nulls; the same rows are quarantined for the same reasons, the same ids are merged, no
personal-data column reaches a Spark view, and batch scores agree.

The data set: 400 synthetic customers (their second accounts merged through identities) plus
a chain of three ids merged through two identifiers (two rounds of label propagation), bad
purchase lines (missing id, NaN and infinite amounts, a negative discount, an exact copy) in a
second Parquet part, a customer with conflicting rows, an ``email`` column and two columns of
personal data by their values (e-mails, phone numbers as numbers), and events as CSV
with a malformed line, an unparseable and an offset timestamp.

One SparkSession for the module (Spark costs seconds per statement in local mode): marked
``spark`` (deselect with ``-m "not spark"``); it runs in ``make test``. Skipped only when no
Java is installed (the skip names it); pyspark comes with the dev extra.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from portrait.dataset import open_dataset
from portrait.errors import ContractError
from portrait.synthetic import write_sample_data

pytestmark = pytest.mark.spark

AS_OF = "2024-10-01"
SCORE_AS_OF = "2024-11-15"  # before what the model learned from ends: a note on both engines
MODEL = "spark_parity_repurchase"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spark_parity") / "data"
    write_sample_data(folder, customers=400, seed=3)
    purchases = pd.read_parquet(folder / "purchases.parquet")
    (folder / "purchases.parquet").unlink()
    (folder / "purchases").mkdir()
    purchases.to_parquet(folder / "purchases" / "part-0.parquet", index=False)
    bad = purchases.iloc[:6].copy()
    bad["order_id"] = [f"BAD{i}" for i in range(6)]
    bad.iloc[0, bad.columns.get_loc("customer_id")] = None
    bad.iloc[1, bad.columns.get_loc("amount")] = float("nan")
    bad.iloc[2, bad.columns.get_loc("amount")] = float("inf")
    bad.iloc[3, bad.columns.get_loc("discount")] = -1.0
    copy = purchases.iloc[[10]]  # an exact copy of a good line
    pd.concat([bad.iloc[:4], copy]).to_parquet(folder / "purchases" / "part-1.parquet", index=False)

    customers = pd.read_parquet(folder / "customers.parquet")
    customers["email"] = [f"person{i}@example.com" for i in range(len(customers))]
    # Personal data by its values only (portrait.privacy.personal_value_checks): withheld on both.
    customers["contact"] = ["unknown" if i % 5 else f"c{i}@example.org" for i in range(len(customers))]
    customers["extra"] = [447700900000 + i for i in range(len(customers))]
    conflicting = customers.iloc[[5]].copy()
    conflicting["region"] = "conflict"
    pd.concat([customers, conflicting]).to_parquet(folder / "customers.parquet", index=False)

    identities = pd.read_parquet(folder / "identities.parquet")
    ids = sorted(purchases["customer_id"].unique())[-3:]  # a chain: c1 -x- c2 -y- c3
    chain = pd.DataFrame(
        {"customer_id": [ids[0], ids[1], ids[1], ids[2]], "id_type": ["card"] * 4, "id_value": ["x", "x", "y", "y"]}
    )
    for column in identities.columns.difference(chain.columns):
        chain[column] = None
    pd.concat([identities, chain[identities.columns]]).to_parquet(folder / "identities.parquet", index=False)

    events = pd.read_parquet(folder / "events.parquet")
    (folder / "events.parquet").unlink()
    events["ts"] = events["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    events.iloc[0, events.columns.get_loc("ts")] = "not a time"
    events.iloc[1, events.columns.get_loc("ts")] = "2024-03-01 10:00:00+02:00"
    text = events.to_csv(index=False)
    lines = text.splitlines()
    lines.insert(5, "too,many,fields,in,this,line,for,the,header,at,all")
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def spark_views(spark, data):
    """The data set's views on an engine that keeps its steps as on a cluster, as caches
    (the identity merge's, the tags' feature build); the scoring below keeps them as one JVM
    does, as checkpoints (``SparkEngine._keep``), as do the engines of tests/test_spark_forget.py."""
    from portrait.spark_engine import spark_dataset

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("portrait.spark_engine._one_jvm", lambda spark: False)
        engine, dataset = spark_dataset(spark, data)
    assert not engine._checkpointing
    yield engine, dataset
    engine.close()


def _duckdb_rows(folder, query: str) -> list[tuple]:
    """The rows of ``query`` on the data set in ``folder``, read by DuckDB."""
    con = open_dataset(folder).connect()
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _assert_same_features(duck: pd.DataFrame, other: pd.DataFrame) -> None:
    assert list(other.columns) == list(duck.columns)
    assert other["customer_id"].tolist() == duck["customer_id"].tolist()
    mismatched = {}
    for column in duck.columns:
        a, b = duck[column], other[column]
        if pd.api.types.is_float_dtype(a):
            same_nulls = (a.isna() == b.isna()).all()
            close = np.isclose(a.fillna(0), b.fillna(0), rtol=1e-9, atol=1.5e-9).all()
            if not (same_nulls and close):
                mismatched[column] = "float"
        else:
            left = a.astype(object).where(a.notna(), None).tolist()
            right = b.astype(object).where(b.notna(), None).tolist()
            if left != right:
                mismatched[column] = "exact"
    assert not mismatched, mismatched


def test_the_same_rows_are_quarantined_for_the_same_reasons(spark_views, data):
    from portrait.spark_engine import quarantine_counts
    from portrait.validate import validate

    engine, dataset = spark_views
    report = validate(open_dataset(data))
    duck = {t.table: {k: v for k, v in t.quarantined.items() if v} for t in report.tables}
    spark = quarantine_counts(engine, dataset)
    assert spark == duck
    assert spark["purchases"] == {  # a NaN amount is a missing one (pandas writes NaN for missing)
        "missing_customer_id": 1,
        "missing_amount": 1,
        "non_numeric_amount": 1,
        "negative_discount": 1,
        "duplicate_line": 1,
    }
    assert spark["events"] == {"malformed_row": 1, "unparseable_ts": 1}
    assert spark["customers"]["conflicting_customer_rows"] == 2


def test_identities_merge_into_the_same_persons(spark_views, data):
    engine, _ = spark_views
    con = open_dataset(data).connect()
    try:
        duck = con.execute("SELECT customer_id, person_id FROM identity_map ORDER BY 1").df()
    finally:
        con.close()
    spark = engine.frame("SELECT customer_id, person_id FROM identity_map ORDER BY customer_id")
    assert spark.values.tolist() == duck.values.tolist()
    merged = duck[duck["customer_id"] != duck["person_id"]]
    assert merged["person_id"].value_counts().max() >= 3  # the chain of three ids is one person


def test_no_personal_data_column_reaches_a_spark_view(spark_views):
    engine, _ = spark_views
    source = engine.columns("SELECT * FROM _source_customers")
    assert "region" in [name for name, _ in source]
    for view in ("_source_customers", "raw_customers", "checked_customers", "customers"):
        names = [name for name, _ in engine.columns(f"SELECT * FROM {view}")]
        assert not {"email", "contact", "extra"} & set(names), view


def test_the_identity_merge_stops_with_a_clear_error_past_its_round_limit(spark):
    """A chain a - b - c (through identifiers x and y) takes two rounds to settle: one round is
    an error, three give the chain one person. On an engine of its own over a few rows (not the
    shared views, whose map would have to be built again)."""
    from portrait.errors import PortraitError
    from portrait.spark_engine import SparkEngine, register_identity_map

    engine = SparkEngine(spark)
    rows = [("a", "card", "x"), ("b", "card", "x"), ("b", "card", "y"), ("c", "card", "y"), ("d", "card", "z")]
    engine.register_dataframe(
        "clean_identities", spark.createDataFrame(rows, "customer_id string, id_type string, id_value string")
    )
    try:
        with pytest.raises(PortraitError, match="did not settle in 1 rounds"):
            register_identity_map(engine, max_rounds=1)
        assert register_identity_map(engine, max_rounds=3)
        merged = engine.rows("SELECT customer_id, person_id FROM identity_map ORDER BY customer_id")
        assert [tuple(r) for r in merged] == [("a", "a"), ("b", "a"), ("c", "a"), ("d", "d")]
    finally:
        engine.close()


def test_tags_and_behaviour_conditions_on_spark_equal_duckdb(spark_views, data):
    """`portrait tags apply` / `segment refresh --engine spark`: the Population's features and
    behaviour terms (purchased, spent, events; a filter value, a window) computed on Spark give
    the same tags and the same condition values as on DuckDB; a value the data never has is
    the same error."""
    from marketing.filters import FilterError, evaluate, parse_condition
    from marketing.population import Population
    from marketing.tags import apply_tags, load_library

    engine, dataset = spark_views
    texts = [
        "purchased(category = 'Electronics', within_days = 90) >= 1 and events('view', within_days = 30) >= 2",
        "spent(channel = 'app') > 50 or events('campaign_click') >= 1",
        "not purchased(within_days = 60) and orders_lifetime >= 2",
    ]

    def run(population):
        # the tags first: their features hold the conditions' (orders_lifetime), so each engine
        # builds features once (a build on Spark costs tens of seconds here)
        tags = apply_tags(load_library(), population).tags.sort_values(["customer_id", "tag"], ignore_index=True)
        schema = population.schema(models=False)
        conditions = [parse_condition(text, schema, behaviour=True) for text in texts]
        frame = population.frame(conditions)
        members = [frame.loc[evaluate(c, frame).to_numpy(), "customer_id"].tolist() for c in conditions]
        terms = sorted({t.column for c in conditions for t in c.terms})
        return frame[["customer_id", *terms]], members, tags

    with Population(open_dataset(data), AS_OF) as population:
        duck_terms, duck_members, duck_tags = run(population)
        duck_vocabulary = population.vocabulary
    with Population(dataset, AS_OF, con=engine) as population:
        spark_terms, spark_members, spark_tags = run(population)
        # the vocabulary computed on each engine (personal values left out by Java's regex on
        # Spark): the feature parity below reads the model's stored one
        assert population.vocabulary == duck_vocabulary and duck_vocabulary.categories
        typo = parse_condition("purchased(category = 'electronix') >= 1", population.schema(), behaviour=True)
        with pytest.raises(
            FilterError, match=r"category = 'electronix' \(compared without case\); closest: \['electronics'\]"
        ):
            population.frame([typo])
    assert all(len(m) > 10 for m in duck_members)  # every condition selects someone
    assert spark_members == duck_members
    pd.testing.assert_frame_equal(spark_terms, duck_terms)
    pd.testing.assert_frame_equal(spark_tags, duck_tags)
    assert len(duck_tags) > 1000


# Spark's temporary views belong to the session: a test that opens another data set on it (the
# score, path and catalog tests below) replaces the views `spark_views` registered, so the tests
# that read those views come first.


@pytest.fixture(scope="module")
def registered(tracking, data):
    from training.config import parse_experiment
    from training.registry import promote
    from training.train import train_experiment

    config = parse_experiment(
        {
            "name": MODEL,
            "data": {"path": str(data)},
            "cutoffs": {"rule": "monthly", "count": 2},
            "label": {"kind": "repurchase", "horizon_days": 30},
            "model": {"n_estimators": 30, "learning_rate": 0.1, "early_stopping_rounds": 10},
        }
    )
    train_experiment(config)
    promote(MODEL)
    return data


def _stored_blocks(spark) -> set[str]:
    """The session's RDDs holding blocks (caches and checkpoints), by id and name."""
    return {f"{info.id()} {info.name()}" for info in spark.sparkContext._jsc.sc().getRDDStorageInfo()}


@pytest.fixture(scope="module")
def scored(spark, registered, tmp_path_factory):
    """One batch scoring of the data set on each engine: a feature build on Spark costs tens
    of seconds here, so the features' parity and the scores' parity read the same two runs.
    Scoring writes every feature the model was trained on (all families, its vocabulary)
    beside the scores."""
    from serving.score import score
    from serving.spark_score import score_on_spark

    out = tmp_path_factory.mktemp("scored")
    duck_run = score(open_dataset(registered), SCORE_AS_OF, [MODEL], out / "duck")
    before = _stored_blocks(spark)
    spark_run = score_on_spark(str(registered), SCORE_AS_OF, [MODEL], out / "spark")
    blocks_left = _stored_blocks(spark) - before
    features_file = next(p.name for p in (out / "duck").glob("features_*"))
    duck_features = pd.read_parquet(out / "duck" / features_file)
    spark_features = pd.read_parquet(out / "spark" / features_file)
    return duck_run, spark_run, duck_features, spark_features, blocks_left


def test_every_feature_from_spark_equals_duckdb(scored):
    _, _, duck, on_spark, _ = scored
    assert len(duck) > 300 and duck.shape[1] > 150
    assert duck.select_dtypes("int64").shape[1] > 20 and duck.select_dtypes(["category", "str"]).shape[1] >= 2
    _assert_same_features(duck, on_spark)


def test_scores_on_spark_equal_scores_on_duckdb(scored):
    duck_run, run, _, _, blocks_left = scored
    duck = duck_run.scores
    on_spark = pd.read_parquet(run.scores_file)
    assert list(on_spark.columns) == list(duck.columns)
    assert on_spark["customer_id"].tolist() == duck["customer_id"].tolist()
    np.testing.assert_allclose(on_spark[f"{MODEL}_score"], duck[f"{MODEL}_score"], rtol=1e-9)
    assert (on_spark[f"{MODEL}_decile"] == duck[f"{MODEL}_decile"]).all()
    assert run.summary["quarantined_rows"] == duck_run.summary["quarantined_rows"] > 0
    assert not math.isnan(run.summary["models"][MODEL]["mean"])
    assert run.summary["models"][MODEL].keys() == duck_run.summary["models"][MODEL].keys()
    assert run.summary["models"][MODEL]["note"] == duck_run.summary["models"][MODEL]["note"]
    assert "know what came next" in run.summary["models"][MODEL]["note"]
    # the run's checkpointed steps and cached tables are freed when it ends
    assert blocks_left == set()


def test_a_fetched_builds_dropped_checkpoints_are_freed_and_a_callers_step_stays_readable(spark):
    """In one JVM (checkpoints): after a build's table is fetched, the blocks of the steps it
    made and dropped are freed at once (a notebook building many cutoffs on one engine), while
    a step the caller made before the build is still read (a freed checkpoint could not be)."""
    from portrait.spark_engine import SparkEngine

    engine = SparkEngine(spark)
    assert engine._checkpointing
    before = _stored_blocks(spark)
    try:
        engine.materialize("callers", "SELECT x FROM (VALUES (1), (2), (3)) AS t(x)", eager=True)
        with_callers = _stored_blocks(spark)
        mark = engine.steps_mark()
        engine.materialize("doubled", "SELECT x * 2 AS y FROM callers")
        engine.materialize("summed", "SELECT SUM(y) AS total FROM doubled")
        engine.drop("doubled")  # dropped as the plan goes: its checkpoint is still read below

        def release() -> None:
            engine.drop("summed")

        assert engine.wide_frame("SELECT total FROM summed", release=release)["total"].tolist() == [12]
        assert len(_stored_blocks(spark) - with_callers) == 2
        engine.free_dropped_since(mark)
        assert _stored_blocks(spark) == with_callers
        assert engine.rows("SELECT COUNT(*) FROM callers") == [(3,)]
    finally:
        engine.close()
    assert _stored_blocks(spark) == before


def test_tables_from_a_spark_path_and_from_the_catalog_hold_the_same_rows(spark, data, tmp_path):
    import shutil

    from portrait.spark_engine import spark_dataset

    folder = tmp_path / "lake"
    folder.mkdir()
    shutil.copytree(data / "purchases", folder / "purchases")
    shutil.copy(data / "events.csv", folder / "events.csv")
    con = open_dataset(folder).connect()
    try:
        expected = [
            con.execute(f"SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM {t}").fetchall()[0]
            for t in ("purchases", "events")
        ]
    finally:
        con.close()
    engine, dataset = spark_dataset(spark, f"file://{folder}")  # read through Hadoop's file system
    try:
        assert sorted(dataset.sources) == ["events", "purchases"]
        assert [
            engine.rows(f"SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM {t}")[0] for t in ("purchases", "events")
        ] == expected
    finally:
        engine.close()
    spark.read.parquet(str(folder / "purchases")).createOrReplaceTempView("lake_order_lines")
    (tmp_path / "config_only").mkdir()  # a local folder holding the portrait.toml, here none
    engine, dataset = spark_dataset(spark, tmp_path / "config_only", {"purchases": "lake_order_lines"})
    try:
        assert engine.rows("SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM purchases")[0] == expected[0]
    finally:
        engine.close()


def test_a_failed_spark_write_leaves_the_previous_output_and_no_temporary_folder(spark, tmp_path):
    from portrait.errors import PortraitError
    from portrait.spark_engine import spark_errors, write_directory

    target = tmp_path / "scores"
    write_directory(spark.range(3).selectExpr("id AS x"), str(target))
    assert sorted(spark.read.parquet(str(target)).toPandas()["x"]) == [0, 1, 2]
    failing = spark.range(3).selectExpr("1 / (id - id) AS x")  # ANSI: division by zero when it runs
    with pytest.raises(PortraitError, match="the Spark job failed: .*DIVIDE_BY_ZERO.*no output was written"):
        with spark_errors():
            write_directory(failing, str(target))
    assert sorted(spark.read.parquet(str(target)).toPandas()["x"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["scores"]
    write_directory(spark.range(5).selectExpr("id AS x"), str(target))
    assert len(spark.read.parquet(str(target)).toPandas()) == 5 and [p.name for p in tmp_path.iterdir()] == ["scores"]

    def refuse(written):  # a check of the written folder (an empty feature table) stops the write
        raise PortraitError(f"nothing in {len(spark.read.parquet(written).toPandas())} rows")

    with pytest.raises(PortraitError, match="nothing in 2 rows"):
        write_directory(spark.range(2).selectExpr("id AS x"), str(target), check=refuse)
    assert len(spark.read.parquet(str(target)).toPandas()) == 5 and [p.name for p in tmp_path.iterdir()] == ["scores"]


def test_ctrl_c_cancels_the_job_and_stops_as_an_interruption(spark):
    """pyspark's handler cancelled the jobs from inside the signal handler, on the connection the
    main thread was reading (a reentrant-call error, a Java stack, "the Spark job failed"); and
    a signal the kernel gives another thread than the main one, waiting for the job's result,
    was handled only at the job's end. Here the signal goes to another thread."""
    import signal
    import threading
    import time

    from portrait.connections import interrupting_queries
    from portrait.spark_engine import spark_errors

    handler = signal.getsignal(signal.SIGINT)
    assert getattr(handler, "__qualname__", "").startswith("_cancel_jobs_on_ctrl_c")  # else SIGINT stops pytest
    started = time.monotonic()
    threading.Timer(3, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGINT)).start()
    with interrupting_queries(lambda number: number == signal.SIGINT):  # as the command line runs
        with pytest.raises(KeyboardInterrupt):
            with spark_errors():
                spark.range(5_000_000_000).selectExpr("SUM(HASH(id))").collect()  # minutes uncancelled
    assert time.monotonic() - started < 30
    assert spark.range(3).count() == 3  # the session goes on


def test_a_uri_output_that_is_a_file_is_refused_before_any_work(spark, tmp_path, monkeypatch):
    """A URI --out is a Parquet folder, which replaced a file of the same name (exit 0)."""
    import features.spark as features_spark
    from portrait.errors import PortraitError

    precious = tmp_path / "afile"
    precious.write_text("precious")
    monkeypatch.setattr(features_spark, "spark_dataset", lambda *a, **k: pytest.fail("the build started"))
    with pytest.raises(PortraitError, match=r"afile is a file; on a URI the output is a Parquet folder, which would"):
        features_spark.write_features_spark(tmp_path, dt.date(2024, 6, 1), f"file://{precious}")
    assert precious.read_text() == "precious"


def test_two_data_sets_opened_on_one_session_keep_their_views_apart(spark, spark_views, data, tmp_path):
    """Spark's temporary views belong to the session: each engine's views carry its own prefix,
    so opening a second data set (a notebook) leaves the first one's views as they were."""
    from portrait.spark_engine import spark_dataset

    engine, _ = spark_views
    count = "SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM purchases"
    (tmp_path / "small").mkdir()  # purchases only: few views to register
    pd.read_parquet(data / "purchases" / "part-0.parquet").head(5).to_parquet(tmp_path / "small" / "purchases.parquet")
    duck = []
    for folder in (data, tmp_path / "small"):
        con = open_dataset(folder).connect()
        try:
            duck.append(con.execute(count).fetchall()[0])
        finally:
            con.close()
    assert duck[0] != duck[1]
    other, _ = spark_dataset(spark, tmp_path / "small")
    try:
        assert other.rows(count)[0] == duck[1]
        assert engine.rows(count)[0] == duck[0]
    finally:
        other.close()
    assert engine.rows(count)[0] == duck[0]
    assert not [t.name for t in spark.catalog.listTables() if t.name.startswith(other._prefix)]  # closed: no view left


def test_quotes_in_csv_values_are_read_as_duckdb_reads_them(spark, tmp_path):
    """Spark escapes quotes with a backslash unless told: a doubled quote (RFC 4180, as Excel and
    pandas write it) kept both quotes and the outer ones ("TV 55"" LED"), where DuckDB reads
    TV 55" LED. A file escaping with backslashes is read as such on both engines."""
    from portrait.spark_engine import spark_dataset

    header = "order_id,customer_id,ts,amount,category\n"
    rows = {
        "doubled": ['o1,c1,2024-01-05 10:00:00,1.5,"TV 55"" LED"\n', 'o2,c2,2024-01-05 10:00:00,2.5,"Home, Garden"\n'],
        "backslash": [
            'o1,c1,2024-01-05 10:00:00,1.5,"TV 55\\" LED"\n',
            'o2,c2,2024-01-05 10:00:00,2.5,"Home, Garden"\n',
        ],
    }
    query = "SELECT order_id, category FROM purchases ORDER BY order_id"
    for name, lines in rows.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "purchases.csv").write_text(header + "".join(lines))
        con = open_dataset(folder).connect()
        try:
            duck = con.execute(query).fetchall()
        finally:
            con.close()
        assert duck == [("o1", 'TV 55" LED'), ("o2", "Home, Garden")], name
        engine, _ = spark_dataset(spark, folder)
        try:
            assert [tuple(r) for r in engine.rows(query)] == duck, name
        finally:
            engine.close()


def test_a_customers_column_twice_in_the_header_is_refused_on_spark_too(spark, tmp_path):
    """Spark read Region and region as attributes region1 and region2 (DuckDB: region_1), so a
    refusal looking for DuckDB's renaming let them through there."""
    from portrait.spark_engine import spark_dataset

    (tmp_path / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,c1,2024-01-05,12.5\n")
    (tmp_path / "customers.csv").write_text("customer_id,Region,region,age\nc1,N,n,30\n")
    with pytest.raises(ContractError, match=r"column 'region' appears twice in the header of .*customers.csv"):
        spark_dataset(spark, tmp_path)


def test_values_padded_with_unicode_spaces_are_trimmed_as_duckdb_trims_them(spark, tmp_path):
    """DuckDB's TRIM strips every Unicode space separator (an export's no-break space), Spark's
    only ' ': "c1" padded with a no-break space was another customer on Spark, and a padded
    "NULL" a customer id there where DuckDB quarantines it."""
    from portrait.spark_engine import spark_dataset

    lines = [
        "order_id,customer_id,ts,amount,category\n",
        "o1,c1,2024-01-05 10:00:00,1.5,Food\n",
        "o2,\u00a0c1\u3000,2024-01-06 10:00:00,2.5,\u2007Food\n",
        "o3,\u00a0NULL,2024-01-07 10:00:00,3.5,Food\n",
        "o4,\tc2,2024-01-08 10:00:00,4.5,Food\n",
    ]
    (tmp_path / "purchases.csv").write_text("".join(lines))
    query = "SELECT customer_id, COUNT(*), MIN(category) FROM purchases GROUP BY 1 ORDER BY 1"
    duck = _duckdb_rows(tmp_path, query)
    assert [row[:2] for row in duck][0] == ("\tc2", 1) and ("c1", 2, "Food") in duck
    engine, _ = spark_dataset(spark, tmp_path)
    try:
        assert [tuple(r) for r in engine.rows(query)] == duck
    finally:
        engine.close()


def test_free_texts_holding_personal_data_are_judged_as_duckdb_judges_them(spark):
    """The same rule on Java's regular expressions: white space of every kind (Java's ``\\s``
    has no no-break space, RE2's no vertical tab), digits only, e-mail addresses and phones."""
    from portrait.privacy import personal_text_sql
    from portrait.spark_engine import to_spark_sql
    from tests.test_privacy import FREE_TEXTS

    spark.createDataFrame([(text,) for text, _ in FREE_TEXTS], "t string").createOrReplaceTempView("free_texts")
    judged = spark.sql(to_spark_sql(f"SELECT t, {personal_text_sql('t')} AS personal FROM free_texts")).collect()
    assert {row.t: row.personal for row in judged} == dict(FREE_TEXTS)


def test_key_value_folders_are_read_as_duckdb_reads_them(spark, tmp_path):
    """A Spark export's partitionBy column lives only in its folders (purchases/channel=web/):
    Spark, given the files, read no folder (every channel NULL) where DuckDB reads them; both
    read the keys as text (store_id=007 is 007, not 7), and neither reads a key the files hold."""
    from portrait.spark_engine import spark_dataset

    part = {"order_id": ["o1"], "customer_id": ["a"], "ts": ["2024-03-01 10:00:00"], "amount": [1.0]}
    layouts = {
        "parquet": [("channel=web/store_id=007", {}), ("channel=store/store_id=12", {"order_id": ["o2"]})],
        "csv": [("channel=web", {}), ("channel=store", {"order_id": ["o2"]})],
        "held": [("channel=online", {"channel": ["web"]})],
    }
    query = "SELECT order_id, channel, store_id FROM purchases ORDER BY order_id"
    expected = {
        "parquet": [("o1", "web", "007"), ("o2", "store", "12")],
        "csv": [("o1", "web", None), ("o2", "store", None)],
        "held": [("o1", "web", None)],
    }
    for name, parts in layouts.items():
        for folder, changes in parts:
            where = tmp_path / name / "purchases" / folder
            where.mkdir(parents=True)
            rows = pd.DataFrame({**part, **changes})
            rows.to_csv(where / "p.csv", index=False) if name == "csv" else rows.to_parquet(where / "p.parquet")
        assert _duckdb_rows(tmp_path / name, query) == expected[name], name
        engine, _ = spark_dataset(spark, tmp_path / name)
        try:
            assert [tuple(r) for r in engine.rows(query)] == expected[name], name
        finally:
            engine.close()
    # a data set in a folder below a key=value one (a daily export): its folder is no column,
    # and Spark read nothing of it (refused) when the customers were partitioned
    shop = tmp_path / "date=2024-06-01" / "shop"
    for region, customer in (("north", "a"), ("south", "b")):
        (shop / "customers" / f"region={region}").mkdir(parents=True)
        pd.DataFrame({"customer_id": [customer], "tier": ["gold"]}).to_parquet(
            shop / "customers" / f"region={region}" / "p.parquet"
        )
    pd.DataFrame(part).to_csv(shop / "purchases.csv", index=False)
    query = "SELECT * FROM customers ORDER BY customer_id"
    assert _duckdb_rows(shop, query) == [("a", "gold", "north"), ("b", "gold", "south")]
    engine, _ = spark_dataset(spark, shop)
    try:
        assert [tuple(r) for r in engine.rows(query)] == [("a", "gold", "north"), ("b", "gold", "south")]
    finally:
        engine.close()


def test_the_person_id_prefers_an_id_that_is_not_personal_on_spark_too(spark, tmp_path):
    from portrait.spark_engine import spark_dataset
    from tests.test_identity import JUDGED_LINKS

    pd.DataFrame({"order_id": ["o1"], "customer_id": ["zed1"], "ts": ["2024-01-05 10:00:00"], "amount": [1.0]}).to_csv(
        tmp_path / "purchases.csv", index=False
    )
    JUDGED_LINKS.to_csv(tmp_path / "identities.csv", index=False)
    query = "SELECT customer_id, person_id FROM identity_map ORDER BY customer_id"
    duck = _duckdb_rows(tmp_path, query)
    assert ("anna.smith@example.com", "zed1") in duck and ("0770 0900125", "0770 0900124") in duck
    engine, _ = spark_dataset(spark, tmp_path)
    try:
        assert [tuple(r) for r in engine.rows(query)] == duck
    finally:
        engine.close()


@pytest.mark.parametrize("stored", ["csv", "timestamptz", "double", "two columns"])
def test_a_date_of_birth_gives_the_same_year_on_spark(spark, tmp_path, stored):
    """The date is withheld on both engines and its year read alike: every text of
    tests/test_privacy.py's BIRTH_DATES (Java's regular expressions), a time stored with a zone
    (read in the data set's: a local midnight on 1 January is 31 December in UTC), and digits
    stored as a float (Spark writes 19751129.0 as 1.9751129E7); with two dates of birth, each
    row's first that gives a year."""
    from portrait.spark_engine import spark_dataset
    from tests.test_privacy import BIRTH_DATES

    ids = [f"c{i:02d}" for i in range(len(BIRTH_DATES))]
    pd.DataFrame({"order_id": ids, "customer_id": ids, "ts": "2024-01-05 10:00:00", "amount": 1.0}).to_csv(
        tmp_path / "purchases.csv", index=False
    )
    texts = [text for text, _ in BIRTH_DATES]
    if stored == "csv":
        pd.DataFrame({"customer_id": ids, "dob": texts}).to_csv(tmp_path / "customers.csv", index=False)
        expected = [None if year is None else str(year) for _, year in BIRTH_DATES]
    elif stored == "two columns":  # an empty dob beside the date_of_birth that holds them
        dob = ["1960-01-01", *[""] * (len(ids) - 1)]
        pd.DataFrame({"customer_id": ids, "dob": dob, "date_of_birth": texts}).to_csv(
            tmp_path / "customers.csv", index=False
        )
        expected = ["1960", *(None if year is None else str(year) for _, year in BIRTH_DATES[1:])]
    elif stored == "timestamptz":
        (tmp_path / "portrait.toml").write_text('timezone = "Europe/Berlin"\n')
        local = pd.to_datetime(["1975-01-01", *texts[1:]], format="%Y-%m-%d", errors="coerce")
        local = local.tz_localize("Europe/Berlin")
        assert local[0].tz_convert("UTC").year == 1974  # stored as 1974-12-31 23:00 UTC
        pd.DataFrame({"customer_id": ids, "dob": local}).to_parquet(tmp_path / "customers.parquet", index=False)
        expected = [t.year if not pd.isna(t) and t.year > 1900 else None for t in local]  # 1890, 1900: none
        assert expected[0] == 1975 and 2001 in expected
    else:
        digits = [float(t) if t.isdigit() else None for t in texts]
        pd.DataFrame({"customer_id": ids, "dob": digits}).to_parquet(tmp_path / "customers.parquet", index=False)
        expected = [year if t.isdigit() else None for t, (_, year) in zip(texts, BIRTH_DATES, strict=True)]
    query = "SELECT * FROM customers ORDER BY customer_id"
    duck = _duckdb_rows(tmp_path, query)
    assert [row[1] for row in duck] == expected
    engine, _ = spark_dataset(spark, tmp_path)
    try:
        assert [name for name, *_ in engine.columns(query)] == ["customer_id", "birth_year"]
        assert [tuple(r) for r in engine.rows(query)] == duck
    finally:
        engine.close()
