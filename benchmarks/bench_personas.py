"""Persona fitting time and memory on a feature table (run by hand; prints figures).

    .venv/bin/python benchmarks/bench_personas.py bench-data/features_1000000_duckdb-all.parquet

The feature table comes from bench_features.py (1M synthetic customers, all families).
"""

from __future__ import annotations

import resource
import sys
import time

import pandas as pd

from training.personas import DEFAULT_FAMILIES, PersonaConfig, fit_personas


def main() -> None:
    features = pd.read_parquet(sys.argv[1])
    config = PersonaConfig("personas", "bench", None, DEFAULT_FAMILIES, None, 4, 9, "kmeans", None, 42)
    started = time.perf_counter()
    fit = fit_personas(config, features)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"personas on {len(features):,} customers x {len(fit.model.feature_names_)} features: k={fit.model.k_}, "
        f"{seconds:.1f} s (k search over 4-9 on a 20k sample, then the full fit), peak RSS {peak:.2f} GB"
    )
    print(fit.table[["persona_id", "persona_name", "customers", "share_of_revenue"]].to_string(index=False))


if __name__ == "__main__":
    main()
