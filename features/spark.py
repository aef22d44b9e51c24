"""``portrait features build --engine spark``: the feature plan on Spark (:mod:`portrait.spark_engine`).

The same :func:`features.build.build_features` runs, with the Spark engine in place of DuckDB.
A local ``--out`` file gets the table collected to the driver (one Parquet file, as DuckDB
writes it); an output on a path Spark writes (``hdfs://``, ``s3a://``, ``abfss://``) is written
by the executors as a Parquet folder, to a temporary folder first and then renamed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from features.build import build_features, nobody_before
from features.config import FeatureConfig
from portrait.errors import PortraitError
from portrait.files import atomic_write, check_suffix
from portrait.spark_engine import (
    check_folder_target,
    is_uri,
    spark_dataset,
    spark_errors,
    spark_session,
    write_directory,
)


def build_features_spark(
    location: str | Path,
    cutoff: dt.date,
    config: FeatureConfig | None = None,
    *,
    tables: dict[str, str] | None = None,
    master: str | None = None,
    **options,
) -> pd.DataFrame:
    """:func:`build_features` on Spark, collected to the driver (a pandas frame)."""
    with spark_errors():
        engine, dataset = spark_dataset(spark_session(master), location, tables)
        try:
            return build_features(dataset, cutoff, config, con=engine, **options)
        finally:
            engine.close()


def write_features_spark(
    location: str | Path,
    cutoff: dt.date,
    out: str,
    config: FeatureConfig | None = None,
    *,
    tables: dict[str, str] | None = None,
    master: str | None = None,
    progress=None,
) -> tuple[int, int]:
    """Build and write the feature table (see the module docstring); (rows, features). The
    target is checked before any work (a local file must end in ``.parquet`` and not be a
    folder; a URI must not name a file, which the Parquet folder would replace), and an empty
    table (a cutoff before the data) is an error with nothing written, as on DuckDB."""
    if not is_uri(str(out)):
        check_suffix(out, (".parquet",))
        frame = build_features_spark(location, cutoff, config, tables=tables, master=master, progress=progress)
        if not len(frame):
            raise PortraitError(nobody_before(cutoff, "no features to build") + "; nothing written")
        atomic_write(frame, Path(out), csv=False)
        return len(frame), frame.shape[1] - 1
    with spark_errors():
        spark = spark_session(master)
        check_folder_target(spark, str(out))
        engine, dataset = spark_dataset(spark, location, tables)
        try:
            table = build_features(dataset, cutoff, config, con=engine, on_engine=True, progress=progress)
            rows: list[int] = []

            def counted(written: str) -> None:  # the rows written, read once; none is no answer
                rows.append(spark.read.parquet(written).count())
                if not rows[0]:
                    raise PortraitError(nobody_before(cutoff, "no features to build") + "; nothing written")

            write_directory(table, str(out), check=counted)
            return rows[0], len(table.columns) - 1
        finally:
            engine.close()
