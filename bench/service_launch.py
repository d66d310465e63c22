"""A served search as a driver process or as a Ray job: start-up cost and memory, measured side by side.

The same tiny search (small CNN on digits, 3 trials, no finetune; the baseline trained and cached first) runs
``--repeats`` times each way, one at a time:

- driver: ``python -m autoprune.cli.driver search CONFIG`` as a subprocess, what ``autoprune serve`` starts;
- ray job: a local Ray with its dashboard (``ray.init``; needs ``pip install 'autoprune[jobs]'``, i.e.
  ``ray[default]``), then ``JobSubmissionClient.submit_job`` with the same command, polled until it ends.

It reports seconds per search both ways, the seconds Ray takes to come up, and the memory (RSS) Ray's own
processes hold while no job runs. Writes ``bench/results/service_launch.json``.

    python bench/service_launch.py               # 3 repeats each way
    python bench/service_launch.py --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_json

ROOT = Path(__file__).parent.parent
SEARCH = {"model": "small_cnn", "dataset": "digits", "budget": {"params": 0.6}, "trials": 3,
          "evaluator": {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}, "final_finetune_steps": 0,
          "train": {"epochs": 1}, "rescore": 0}


def _command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "autoprune.cli.driver", "search", str(config), "--run-dir", str(run_dir)]


def _driver(config: Path, run_dir: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(_command(config, run_dir), env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _descendants_rss_mb() -> float:
    """Resident memory of every process below this one (Ray's, once ``ray.init`` started them), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    mine, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= found
        grew = bool(found)
    total = 0
    for pid in mine - {os.getpid()}:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="autoprune-service-launch-"))
    config = scratch / "search.json"
    config.write_text(json.dumps(SEARCH))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "AUTOPRUNE_CACHE": os.environ.get("AUTOPRUNE_CACHE", str(scratch / "cache"))}
    _driver(config, scratch / "warm-up", env)  # trains and caches the baseline: not timed
    driver = [_driver(config, scratch / f"driver-{i}", env) for i in range(args.repeats)]
    print(f"driver process: {[round(s, 2) for s in driver]} s", flush=True)

    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    start = time.perf_counter()
    ray.init(address="local", include_dashboard=True, dashboard_port=8299, num_cpus=2, log_to_driver=False)
    jobs = JobSubmissionClient("http://127.0.0.1:8299")
    ray_up = time.perf_counter() - start
    idle_rss = _descendants_rss_mb()
    print(f"ray up in {ray_up:.1f} s, its processes hold {idle_rss:.0f} MB", flush=True)
    ray_job = []
    try:
        for i in range(args.repeats):
            start = time.perf_counter()
            job = jobs.submit_job(entrypoint=" ".join(_command(config, scratch / f"job-{i}")),
                                  runtime_env={"env_vars": {k: env[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS",
                                                                                "AUTOPRUNE_CACHE")}})
            while (status := jobs.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                               JobStatus.STOPPED):
                time.sleep(0.1)
            assert status == JobStatus.SUCCEEDED, jobs.get_job_logs(job)[-2000:]
            ray_job.append(time.perf_counter() - start)
    finally:
        ray.shutdown()
    print(f"ray job: {[round(s, 2) for s in ray_job]} s", flush=True)
    path = write_json(RESULTS / "service_launch.json", {
        "search": SEARCH, "repeats": args.repeats,
        "driver_seconds": driver, "ray_job_seconds": ray_job,
        "driver_median_s": statistics.median(driver), "ray_job_median_s": statistics.median(ray_job),
        "ray_start_s": ray_up, "ray_idle_rss_mb": idle_rss,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
