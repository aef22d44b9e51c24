"""The Spark engine: the same views, plan and scores on a ``SparkSession``.

Imported only when ``--engine spark`` is asked for; importing it starts nothing (pyspark is
imported inside :func:`spark_session`). What it does:

- **SQL**: every statement is written once, in DuckDB's dialect (the feature plan, the views'
  row rules), and transpiled here with sqlglot (``read="duckdb", write="spark"``). Two DuckDB
  functions have no sqlglot translation and are rewritten on the syntax tree:
  ``TRY_STRPTIME(text, '%d/%m/%Y')`` becomes ``TRY_TO_TIMESTAMP(text, 'd/M/yyyy')`` (sqlglot's
  strftime-to-Java pattern mapping), and ``timezone(zone, instant)`` becomes
  ``CAST(FROM_UTC_TIMESTAMP(instant, zone) AS TIMESTAMP_NTZ)`` (the session time zone is UTC).
- **Reading**: each table from a local folder (the data set's files, as :func:`open_dataset`
  finds them, with its ``portrait.toml``), from any path Spark reads (``hdfs://``, ``s3a://``,
  ``abfss://``: ``NAME.parquet``, ``NAME.csv`` or a folder ``NAME/`` under the root), or from a
  catalog table (``--table purchases=sales.order_lines``). Personal-data columns
  (:mod:`portrait.privacy`) are dropped from the source before any view sees them. CSV is read
  as text (every value parsed by the same rules as on DuckDB); a line Spark cannot split into
  the header's fields is set aside (``malformed_row``) as DuckDB sets it aside. Quotes inside
  quoted values are doubled (RFC 4180) unless the file's first lines escape them with a
  backslash (:func:`portrait.csv_dialect.backslash_escaped`).
- **Views**: ``raw_t``, ``cleaned_t``, ``checked_t``, ``typed_t``, ``clean_t``,
  ``duplicates_t`` and ``t`` with the SQL of :mod:`portrait.views` (``select_columns``,
  ``checked_views``, ``merged_view``), as temporary views of the session, each engine's under
  a prefix of its own (two data sets on one session keep their views apart; see
  :class:`SparkEngine`).
- **Forgotten customers** (:mod:`portrait.forget`): with tombstones in the data set
  (``.portrait/`` in the local folder, or under the root of a path Spark reads), ``raw_t``
  leaves out the rows whose customer id (identities: or id_type/id_value pair) is tombstoned,
  as DuckDB's ``raw_t`` does: Spark's ``sha2`` of the same key text as
  :func:`portrait.forget._key_sql` (salt, kind and the parsed text of the key columns, joined
  by ``chr(31)``) per row, left-joined with the broadcast set of tombstone hashes.
  ``forgotten_t`` holds the rows left out (:func:`forgotten_counts`, validation's count); a
  tombstone file without its salt is the same error as on DuckDB.
- **Identities**: connected components by iterative minimum-label propagation in SQL
  (:func:`register_identity_map`), never collecting the graph to the driver.
- **Writing**: a directory output is written to a hidden temporary folder beside the target and
  renamed into place (:func:`write_directory`), so a failed job leaves nothing where readers look.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlglot
from sqlglot import exp

from portrait import contract
from portrait.connections import on_interrupt
from portrait.csv_dialect import backslash_escaped
from portrait.dataset import (
    Dataset,
    TableSource,
    _csv_file,
    _find_files,
    _guard,
    _read_config,
)
from portrait.errors import ContractError, PortraitError, first_line
from portrait.files import read_parquet, replace_directory
from portrait.forget import (
    FOLDER,
    KEY_COLUMNS,
    SALT,
    TOMBSTONES,
    _keys,
    _read_salt,
    folder_of,
    missing_salt,
    valid_salt,
)
from portrait.identity import MERGING_LINKS_JUDGED
from portrait.privacy import (
    BIRTH_YEAR,
    PrivacySettings,
    birth_year_sources,
    birth_years_sql,
    personal_value_checks,
    refuse_values_as_names,
    report_personal_values,
    value_checked,
    withheld_columns,
)
from portrait.sql import quote_ident

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[2]"
# Settings of a session this module starts itself (local mode): small shuffles, no web UI.
LOCAL_CONFIG = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": os.environ.get("PORTRAIT_SPARK_DRIVER_MEMORY", "3g"),
    # A local --out collects the feature table to the driver (1.3 GB at 1M customers, over the
    # 1g default): the driver's memory is the limit on a local session.
    "spark.driver.maxResultSize": "0",
}
# Settings every run needs, also on a session it is given (spark-submit, Databricks).
SESSION_CONFIG = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    # key=value folders read as text, as DuckDB reads them (store_id=007 stays 007, not 7)
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
}
MAX_IDENTITY_ROUNDS = 60
INSTALL_PYSPARK = "pip install 'pyspark>=4.0' (the project's spark and dev extras hold it: pip install -e '.[spark]')"
INSTALL_JAVA = "install a Java runtime, 17 or later (e.g. apt-get install openjdk-17-jre-headless), or set JAVA_HOME"
_CSV_CORRUPT = "_portrait_corrupt_record"


# --- session -------------------------------------------------------------------------------


def _java_found() -> bool:
    home = os.environ.get("JAVA_HOME")
    if home:  # Spark's launcher runs $JAVA_HOME/bin/java when it is set, whatever PATH holds
        return Path(home, "bin", "java").is_file()
    return shutil.which("java") is not None


def _submitted() -> bool:
    """Running inside spark-submit (or pyspark's shell): the JVM is already there."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def require_spark() -> None:
    """Raise a :class:`PortraitError` saying what to install when pyspark or Java is missing."""
    try:
        # pyspark.sql, not pyspark alone: a pyspark module without its sql package breaks MLflow's
        # model logging later in the same process ("module 'pyspark' has no attribute 'sql'")
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise PortraitError(f"--engine spark needs pyspark, which is not installed: {INSTALL_PYSPARK}") from None
    if not _submitted() and not _java_found():
        home = os.environ.get("JAVA_HOME")
        if home:
            raise PortraitError(
                f"--engine spark needs Java: JAVA_HOME is {home}, which holds no bin/java; point it at a Java "
                "runtime (17 or later) or unset it to use the java on PATH"
            )
        raise PortraitError(
            f"--engine spark needs Java, and none was found (no JAVA_HOME, no java on PATH): {INSTALL_JAVA}"
        )


# Spark's own log lines (its default log profile, the host's address, native Hadoop libraries,
# a cancelled job's tasks) on every command's stderr say nothing a user of the product acts on:
# a failed job reaches the user as its exception, in one line (spark_errors). Fatal ones only.
_LOG4J_FATAL_ONLY = """status = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
rootLogger.level = fatal
rootLogger.appenderRef.stdout.ref = console
"""


def _quiet_log4j() -> str:
    """A log4j2 configuration for a local session's JVM (fatal errors only), written once per process."""
    path = Path(tempfile.gettempdir()) / f"portrait-log4j2-{os.getpid()}.properties"
    if not path.exists():
        path.write_text(_LOG4J_FATAL_ONLY, encoding="utf-8")
    return str(path)


def spark_session(master: str | None = None):
    """The session to run on: the active one (spark-submit, Databricks) unless ``master`` is
    given, else a new local one (``local[2]`` by default, small and without UI)."""
    require_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        session = active
    else:
        builder = SparkSession.builder.appName("portrait")
        if master is not None or not _submitted():
            builder = builder.master(master or DEFAULT_MASTER)
            for key, value in LOCAL_CONFIG.items():
                builder = builder.config(key, value)
            builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_quiet_log4j()}")
            # Python workers run this interpreter (the features and models import from it),
            # not whatever python3 is first on PATH: pyspark reads PYSPARK_PYTHON.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # the JVM did not start: a message, not a Java stack trace
            raise PortraitError(f"cannot start Spark ({_first_line(exc)}); check Java: {INSTALL_JAVA}") from None
        session.sparkContext.setLogLevel("ERROR")
        _cancel_jobs_on_ctrl_c(session)
    for key, value in SESSION_CONFIG.items():
        session.conf.set(key, value)
    # pyspark 4.3 warns on every pandas conversion that it does not "fully support" pandas 3;
    # the conversions used here (Arrow, flat columns) are checked by the parity test.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated", module="pyspark")
    # said before the error it announces (with a Java stack): the error is what the user reads
    warnings.filterwarnings("ignore", message="toPandas attempted Arrow optimization", module="pyspark")
    return session


# Set by Ctrl-C on a session this module started: the job failure that follows is the stop.
_INTERRUPTED = threading.Event()


def _cancel_jobs_on_ctrl_c(session) -> None:
    """Ctrl-C cancels the session's jobs and stops the command as an interruption. pyspark's
    own handler cancels them from inside the signal handler, on the py4j connection the main
    thread is reading: a "reentrant call" error, a Java stack trace and a "job failed" message
    followed. And a Python handler runs only when the main thread next runs Python code, which
    while it waits for a job's result may be the job's end: the jobs are cancelled from the
    thread :func:`portrait.connections.interrupting_queries` wakes (the command's), and the
    handler here only raises the KeyboardInterrupt."""
    context = session.sparkContext

    def cancel() -> None:  # from the waking thread, on a py4j connection of its own
        _INTERRUPTED.set()
        try:
            context.cancelAllJobs()
        except Exception:  # the session is gone: nothing runs to cancel
            pass

    on_interrupt("spark", cancel)
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupted(signum, frame) -> None:
        _INTERRUPTED.set()
        if _in_py4j(frame):  # waiting for the JVM: cancelled, its call fails, spark_errors says so
            threading.Thread(target=cancel, name="portrait-cancel", daemon=True).start()
            return  # raised here, py4j logs the KeyboardInterrupt with a traceback
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)


def _in_py4j(frame) -> bool:
    """Whether ``frame`` (where the main thread was when a signal was handled) is inside a py4j
    call to the JVM."""
    while frame is not None:
        if f"{os.sep}py4j{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def spark_errors() -> Iterator[None]:
    """A Spark or JVM failure as a :class:`PortraitError` (one line, no Java stack trace); the
    writes in this module leave nothing where readers look when a job fails. A job failing
    because Ctrl-C cancelled it is the KeyboardInterrupt it was."""
    _INTERRUPTED.clear()
    try:
        yield
    except PortraitError:
        raise
    except Exception as exc:
        if _INTERRUPTED.is_set():  # the job Ctrl-C cancelled
            raise KeyboardInterrupt from None
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException

        if _jvm_gone(exc):
            raise PortraitError(
                "the Spark JVM stopped during the job (on a local session most often for lack of driver "
                f"memory: {LOCAL_CONFIG['spark.driver.memory']} now, set PORTRAIT_SPARK_DRIVER_MEMORY, e.g. 12g); "
                "no output was written"
            ) from None
        if isinstance(exc, PySparkException | Py4JError) and "spark.driver.maxResultSize" in str(exc):
            raise PortraitError(
                "the Spark job's result is larger than the session's spark.driver.maxResultSize: raise it, or "
                "write to a path Spark writes (hdfs://, s3a://, abfss://) so that the executors write the table; "
                "no output was written"
            ) from None
        if isinstance(exc, PySparkException | Py4JError) and "TIMESTAMP(NANOS" in str(exc):
            raise PortraitError(f"a Parquet file read: {nanosecond_message([])}; no output was written") from None
        if isinstance(exc, PySparkException | Py4JError):
            raise PortraitError(f"the Spark job failed: {_first_line(exc)}; no output was written") from None
        raise


def nanosecond_message(files: list[str]) -> str:
    """Why a Parquet timestamp in nanoseconds is not read on Spark, and what to do."""
    where = f" ({', '.join(Path(f).name for f in files[:3])}{' ...' if len(files) > 3 else ''})" if files else ""
    return (
        f"a timestamp stored in nanoseconds{where}, which Spark does not read (its Parquet reader refuses "
        "TIMESTAMP(NANOS)); write it in microseconds (pandas: to_parquet(..., coerce_timestamps='us'); "
        "pyarrow: write_table(..., coerce_timestamps='us')), or run with --engine duckdb"
    )


def _jvm_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the JVM behind the session is no longer there: py4j cannot reach
    it (a refused or reset connection, its network error)."""
    from py4j.protocol import Py4JNetworkError  # only called where pyspark (and py4j) ran

    return isinstance(exc, ConnectionError | Py4JNetworkError)


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:300]  # a Spark error's first line can hold a whole plan


# --- SQL -----------------------------------------------------------------------------------


# DuckDB's TRIM without characters strips Unicode space separators (category Zs: the no-break
# space of Excel and web exports, the ideographic space...), Spark's only ' ': an id padded
# with a no-break space was one customer on DuckDB and another on Spark. Written as the
# characters themselves, no backslash for the two SQL dialects' string escapes to differ on.
_SPACE_SEPARATORS = " \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_TRIMMED = {
    None: f"^[{_SPACE_SEPARATORS}]+|[{_SPACE_SEPARATORS}]+$",
    "LEADING": f"^[{_SPACE_SEPARATORS}]+",
    "TRAILING": f"[{_SPACE_SEPARATORS}]+$",
}


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Trim) and node.args.get("expression") is None:
        position = node.args.get("position")
        pattern = _TRIMMED.get(position.upper() if isinstance(position, str) else None)
        if pattern is not None:
            value = node.this.transform(_rewrite)
            return exp.Anonymous(
                this="REGEXP_REPLACE", expressions=[value, exp.Literal.string(pattern), exp.Literal.string("")]
            )
    if isinstance(node, exp.Anonymous):
        name = node.name.upper()
        if name == "STRLEN":  # DuckDB's length in bytes (kept with the text: cheap), Spark's name for it
            return exp.Anonymous(this="OCTET_LENGTH", expressions=[e.transform(_rewrite) for e in node.expressions])
        if name == "TRY_STRPTIME" and len(node.expressions) == 2:
            text, pattern = node.expressions
            java = exp.StrToTime(this=text, format=pattern).sql(dialect="spark")  # TO_TIMESTAMP(x, 'java')
            return sqlglot.parse_one("TRY_" + java, read="spark")
        if name == "TIMEZONE" and len(node.expressions) == 2:
            zone, value = node.expressions
            value = value.transform(_rewrite)  # a TRY_STRPTIME inside (a format with %z)
            shifted = exp.Anonymous(this="FROM_UTC_TIMESTAMP", expressions=[value, zone])
            return exp.Cast(this=shifted, to=exp.DataType.build("TIMESTAMP_NTZ", dialect="spark"))
    return node


def _spark_tree(sql: str) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise PortraitError(f"cannot transpile SQL for Spark: {_first_line(exc)}") from None
    return tree.transform(_rewrite)


@functools.lru_cache(maxsize=4096)
def to_spark_sql(sql: str) -> str:
    """One DuckDB-dialect statement as Spark SQL (see the module docstring)."""
    return _spark_tree(sql).sql(dialect="spark")


@functools.lru_cache(maxsize=4096)
def _engine_spark_sql(sql: str, views: frozenset[str], prefix: str) -> str:
    """:func:`to_spark_sql` with each table named in ``views`` read from its prefixed view
    (aliased to its own name, so that ``f_spine.customer_id`` still resolves). A CTE of the
    same name and a qualified catalog table (``sales.order_lines``) are left alone."""
    tree = _spark_tree(sql)
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        if table.args.get("db") or table.name not in views or table.name in ctes:
            continue
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
        table.set("this", exp.to_identifier(prefix + table.name))
    return tree.sql(dialect="spark")


def duckdb_type(data_type) -> str:
    """A Spark column type under the DuckDB name the views' type rules expect."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.StringType | T.VarcharType | T.CharType):
        return "VARCHAR"
    if isinstance(data_type, T.TimestampNTZType):
        return "TIMESTAMP"
    if isinstance(data_type, T.TimestampType):
        return "TIMESTAMP WITH TIME ZONE"
    if isinstance(data_type, T.DecimalType):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    if isinstance(data_type, T.NullType):
        return '"NULL"'
    simple = {
        T.LongType: "BIGINT",
        T.IntegerType: "INTEGER",
        T.ShortType: "SMALLINT",
        T.ByteType: "TINYINT",
        T.DoubleType: "DOUBLE",
        T.FloatType: "FLOAT",
        T.BooleanType: "BOOLEAN",
        T.DateType: "DATE",
        T.BinaryType: "BLOB",
    }
    for kind, name in simple.items():
        if isinstance(data_type, kind):
            return name
    return data_type.simpleString().upper()


class _Result:
    def __init__(self, frame) -> None:
        self._frame = frame

    def fetchall(self) -> list[tuple]:
        return [tuple(row) for row in self._frame.collect()] if self._frame is not None else []

    def df(self) -> pd.DataFrame:
        return self._frame.toPandas()


_ENGINE_NUMBERS = itertools.count(1)


def _one_jvm(spark) -> bool:
    """Whether ``spark`` runs its driver and executors in one JVM: a ``local`` or
    ``local[...]`` master (``local-cluster[...]`` starts executors in JVMs of their own)."""
    try:
        master = str(spark.sparkContext.master)
    except Exception:  # a Spark Connect session has no SparkContext: a remote cluster
        return False
    return master == "local" or master.startswith("local[")


class SparkEngine:
    """:class:`portrait.engine.Engine` on a SparkSession: DuckDB-dialect SQL transpiled.

    Spark's temporary views belong to the whole session, so each engine names its views with a
    prefix of its own (``portrait1_raw_purchases``): two data sets opened on one session (a
    notebook calling :func:`spark_dataset` twice) keep their views apart. The SQL names them
    as on DuckDB (``raw_purchases``); :meth:`query` reads each name this engine registered from
    its prefixed view."""

    name = "spark"

    def __init__(self, spark) -> None:
        self.spark = spark
        self._persisted: dict[str, object] = {}
        self._release: list = []  # caches to free after the next query
        # In one JVM (a local master) a step is checkpointed, not cached: see _keep.
        self._checkpointing = _one_jvm(spark)
        # checkpointed steps by the order they were made in (see free_dropped_since), freed
        # when the engine closes or when their build is done with them
        self._checkpoints: dict[int, object] = {}
        self._made = 0  # steps kept so far: a build's mark (steps_mark)
        self._cached: list = []  # frames cached for a caller (cached), freed when it closes
        self.malformed_rows: dict[str, int] = {}  # CSV lines set aside per table
        self.forgetting: set[str] = set()  # tables with a forgotten_<table> view (portrait.forget)
        self._prefix = f"portrait{next(_ENGINE_NUMBERS)}_"
        self._views: set[str] = set()

    def view_name(self, name: str) -> str:
        """The session-wide name of this engine's view ``name`` (registered as this engine's)."""
        self._views.add(name)
        return self._prefix + name

    def register_dataframe(self, name: str, frame) -> None:
        """A Spark DataFrame as this engine's view ``name`` (not cached)."""
        frame.createOrReplaceTempView(self.view_name(name))

    def table(self, name: str):
        """This engine's view ``name`` as a Spark DataFrame."""
        return self.spark.table(self._prefix + name)

    def query(self, sql: str, params: list | None = None):
        """A Spark DataFrame of a DuckDB-dialect query; ``params`` bind its ``?`` markers
        (values are never pasted into the text)."""
        text = _engine_spark_sql(sql, frozenset(self._views), self._prefix)
        if params:
            return self.spark.sql(text, args=list(params))
        return self.spark.sql(text)

    def execute(self, sql: str) -> _Result:
        """A DuckDB-dialect statement, as :mod:`portrait.views` issues them on a connection:
        ``CREATE OR REPLACE VIEW name AS SELECT ...`` becomes a temporary view; anything else
        is a query."""
        tree = sqlglot.parse_one(sql, read="duckdb")
        if isinstance(tree, exp.Create) and tree.kind == "VIEW":
            name = tree.this.name
            self.create_view(name, tree.expression.sql(dialect="duckdb"))
            return _Result(None)
        return _Result(self.query(sql))

    def register_frame(self, name: str, frame: pd.DataFrame) -> None:
        self._keep(name, self.spark.createDataFrame(frame) if len(frame) else self._empty_like(frame))

    def _empty_like(self, frame: pd.DataFrame):
        from pyspark.sql import types as T

        kinds = {"int64": T.LongType(), "float64": T.DoubleType()}
        schema = T.StructType([T.StructField(c, kinds.get(str(frame[c].dtype), T.StringType())) for c in frame.columns])
        return self.spark.createDataFrame([], schema)

    def create_view(self, name: str, sql: str) -> None:
        self.register_dataframe(name, self.query(sql))

    def materialize(self, name: str, sql: str, eager: bool = False) -> None:
        """A temporary view of ``sql`` kept once computed (a checkpoint or a cache: see
        :meth:`_keep`). Lazily unless ``eager``: it is computed once, by the first query that
        reads it."""
        self._keep(name, self.query(sql), eager)

    def _keep(self, name: str, frame, eager: bool = True) -> None:
        self.drop(name)
        if self._checkpointing:
            # A cached step keeps its whole plan: every later step that reads it is planned
            # (analysed, optimised, its code compiled) over the plans of all the steps before
            # it, the views' included. A checkpointed step is a leaf, so each step is planned
            # alone: a feature build of 400 customers took 31.9 s (59 s of JVM CPU) instead of
            # 55.4 s (104 s), of 100k customers 148 s instead of 252 s, of 1M 709 s instead of
            # 1,299 s (docs/benchmarks.md, 2026-12-07, twentieth session). A local checkpoint
            # cannot be recomputed once lost; in one JVM nothing is lost that the run would
            # survive, but on a cluster an executor can be, so there a step stays a cache.
            frame = frame.localCheckpoint(eager=eager)
            self._checkpoints[self._made] = frame
        else:
            frame = frame.persist()
            if eager:
                frame.count()
        self._made += 1
        self.register_dataframe(name, frame)
        self._persisted[name] = frame

    def steps_mark(self) -> int:
        """Where a build starts: :meth:`free_dropped_since` frees the steps made after it."""
        return self._made

    def free_dropped_since(self, mark: int) -> None:
        """Free now the checkpoints of the steps made since ``mark`` (:meth:`steps_mark`) that
        have been dropped since: for a build that has computed everything reading them (its
        table fetched). Until then a dropped checkpoint stays, since a frame not yet computed
        may read it; steps made before ``mark`` stay too (a caller's frame not yet computed may
        read them), and so does every step still named. A notebook building features at many
        cutoffs on one engine then holds one build's steps, not every build's until it closes.
        A dropped cache (on a cluster) is already freed after the next query."""
        named = {id(frame) for frame in self._persisted.values()}
        done = [made for made, frame in self._checkpoints.items() if made >= mark and id(frame) not in named]
        for made in done:
            _free_checkpoint(self._checkpoints.pop(made))

    def cached(self, frame):
        """``frame`` cached until the engine closes (a frame the caller reads several times)."""
        frame = frame.persist()
        self._cached.append(frame)
        return frame

    def free(self, name: str) -> None:
        """Drop ``name`` and free its checkpoint or cache now: only for a step that nothing
        still to be computed reads (a checkpoint freed too early cannot be recomputed)."""
        frame = self._persisted.pop(name, None)  # so that drop leaves it to this method
        self.drop(name)
        if frame is None:
            return
        if self._checkpointing:
            self._checkpoints = {made: f for made, f in self._checkpoints.items() if f is not frame}
            _free_checkpoint(frame)
        else:
            frame.unpersist()

    def rename(self, old: str, new: str) -> None:
        """The cached view ``old`` under the name ``new`` (replacing it), without recomputing it."""
        frame = self._persisted.pop(old)
        self.drop(new)
        self.drop(old)  # the name only: its cache is now the frame's under the new name
        self.register_dataframe(new, frame)
        self._persisted[new] = frame

    def has_relation(self, name: str) -> bool:
        """Whether this engine has a view ``name`` (a data set's table is a view)."""
        return name in self._views and bool(self.spark.catalog.tableExists(self._prefix + name))

    def drop(self, name: str) -> None:
        """Forget the name now; free its cache after the next query has run (a step dropped
        before the query that reads it was run is still read through its cache). A checkpoint
        is freed when its build is done with it (:meth:`free_dropped_since`) or the engine
        closes: a step or a frame not yet computed may still read it, and a freed checkpoint
        cannot be recomputed."""
        frame = self._persisted.pop(name, None)
        if frame is not None and not self._checkpointing:
            self._release.append(frame)
        self.spark.catalog.dropTempView(self._prefix + name)
        self._views.discard(name)

    def _released(self, result):
        for frame in self._release:
            frame.unpersist()
        self._release.clear()
        return result

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self._released([tuple(row) for row in self.query(sql, params).collect()])

    def frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        # one block per dtype, as DuckDB's
        return self._released(self.query(sql, params).toPandas().copy())

    def wide_frame(self, sql: str, release: Callable[[], None] | None = None) -> pd.DataFrame:
        frame = self.frame(sql)
        if release is not None:
            release()
        return frame

    def finished(self, sql: str, finish, dtypes: dict[str, str]):
        """A Spark DataFrame of ``sql`` with ``finish`` (a pandas frame to pandas frame function,
        row by row: the feature build's favourites and dtypes) applied batch by batch on the
        executors; ``dtypes`` gives each output column as ``int``, ``category``/``str`` or
        (anything else) a double."""
        from pyspark.sql import types as T

        kinds = {"int": T.LongType(), "category": T.StringType(), "str": T.StringType()}
        schema = T.StructType([T.StructField(n, kinds.get(d, T.DoubleType())) for n, d in dtypes.items()])

        def run(batches):
            for batch in batches:
                out = finish(batch.copy())  # one block per dtype: no fragmentation warnings
                for column in out.columns:
                    if isinstance(out[column].dtype, pd.CategoricalDtype):
                        out[column] = out[column].astype(object).where(out[column].notna(), None)
                yield out

        return self.query(sql).mapInPandas(run, schema)

    def columns(self, sql: str) -> list[tuple[str, str]]:
        return [(f.name, duckdb_type(f.dataType)) for f in self.query(sql).schema.fields]

    def write_parquet(self, sql: str, path: str | Path) -> None:
        self._released(write_directory(self.query(sql), str(path)))

    def close(self) -> None:
        """Drop the cached steps and every view of this engine (a notebook's session keeps no
        trace of it); when the JVM has already stopped (the error being raised is the one to
        report) there is nothing left to drop."""
        try:
            for name in self._views | set(self._persisted):
                self.drop(name)
            self._released(None)
            while self._cached:
                self._cached.pop().unpersist()
            while self._checkpoints:
                _free_checkpoint(self._checkpoints.popitem()[1])
        except Exception as exc:
            if not _jvm_gone(exc):
                raise
            self._persisted.clear()
            self._views.clear()
            self._checkpoints.clear()
            self._cached.clear()


def _free_checkpoint(frame) -> None:
    """Free a checkpoint's blocks: Spark frees them only when its RDD is garbage-collected in
    the JVM (a DataFrame's ``unpersist`` does not touch it), so the RDD under the frame's plan
    (a ``LogicalRDD``) is unpersisted."""
    try:
        frame._jdf.queryExecution().logical().rdd().unpersist(False)
    except Exception as exc:  # Spark's internals moved: the JVM frees it when collected
        if _jvm_gone(exc):
            raise
        log.debug("could not free a checkpoint: %s", exc)


# --- writing -------------------------------------------------------------------------------


def _hadoop_fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path, jvm


def path_exists(spark, path: str) -> bool:
    fs, hadoop_path, _ = _hadoop_fs(spark, path)
    return bool(fs.exists(hadoop_path))


class _HadoopFolders:
    """:class:`portrait.files.Folders` on the file system Hadoop finds for a path (local,
    ``hdfs://``, ``s3a://``, ``abfss://``); no atomic exchange there."""

    def __init__(self, spark):
        self.spark = spark

    def _fs(self, path: str):
        fs, hadoop_path, _ = _hadoop_fs(self.spark, path)
        return fs, hadoop_path

    def exists(self, path: str) -> bool:
        fs, hadoop_path = self._fs(path)
        return bool(fs.exists(hadoop_path))

    def rename(self, source: str, target: str) -> bool:
        fs, source_path = self._fs(source)
        return bool(fs.rename(source_path, self._fs(target)[1]))

    def exchange(self, a: str, b: str) -> bool:
        return False

    def remove(self, path: str) -> None:
        fs, hadoop_path = self._fs(path)
        fs.delete(hadoop_path, True)


def check_folder_target(spark, target: str) -> None:
    """Refuse a folder target (:func:`write_directory`) that is a file: the folder would
    replace it. Called before any work, so that nothing runs for a write that cannot happen."""
    fs, hadoop_path, _ = _hadoop_fs(spark, target.rstrip("/"))
    if fs.exists(hadoop_path) and fs.getFileStatus(hadoop_path).isFile():
        raise PortraitError(
            f"{target} is a file; on a URI the output is a Parquet folder, which would replace it: "
            "give a folder path (nothing was written)"
        )


def write_directory(
    frame, target: str, mode_format: str = "parquet", check: Callable[[str], None] | None = None
) -> None:
    """Write a Spark DataFrame as a Parquet folder at ``target``, whole or not at all: Spark
    writes to a hidden temporary folder beside it (``.NAME.<random>.tmp``), which is then
    renamed over the target by :func:`portrait.files.replace_directory` (a previous target is
    moved aside first and removed after). A job or a rename that fails leaves the old target as
    it was and removes the temporary folder; so does ``check`` (given the temporary folder's
    path) raising. A target that is a file is refused (:func:`check_folder_target`)."""
    spark = frame.sparkSession
    target = target.rstrip("/")
    check_folder_target(spark, target)
    parent, _, leaf = target.rpartition("/")
    parent = parent or "."
    tmp = f"{parent}/.{leaf}.{uuid.uuid4().hex[:8]}.tmp"
    folders = _HadoopFolders(spark)
    try:
        frame.write.mode("error").format(mode_format).save(tmp)
        if check is not None:
            check(tmp)
        replace_directory(tmp, target, folders)
    except BaseException:
        folders.remove(tmp)
        raise


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkInput:
    """A data set for Spark: the contract sources (column mapping, formats, privacy) and, per
    table, where Spark reads it: ``("parquet" | "csv", paths)``, ``("table", (name,))`` or
    ``("frame", ())`` (the source's pandas frame); ``forget_folder``: where the data set's
    tombstones would be (a local folder or a URI under the root; None for frames in memory)."""

    dataset: Dataset
    locations: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # Where the data set's tombstones would be (portrait.forget): a local folder, a URI, or None.
    forget_folder: str | None = None


def is_uri(location: str) -> bool:
    """A location read through Hadoop's file systems: ``hdfs://``, ``s3a://``, ``abfss://``,
    ``file://`` (how the tests exercise this path on a local folder)..."""
    return "://" in location


def parse_table_options(values: list[str] | None) -> dict[str, str]:
    """``--table purchases=sales.order_lines`` options as ``{table: catalog name}``."""
    tables: dict[str, str] = {}
    for value in values or []:
        table, sep, name = value.partition("=")
        table, name = table.strip(), name.strip()
        if not sep or not table or not name:
            raise PortraitError(f"--table {value!r}: expected TABLE=CATALOG_TABLE, e.g. purchases=sales.order_lines")
        if table not in contract.TABLES_BY_NAME:
            raise PortraitError(
                f"--table {value!r}: {table!r} is not a contract table; known: {sorted(contract.TABLES_BY_NAME)}"
            )
        tables[table] = name
    return tables


def open_spark_input(spark, location: str | Path | Dataset, tables: dict[str, str] | None = None) -> SparkInput:
    """Where each table is: a local folder (found and configured as :func:`open_dataset`
    does), a path Spark reads, or an in-memory :class:`Dataset`; ``tables`` names catalog
    tables that replace or add to those."""
    tables = dict(tables or {})
    if isinstance(location, Dataset):
        dataset = location
        locations = {}
        for name, source in dataset.sources.items():
            if source.frame is not None:
                locations[name] = ("frame", ())
            elif source.duckdb_file is not None:
                raise PortraitError(
                    f"Spark cannot read the DuckDB file {source.duckdb_file}: export its tables to Parquet "
                    "(COPY table TO 'NAME.parquet') or use --engine duckdb"
                )
            else:
                if source.is_csv:
                    locations[name] = ("csv", tuple(str(f.scanned_path) for f in source.resolved_csv_files()))
                else:
                    locations[name] = ("parquet", tuple(str(f) for f in source.files))
    elif is_uri(str(location)):
        dataset, locations = _remote(spark, str(location), tables)
    else:
        dataset, locations = _local(Path(location), tables)
    sources = dict(dataset.sources)
    for table, name in tables.items():
        previous = sources.get(table)
        sources[table] = TableSource(
            table=table,
            columns=previous.columns if previous else {},
            timestamp_format=previous.timestamp_format if previous else None,
            decimal=previous.decimal if previous else ".",
            guard=_guard(table, dataset.privacy),
        )
        locations[table] = ("table", (name,))
    if "purchases" not in sources:
        raise ContractError(
            f"required table 'purchases' not found in {location}: expected purchases.parquet, purchases.csv, "
            "a folder purchases/ or --table purchases=CATALOG_TABLE",
            table="purchases",
        )
    if not isinstance(location, Dataset) and is_uri(str(location)):
        forget_folder = f"{str(location).rstrip('/')}/{FOLDER}"
    else:
        local = folder_of(dataset)
        forget_folder = str(local) if local is not None else None
    dataset = Dataset(dataset.name, sources, dataset.root, dataset.timezone, dataset.privacy)
    return SparkInput(dataset, locations, forget_folder)


def _local(folder: Path, tables: dict[str, str]) -> tuple[Dataset, dict]:
    if not folder.is_dir():
        raise ContractError(f"data set {folder} does not exist or is not a folder (Spark reads folders and paths)")
    config, timezone, privacy = _read_config(folder)
    sources, locations = {}, {}
    for table in contract.TABLES:
        if table.name in tables:
            continue
        table_config = config.get(table.name, {})
        files = _find_files(folder, table.name, table_config.get("file"))
        if not files:
            continue
        is_csv = not files[0].name.endswith(".parquet")
        encodings = tuple(table_config.get("encoding", ()))
        csv_files = tuple(_csv_file(f, encodings, table.name) for f in files) if is_csv else ()
        sources[table.name] = TableSource(
            table=table.name,
            files=files,
            columns=dict(table_config.get("columns", {})),
            timestamp_format=table_config.get("timestamp_format"),
            delimiter=table_config.get("delimiter"),
            encodings=encodings,
            csv_files=csv_files,
            guard=_guard(table.name, privacy),
            root=folder,
        )
        read = [str(f.scanned_path) for f in csv_files] if is_csv else [str(f) for f in files]
        locations[table.name] = ("csv" if is_csv else "parquet", tuple(read))
    return Dataset(folder.resolve().name, sources, folder, timezone, privacy), locations


def _remote(spark, root: str, tables: dict[str, str]) -> tuple[Dataset, dict]:
    root = root.rstrip("/")
    sources, locations = {}, {}
    privacy = PrivacySettings()
    for table in contract.TABLES:
        if table.name in tables:
            continue
        for suffix, kind in ((".parquet", "parquet"), (".csv", "csv"), (".csv.gz", "csv"), ("", None)):
            path = f"{root}/{table.name}{suffix}"
            if path_exists(spark, path):
                if kind is None:  # a folder of parts: Parquet unless it holds CSV
                    fs, hadoop_path, _ = _hadoop_fs(spark, path)
                    names = [str(s.getPath().getName()) for s in fs.listStatus(hadoop_path)]
                    kind = "csv" if any(n.endswith((".csv", ".csv.gz")) for n in names) else "parquet"
                sources[table.name] = TableSource(table=table.name, guard=_guard(table.name, privacy))
                locations[table.name] = (kind, (path,))
                break
    return Dataset(root.rpartition("/")[2], sources, None, "UTC", privacy), locations


def _read(engine: SparkEngine, spark_input: SparkInput, table: str):
    """The source's rows as a DataFrame (CSV as text, malformed lines left out and counted)."""
    spark = engine.spark
    source = spark_input.dataset.sources[table]
    kind, paths = spark_input.locations[table]
    if kind == "frame":
        return spark.createDataFrame(source.frame)
    if kind == "table":
        return spark.table(paths[0])
    # the files' key=value folders read as columns where DuckDB reads them (a Spark export's
    # partitionBy columns live only there): Spark reads them below a base folder alone
    base = {"basePath": _partitions_base(source)} if source.files and source.reads_folder_keys() else {}
    if kind == "parquet":
        from portrait.views import refuse_mixed_zones

        for column in source.parquet_timestamp_columns():  # local parts: refused as on DuckDB
            refuse_mixed_zones(source, table, column, column)
            if nanos := source.parquet_nanosecond_files(column):
                raise PortraitError(f"{table}.{column}: {nanosecond_message(nanos)}")
        # Parts are stacked by column name, as DuckDB's union_by_name (merging costs a job: only
        # when there are several files).
        return spark.read.options(**base).option("mergeSchema", str(len(paths) > 1).lower()).parquet(*paths)
    reader = spark.read.options(**base).option("header", "true").option("inferSchema", "false")
    if source.delimiter:
        reader = reader.option("sep", source.delimiter)
    encodings = {f.duckdb_encoding for f in source.csv_files} or {"utf-8"}
    if len(encodings) > 1:
        raise PortraitError(
            f"{table}: CSV files in several encodings are not read by the Spark engine; use --engine duckdb"
        )
    encoding = encodings.pop()
    # Spark's quotes are escaped by a backslash unless told otherwise: a doubled quote (RFC
    # 4180: "TV 55"" LED") kept its quotes, where DuckDB's sniffer reads TV 55" LED.
    escaped = any(
        backslash_escaped(Path(f.scanned_path), encoding) for f in source.csv_files if f.scanned_path.is_file()
    )
    reader = reader.option("encoding", encoding).option("escape", "\\" if escaped else '"')
    header = reader.csv(list(paths)).schema
    from pyspark.sql import types as T

    schema = T.StructType([*header.fields, T.StructField(_CSV_CORRUPT, T.StringType())])
    frame = engine.cached(
        reader.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", _CSV_CORRUPT)
        .csv(list(paths))
    )
    engine.malformed_rows[table] = frame.where(frame[_CSV_CORRUPT].isNotNull()).count()
    return frame.where(frame[_CSV_CORRUPT].isNull()).drop(_CSV_CORRUPT)


def _partitions_base(source: TableSource) -> str:
    """The folder below which Spark reads the key=value folders of ``source``'s files as DuckDB
    does: their common folder, less its trailing key=value folders (never above the data set's
    folder, whose own key=value folders are no partitions on either engine). Refused for copies
    converted to UTF-8 (each under a folder of its own), which Spark cannot read below one."""
    if any(f.read_path is not None for f in source.csv_files):
        raise PortraitError(
            f"{source.table}: the files' folders named key=value are read as columns, but the Spark engine cannot "
            "read them from files converted to UTF-8; export them as UTF-8, or use --engine duckdb"
        )
    base = source.parts_root()
    while "=" in base.name and base != source.root:
        base = base.parent
    return str(base)


def spark_dataset(spark, location, tables: dict[str, str] | None = None) -> tuple[SparkEngine, Dataset]:
    """A :class:`SparkEngine` with every view of the data set at ``location`` registered (see
    the module docstring), and the :class:`Dataset` describing its tables."""
    spark_input = location if isinstance(location, SparkInput) else open_spark_input(spark, location, tables)
    engine = SparkEngine(spark)
    try:
        register_views(engine, spark_input)
    except BaseException:  # a refused data set leaves nothing in the session (views, caches)
        engine.close()
        raise
    return engine, spark_input.dataset


def read_tombstones(engine: SparkEngine, folder: str | None) -> str | None:
    """The salt of the data set's tombstones in ``folder`` (a local folder or a URI), with their
    hashes cached as the view ``_forgotten_hashes``; None when there is no tombstone file.
    Raises the same :class:`PortraitError` as DuckDB when the salt is missing or damaged."""
    if folder is None:
        return None
    spark = engine.spark
    if is_uri(folder):
        tombstones, salt_file = f"{folder}/{TOMBSTONES}", f"{folder}/{SALT}"
        if not path_exists(spark, tombstones):
            return None
        salt = None
        if path_exists(spark, salt_file):
            salt = valid_salt("\n".join(row.value for row in spark.read.text(salt_file).collect()))
        if salt is None:
            raise missing_salt(tombstones, salt_file)
        hashes = spark.read.parquet(tombstones).selectExpr("CAST(hash AS STRING) AS hash")
    else:
        local = Path(folder)
        if not (local / TOMBSTONES).is_file():
            return None
        salt = _read_salt(local)
        if salt is None:
            raise missing_salt(local / TOMBSTONES, local / SALT)
        # Read once, here (the forget command rewrites the file whole: one version of it).
        values = read_parquet(local / TOMBSTONES, columns=["hash"])["hash"].astype("str")
        hashes = spark.createDataFrame(pd.DataFrame({"hash": values.to_numpy()}), "hash STRING")
    engine._keep("_forgotten_hashes", hashes.where("hash IS NOT NULL").distinct())  # eager: one version
    return salt


def _exclude_forgotten(engine: SparkEngine, table: str, raw_sql: str, exprs: dict[str, str], salt: str) -> None:
    """``raw_<table>`` as ``raw_sql`` (DuckDB dialect) without the rows of forgotten customers,
    and ``forgotten_<table>`` those rows; ``exprs``: DuckDB SQL of the parsed text of the key
    columns, as :func:`portrait.forget.exclude_forgotten` is given them. The key of a row is the
    SHA-256 hex of salt, kind and parts joined by ``chr(31)``, each part cast to text, exactly
    :func:`portrait.forget._key_sql`; a NULL part gives no key (DuckDB: no match either)."""
    from pyspark.sql import functions as F

    keys = _keys(table, exprs)
    if not keys:
        engine.create_view(f"raw_{table}", raw_sql)
        return
    engine.create_view(f"unfiltered_raw_{table}", raw_sql)
    parts = [part for _, key_parts in keys for part in key_parts]
    names = [f"__portrait_forget_part{i}" for i in range(len(parts))]
    selected = ", ".join(f"CAST({part} AS VARCHAR) AS {name}" for part, name in zip(parts, names, strict=True))
    frame = engine.query(f"SELECT *, {selected} FROM unfiltered_raw_{table}")
    hashes = engine.table("_forgotten_hashes")
    separator = F.lit(chr(31))
    helpers, hit, used = list(names), None, 0
    for i, (kind, key_parts) in enumerate(keys):
        columns = [c for name in names[used : used + len(key_parts)] for c in (separator, F.col(name))]
        used += len(key_parts)
        key, found = f"__portrait_forget_key{i}", f"__portrait_forget_hit{i}"
        frame = frame.withColumn(key, F.sha2(F.concat(F.lit(salt), separator, F.lit(kind), *columns), 256))
        frame = frame.join(F.broadcast(hashes.select(F.col("hash").alias(found))), F.col(key) == F.col(found), "left")
        flag = F.col(found).isNotNull()
        hit = flag if hit is None else hit | flag
        helpers += [key, found]
    flagged = frame.withColumn("__portrait_forgotten", hit).drop(*helpers)
    engine.register_dataframe(f"raw_{table}", flagged.where("NOT __portrait_forgotten").drop("__portrait_forgotten"))
    engine.register_dataframe(f"forgotten_{table}", flagged.where("__portrait_forgotten").drop("__portrait_forgotten"))
    engine.forgetting.add(table)


def _drop_personal_values(engine: SparkEngine, table: str, frame, keep: list[str], guard: PrivacySettings):
    """``frame`` less the columns whose values are personal data, by the checks DuckDB makes
    (:func:`portrait.privacy.personal_value_checks`, transpiled): one pass over the table."""
    columns = [(f.name, duckdb_type(f.dataType)) for f in frame.schema.fields]
    checks = personal_value_checks(value_checked(columns, keep, guard))
    if checks is None:
        return frame
    engine.register_dataframe(f"_guarded_{table}", frame)
    found = checks.personal(engine.rows(f"SELECT {checks.select} FROM _guarded_{table}")[0])
    report_personal_values(table, found, f"{table} on Spark")
    return frame.drop(*found) if found else frame


def register_views(engine: SparkEngine, spark_input: SparkInput) -> None:
    from portrait.views import _register_deduplicated, checked_views, header_names, parse_expr, select_columns

    dataset = spark_input.dataset
    salt = read_tombstones(engine, spark_input.forget_folder)  # forgotten customers: portrait.forget
    for table in contract.TABLES:
        if not dataset.has(table.name):
            continue
        source = dataset.sources[table.name]
        frame = _read(engine, spark_input, table.name)
        is_csv = spark_input.locations[table.name][0] == "csv"
        if source.guard is not None:  # personal data never reaches a view
            refuse_values_as_names(frame.columns, source, table)
            keep = [source.columns.get(c, c) for c in table.column_names]
            withheld = withheld_columns(table.name, frame.columns, keep, source.guard)
            born = birth_year_sources(table.name, frame.columns, withheld, source.guard)
            if born:  # the year of a date of birth, as on DuckDB (TableSource.scan_sql)
                typed = [(quote_ident(c), duckdb_type(frame.schema[c].dataType)) for c in born]
                engine.register_dataframe(f"_born_{table.name}", frame)
                frame = engine.query(
                    f"SELECT *, {birth_years_sql(typed, dataset.timezone, as_text=is_csv)} AS {BIRTH_YEAR} "
                    f"FROM _born_{table.name}"
                )
            frame = frame.drop(*withheld) if withheld else frame
            frame = _drop_personal_values(engine, table.name, frame, keep, source.guard)
        engine.register_dataframe(f"_source_{table.name}", frame)
        available = {f.name: duckdb_type(f.dataType) for f in frame.schema.fields}
        selected, types, extras = select_columns(table, source, available)
        raw = f"SELECT {', '.join(selected)} FROM _source_{table.name}"
        if salt is not None:  # rows of forgotten customers never reach a view past this one
            keys = {c.name: parse_expr(c, types[c.name], None, is_csv) for c in table.columns if c.name in KEY_COLUMNS}
            _exclude_forgotten(engine, table.name, raw, keys, salt)
        else:
            engine.create_view(f"raw_{table.name}", raw)
        header = header_names(source, table, types)
        for name, sql in checked_views(
            table, types, extras, source.timestamp_format, is_csv, dataset.timezone, [], source.decimal, header
        ):
            engine.create_view(name, sql)
        _register_deduplicated(engine, table, by_key=False)
    _register_final_views(engine, dataset)


def _register_final_views(engine: SparkEngine, dataset: Dataset) -> None:
    from portrait.views import REMAP, merged_view

    has_map = dataset.has("identities") and register_identity_map(engine)
    if has_map:
        engine.create_view(REMAP, "SELECT customer_id, person_id FROM identity_remap")
    else:
        engine.create_view(
            REMAP,
            "SELECT CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS VARCHAR) AS person_id WHERE FALSE",
        )
    for table in contract.TABLES:
        if not dataset.has(table.name) or table.name == "identities":
            continue
        if not has_map:
            engine.create_view(table.name, f"SELECT * FROM clean_{table.name}")
            continue
        columns = [name for name, _ in engine.columns(f"SELECT * FROM clean_{table.name}")]
        engine.create_view(table.name, merged_view(table.name, columns))


def register_identity_map(engine: SparkEngine, max_rounds: int = MAX_IDENTITY_ROUNDS) -> bool:
    """``identity_map`` and ``identity_remap`` from ``clean_identities``, as
    :func:`portrait.identity.register_identity_map` builds them on DuckDB: every connected
    component of customer ids joined by shared identifiers is one person, whose id is the
    smallest customer id (as text) in it that does not look like an e-mail address or a phone
    number, else the smallest.

    How: iterative minimum-label propagation in Spark SQL. Every customer id starts labelled
    with itself; each round, every shared identifier takes the smallest label of its ids and
    every id the smallest label of its identifiers, until a round changes nothing. The smallest
    label in a component spreads one hop per round, so the rounds are the graph's diameter,
    small for identity graphs (a few links per person). Why this and not GraphFrames: it needs
    nothing beyond Spark SQL (GraphFrames is a separate Spark package to install on the
    cluster), every round is a join and a group-by that Spark distributes, the graph is never
    collected to the driver (DuckDB's path hands it to scipy in one process), and the result
    is the same smallest-id label by construction. More than ``max_rounds`` rounds (a chain of
    thousands of ids through shared identifiers: a data problem, such as a placeholder phone
    number shared by everyone) stops with an error rather than running on.
    """
    # a label is the id after a 1 when it looks personal, else a 0: the smallest label is the
    # smallest id not personal when the component has one (portrait.identity.MERGING_LINKS_JUDGED)
    engine.materialize("_identity_edges", MERGING_LINKS_JUDGED)
    engine.materialize(
        "_identity_labels",
        "SELECT DISTINCT customer_id, CONCAT(CASE WHEN personal THEN '1' ELSE '0' END, customer_id) AS label "
        "FROM _identity_edges",
    )
    for _ in range(max_rounds):
        engine.materialize(
            "_identity_next",
            eager=True,
            sql="""WITH key_labels AS (
                   SELECT e.id_type, e.id_value, MIN(l.label) AS label
                   FROM _identity_edges e JOIN _identity_labels l USING (customer_id)
                   GROUP BY e.id_type, e.id_value)
               SELECT e.customer_id, MIN(k.label) AS label
               FROM _identity_edges e JOIN key_labels k USING (id_type, id_value)
               GROUP BY e.customer_id""",
        )
        changed = engine.rows(
            "SELECT COUNT(*) FROM _identity_next n JOIN _identity_labels l USING (customer_id) WHERE n.label <> l.label"
        )[0][0]
        # the next labels are computed (eager): nothing left reads these, so each round frees
        # its previous labels rather than holding up to max_rounds copies until the engine closes
        engine.free("_identity_labels")
        engine.rename("_identity_next", "_identity_labels")
        if changed == 0:
            break
    else:
        raise PortraitError(
            f"identity merging did not settle in {max_rounds} rounds of label propagation: some persons are "
            "chains of very many ids through shared identifiers (a placeholder value shared by many customers?); "
            "check the identities table (portrait identity) or merge with --engine duckdb"
        )
    engine.materialize(
        "identity_map",
        """SELECT c.customer_id, COALESCE(SUBSTRING(m.label, 2), c.customer_id) AS person_id
           FROM (SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id FROM clean_identities) c
           LEFT JOIN _identity_labels m USING (customer_id)""",
    )
    engine.materialize(
        "identity_remap", "SELECT customer_id, person_id FROM identity_map WHERE customer_id <> person_id"
    )
    engine.drop("_identity_edges")
    engine.drop("_identity_labels")
    return bool(engine.rows("SELECT COUNT(*) FROM identity_map")[0][0])


def quarantine_counts(engine: SparkEngine, dataset: Dataset) -> dict[str, dict[str, int]]:
    """Rows set aside per table and reason, by the same rules as :mod:`portrait.validate`
    (the reasons of ``checked_t``, exact copies, conflicting customer rows, malformed CSV lines)."""
    result: dict[str, dict[str, int]] = {}
    for table in contract.TABLES:
        if not dataset.has(table.name):
            continue
        counts = {
            reason: int(n)
            for reason, n in engine.rows(
                f"SELECT _reject_reason, COUNT(*) FROM checked_{table.name} "
                "WHERE _reject_reason IS NOT NULL GROUP BY _reject_reason"
            )
        }
        if table.check_duplicates:
            for reason, n in engine.rows(
                f"SELECT _reject_reason, SUM(_rows) FROM duplicates_{table.name} GROUP BY _reject_reason"
            ):
                counts[reason] = counts.get(reason, 0) + int(n)
        if engine.malformed_rows.get(table.name):
            counts["malformed_row"] = engine.malformed_rows[table.name]
        result[table.name] = counts
    return result


def forgotten_counts(engine: SparkEngine, dataset: Dataset) -> dict[str, int]:
    """Rows of forgotten customers left out per table (:mod:`portrait.forget`), as
    :mod:`portrait.validate` counts them (``forgotten``): 0 for every table without tombstones."""
    return {
        table.name: int(engine.rows(f"SELECT COUNT(*) FROM forgotten_{table.name}")[0][0])
        if table.name in engine.forgetting
        else 0
        for table in contract.TABLES
        if dataset.has(table.name)
    }


__all__ = [
    "SparkEngine",
    "forgotten_counts",
    "spark_session",
    "spark_dataset",
    "open_spark_input",
    "parse_table_options",
    "quarantine_counts",
    "require_spark",
    "to_spark_sql",
    "write_directory",
]
