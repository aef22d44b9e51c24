"""The nightly refresh end to end on 1M customers, each step's time (run by hand; prints figures).

    .venv/bin/python benchmarks/bench_refresh.py            # make bench-refresh

It trains three fast models (repurchase and high value in 90 days, spend in 90 days) on the
100k synthetic set in a throwaway MLflow store and promotes them to champion (named as the
retail tag library's model tags expect: repurchase_90d, high_value_90d), saves the 20
segments of ``bench_marketing.py``, writes a refresh.toml (retail tags, every segment, two
lists) and runs ``portrait refresh`` on the 1M synthetic set as a user would: one process, its
own output (the step lines), then each step's seconds and rows from the run's manifest, the
wall time and the peak memory of the refresh process (and each step's own peak, from the manifest). Training is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA_100K = Path("bench-data/synthetic_100000")
DATA_1M = Path("bench-data/synthetic_1000000")
MODELS = {
    "repurchase_90d": ("repurchase", {}),
    "high_value_90d": ("high_value", {}),
    "spend_90d": ("future_spend", {}),
}


def train_champions(store: Path) -> None:
    from portrait.tracking import setup_tracking
    from training.config import parse_experiment
    from training.registry import promote
    from training.train import train_experiment

    setup_tracking(store)
    for name, (kind, extra) in MODELS.items():
        config = parse_experiment(
            {
                "name": name,
                "data": {"path": str(DATA_100K.resolve())},
                "cutoffs": {"rule": "monthly", "count": 2},
                "label": {"kind": kind, "horizon_days": 90},
                "model": {"n_estimators": 300, "learning_rate": 0.1, "early_stopping_rounds": 30, **extra},
            }
        )
        cwd = Path.cwd()
        os.chdir(store)
        try:
            train_experiment(config)
        finally:
            os.chdir(cwd)
        promote(name)


def save_segments(folder: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_marketing import SEGMENTS

    from marketing.segments import SegmentStore

    store = SegmentStore(folder)
    for segment in SEGMENTS:
        store.save(segment)
    return [s.name for s in SEGMENTS]


def main() -> None:
    from portrait.files import atomic_write_text

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA_1M)
    parser.add_argument("--as-of", default="2025-01-01")
    parser.add_argument("--store", type=Path, help="an MLflow folder of an earlier run of this script: no training")
    args = parser.parse_args()
    for folder, customers in ((DATA_100K, 100_000), (args.data, 1_000_000)):
        if not folder.exists():
            sys.exit(f"{folder} is missing: python benchmarks/bench_sample_data.py --customers {customers}")
    work = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    if args.store:
        store = args.store.resolve()
    else:
        store = work / "mlflow"
        store.mkdir()
        print(f"training {len(MODELS)} champions on {DATA_100K} (not timed) in {store}", flush=True)
        train_champions(store)
    segments = save_segments(work / "segments")
    settings = work / "refresh.toml"
    atomic_write_text(
        f"""data = "{args.data.resolve()}"
out = "{work / "out"}"
as_of = "{args.as_of}"
models = {json.dumps(list(MODELS))}
segments = "{work / "segments"}"
keep = 2

[[lists]]
name = "repurchase_top10000"
model = "repurchase_90d"
top = 10000

[[lists]]
name = "loyal_by_repurchase"
model = "repurchase_90d"
segment = "{segments[0]}"
top = 5000
""",
        settings,
    )
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}")
    portrait = Path(sys.executable).parent / "portrait"
    started = time.perf_counter()
    done = subprocess.run([str(portrait), "refresh", str(settings)], env=env, cwd=store, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"portrait refresh failed (exit {done.returncode}); outputs in {work}")
    manifest = json.loads((work / "out" / "runs" / args.as_of / "manifest.json").read_text())
    print()
    print(f"{'step':<10} {'seconds':>8} {'CPU s':>8} {'peak GB':>8}  rows")
    for step in manifest["steps"]:
        rows = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in step["rows"].items())
        cpu, peak_gb = step.get("cpu_seconds", float("nan")), step.get("peak_rss_gb", float("nan"))
        print(f"{step['step']:<10} {step['seconds']:>8.1f} {cpu:>8.1f} {peak_gb:>8.2f}  {rows}")
    # The refresh resets the kernel's peak at each step (per-step figures), so the child's
    # ru_maxrss would be the last step's: the run's peak is the largest step's.
    peak = max(step.get("peak_rss_gb", 0.0) for step in manifest["steps"])
    print(f"refresh of {args.data} as of {args.as_of}: {wall:.1f} s wall, peak RSS {peak:.2f} GB (its largest step)")
    print(f"outputs: {work}")


if __name__ == "__main__":
    main()
