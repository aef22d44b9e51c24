from __future__ import annotations

import os
from pathlib import Path

# `make test` runs three test processes on the machine's two cores (pytest-xdist): each one's
# OpenMP and BLAS threads (scikit-learn's k-means, LightGBM, numpy) on both cores made them
# wait for each other. One thread per process: the planted-personas tests took 55-69 s
# against 95-108 s beside two busy processes (2026-12-07). In each worker (xdist names it
# before this file is read): the environment for the libraries loaded later and for the
# commands the tests start, threadpoolctl for those loaded already (numpy's BLAS, by a plugin).
# A run on one process keeps the libraries' defaults.
if os.environ.get("PYTEST_XDIST_WORKER"):
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    threadpool_limits(limits=1)

import pandas as pd
import pytest

from portrait.synthetic import write_sample_data


def write_tables(folder: Path, fmt: str = "csv", **tables: pd.DataFrame) -> Path:
    """Write each frame as FOLDER/NAME.csv (or .parquet) and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


SPARK_MODULE_PREFIX = "test_spark_"


def pytest_collection_modifyitems(config, items):
    """The Spark modules first, then the others by their number of tests, most first.
    `make test` runs the suite on three processes (pytest-xdist, ``--dist loadfile``, each
    module whole on one process, in this order: ``--no-loadscope-reorder``); the Spark modules
    are the longest, and run together on one process (:func:`pytest_xdist_make_scheduler`)."""
    for item in items:
        if item.get_closest_marker("spark") is not None and not item.path.name.startswith(SPARK_MODULE_PREFIX):
            raise pytest.UsageError(
                f"{item.path.name} holds Spark tests: name it {SPARK_MODULE_PREFIX}*.py so that it runs with the "
                "other Spark modules, on one JVM"
            )
    sizes: dict[Path, int] = {}
    for item in items:
        sizes[item.path] = sizes.get(item.path, 0) + 1
    items.sort(key=lambda item: (not item.path.name.startswith(SPARK_MODULE_PREFIX), -sizes[item.path]))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with every Spark module as one unit of work: one process runs them
    all, on one JVM (the session's `spark` fixture), where two processes each started one and
    warmed it up: 253 s for both modules on one JVM against 50 + 243 s on two, measured alone."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SparkModulesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "spark modules" if Path(scope).name.startswith(SPARK_MODULE_PREFIX) else scope

    return SparkModulesTogether(config, log)


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory):
    """The data sets' check stamps and converted copies in the session's folder, not the home's."""
    import os

    os.environ["PORTRAIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("portrait-cache"))


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> Path:
    """A 3,000-customer synthetic data set shared by the whole session (seed 11)."""
    folder = tmp_path_factory.mktemp("synthetic") / "data"
    write_sample_data(folder, customers=3000, seed=11)
    return folder


@pytest.fixture(scope="session")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def tracking(tmp_path_factory, monkeypatch_session):
    """One MLflow SQLite store for the whole session (creating one takes about 10 s), and a
    working directory for artifacts."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch_session.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch_session.chdir(folder)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@pytest.fixture(autouse=True)
def _mlflow_store_restored():
    """A command run in-process under a test's own store (``setup_tracking`` with the test's
    ``MLFLOW_TRACKING_URI``) leaves MLflow's process-wide URIs, and ``MLFLOW_REGISTRY_URI``,
    pointing at that store after the test's environment is restored: a later module's fixture
    then registered its models there while its commands, run as subprocesses, read the session's
    store ("no registered model"), but only when the modules ran in one process in that order."""
    import os
    import sys

    def state():
        registry_env = os.environ.get("MLFLOW_REGISTRY_URI")
        if "mlflow" not in sys.modules:
            return None, None, registry_env
        import mlflow.tracking._model_registry.utils as registry
        import mlflow.tracking._tracking_service.utils as tracking

        return tracking._tracking_uri, registry._registry_uri, registry_env

    before = state()
    yield
    if "mlflow" not in sys.modules or state() == before:
        return
    import mlflow.tracking._model_registry.utils as registry
    import mlflow.tracking._tracking_service.utils as tracking

    tracking._tracking_uri, registry._registry_uri, registry_env = before
    if registry_env is None:
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
    else:
        os.environ["MLFLOW_REGISTRY_URI"] = registry_env


@pytest.fixture(scope="session", autouse=True)
def audit_log(tmp_path_factory) -> Path:
    """Exports and list pulls append to the audit log (portrait/audit.py): in tests, to one
    file in a temporary folder, never to outputs/audit.log of the working directory."""
    path = tmp_path_factory.mktemp("audit") / "audit.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PORTRAIT_AUDIT_LOG", str(path))
        yield path


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores) for every Spark test of the session: starting the JVM
    costs tens of seconds. Skipped without pyspark or a Java runtime."""
    pytest.importorskip("pyspark")
    from portrait.spark_engine import _java_found, spark_session

    if not _java_found():
        pytest.skip("no Java runtime: the Spark tests need Java 17 or later")
    # The JVM of the tests compiles with its quick compiler only and collects garbage on one
    # thread: its queries are many and tiny, so the optimising compiler's work (on the cores the
    # other test processes use) never paid back. Both Spark files alone, 2026-12-07, three runs
    # against two: the machine's CPU 180-213 s against 257-286 s, wall 143-169 s against
    # 149-164 s (the VM's noise; the CPU is what the other processes feel). The java launcher reads
    # JDK_JAVA_OPTIONS; set only while this JVM starts (users' sessions keep the defaults).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JDK_JAVA_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        session = spark_session("local[2]")
    # On a few hundred rows, compiling each query's Java (whole-stage code generation) and
    # re-planning it (adaptive execution) cost more than running it: without them the Spark
    # files took 37-46 s instead of 77 s (test_spark_forget) and 189 s instead of 215 s
    # (test_spark_parity) here. Both are optimisations that do not change a result; users'
    # sessions keep them (portrait.spark_engine.LOCAL_CONFIG). Two shuffle partitions instead
    # of four (one per core, so results still come from more than one partition): the parity
    # file took 151 and 166 s against 174 s (139 s with one partition), 2026-12-04.
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    session.conf.set("spark.sql.adaptive.enabled", "false")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.conf.unset("spark.sql.codegen.wholeStage")
    session.conf.unset("spark.sql.adaptive.enabled")
    session.stop()
