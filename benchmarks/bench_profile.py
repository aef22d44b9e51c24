"""Time :func:`serving.profile.build_profile` (``portrait profile``) for a sample of customers
(run by hand; prints figures).

    .venv/bin/python benchmarks/bench_profile.py --data bench-data/synthetic_1000000 \\
        [--runs outputs/refresh | --runs-like outputs/refresh --scratch /tmp/profile_runs] [--ids 40]

``--runs`` reads a refresh root as it is (a run written by ``portrait refresh`` holds the profile
material of its ``profiles`` step: profiles of its date read that instead of the data set).
``--in-memory`` builds the profiles as the API does (``build_profile(..., in_memory=True)``): the
run's tables are loaded once (timed apart, with the process's peak RSS after) and every profile
after is point lookups in memory. ``--runs-like ROOT`` builds, in ``--scratch``, a refresh
root with the layout and columns of ROOT's runs but a row for every customer of ``--data``
(values copied cyclically from ROOT's rows): stored outputs shaped like a real run on a data
set too large to score here, so the reads cost what they would. The customers are a seeded
sample of the ``customers`` table (primary and merged ids alike). The first profile is timed
apart: it pays the imports. Reasons are not computed (they load models); stored ones are read.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd


def fake_runs(like: Path, data: Path, scratch: Path) -> Path:
    """A refresh root in ``scratch`` with ``like``'s runs, each table re-keyed to every customer
    id of ``data``'s customers table (tags: each customer gets the tags of a row of ``like``)."""
    from portrait.files import atomic_write, atomic_write_text, read_parquet
    from serving.refresh import run_dates

    ids = (
        duckdb.connect()
        .execute("SELECT customer_id FROM read_parquet(?) ORDER BY customer_id", [str(data / "customers.parquet")])
        .df()["customer_id"]
        .astype("str")
        .to_numpy()
    )
    if scratch.exists():
        shutil.rmtree(scratch)
    for day in run_dates(like):
        source, target = like / "runs" / day, scratch / "runs" / day
        for path in sorted(source.rglob("*.parquet")):
            frame = read_parquet(path)
            out = target / path.relative_to(source)
            if "customer_id" not in frame.columns or frame.empty:
                atomic_write(frame, out)
                continue
            if path.parent.name == "tags":
                per = frame.groupby("customer_id", sort=True)
                keys = list(per.groups)
                chosen = np.arange(len(ids)) % len(keys)
                sizes = per.size().to_numpy()[chosen]
                starts = np.concatenate([[0], np.cumsum(per.size().to_numpy())[:-1]])[chosen]
                ordered = frame.sort_values("customer_id", kind="stable").reset_index(drop=True)
                rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)])
                expanded = ordered.iloc[rows].reset_index(drop=True)
                expanded["customer_id"] = np.repeat(ids, sizes)
                atomic_write(expanded, out)
            elif path.parent.name == "segments":
                atomic_write(pd.DataFrame({"customer_id": ids[:: max(1, len(ids) // max(len(frame), 1) // 10)]}), out)
            else:
                rows = np.arange(len(ids)) % len(frame)
                expanded = frame.iloc[rows].reset_index(drop=True)
                expanded["customer_id"] = ids
                atomic_write(expanded, out)
        for path in source.rglob("LATEST"):
            atomic_write_text(path.read_text(), target / path.relative_to(source))
    atomic_write_text((like / "LATEST").read_text(), scratch / "LATEST")
    return scratch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path)
    parser.add_argument("--runs-like", type=Path)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench_profile_runs"))
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--in-memory", action="store_true", help="as the API: the run's tables held in memory")
    args = parser.parse_args()
    runs = args.runs
    if args.runs_like is not None:
        started = time.perf_counter()
        runs = fake_runs(args.runs_like, args.data, args.scratch)
        print(f"built {runs} like {args.runs_like} in {time.perf_counter() - started:.1f} s")
    customers = duckdb.connect().execute(
        "SELECT customer_id FROM read_parquet(?)", [str(args.data / "customers.parquet")]
    )
    ids = customers.df()["customer_id"].astype("str").sample(args.ids + 1, random_state=args.seed).tolist()

    started = time.perf_counter()
    from serving.profile import ProfileSources, build_profile

    sources = ProfileSources(data=args.data, runs=runs)
    build_profile(ids[0], sources, compute_reasons=False, in_memory=args.in_memory)
    print(
        f"first profile (with imports{', loading the run' if args.in_memory else ''}): "
        f"{time.perf_counter() - started:.2f} s"
    )

    if args.in_memory:
        import resource

        from serving.profile import memory_reader
        from serving.refresh import current_run

        held = memory_reader(runs, current_run(runs)).nbytes / 1024**3
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(f"  run tables held in memory: {held:.2f} GB (Arrow buffers); process peak RSS {peak:.2f} GB")
    timings, merged = [], 0
    for customer in ids[1:]:
        started = time.perf_counter()
        profile = build_profile(customer, sources, compute_reasons=False, in_memory=args.in_memory)
        timings.append(time.perf_counter() - started)
        merged += profile.identities is not None and len(profile.identities.customer_ids) > 1
    timings.sort()
    print(
        f"{len(timings)} profiles ({merged} of merged persons; in memory: {args.in_memory}): "
        f"median {statistics.median(timings) * 1000:.2f} ms, "
        f"p90 {timings[int(0.9 * (len(timings) - 1))] * 1000:.2f} ms, "
        f"p99 {timings[int(0.99 * (len(timings) - 1))] * 1000:.2f} ms, max {timings[-1] * 1000:.2f} ms"
    )
    if args.in_memory:
        return

    for label, part in (("data set only", ProfileSources(data=args.data)), ("outputs only", None)):
        if part is None:
            if runs is None:
                continue
            part = ProfileSources(runs=runs)
        spent = []
        for customer in ids[1:11]:
            started = time.perf_counter()
            build_profile(customer, part, compute_reasons=False)
            spent.append(time.perf_counter() - started)
        print(f"  {label}: median {statistics.median(spent) * 1000:.0f} ms over {len(spent)} ids")


if __name__ == "__main__":
    main()
