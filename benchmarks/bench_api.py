"""Latency of GET /customers/{id} at a fixed request rate, or under a burst of concurrent
clients (run by hand; prints figures).

Start a server first (`portrait serve --scores outputs/scores --port 8000 [--workers N]`), then:

    .venv/bin/python benchmarks/bench_api.py --url http://127.0.0.1:8000 --rate 200 --seconds 20
    .venv/bin/python benchmarks/bench_api.py --url http://127.0.0.1:8000 --burst 50 --per-client 20

With --rate, requests are sent open-loop at the given rate by a few threads (bounded in count
and time). With --burst N, N clients (one thread and connection each) start together and each
sends --per-client requests back to back. Only this machine is targeted; latency is measured
per request and reported as percentiles. The key in PORTRAIT_API_KEY, if set, is sent.

The ids asked are drawn from ``--ids-file`` (a Parquet or text file of customer ids, e.g. a
run's ``profiles/ids.parquet``: every known id, merged secondary ids included) or else from
the ranked list of ``--model`` (``GET /lists/{model}``, the first ``--top``). Untimed warm-up
requests are sent first until ``--warm`` in a row answer within 50 ms (a worker loads the
served run's tables in the background from its first profile of the run). The server's CPU time per request is printed when ``--server-pid`` names
it (a figure the machine's load changes less than latency).
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--burst", type=int, default=0, help="N concurrent clients instead of a fixed rate")
    parser.add_argument("--per-client", type=int, default=20, help="requests each burst client sends")
    parser.add_argument("--model", default="repurchase_90d", help="draw ids from this model's list")
    parser.add_argument("--top", type=int, default=100000, help="how many of the list to draw from")
    parser.add_argument("--ids-file", help="draw ids from this Parquet (customer_id) or text file instead")
    parser.add_argument("--warm", type=int, default=20, help="fast untimed requests in a row first")
    parser.add_argument("--server-pid", type=int, nargs="*", default=[], help="server processes: CPU per request")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("this benchmark only targets this machine")
    if not 0 <= args.burst <= 200 or not 1 <= args.per_client <= 1000:
        raise SystemExit("--burst is at most 200 clients, --per-client at most 1000 requests")
    headers = {"X-API-Key": os.environ["PORTRAIT_API_KEY"]} if os.environ.get("PORTRAIT_API_KEY") else {}
    if args.ids_file:
        if args.ids_file.endswith(".parquet"):
            import pandas as pd

            ids = pd.read_parquet(args.ids_file, columns=["customer_id"])["customer_id"].astype(str).tolist()
        else:
            ids = [line.strip() for line in open(args.ids_file, encoding="utf-8") if line.strip()]
    else:
        ids, offset, as_of = [], 0, None
        while offset is not None:  # the list's pages, of one scores table (as_of pins them)
            params = {"top": args.top, "offset": offset, "limit": 10_000, **({"as_of": as_of} if as_of else {})}
            answer = httpx.get(f"{args.url}/lists/{args.model}", params=params, headers=headers, timeout=120)
            if answer.status_code != 200:
                raise SystemExit(f"GET /lists/{args.model}: {answer.status_code} {answer.text[:200]}")
            page = answer.json()
            ids += [c["customer_id"] for c in page["customers"]]
            offset, as_of = page["next_offset"], page["as_of"]
    if not ids:
        raise SystemExit("no customer ids to ask for")
    path = "/customers/{}" + (f"?{args.query}" if args.query else "")
    # untimed: until --warm requests in a row answer within 50 ms (the workers have loaded the run
    # in the background; meanwhile they answer from the files), at most 15 minutes
    rng, fast, deadline = random.Random(1), 0, time.monotonic() + 900
    while fast < args.warm and time.monotonic() < deadline:
        t0 = time.perf_counter()
        httpx.get(args.url + path.format(rng.choice(ids)), headers=headers, timeout=300)
        fast = fast + 1 if time.perf_counter() - t0 < 0.05 else 0
        if not fast:
            time.sleep(0.5)
    cpu_before = _cpu_seconds(args.server_pid)
    if args.burst:
        burst(args, ids, path, headers)
        return
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    start = time.perf_counter() + 0.5
    latencies = np.full(total, np.nan)
    statuses = np.zeros(total, int)
    next_index = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        client = httpx.Client(timeout=5, headers=headers)
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
            response = client.get(args.url + path.format(rng.choice(ids)))
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
    if args.server_pid:
        spent = _cpu_seconds(args.server_pid) - cpu_before
        print(f"server CPU: {spent:.2f} s for {total} requests, {spent / total * 1000:.2f} ms per request")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} CPUs")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (Linux /proc), 0 when none."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def burst(args, ids: list[str], path: str, headers: dict) -> None:
    """N clients start together; each sends its requests back to back on its own connection."""
    total = args.burst * args.per_client
    latencies = np.full(total, np.nan)
    statuses = np.zeros(total, int)
    ready = threading.Barrier(args.burst + 1)

    def client_thread(k: int) -> None:
        client = httpx.Client(timeout=30, headers=headers)
        rng = random.Random(k)
        client.get(args.url + "/health")  # connect before the start
        ready.wait()
        for j in range(args.per_client):
            i = k * args.per_client + j
            t0 = time.perf_counter()
            response = client.get(args.url + path.format(rng.choice(ids)))
            latencies[i] = time.perf_counter() - t0
            statuses[i] = response.status_code
        client.close()

    threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(args.burst)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = latencies * 1000
    print(
        f"GET {path.format('{id}')}: burst of {args.burst} concurrent clients x {args.per_client} requests "
        f"= {total} in {elapsed:.2f} s ({total / elapsed:.0f}/s), {np.mean(statuses == 200):.1%} OK; latency ms "
        f"p50 {np.percentile(ms, 50):.2f}, p90 {np.percentile(ms, 90):.2f}, p99 {np.percentile(ms, 99):.2f}, "
        f"max {ms.max():.2f}"
    )


if __name__ == "__main__":
    main()
