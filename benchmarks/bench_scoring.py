"""Batch scoring speed on precomputed features, and reasons for a 10,000-customer list
(run by hand; prints figures).

    .venv/bin/python benchmarks/bench_scoring.py

It trains two fast models (repurchase and high value, 30 days) on the 100k synthetic set in a
throwaway MLflow store, builds the 1M synthetic set's features once with their vocabulary
(cached in bench-data/), then times only what `portrait score` does after features: loading
both models from the registry, predicting, percentiles and deciles, and the atomic Parquet write.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

DATA_100K = Path("bench-data/synthetic_100000")
DATA_1M = Path("bench-data/synthetic_1000000")
AS_OF = "2024-12-01"
CACHE = Path("bench-data/features_1000000_scoring.parquet")


def main() -> None:
    store = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    from features.build import build_features
    from features.catalogue import Vocabulary
    from portrait.dataset import open_dataset
    from portrait.files import atomic_write
    from portrait.tracking import setup_tracking
    from serving.registry import load_model
    from serving.score import percentile_and_decile, predict_scores, reasons_for
    from training.config import parse_experiment
    from training.registry import promote
    from training.train import train_experiment

    setup_tracking(store)
    names = []
    for kind in ("repurchase", "high_value"):
        name = f"bench_{kind}_30d"
        config = parse_experiment(
            {
                "name": name,
                "data": {"path": str(DATA_100K.resolve())},
                "cutoffs": {"rule": "monthly", "count": 2},
                "label": {"kind": kind, "horizon_days": 30},
                "model": {"n_estimators": 300, "learning_rate": 0.1, "early_stopping_rounds": 30},
            }
        )
        cwd = Path.cwd()
        os.chdir(store)
        try:
            train_experiment(config)
        finally:
            os.chdir(cwd)
        promote(name)
        names.append(name)
    models = [load_model(n) for n in names]
    if not CACHE.exists():
        vocabulary = Vocabulary.from_dict(models[0].meta["vocabulary"])
        # Whole or not at all: an interrupted build must not leave a half cache the next run reads.
        atomic_write(build_features(open_dataset(DATA_1M), AS_OF, vocabulary=vocabulary), CACHE)
    features = pd.read_parquet(CACHE)

    started = time.perf_counter()
    models = [load_model(n) for n in names]
    table = pd.DataFrame({"customer_id": features["customer_id"], "as_of": pd.Timestamp(AS_OF)})
    for model in models:
        values = predict_scores(model, features)
        percentile, decile = percentile_and_decile(values)
        table[f"{model.name}_score"], table[f"{model.name}_percentile"], table[f"{model.name}_decile"] = (
            values,
            percentile,
            decile,
        )
    atomic_write(table, store / "scores.parquet")
    scoring = time.perf_counter() - started

    top = features.loc[table[f"{names[0]}_score"].nlargest(10_000).index].reset_index(drop=True)
    started = time.perf_counter()
    reasons = reasons_for(models[0], top)
    reasons_seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"scoring {len(features):,} customers' precomputed features with 2 models (load, predict, percentiles, write): "
        f"{scoring:.1f} s"
    )
    print(
        f"reasons (TreeSHAP top 3) for a {len(top):,}-customer list, one model: {reasons_seconds:.1f} s "
        f"({len(top) / reasons_seconds:,.0f} rows/s); peak RSS {peak:.2f} GB"
    )
    print(reasons.head(3).to_string())
    mlflow.end_run()


if __name__ == "__main__":
    main()
