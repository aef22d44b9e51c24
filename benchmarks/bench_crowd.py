"""One crowd report and a 12-point monthly trend on one data set (run by hand).

    .venv/bin/python benchmarks/bench_crowd.py --data bench-data/synthetic_1000000 --as-of 2025-01-01

The report is ``portrait crowd report`` in one process: read the data as of the date, build the
features the dimensions read, find the crowd (a filter with a behaviour term), compute every
dimension, the category/brand/cross-sell tables, and write crowd.csv/md/html. The trend
recomputes a crowd (a filter over features) as of each of 12 month starts. Prints wall times
and the process's peak resident memory. ``--skip-trend`` / ``--skip-report`` run one part.

With the refresh's crowd material (marketing/crowd_material.py), in two runs:

    .venv/bin/python benchmarks/bench_crowd.py --data DATA --as-of 2025-01-01 --write-run RUN
    .venv/bin/python benchmarks/bench_crowd.py --data DATA --as-of 2025-01-01 --run RUN --skip-trend

The first does what the refresh's tags and crowds steps do (the retail tags and the material,
written to RUN as a run folder; timed, since the nightly job pays it); the second times the same
report, and a tag crowd's, read from it as ``portrait crowd report --run RUN`` would.
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
    parser.add_argument("--write-run", type=Path, help="write the tags and crowd material of a run here, then stop")
    parser.add_argument("--run", type=Path, help="time the reports from this run's crowd material")
    args = parser.parse_args()
    if args.write_run:
        write_run(args.data, args.as_of, args.write_run)
        return
    if args.run:
        stored_reports(args.data, args.as_of, args.run)
        print(f"peak RSS {peak_gb():.2f} GB")
        return
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


def write_run(data: Path, as_of: str, run: Path) -> None:
    from marketing.crowd_material import FOLDER, write_crowd_material
    from marketing.tags import apply_tags, tags_file
    from portrait.files import atomic_write

    started = time.perf_counter()
    library = load_library()
    date = dt.date.fromisoformat(as_of)

    def say(message: str) -> None:
        print(f"{time.perf_counter() - started:6.1f} s  {message}", flush=True)

    with Population(open_dataset(data), date, progress=say) as population:
        atomic_write(apply_tags(library, population).tags, tags_file(run / "tags", date))
        tagged = time.perf_counter()
        counts = write_crowd_material(CrowdData(population, library, say=say), run / FOLDER)
    print(f"tags {tagged - started:.1f} s, crowd material {time.perf_counter() - tagged:.1f} s: {counts}")
    print(f"peak RSS {peak_gb():.2f} GB")


def stored_reports(data: Path, as_of: str, run: Path) -> None:
    from marketing.crowd_material import open_stored_crowds

    for crowd in (REPORT_CROWD, Crowd("tag", "spending power: high")):
        started = time.perf_counter()

        def say(message: str, started=started) -> None:
            print(f"{time.perf_counter() - started:6.1f} s  {message}", flush=True)

        stored = open_stored_crowds(run, data, load_library(), as_of=dt.date.fromisoformat(as_of), say=say)
        try:
            mask = stored.mask(crowd)
            report = crowd_report(stored, mask, stored.mask(Crowd("all")), crowd_name="bench", base_name="all")
            with tempfile.TemporaryDirectory() as out:
                say("writing")
                write_report(report, Path(out))
        finally:
            stored.close()
        print(
            f"report from the run's material ({crowd.describe()}): {report.size:,} of {report.base_size:,} "
            f"customers in {time.perf_counter() - started:.1f} s"
        )


if __name__ == "__main__":
    main()
