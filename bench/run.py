"""Run the benchmark suite, then render the results page.

Full mode runs every script with its defaults (resumable: finished search rows are skipped) and renders
``docs/benchmarks.md``; plan it in parts of at most ~2 hours (``--only`` picks scripts). Quick mode
(``--quick``, a few minutes) runs the same scripts on the small CNN and digits at a tiny fidelity, into
``--out`` (default ``bench/results/quick``), to check that the suite works.

    python bench/run.py --quick
    python bench/run.py --only compare_searchers,report
    python bench/run.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).parent
FULL = ("baselines", "cost_check", "candidate_cost", "compare_searchers", "latency_speedup", "latency_search",
        "ray_scaling", "service_load", "report")
QUICK = ("baselines", "candidate_cost", "compare_searchers", "latency_speedup", "latency_search", "service_load",
         "report")
QUICK_RESULTS = {"baselines": "baselines.json", "candidate_cost": "candidate_cost.json",
                 "compare_searchers": "search_quality", "latency_speedup": "latency_speedup.json",
                 "latency_search": "latency_search.json", "service_load": "service_load.json"}


def command(script: str, quick: bool, out: Path) -> list[str]:
    """The command line of one step."""
    argv = [sys.executable, str(BENCH / f"{script}.py")]
    if not quick:
        return argv
    if script == "report":
        return [*argv, "--quick", "--results", str(out)]
    return [*argv, "--quick", "--results", str(out / QUICK_RESULTS[script])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model, tiny fidelity, a few minutes")
    parser.add_argument("--only", help=f"comma-separated steps (default all): {', '.join(FULL)}")
    parser.add_argument("--out", default=str(BENCH / "results" / "quick"), help="quick mode's result directory")
    args = parser.parse_args()
    steps = QUICK if args.quick else FULL
    if args.only:
        unknown = set(args.only.split(",")) - set(steps)
        if unknown:
            parser.error(f"unknown --only steps {sorted(unknown)}; accepted: {', '.join(steps)}")
        steps = tuple(s for s in steps if s in args.only.split(","))
    for step in steps:
        start = time.perf_counter()
        print(f"== {step}", flush=True)
        subprocess.run(command(step, args.quick, Path(args.out)), check=True)
        print(f"== {step}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
