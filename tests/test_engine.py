"""The engine seam without a Spark session: DuckDB engine, transpiling every plan step and
view to Spark SQL, and the messages when Spark cannot run (issue 14 §1, bad input)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from features.build import _attribute_select, attribute_instant
from features.catalogue import Vocabulary, catalogue
from features.config import FeatureConfig
from features.plan import compile_plan, purchase_steps
from portrait import contract
from portrait.engine import DuckDBEngine, as_engine, check_engine_name
from portrait.errors import PortraitError
from portrait.spark_engine import parse_table_options, require_spark, to_spark_sql
from portrait.views import checked_views

CUTOFF = dt.date(2024, 6, 1)
# DuckDB functions Spark SQL does not have, and table functions each engine scans with its own.
NOT_ON_SPARK = ("ISFINITE", "TRY_STRPTIME", "STRPTIME", "STRLEN", "TIMEZONE(", "READ_PARQUET", "READ_CSV", "EPOCH(")


def _every_step() -> list:
    vocabulary = Vocabulary(
        categories=("fresh", "toys"), brands=("acme",), channels=("web", "app"), payment_methods=("card",)
    )
    kinds = {"signup_date": "date", "age_band": "category", "income": "number"}
    config = FeatureConfig()
    features = catalogue(config, vocabulary, kinds)
    instant = attribute_instant("signup_date", "VARCHAR", "Europe/Paris")
    spine = f"SELECT customer_id FROM customers WHERE {instant} < TIMESTAMP '2024-06-01 00:00:00'"
    steps = compile_plan(
        [f for f in features if f.stage != "favourite"],
        CUTOFF,
        config,
        has_events=True,
        spine_extra=spine,
        attribute_select=_attribute_select(
            kinds,
            features,
            CUTOFF,
            {"signup_date": "VARCHAR", "age_band": "VARCHAR", "income": "DOUBLE"},
            "Europe/Paris",
        ),
    )
    return purchase_steps(CUTOFF) + steps


def test_every_plan_step_transpiles_to_spark_sql_without_duckdb_only_forms():
    steps = _every_step()
    assert len(steps) >= 10 and steps[-1].name == "f_features"
    for step in steps:
        assert not re.search(r"(?i)\bisfinite\b|\bread_(parquet|csv)\b|\bstrptime\b", step.sql), step.name
        # A 0/1 averaged as a DECIMAL literal: Spark averages it to 5 decimal places.
        assert not re.search(r"THEN\s+[01]\.0\s+(ELSE|WHEN)", step.sql), step.name
        spark_sql = to_spark_sql(step.sql).upper()
        assert not [f for f in NOT_ON_SPARK if f in spark_sql], (step.name, spark_sql[:300])


def test_every_view_rule_transpiles_with_timestamps_rewritten_for_spark():
    for table in contract.TABLES:
        types = {c.name: "VARCHAR" for c in table.columns}
        for fmt, zone in ((None, "Europe/Paris"), ("%d/%m/%Y %H:%M", "UTC"), ("%Y-%m-%d %H:%M:%S%z", "UTC")):
            for name, sql in checked_views(table, types, [], fmt, True, zone, [], decimal=","):
                spark_sql = to_spark_sql(sql).upper()
                assert not [f for f in NOT_ON_SPARK if f in spark_sql], (table.name, name, fmt)
                if name.startswith("checked") and any(c.kind == "number" for c in table.columns):
                    assert "RLIKE '^[+-]?[0-9]*,?[0-9]+$'" in spark_sql  # decimal commas, anchored as in DuckDB
                if fmt and name.startswith("checked") and any(c.kind == "timestamp" for c in table.columns):
                    assert "TRY_TO_TIMESTAMP(" in spark_sql and "'D/M/YYYY H:M'" in spark_sql or "%z" in fmt
    typed = checked_views(
        contract.table("events"),
        {
            "customer_id": "VARCHAR",
            "ts": "TIMESTAMP WITH TIME ZONE",
            "event_type": "VARCHAR",
            "channel": "VARCHAR",
            "category": "VARCHAR",
            "value": "DOUBLE",
        },
        [],
        None,
        False,
        "Europe/Paris",
        [],
    )
    checked = to_spark_sql(dict(typed)["checked_events"])
    assert "CAST(FROM_UTC_TIMESTAMP(CAST(`ts` AS TIMESTAMP), 'Europe/Paris') AS TIMESTAMP_NTZ)" in checked.replace(
        '"', "`"
    )
    assert "BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308" in checked


def test_the_duckdb_engine_runs_the_statements_of_a_build(tmp_path):
    con = duckdb.connect()
    engine = as_engine(con)
    assert isinstance(engine, DuckDBEngine) and as_engine(engine) is engine
    engine.register_frame("numbers", pd.DataFrame({"x": [1, 2, 3]}))
    engine.materialize("doubled", "SELECT x * 2 AS y FROM numbers")
    assert engine.rows("SELECT SUM(y) FROM doubled") == [(12,)]
    assert engine.columns("SELECT * FROM doubled") == [("y", "BIGINT")]
    engine.write_parquet("SELECT y FROM doubled ORDER BY y", tmp_path / "out.parquet")
    assert pd.read_parquet(tmp_path / "out.parquet")["y"].tolist() == [2, 4, 6]
    engine.drop("doubled")
    with pytest.raises(duckdb.CatalogException, match="doubled"):
        engine.rows("SELECT * FROM doubled")
    with pytest.raises(TypeError, match="expected a DuckDB connection or an Engine"):
        as_engine("not a connection")


def test_unknown_engine_and_bad_table_options_are_named():
    with pytest.raises(PortraitError, match="unknown engine 'sparky'; choose one of duckdb, spark"):
        check_engine_name("sparky")
    assert parse_table_options(["purchases=sales.order_lines"]) == {"purchases": "sales.order_lines"}
    with pytest.raises(PortraitError, match="expected TABLE=CATALOG_TABLE"):
        parse_table_options(["purchases"])
    with pytest.raises(PortraitError, match="'orders' is not a contract table"):
        parse_table_options(["orders=sales.orders"])


def test_without_pyspark_or_java_the_message_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark raises ImportError
    with pytest.raises(PortraitError, match=r"needs pyspark, which is not installed: pip install 'pyspark>=4.0'"):
        require_spark()
    # pyspark importable again as it was: deleting the entry left pyspark.sql in sys.modules under
    # no pyspark, and MLflow's model logging in a later test read "pyspark has no attribute sql"
    monkeypatch.undo()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PortraitError, match=r"needs Java, and none was found .* openjdk-17"):
        require_spark()
    # a JAVA_HOME pointing nowhere, with java on PATH: Spark's launcher uses JAVA_HOME
    (tmp_path / "java").write_text("#!/bin/sh\n")
    (tmp_path / "java").chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(PortraitError, match=r"JAVA_HOME is .*nowhere, which holds no bin/java; point it at a Java"):
        require_spark()


def test_a_local_spark_output_is_checked_before_any_work_and_an_empty_table_is_not_written(monkeypatch, tmp_path):
    """On Spark a .csv --out got Parquet bytes, a folder was refused after the whole job, and a
    cutoff before the data wrote an empty table with exit 0: DuckDB refuses all three."""
    import features.spark as features_spark

    monkeypatch.setattr(features_spark, "build_features_spark", lambda *a, **k: pytest.fail("the build started"))
    cutoff = dt.date(2000, 1, 1)
    with pytest.raises(PortraitError, match=r"this command writes \.parquet files"):
        features_spark.write_features_spark(tmp_path, cutoff, str(tmp_path / "early.csv"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(PortraitError, match=r"folder is a folder, not a file"):
        features_spark.write_features_spark(tmp_path, cutoff, str(tmp_path / "folder"))
    monkeypatch.setattr(features_spark, "build_features_spark", lambda *a, **k: pd.DataFrame({"customer_id": []}))
    with pytest.raises(
        PortraitError, match=r"no customer has a purchase, event or signup before 2000-01-01: .*nothing written"
    ):
        features_spark.write_features_spark(tmp_path, cutoff, str(tmp_path / "early.parquet"))
    assert not (tmp_path / "early.parquet").exists() and not (tmp_path / "early.csv").exists()


@pytest.mark.parametrize("command", ["features", "score"])
def test_the_commands_without_java_exit_non_zero_with_one_message_and_write_nothing(command, tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PYSPARK_GATEWAY_PORT")}
    env["PATH"] = str(bin_dir)  # the venv's commands, no java
    out = tmp_path / "out.parquet"
    args = {
        "features": [
            "features",
            "build",
            str(tmp_path),
            "--as-of",
            "2024-01-01",
            "--engine",
            "spark",
            "--out",
            str(out),
        ],
        "score": ["score", str(tmp_path), "--as-of", "2024-01-01", "--engine", "spark", "--out", str(tmp_path / "s")],
    }[command]
    result = subprocess.run([str(bin_dir / "portrait"), *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    text = " ".join((result.stdout + result.stderr).split())
    assert "needs Java, and none was found" in text and "Traceback" not in text
    assert not out.exists() and not (tmp_path / "s").exists()


def test_a_jvm_that_stopped_mid_job_is_one_message_and_closing_does_not_hide_it():
    """A local Spark driver out of memory kills the JVM: py4j's calls then fail with a refused
    connection (seen at 1M customers with the default 3g driver). The user gets one line saying
    what to change, not the traceback of the engine's cleanup."""
    pytest.importorskip("pyspark.sql")
    from portrait.spark_engine import SparkEngine, spark_errors

    class StoppedCatalog:
        def dropTempView(self, name):
            raise ConnectionRefusedError(111, "Connection refused")

    class StoppedSession:
        catalog = StoppedCatalog()

    engine = SparkEngine(StoppedSession())
    engine._persisted["f_orders"] = object()
    with pytest.raises(PortraitError, match="Spark JVM stopped during the job .*PORTRAIT_SPARK_DRIVER_MEMORY"):
        with spark_errors():
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            finally:
                engine.close()
    assert engine._persisted == {}
    with pytest.raises(PortraitError, match="larger than the session's spark.driver.maxResultSize"):
        with spark_errors():
            from py4j.protocol import Py4JError

            raise Py4JError(
                "An error occurred while calling o335.getResult.\nCaused by: Total size of serialized results "
                "of 4 tasks (1263.5 MiB) is bigger than spark.driver.maxResultSize (1024.0 MiB)"
            )
    with pytest.raises(PortraitError, match="the Spark job failed: boom"):
        with spark_errors():
            from py4j.protocol import Py4JError

            raise Py4JError("boom")
    # a remote Parquet file in nanoseconds: what to do, not 30 lines of Java
    with pytest.raises(
        PortraitError, match="stored in nanoseconds, which Spark does not read .*coerce_timestamps='us'"
    ):
        with spark_errors():
            from py4j.protocol import Py4JError

            raise Py4JError("[PARQUET_TYPE_ILLEGAL] Illegal Parquet type: INT64 (TIMESTAMP(NANOS,false)).\n\tat org...")


def test_local_parquet_parts_in_nanoseconds_are_named_for_the_spark_engine(tmp_path):
    from portrait.dataset import open_dataset

    folder = tmp_path / "data" / "purchases"
    folder.mkdir(parents=True)
    part = {"order_id": ["o1"], "customer_id": ["a"], "amount": [1.0]}
    pd.DataFrame({**part, "ts": pd.to_datetime(["2024-03-31 10:00"]).as_unit("ns")}).to_parquet(folder / "a.parquet")
    pd.DataFrame({**part, "ts": pd.to_datetime(["2024-03-31 10:00"]).as_unit("us")}).to_parquet(folder / "b.parquet")
    source = open_dataset(folder.parent).sources["purchases"]
    assert [Path(p).name for p in source.parquet_nanosecond_files("ts")] == ["a.parquet"]


def test_an_engines_views_are_read_under_its_prefix_and_other_names_are_left_alone():
    from portrait.spark_engine import _engine_spark_sql

    sql = (
        "WITH f_orders AS (SELECT customer_id FROM purchases) "
        "SELECT f_spine.customer_id, o.customer_id FROM f_spine LEFT JOIN f_orders o USING (customer_id) "
        "LEFT JOIN sales.purchases s USING (customer_id) LEFT JOIN lake_lines USING (customer_id)"
    )
    text = _engine_spark_sql(sql, frozenset({"purchases", "f_spine", "f_orders"}), "portrait7_")
    assert "FROM portrait7_purchases AS purchases" in text  # a view of the engine, aliased to its name
    assert "FROM portrait7_f_spine AS f_spine" in text  # so f_spine.customer_id still resolves
    assert "LEFT JOIN f_orders AS o" in text  # the CTE, not the engine's view of that name
    assert "sales.purchases AS s" in text  # a catalog table
    assert "LEFT JOIN lake_lines USING" in text  # a name the engine did not register


def test_wide_frame_releases_the_tables_it_read_once_the_rows_are_fetched():
    engine = as_engine(duckdb.connect())
    engine.register_frame("numbers", pd.DataFrame({"x": [1.5, 2.5], "label": ["a", "b"]}))
    released = []

    def release() -> None:
        engine.drop("numbers")
        released.append(True)

    frame = engine.wide_frame("SELECT * FROM numbers ORDER BY x", release=release)
    assert released == [True] and not engine.has_relation("numbers")
    assert frame["x"].tolist() == [1.5, 2.5] and frame["label"].tolist() == ["a", "b"]


class _FakeFrame:
    """A Spark DataFrame as the engine uses it, recording what is done to it in ``calls``."""

    def __init__(self, calls: list, kind: str = "query") -> None:
        self.calls, self.kind = calls, kind

    def localCheckpoint(self, eager):
        self.calls.append(("localCheckpoint", eager))
        return _FakeFrame(self.calls, "checkpoint")

    def persist(self):
        self.calls.append(("persist",))
        return _FakeFrame(self.calls, "cache")

    def unpersist(self):
        self.calls.append(("unpersist", self.kind))

    def count(self):  # an eager cache is computed at once
        return 0

    def createOrReplaceTempView(self, name):
        self.calls.append(("view", name, self.kind))


class _FakeSession:
    """A SparkSession of ``master`` as far as the engine's keeping and dropping of steps reads it."""

    class _Catalog:
        def dropTempView(self, name):
            return True

    def __init__(self, master: str) -> None:
        self.sparkContext = types.SimpleNamespace(master=master)
        self.catalog = self._Catalog()


@pytest.mark.parametrize(
    ("master", "kept_as"),
    [
        ("local[2]", "checkpoint"),
        ("local", "checkpoint"),
        ("spark://host:7077", "cache"),
        ("local-cluster[2,1,1024]", "cache"),  # executors in JVMs of their own
        ("yarn", "cache"),
    ],
)
def test_a_step_is_checkpointed_in_one_jvm_and_cached_on_a_cluster(master, kept_as, monkeypatch):
    """In one JVM a step is a local checkpoint (later steps are planned without its plan); on a
    cluster, where an executor and its blocks can be lost, a cache that Spark recomputes. A
    dropped checkpoint is freed only when the engine closes or its build is done (a frame not yet computed may
    still read it), a freed one at once; a dropped cache after the next query; a caller's
    cached frame at closing."""
    from portrait.spark_engine import SparkEngine

    calls = []
    engine = SparkEngine(_FakeSession(master))
    freed = []
    monkeypatch.setattr("portrait.spark_engine._free_checkpoint", freed.append)
    engine._keep("f_orders", _FakeFrame(calls), eager=False)
    assert calls[0] == (("localCheckpoint", False) if kept_as == "checkpoint" else ("persist",))
    assert calls[1] == ("view", engine.view_name("f_orders"), kept_as)
    engine.drop("f_orders")
    engine._released(None)  # what every query does after it has run
    assert (("unpersist", "cache") in calls) == (kept_as == "cache") and not freed
    engine._keep("_identity_labels", _FakeFrame(calls))
    engine.free("_identity_labels")  # freed at once: a round of the identity merge
    assert len(freed) == (1 if kept_as == "checkpoint" else 0)
    assert calls.count(("unpersist", "cache")) == (2 if kept_as == "cache" else 0)
    engine.cached(_FakeFrame(calls))  # a frame a caller reads several times (the scoring's features)
    engine.close()
    assert len(freed) == (2 if kept_as == "checkpoint" else 0)
    assert calls.count(("unpersist", "cache")) == (3 if kept_as == "cache" else 1)


def test_a_fetched_build_frees_the_checkpoints_it_made_and_dropped_and_nothing_else(monkeypatch):
    """A notebook building features at many cutoffs on one engine: once a build's table is
    fetched (``free_dropped_since``), the checkpoints of the steps it made and dropped are
    freed; a step made before the build (a caller's, a lazy frame not yet computed may read
    it) and a step still named stay until the engine closes, dropped or not."""
    from portrait.spark_engine import SparkEngine

    calls = []
    engine = SparkEngine(_FakeSession("local[2]"))
    freed = []
    monkeypatch.setattr("portrait.spark_engine._free_checkpoint", lambda frame: freed.append(frame.name))

    def keep(name):
        frame = _FakeFrame(calls)
        frame.localCheckpoint = lambda eager: types.SimpleNamespace(name=name, createOrReplaceTempView=lambda v: None)
        engine._keep(name, frame)

    keep("f_lines_callers")  # the caller's, before the build
    keep("f_vocabulary_before")
    mark = engine.steps_mark()
    keep("f_orders")
    keep("f_stage_orders")
    keep("f_vocabulary")  # still named when the build is done
    engine.drop("f_orders")  # dropped as the plan goes
    engine.drop("f_vocabulary_before")  # made before the build: may be read by a frame not yet computed
    engine.drop("f_stage_orders")
    engine.free_dropped_since(mark)
    assert freed == ["f_orders", "f_stage_orders"]
    engine.free_dropped_since(mark)  # nothing is freed twice
    assert freed == ["f_orders", "f_stage_orders"]
    engine.close()
    assert sorted(freed[2:]) == ["f_lines_callers", "f_vocabulary", "f_vocabulary_before"]


def test_a_spark_connect_session_without_a_context_keeps_steps_as_caches():
    from portrait.spark_engine import _one_jvm

    class ConnectSession:
        @property
        def sparkContext(self):
            raise RuntimeError(
                "[JVM_ATTRIBUTE_NOT_SUPPORTED] Attribute `sparkContext` is not supported in Spark Connect"
            )

    assert not _one_jvm(ConnectSession())
