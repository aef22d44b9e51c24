"""Latency of GET /customers/{id} at a fixed request rate (run by hand; prints figures).

Start a server first (`portrait serve --scores outputs/scores --port 8000`), then:

    .venv/bin/python benchmarks/bench_api.py --url http://127.0.0.1:8000 --rate 200 --seconds 20

Requests are sent open-loop at the given rate by a few threads (bounded in count and time) to
this machine only; latency is measured per request and reported as percentiles.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import httpx
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--query", default="", help="e.g. reasons=false")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("this benchmark only targets this machine")
    ids = [
        c["customer_id"]
        for c in httpx.get(f"{args.url}/lists/repurchase_90d", params={"top": 100000}, timeout=60).json()["customers"]
    ]
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    start = time.perf_counter() + 0.5
    latencies = np.full(total, np.nan)
    statuses = np.zeros(total, int)
    next_index = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        client = httpx.Client(timeout=5)
        rng = random.Random()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            response = client.get(f"{args.url}/customers/{rng.choice(ids)}" + (f"?{args.query}" if args.query else ""))
            # latency counts from when the request was due, so queueing delay is included
            latencies[i] = time.perf_counter() - min(t0, due) if due <= t0 else time.perf_counter() - t0
            statuses[i] = response.status_code

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = latencies * 1000
    achieved = total / (time.perf_counter() - start)
    print(
        f"GET /customers/{{id}}{'?' + args.query if args.query else ''}: {total} requests at {args.rate:.0f}/s "
        f"(achieved {achieved:.0f}/s), {np.mean(statuses == 200):.1%} OK; latency ms p50 {np.percentile(ms, 50):.2f}, "
        f"p90 {np.percentile(ms, 90):.2f}, p99 {np.percentile(ms, 99):.2f}, max {ms.max():.2f}"
    )


if __name__ == "__main__":
    main()
