"""Feature build speed and memory, DuckDB against a vectorised pandas reference (run by hand).

    .venv/bin/python benchmarks/bench_features.py --sizes 100000,1000000 [--as-of 2025-01-01] [--steps]

For each size it (generates if needed and) reads synthetic Parquet from disk and runs, each in a
fresh process so that peak memory is its own, printing wall time, CPU time (user + system, a
steadier figure than wall time when other jobs share the cores) and peak resident memory:

- ``duckdb all``: ``build_features`` with every family;
- ``duckdb subset``: the value, windows and behaviour families;
- ``pandas subset``: the same value and windows features and the event counts, written with
  pandas groupby aggregations over whole tables (no per-customer apply), with the same
  de-duplication and identity merge.

The shared columns of the two subsets are compared value by value, so the reference is also a
check of the SQL. ``--as-of`` is the cutoff (default 2025-01-01, after all of the generated
history); ``--memory-limit 4GB`` caps DuckDB's memory (it spills to disk above it);
``--steps`` also prints each feature SQL step's time (DuckDB runs); ``--modes`` runs
only some of the three (e.g. ``--modes duckdb-all``).

First it prints the machine's floor, one DuckDB group-by of 1e8 rows into 1e6 groups (issue 14
puts it at about 3 s on its machine), best of three: machines of the same kind differ (a build
of 36 s on one VM took 65 s on another), and figures from two machines compare only through it.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from portrait.contract import KNOWN_EVENT_TYPES as EVENT_TYPES

CUTOFF = "2025-01-01"
MODES = ("duckdb-all", "duckdb-subset", "pandas-subset")
SUBSET_FAMILIES = ["value", "windows", "behaviour"]
WINDOWS = (7, 30, 90, 180, 365)


def run_duckdb(data: Path, families: list[str] | None, out: Path, cutoff: str, memory_limit: str | None) -> int:
    from features.build import build_features
    from portrait.dataset import open_dataset
    from portrait.files import atomic_write

    dataset = open_dataset(data)
    if memory_limit is None:  # as `portrait features build` runs it, on a connection of its own
        frame = build_features(dataset, cutoff, families=families)
    else:
        con = dataset.connect(memory_limit=memory_limit)
        try:
            frame = build_features(dataset, cutoff, families=families, con=con)
        finally:
            con.close()
    atomic_write(frame, out)
    return len(frame)


FLOOR_SQL = "SELECT COUNT(*) FROM (SELECT range % 1000000 AS k, COUNT(*) FROM range(100000000) GROUP BY 1)"


def machine_floor(repeats: int = 3) -> float:
    """The best of ``repeats`` timings of :data:`FLOOR_SQL` on a fresh in-memory connection."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            con.execute(FLOOR_SQL).fetchall()
            timings.append(time.perf_counter() - started)
        return min(timings)
    finally:
        con.close()


def _recode(column: pd.Series, transform) -> pd.Series:
    categorical = column.astype("category")
    categories = pd.Series(categorical.cat.categories.astype("str"))
    codes, uniques = pd.factorize(transform(categories))
    new_codes = np.where(categorical.cat.codes.to_numpy() < 0, -1, codes[categorical.cat.codes.to_numpy()])
    return pd.Series(pd.Categorical.from_codes(new_codes, categories=uniques), index=column.index)


def run_pandas(data: Path, out: Path, as_of: str) -> int:
    from portrait.files import atomic_write
    from portrait.identity import resolve

    cutoff = pd.Timestamp(as_of)
    identities = pd.read_parquet(data / "identities.parquet")
    mapping = resolve(identities)
    remap = mapping[mapping["customer_id"] != mapping["person_id"]].set_index("customer_id")["person_id"]

    def unify(ids: pd.Series) -> pd.Series:
        """Map merged ids to their person, working on the categories, not on every row."""
        return _recode(ids, lambda values: values.map(remap).fillna(values))

    lines = pd.read_parquet(data / "purchases.parquet").drop_duplicates()
    lines = lines[lines["ts"] < cutoff]
    lines["customer_id"] = unify(lines["customer_id"])
    day = lines["ts"].dt.normalize()
    lines["age"] = (cutoff - day).dt.days
    # An order's purchase lines (sold, or $0.00 giving no unit back) are its purchase, its
    # refund lines a refund until one comes more than a day after the previous (then another)
    # (portrait.contract.purchase_order, features.plan); a line without a quantity is one unit.
    sold = (lines["amount"] > 0) | ((lines["amount"] == 0) & (lines["quantity"].fillna(0) >= 0))
    lines["purchase"] = sold.astype("int64")
    lines["units"] = lines["quantity"].fillna(1.0)
    refunds = lines[~sold].sort_values(["customer_id", "order_id", "ts"])
    previous = refunds.groupby(["customer_id", "order_id"], observed=True)["ts"].shift()
    starts = (refunds["ts"] > previous + pd.Timedelta(days=1)).astype("int64")
    lines["part"] = 0
    lines.loc[refunds.index, "part"] = starts.groupby(
        [refunds["customer_id"], refunds["order_id"]], observed=True
    ).cumsum()
    orders = (
        lines.groupby(["customer_id", "order_id", "purchase", "part"], observed=True)
        .agg(age=("age", "max"), amount=("amount", "sum"), items=("units", "sum"))
        .reset_index()
    )
    purchase = orders["purchase"] == 1
    orders["refund"] = (~purchase).astype("int64")
    bought = orders[purchase]
    by = orders.groupby("customer_id")
    result = pd.DataFrame(
        {
            "orders_lifetime": by["purchase"].sum(),
            "spend_lifetime": by["amount"].sum(),
            "refund_count": by["refund"].sum(),
        }
    )
    by_bought = bought.groupby("customer_id")
    result["days_since_last_purchase"] = by_bought["age"].min()
    result["days_since_first_purchase"] = by_bought["age"].max()
    result["avg_order_value"] = by_bought["amount"].mean()
    result["max_order_value"] = by_bought["amount"].max()
    result["refund_amount"] = -orders["amount"].where(~purchase, 0.0).groupby(orders["customer_id"]).sum()
    days = bought[["customer_id", "age"]].drop_duplicates()
    categories = (
        lines[(lines["amount"] > 0) & lines["category"].notna()]
        .groupby(["customer_id", "category"], observed=True)["age"]
        .min()
        .reset_index()
    )
    for w in WINDOWS:
        inside = orders["age"] <= w
        result[f"orders_{w}d"] = orders["purchase"].where(inside, 0).groupby(orders["customer_id"]).sum()
        result[f"spend_{w}d"] = orders["amount"].where(inside, 0.0).groupby(orders["customer_id"]).sum()
        result[f"items_{w}d"] = orders["items"].where(inside & purchase, 0.0).groupby(orders["customer_id"]).sum()
        result[f"active_days_{w}d"] = (days["age"] <= w).groupby(days["customer_id"]).sum()
        result[f"distinct_categories_{w}d"] = (categories["age"] <= w).groupby(categories["customer_id"]).sum()

    events = pd.read_parquet(data / "events.parquet", columns=["customer_id", "ts", "event_type"])
    events = events[events["ts"] < cutoff]
    customer = unify(events["customer_id"])
    age = (cutoff - events["ts"].dt.normalize()).dt.days.to_numpy()
    bucket = np.searchsorted(np.array(WINDOWS), age, side="left")  # age <= w  <=>  bucket <= index of w
    event_type = _recode(events["event_type"], lambda values: values.str.strip().str.lower())
    counts = pd.DataFrame(
        {"customer_id": customer.to_numpy(), "type": event_type.to_numpy(), "bucket": bucket, "age": age}
    )
    del events, customer, event_type
    result = result.reindex(result.index.union(pd.Index(counts["customer_id"].unique().astype("str"))))
    grouped = counts.groupby(["customer_id", "type", "bucket"], observed=True).size().unstack("bucket", fill_value=0)
    grouped = grouped.reindex(columns=range(len(WINDOWS) + 1), fill_value=0).cumsum(axis=1)
    for k, w in enumerate(WINDOWS):
        per_type = grouped[k].unstack("type", fill_value=0)
        per_type.index = per_type.index.astype("str")
        for event_type in EVENT_TYPES:
            result[f"{event_type}_count_{w}d"] = per_type.get(event_type).reindex(result.index, fill_value=0)
        result[f"event_count_{w}d"] = per_type.sum(axis=1).reindex(result.index, fill_value=0)
    last_event = counts.groupby("customer_id", observed=True)["age"].min()
    last_event.index = last_event.index.astype("str")
    result["days_since_last_event"] = last_event
    result = result.reset_index().rename(columns={"index": "customer_id"})
    atomic_write(result, out)
    return len(result)


def child(mode: str, data: Path, out: Path, cutoff: str, steps: bool, memory_limit: str | None) -> None:
    if steps:  # each step's time, on stderr (passed through by the parent)
        logging.basicConfig(level=logging.WARNING, format=f"  {mode}: %(message)s")
        logging.getLogger("features.build").setLevel(logging.DEBUG)
    started = time.perf_counter()
    if mode == "duckdb-all":
        rows = run_duckdb(data, None, out, cutoff, memory_limit)
    elif mode == "duckdb-subset":
        rows = run_duckdb(data, SUBSET_FAMILIES, out, cutoff, memory_limit)
    else:
        rows = run_pandas(data, out, cutoff)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_gb = usage.ru_maxrss / 1024**2
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"mode": mode, "rows": rows, "seconds": seconds, "cpu_seconds": cpu, "peak_gb": peak_gb}))


def compare(duckdb_file: Path, pandas_file: Path) -> str:
    a = pd.read_parquet(duckdb_file).set_index("customer_id")
    b = pd.read_parquet(pandas_file).set_index("customer_id")
    b = b.reindex(a.index)
    worst = 0.0
    for column in b.columns:
        x = pd.to_numeric(a[column], errors="coerce").fillna(0).to_numpy(dtype=float)
        y = pd.to_numeric(b[column], errors="coerce").fillna(0).to_numpy(dtype=float)
        worst = max(worst, float(np.max(np.abs(x - y))) if len(x) else 0.0)
    return f"{len(b.columns)} shared columns, largest difference {worst:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--data-root", type=Path, default=Path("bench-data"))
    parser.add_argument("--as-of", default=CUTOFF, help="the cutoff date (default %(default)s)")
    parser.add_argument("--steps", action="store_true", help="also print each feature SQL step's time")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of %(default)s")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit of the DuckDB runs, e.g. 4GB (default: DuckDB's)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "DATA", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.as_of, args.steps, args.memory_limit)
        return
    modes = [m for m in MODES if m in args.modes.split(",")]
    print(f"as of {args.as_of}")
    print(
        f"machine floor: a DuckDB group-by of 1e8 rows into 1e6 groups {machine_floor():.2f} s (best of 3)", flush=True
    )
    for size in (int(s) for s in args.sizes.split(",")):
        data = args.data_root / f"synthetic_{size}"
        if not (data / "events.parquet").exists():
            portrait = Path(sys.executable).with_name("portrait")
            subprocess.run([str(portrait), "sample-data", "--customers", str(size), "--out", str(data)], check=True)
        results = {}
        for mode in modes:
            out = args.data_root / f"features_{size}_{mode}.parquet"
            command = [sys.executable, __file__, "--child", mode, str(data), str(out), "--as-of", args.as_of]
            command += ["--steps"] if args.steps else []
            command += ["--memory-limit", args.memory_limit] if args.memory_limit else []
            line = (
                subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
            )
            results[mode] = json.loads(line)
            r = results[mode]
            print(
                f"{size:>9,} customers  {mode:<14} {r['seconds']:6.1f} s wall  {r['cpu_seconds']:6.1f} s CPU  "
                f"peak {r['peak_gb']:5.2f} GB  ({r['rows']:,} rows)",
                flush=True,
            )
        if not {"duckdb-subset", "pandas-subset"} <= set(results):
            continue
        speedup = results["pandas-subset"]["seconds"] / results["duckdb-subset"]["seconds"]
        check = compare(
            args.data_root / f"features_{size}_duckdb-subset.parquet",
            args.data_root / f"features_{size}_pandas-subset.parquet",
        )
        print(f"{size:>9,} customers  duckdb subset is {speedup:.1f}x faster than pandas; {check}")


if __name__ == "__main__":
    main()
