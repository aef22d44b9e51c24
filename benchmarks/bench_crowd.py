"""One crowd report and a 12-point monthly trend on one data set (run by hand).

    .venv/bin/python benchmarks/bench_crowd.py --data bench-data/synthetic_1000000 --as-of 2025-01-01

The report is ``portrait crowd report`` in one process: read the data as of the date, build the
features the dimensions read, find the crowd (a filter with a behaviour term), compute every
dimension, the category/brand/cross-sell tables, and write crowd.csv/md/html. The trend
recomputes a crowd (a filter over features) as of each of 12 month starts. Prints wall times
and the process's peak resident memory. ``--skip-trend`` / ``--skip-report`` run one part.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

from marketing.crowd import Crowd, CrowdData
from marketing.crowd_page import write_report
from marketing.crowd_report import crowd_report
from marketing.crowd_trend import crowd_trend, trend_dates
from marketing.population import Population
from marketing.tags import load_library
from portrait.dataset import open_dataset

REPORT_CROWD = Crowd("where", "discount_order_share >= 0.5 and purchased(within_days = 90) >= 2")
TREND_CROWD = Crowd("where", "orders_90d >= 3")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--as-of", default="2025-01-01")
    parser.add_argument("--skip-trend", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    dataset = open_dataset(args.data)
    library = load_library()
    as_of = dt.date.fromisoformat(args.as_of)
    if not args.skip_report:
        started = time.perf_counter()

        def say(message: str) -> None:
            print(f"{time.perf_counter() - started:6.1f} s  {message}", flush=True)

        with tempfile.TemporaryDirectory() as out, Population(dataset, as_of, progress=say) as population:
            data = CrowdData(population, library, say=say)
            crowd = data.mask(REPORT_CROWD)
            report = crowd_report(data, crowd, data.mask(Crowd("all")), crowd_name="bench", base_name="all")
            say("writing")
            write_report(report, Path(out))
        print(f"report: {report.size:,} of {report.base_size:,} customers in {time.perf_counter() - started:.1f} s")
    if not args.skip_trend:
        started = time.perf_counter()
        first = dt.date(as_of.year - 1, as_of.month, 1)
        dates = trend_dates(first, dt.date(as_of.year, as_of.month, 1) - dt.timedelta(days=1), "month")
        table = crowd_trend(
            dataset,
            TREND_CROWD,
            dates,
            library,
            say=lambda m: print(f"{time.perf_counter() - started:6.1f} s  {m}", flush=True),
        )
        print(table[["as_of", "customers", "revenue"]].to_string(index=False))
        print(f"trend: {len(dates)} points in {time.perf_counter() - started:.1f} s")
    print(f"peak RSS {peak_gb():.2f} GB")


if __name__ == "__main__":
    main()
