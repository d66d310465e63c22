"""A served search's throughput with and without 50 clients polling its status, side by side.

One ``autoprune serve`` (``--max-concurrent 1``, on a free local port) runs the same search (small CNN on digits,
random searcher, one seed: the same policies every time) ``--repeats`` times each way, alternating quiet, loaded,
loaded, quiet, ...:

- quiet: this script alone checks the run, once a second (``Run.wait``);
- loaded: ``--clients`` asyncio clients (httpx, one connection each) poll ``GET /runs/{id}`` and ``GET /runs`` in
  turn, every ``--interval`` seconds each, from submission until the run has finished.

Throughput is trials per second from the run's trials table: its trials over the span from the first trial's
start (``finished_at - seconds``) to the last ``finished_at``, so the driver's start-up and final report are left
out. Without ``--trials``, an untimed warm-up search (which also trains and caches the baseline) sizes the search
to about ``--seconds`` of trials. Reports each way's median throughput and their ratio, and the loaded requests'
count and p50/p99 latency (measured by the clients). Clients, server and search share this machine: the 1-minute
load average before each search is recorded. Writes ``bench/results/service_load.json``.

    python bench/service_load.py                  # 50 clients, ~60 s searches, 3 repeats each way
    python bench/service_load.py --quick          # 10 clients, 4-trial searches, 1 repeat: checks the script
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_json

import autoprune as ap
from autoprune.service.client import FINISHED
from autoprune.service.local import LocalServer

SEARCH = {"model": "small_cnn", "dataset": "digits", "budget": {"flops": 0.5}, "searcher": "random", "seed": 0,
          "evaluator": {"bn_batches": 2, "finetune_steps": 10, "val_batches": 2}, "final_finetune_steps": 0,
          "train": {"epochs": 1}, "rescore": 0}
DETAIL, LIST = "GET /runs/{id}", "GET /runs"
POLL_TIMEOUT = 3600  # seconds: a search that never ends stops the benchmark


def throughput(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Trials per second and the seconds from the first trial's start to the last trial's end."""
    start = min(r["finished_at"] - (r["seconds"] or 0.0) for r in rows)
    span = max(r["finished_at"] for r in rows) - start
    return len(rows) / span, span


async def poll(url: str, token: str, run_id: str, clients: int, interval: float) -> list[tuple[str, float, int]]:
    """``clients`` pollers until one sees the run finished: (endpoint, seconds, HTTP status or 0) per request."""
    finished, records = asyncio.Event(), []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                                 limits=limits) as http:

        async def client(index: int) -> None:
            await asyncio.sleep(interval * index / clients)  # spread over the interval, not one burst
            for turn in itertools.count():
                if finished.is_set():
                    return
                endpoint, path = (DETAIL, f"/runs/{run_id}") if turn % 2 == 0 else (LIST, "/runs")
                start = time.perf_counter()
                try:
                    response = await http.get(path)
                    status = response.status_code
                except httpx.HTTPError:
                    response, status = None, 0
                records.append((endpoint, time.perf_counter() - start, status))
                if endpoint == DETAIL and status == 200 and response.json()["status"] in FINISHED:
                    finished.set()
                await asyncio.sleep(interval)

        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), POLL_TIMEOUT)
    return records


def one_search(client: ap.Client, search: dict[str, Any], loaded: bool, args: argparse.Namespace
               ) -> tuple[dict[str, Any], list[tuple[str, float, int]]]:
    """Submit ``search``, follow it to the end (under load or not); its throughput and the load's requests."""
    load_average = os.getloadavg()[0]
    run = client.submit(search)
    records: list[tuple[str, float, int]] = []
    start = time.perf_counter()
    if loaded:
        records = asyncio.run(poll(args.url, args.token, run.id, args.clients, args.interval))
    run.wait(poll=1.0, progress=False)
    seconds = time.perf_counter() - start
    info = run.info()
    if info["status"] != "done":
        raise RuntimeError(f"search {run.id} ended {info['status']}: {info['message']}")
    per_second, span = throughput(run.trials().to_dict("records"))
    mode = "loaded" if loaded else "quiet"
    print(f"{mode}: {per_second:.3f} trials/s over {span:.1f} s, {len(records)} requests, "
          f"load average {load_average:.1f}", flush=True)
    return {"mode": mode, "id": run.id, "trials_per_s": per_second, "trial_span_s": span, "wall_s": seconds,
            "load_average_1min": load_average}, records


def latency(records: list[tuple[str, float, int]]) -> dict[str, Any]:
    """Served requests (2xx), errors, and p50/p99 milliseconds of the served ones."""
    served = np.array([seconds for _, seconds, status in records if 200 <= status < 300]) * 1000
    return {"served": int(served.size), "errors": len(records) - int(served.size),
            "p50_ms": float(np.percentile(served, 50)), "p99_ms": float(np.percentile(served, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds each client waits between two requests (default 1, as Run.wait)")
    parser.add_argument("--seconds", type=float, default=60, help="target length of a search's trials")
    parser.add_argument("--trials", type=int, help="trials per search (default: sized by a warm-up search)")
    parser.add_argument("--repeats", type=int, default=3, help="searches each way")
    parser.add_argument("--quick", action="store_true", help="10 clients, 4 trials, 1 repeat (checks the script)")
    parser.add_argument("--results", help="result file (default bench/results[/quick]/service_load.json)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.trials, args.repeats = 10, 4, 1
    results = Path(args.results or RESULTS / ("quick" if args.quick else "") / "service_load.json")
    args.token = secrets.token_urlsafe(24)
    with (tempfile.TemporaryDirectory(prefix="autoprune-service-load-") as scratch,
          LocalServer(Path(scratch) / "runs", "--max-concurrent", "1", token=args.token,
                      env={"OMP_NUM_THREADS": "1"}) as server,
          ap.Client(server.url, token=args.token) as client):
        args.url = server.url
        if args.trials is None:
            warm, _ = one_search(client, {**SEARCH, "trials": 6}, False, args)  # trains the baseline; not kept
            args.trials = max(3, round(args.seconds * warm["trials_per_s"]))
        search = {**SEARCH, "trials": args.trials}
        order = [loaded for r in range(args.repeats) for loaded in ((False, True) if r % 2 == 0 else (True, False))]
        runs, records = [], []
        for loaded in order:
            run, requests = one_search(client, search, loaded, args)
            runs.append(run)
            records += requests
    quiet = [r["trials_per_s"] for r in runs if r["mode"] == "quiet"]
    under_load = [r["trials_per_s"] for r in runs if r["mode"] == "loaded"]
    ratio = statistics.median(under_load) / statistics.median(quiet)
    polled = sum(r["wall_s"] for r in runs if r["mode"] == "loaded")
    path = write_json(results, {
        "search": search, "clients": args.clients, "interval_s": args.interval, "repeats": args.repeats,
        "runs": runs, "quiet_trials_per_s_median": statistics.median(quiet),
        "loaded_trials_per_s_median": statistics.median(under_load), "throughput_ratio": ratio,
        "within_10_percent": ratio >= 0.9, "load_average_1min_median": statistics.median(
            r["load_average_1min"] for r in runs),
        "requests": {**latency(records), "per_s": len(records) / polled,
                     "by_endpoint": {e: latency([r for r in records if r[0] == e]) for e in (DETAIL, LIST)}},
    })
    print(f"throughput under load {ratio:.3f}x the quiet median; wrote {path}")


if __name__ == "__main__":
    main()
