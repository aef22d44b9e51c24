"""What an API worker holds for lists, and how long a list takes (run by hand; prints figures).

    .venv/bin/python benchmarks/bench_lists.py --scores outputs/scores [--model repurchase_90d]

loads the latest scores of a scores folder as a worker does (``serving.state.ScoresSnapshot``),
then builds a few lists (``serving.lists.build_list``: top 10, a filter on two features, an RFM
filter, a percentile page) and reads the rows of pages of 100, 1,000 and 10,000 customers (what
computed reasons read), printing each one's time and the process's resident memory. No model is
loaded: the reasons themselves (TreeSHAP) are not timed here.

At 1M customers without a trained model, ``--fake-scores FEATURES --out DIR`` first writes a
scores folder of uniformly random scores beside a copy of a feature table (e.g. the one
``benchmarks/bench_features.py`` writes): enough for memory and reading times, nothing else.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_gb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def fake_scores(features: Path, out: Path, as_of: str = "2025-01-01") -> None:
    from portrait.files import atomic_target, atomic_write, atomic_write_text

    ids = pd.read_parquet(features, columns=["customer_id"])["customer_id"]
    score = np.random.default_rng(1).random(len(ids))
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": pd.Timestamp(as_of),
            "fake_score": score,
            "fake_percentile": pd.Series(score).rank(pct=True).mul(100).to_numpy(),
        }
    )
    atomic_write(scores, out / f"scores_{as_of}.parquet")
    with atomic_target(out / f"features_{as_of}.parquet") as tmp:
        shutil.copyfile(features, tmp)
    atomic_write_text(f"scores_{as_of}.parquet", out / "LATEST")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scores", type=Path, help="a scores folder (with LATEST)")
    parser.add_argument("--model", help="the scored model to rank by (default: the first)")
    parser.add_argument("--fake-scores", type=Path, help="a feature table: write a scores folder of random scores")
    parser.add_argument("--out", type=Path, help="where --fake-scores writes")
    args = parser.parse_args()
    if args.fake_scores:
        fake_scores(args.fake_scores, args.out)
        args.scores = args.out
    from serving.lists import build_list
    from serving.state import ScoresSnapshot

    print(f"start: rss {rss_gb():.2f} GB")
    started = time.perf_counter()
    name = (args.scores / "LATEST").read_text().strip()
    snapshot = ScoresSnapshot(args.scores, name)
    print(f"scores loaded: {time.perf_counter() - started:.2f} s, {len(snapshot.scores):,} rows, rss {rss_gb():.2f} GB")
    model = args.model or snapshot.scored_models[0]
    features = set(snapshot.features.columns)
    asks = [{"top": 10}]
    if {"spend_365d", "orders_90d"} <= features:
        asks += [{"top": 10, "where": "spend_365d > 100 and orders_90d > 0"}] * 2  # the second reads kept columns
    asks += [{"top": 10, "where": "rfm_group = 'Champions'"}, {"min_percentile": 90, "limit": 1000}]
    for ask in asks:
        started = time.perf_counter()
        rows = build_list(snapshot.scores, snapshot.features, model, **ask)
        took = time.perf_counter() - started
        print(f"list {ask}: {took:.2f} s, {len(rows):,} of {rows.attrs['total']:,}, rss {rss_gb():.2f} GB")
    best = snapshot.scores.sort_values(f"{model}_score", ascending=False)["customer_id"]
    for size in (100, 1000, 10000):
        started = time.perf_counter()
        page = snapshot.features.rows(best.iloc[:size])
        took = time.perf_counter() - started
        print(f"rows of a page of {size:,} (for reasons): {took:.2f} s, {page.shape[1]} columns, rss {rss_gb():.2f} GB")
    print(f"peak rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
