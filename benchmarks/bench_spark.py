"""Feature build on DuckDB against Spark local[2], through the command a user runs (by hand).

    .venv/bin/python benchmarks/bench_spark.py --data bench-data/synthetic_100000 [--data ...]
        [--as-of 2025-01-01] [--master local[2]] [--engines duckdb,spark]

For each data set and engine it runs ``portrait features build DATA --as-of DATE --engine E
--out FILE`` in a fresh process group and prints wall time, CPU time (user + system of every
process of the group, the Spark JVM included, sampled from /proc every 0.25 s, so the last
quarter second of a process may be missed) and the peak of their summed resident memory; then compares the two feature tables (same customers and columns; counts, ids and
text exact, floats within a relative 1e-9, same nulls) and prints the number of columns that
differ. Spark's time includes starting the JVM and the session (about 10-15 s here).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PORTRAIT = str(Path(sys.executable).parent / "portrait")


def _group_usage(pgid: int) -> dict[int, tuple[float, int]]:
    """CPU seconds (user + system) and resident bytes of every process in group ``pgid``,
    from /proc: the Spark JVM is started by the command and never waited for, so the usual
    children's accounting (getrusage) would leave it out."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    usage = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            usage[int(entry)] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[21]) * page)
    return usage


def run(data: str, as_of: str, engine: str, out: Path, master: str) -> dict:
    args = [PORTRAIT, "features", "build", data, "--as-of", as_of, "--engine", engine, "--out", str(out)]
    if engine == "spark":
        args += ["--spark-master", master]
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    cpu: dict[int, float] = {}
    peak = 0
    while child.poll() is None:
        sample = _group_usage(child.pid)
        for pid, (seconds, _) in sample.items():
            cpu[pid] = max(cpu.get(pid, 0.0), seconds)
        peak = max(peak, sum(rss for _, rss in sample.values()))
        time.sleep(0.25)
    _, stderr = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{engine} failed: {stderr[-2000:]}")
    return {"wall": wall, "cpu": sum(cpu.values()), "peak_gb": peak / 1024**3}


def differing_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    if list(a.columns) != list(b.columns) or a["customer_id"].tolist() != b["customer_id"].tolist():
        return ["<layout>"]
    bad = []
    for column in a.columns:
        x, y = a[column], b[column]
        if pd.api.types.is_float_dtype(x):
            ok = (x.isna() == y.isna()).all() and np.isclose(x.fillna(0), y.fillna(0), rtol=1e-9, atol=1.5e-9).all()
        else:
            ok = x.astype(object).where(x.notna(), None).tolist() == y.astype(object).where(y.notna(), None).tolist()
        if not ok:
            bad.append(column)
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--as-of", default="2025-01-01")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--engines", default="duckdb,spark")
    args = parser.parse_args()
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as folder:
        for data in args.data:
            outputs = {}
            for engine in engines:
                out = Path(folder) / f"{Path(data).name}_{engine}.parquet"
                figures = run(data, args.as_of, engine, out, args.master)
                outputs[engine] = out
                label = engine if engine == "duckdb" else f"spark {args.master}"
                print(
                    f"{data}  {label:<16} wall {figures['wall']:7.1f} s   cpu {figures['cpu']:7.1f} s   "
                    f"peak {figures['peak_gb']:.2f} GB",
                    flush=True,
                )
            if len(outputs) == 2:
                frames = [pd.read_parquet(outputs[e]) for e in engines]
                bad = differing_columns(*frames)
                print(
                    f"{data}  {len(frames[0]):,} customers x {frames[0].shape[1] - 1} features; columns differing: {len(bad)} {bad[:5]}"
                )


if __name__ == "__main__":
    main()
