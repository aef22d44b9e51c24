"""Tags plus 20 saved segments on one data set, as a nightly job runs them (run by hand).

    .venv/bin/python benchmarks/bench_marketing.py --data bench-data/synthetic_1000000 --as-of 2025-01-01

With ``--steps`` it also prints when each stage ends and each feature SQL step's time. Times,
in one process: applying the shipped retail tag library (rule tags, levels, RFM, the
frequency group; no scores, so model tags are skipped) and refreshing 20 segments that mix
feature conditions, behaviour terms over several windows, categories and event types, tags,
includes and excludes. The segments are saved to a temporary folder. Prints each stage's wall
time, the total, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

from marketing.population import Population
from marketing.segments import Segment, SegmentEvaluator, SegmentStore, record_refresh
from marketing.tags import apply_tags, check_conditions, load_library, tag_columns
from portrait.dataset import open_dataset

SEGMENTS = [
    Segment("big_recent", where="spend_90d > 500 and days_since_last_purchase <= 30"),
    Segment("deal_seekers", where="promo_share_365d >= 0.6 and orders_365d >= 4"),
    Segment("weekenders", where="order_share_weekend >= 0.6"),
    Segment("app_users", where="channel_share_app >= 0.5"),
    Segment("electronics_fans", where="purchased(category = 'electronics', within_days = 90) >= 2"),
    Segment(
        "fashion_lapsed",
        where="purchased(category = 'fashion', within_days = 365) >= 2 and not purchased(category = 'fashion', within_days = 60)",
    ),
    Segment("grocery_weekly", where="purchased(category = 'grocery', within_days = 28) >= 4"),
    Segment("spent_30", where="spent(within_days = 30) > 100"),
    Segment("spent_45_toys", where="spent(category = 'toys', within_days = 45) > 50"),
    Segment(
        "cart_abandoners", where="events('add_to_cart', within_days = 14) >= 1 and not purchased(within_days = 14)"
    ),
    Segment("browsers", where="events('view', within_days = 14) >= 3 and not purchased(within_days = 30)"),
    Segment(
        "campaign_ignorers",
        where="events('campaign_received', within_days = 90) >= 3 and purchased(within_days = 90) = 0",
    ),
    Segment("service_heavy", where="events('service_contact', within_days = 180) >= 2"),
    Segment("loyal", tags=["loyal repurchaser"]),
    Segment("promo_not_loyal", tags=["promotion-sensitive"], not_tags=["loyal repurchaser"]),
    Segment("high_power_at_risk", tags=["spending power: high"], where="rfm_r <= 2"),
    Segment("champions", where="rfm_group = 'Champions'"),
    Segment("new_and_browsing", where="days_since_first_purchase <= 60 and events('view', within_days = 30) >= 2"),
    Segment("fans_or_loyal", include=["electronics_fans", "loyal"]),
    Segment("browsers_not_abandoners", include=["browsers"], exclude=["cart_abandoners"]),
]


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--as-of", default="2025-01-01")
    parser.add_argument("--steps", action="store_true", help="also print each stage and SQL step as it ends")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.steps:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("features.build").setLevel(logging.DEBUG)

    def stage(message: str) -> None:
        if args.steps:
            print(f"{time.perf_counter() - started:6.1f} s  {message}", flush=True)

    library = load_library()
    with tempfile.TemporaryDirectory() as folder:
        store = SegmentStore(Path(folder))
        for segment in SEGMENTS:
            store.save(segment)
        dataset = open_dataset(args.data)
        with Population(dataset, args.as_of, progress=stage) as population:
            # Declare every column the tags and segments read, so features are built once.
            evaluator = SegmentEvaluator(population, store, library)
            conditions = [c for c in map(evaluator.check, SEGMENTS) if c is not None]
            tag_conditions = check_conditions(library, population.schema(models=False), False)
            columns = tag_columns(library, tag_conditions) + [c for cond in conditions for c in cond.columns]
            population.frame(columns=columns)
            applied = apply_tags(library, population)
            tagged = time.perf_counter()
            print(
                f"tags: {len(applied.tags):,} tag rows for {applied.customers:,} customers in {tagged - started:.1f} s"
            )
            evaluator = SegmentEvaluator(population, store, library, applied=applied)
            evaluator.prepare(SEGMENTS)
            results = [evaluator.evaluate(segment) for segment in SEGMENTS]
            for result in results:
                record_refresh(store, result)
        done = time.perf_counter()
    print(f"20 segments: {done - tagged:.1f} s")
    for result in results:
        print(f"  {result.name:26s} {len(result.members):>9,} ({result.share:.1%})")
    print(f"total {done - started:.1f} s, peak RSS {peak_gb():.2f} GB")


if __name__ == "__main__":
    main()
