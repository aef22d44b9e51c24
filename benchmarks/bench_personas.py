"""Persona fitting time and memory on a feature table (run by hand; prints figures).

    .venv/bin/python benchmarks/bench_personas.py bench-data/features_1000000_duckdb-all.parquet \
        [--truth bench-data/synthetic_1000000/truth/personas.csv]
    .venv/bin/python benchmarks/bench_personas.py --data bench-data/synthetic_1000000 --cutoff 2025-01-01

A feature table comes from bench_features.py (1M synthetic customers, all families, as of
2024-07-01), or is built here from ``--data`` as of ``--cutoff`` (and cached beside the data;
the build is not part of the timed fit). With ``--truth``, or with ``--data`` (whose
``truth/personas.csv`` holds the planted personas), it also prints the adjusted Rand index.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import adjusted_rand_score

from features.build import build_features
from portrait.dataset import open_dataset
from portrait.files import atomic_write
from training.personas import DEFAULT_FAMILIES, PersonaConfig, fit_personas


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("features", type=Path, nargs="?")
    parser.add_argument("--data", type=Path, help="a synthetic data folder to build features from")
    parser.add_argument("--cutoff", default="2025-01-01")
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--k-min", type=int, default=4)
    parser.add_argument("--k-max", type=int, default=9)
    args = parser.parse_args()
    if args.data:
        args.features = args.data.parent / f"features_{args.data.name}_{args.cutoff}.parquet"
        args.truth = args.truth or args.data / "truth" / "personas.csv"
        if not args.features.exists():
            built = build_features(open_dataset(args.data), args.cutoff, families=DEFAULT_FAMILIES)
            atomic_write(built, args.features)  # an interrupted build must not leave a cache to trust
    if args.features is None:
        parser.error("give a feature table or --data")
    features = pd.read_parquet(args.features)
    config = PersonaConfig("personas", "bench", k_min=args.k_min, k_max=args.k_max)
    started = time.perf_counter()
    fit = fit_personas(config, features)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"personas on {len(features):,} customers x {len(fit.model.feature_names_)} features: k={fit.model.k_}, "
        f"{seconds:.1f} s (k search over {args.k_min}-{args.k_max} on a {fit.model.sample_size:,} sample, "
        f"then the full fit, portrait and names), peak RSS {peak:.2f} GB"
    )
    print(fit.model.k_scores_.round(4).to_string())
    print(fit.table[["persona_id", "persona_name", "customers", "share_of_revenue"]].to_string(index=False))
    if args.truth:
        truth = pd.read_csv(args.truth)
        joined = features[["customer_id"]].assign(label=fit.labels).merge(truth, on="customer_id")
        print(
            f"adjusted Rand index against the planted personas: {adjusted_rand_score(joined.persona, joined.label):.3f}"
        )
        print(pd.crosstab(joined["persona"], joined["label"].map(fit.names)).T.to_string())


if __name__ == "__main__":
    main()
