"""Time and peak memory of `portrait sample-data` (run by hand; prints figures).

.venv/bin/python benchmarks/bench_sample_data.py --customers 1000000  (writes bench-data/synthetic_1000000)
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    out = args.out or Path("bench-data") / f"synthetic_{args.customers}"
    portrait = Path(sys.executable).with_name("portrait")
    started = time.perf_counter()
    subprocess.run(
        [str(portrait), "sample-data", "--customers", str(args.customers), "--seed", str(args.seed), "--out", str(out)],
        check=True,
    )
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    size_gb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024**3
    print(
        f"sample-data --customers {args.customers:,}: {seconds:.1f} s wall, peak RSS {peak_gb:.2f} GB, "
        f"{size_gb:.2f} GB on disk in {out}"
    )


if __name__ == "__main__":
    main()
