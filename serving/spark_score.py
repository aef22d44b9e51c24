"""``portrait score --engine spark``: features built on Spark and scored there.

The registered models are loaded once on the driver (:func:`serving.registry.load_model`, as
the DuckDB path loads them) and shipped to the executors with the scoring function; each
executor scores its batches of feature rows with ``mapInPandas`` and the same
:func:`serving.score.predict_scores` (probabilities for classifiers, predicted spend for the
spend model) and persona assignment. The feature table never reaches the driver: only the
scores (an id and a few numbers per customer) do, to rank them into percentiles and deciles
over the whole population, as the DuckDB path does; drift is measured on a sample of at most
:data:`DRIFT_SAMPLE` feature rows.

Outputs: the same files as :func:`serving.score.score` in a local ``--out`` folder (scores,
summary, ``LATEST``, the feature table), each written whole or not at all. Reasons are not
computed for the whole population on Spark: ``portrait list`` computes them for the customers
of a list.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import build_features, parse_cutoff, stale_feed_note
from features.catalogue import Vocabulary
from features.config import FeatureConfig
from portrait.errors import PortraitError
from portrait.files import atomic_write, atomic_write_text
from portrait.outputs import MODEL_LABELS, SCORING_TOKEN, point_latest_at
from portrait.spark_engine import quarantine_counts, require_spark, spark_dataset, spark_errors, spark_session
from serving.registry import LoadedModel, load_model
from serving.score import (
    ScoreRun,
    _feature_groups,
    check_model_features,
    check_score_targets,
    model_summary,
    percentile_and_decile,
    population_scores,
    predict_scores,
    publish_scores,
    require_customers,
)

DRIFT_SAMPLE = 200_000


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def _score_batches(models: list[LoadedModel]):
    """The ``mapInPandas`` function scoring one batch of feature rows with ``models``."""
    shipped = [(m.name, m.is_personas, m.features, m.meta["label"], m.estimator) for m in models]

    def run(batches):
        for batch in batches:
            out = pd.DataFrame({"customer_id": batch["customer_id"].astype("str")})
            for name, is_personas, features, label, estimator in shipped:
                X = batch[features]
                for column in X.columns:  # categoricals as the DuckDB path's frames hold them
                    if _is_text(X[column]):
                        X = X.assign(**{column: X[column].astype("category")})
                if is_personas:
                    assigned = estimator.assign(X)
                    out["persona_id"] = assigned["persona_id"].to_numpy().astype("int64")
                    out["persona_name"] = assigned["persona_name"].to_numpy()
                else:
                    model = LoadedModel(name, "", "", {"label": label, "features": features}, estimator, {})
                    out[f"{name}_score"] = np.asarray(predict_scores(model, X), dtype="float64")
            yield out

    return run


def _schema(models: list[LoadedModel]):
    from pyspark.sql import types as T

    fields = [T.StructField("customer_id", T.StringType())]
    for model in models:
        if model.is_personas:
            fields += [T.StructField("persona_id", T.LongType()), T.StructField("persona_name", T.StringType())]
        else:
            fields.append(T.StructField(f"{model.name}_score", T.DoubleType()))
    return T.StructType(fields)


def score_on_spark(
    location: str | Path,
    as_of,
    model_names: list[str],
    out_dir: Path,
    alias: str = "champion",
    csv: bool = False,
    validate_first: bool = True,
    tables: dict[str, str] | None = None,
    master: str | None = None,
    progress=None,
    models: list[LoadedModel] | None = None,
) -> ScoreRun:
    """:func:`serving.score.score` on Spark (see the module docstring)."""
    require_spark()  # before the models load: a missing Java or pyspark is said at once
    started = time.perf_counter()
    say = progress or (lambda message: None)
    as_of: dt.date = parse_cutoff(as_of)
    check_score_targets(out_dir, as_of, csv)
    say("loading models")
    if models is None:
        models = [load_model(name, alias) for name in model_names]
    if not models:
        raise PortraitError("no model to score with: give --models")
    with spark_errors():
        say("starting Spark")
        engine, dataset = spark_dataset(spark_session(master), str(location), tables)
        try:
            quarantined = None
            if validate_first:
                say("validating the data set")
                quarantined = sum(sum(c.values()) for c in quarantine_counts(engine, dataset).values())
            scored, feature_tables = None, {}
            for group in _feature_groups(models).values():
                meta = group[0].meta
                say(f"building features for {', '.join(m.name for m in group)}")
                table = engine.cached(  # read several times: scored, sampled, collected
                    build_features(
                        dataset,
                        as_of,
                        FeatureConfig.from_dict(meta.get("feature_config") or {}),
                        vocabulary=Vocabulary.from_dict(meta["vocabulary"]) if meta.get("vocabulary") else None,
                        families=sorted({f for m in group for f in m.meta.get("families", [])}) or None,
                        con=engine,
                        on_engine=True,
                    )
                )
                for model in group:
                    check_model_features(
                        model, table.columns, {c: "text" if t == "string" else "number" for c, t in table.dtypes}
                    )
                    feature_tables[model.name] = table
                say(f"scoring {', '.join(m.name for m in group)}")
                part = table.mapInPandas(_score_batches(group), _schema(group))
                scored = part if scored is None else scored.join(part, "customer_id", "full_outer")
            frame = scored.toPandas().sort_values("customer_id", kind="stable").reset_index(drop=True)
            require_customers(len(frame), as_of)
            propensity = [m for m in models if not m.is_personas]
            profile_table = feature_tables[(propensity or models)[0].name]
            samples = {}
            for model in propensity:
                table = feature_tables[model.name]
                if id(table) not in samples:
                    total = table.count()
                    fraction = min(1.0, DRIFT_SAMPLE / max(total, 1))
                    sample = table if fraction >= 1.0 else table.sample(fraction=fraction, seed=0)
                    samples[id(table)] = sample.toPandas()
            profile_features = profile_table.toPandas().sort_values("customer_id", kind="stable")
        finally:
            engine.close()
    scores = pd.DataFrame({"customer_id": frame["customer_id"], "as_of": pd.Timestamp(as_of)})
    summary: dict = {
        "as_of": as_of.isoformat(),
        "dataset": dataset.name,
        "dataset_path": str(Path(dataset.root).resolve()) if dataset.root is not None else str(location),
        "dataset_fingerprint": dataset.fingerprint(),
        "customers": int(len(scores)),
        "alias": alias,
        "engine": "spark",
        "models": {},
        "quarantined_rows": quarantined,
    }
    if stale := stale_feed_note(profile_features, as_of):
        summary["note"] = stale
    for model in models:
        if model.is_personas:
            scores["persona_id"] = frame["persona_id"].to_numpy()
            scores["persona_name"] = frame["persona_name"].to_numpy()
            scores["personas_version"] = model.version
            summary["models"][model.name] = {
                "version": model.version,
                "sizes": scores["persona_name"].value_counts().to_dict(),
            }
            continue
        values, shifted = population_scores(model, frame[f"{model.name}_score"].to_numpy(dtype="float64"))
        percentile, decile = percentile_and_decile(values)
        scores[f"{model.name}_score"] = values
        scores[f"{model.name}_percentile"] = percentile
        scores[f"{model.name}_decile"] = decile
        scores[f"{model.name}_version"] = model.version
        summary["models"][model.name] = model_summary(
            model, values, shifted, samples[id(feature_tables[model.name])], as_of
        )
    for column in profile_features.columns:  # the DuckDB build's dtypes: categoricals for text
        if column != "customer_id" and _is_text(profile_features[column]):
            profile_features[column] = profile_features[column].astype("category")
    scores.attrs[MODEL_LABELS] = {m.name: m.meta["label"] for m in models if not m.is_personas}
    target = publish_scores(scores, profile_features, out_dir, as_of)
    if csv:
        atomic_write(scores, target.with_suffix(".csv"), csv=True)
        summary["csv"] = str(target.with_suffix(".csv"))
    summary["duration_seconds"] = round(time.perf_counter() - started, 2)
    summary[SCORING_TOKEN] = scores.attrs[SCORING_TOKEN]  # which scores file it describes (scores_summary)
    summary_file = target.with_name(target.stem + ".summary.json")
    atomic_write_text(json.dumps(summary, indent=2, default=str), summary_file)
    newer = point_latest_at(out_dir, target, as_of)
    return ScoreRun(scores, summary, target, summary_file, newer)
