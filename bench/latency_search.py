"""A latency-budgeted search per runtime, its exported model timed afterwards in that runtime.

For each runtime (eager, compiled, aoti, onnxruntime) a search runs under ``Budget.latency(FRACTION,
runtime=...)`` (batch 1, one thread), exporting the form that runs there (``compile`` for aoti, ``onnx`` for
onnxruntime). Its final model is then timed again side by side with the unpruned model in the same runtime
(``latency_ratio``, 7 alternating rounds): the budget is met within 5% when that ratio is at most 1.05 x FRACTION.
How long the runtime's latency table took to build is recorded too (built before the search; the search reuses
the cached table). Latency does not depend on the weights: the baseline may be trained briefly (``--epochs``).

    python bench/latency_search.py                       # ResNet-20 on Fashion-MNIST, all four runtimes
    python bench/latency_search.py --runtimes onnxruntime --epochs 1
    python bench/latency_search.py --quick               # small CNN on digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, add_fidelity_options, apply_quick, fidelity, load_baseline, write_json

import autoprune as ap
from search_spaces import default_preset
from search_spaces.measure import latency_ratio
from search_spaces.runtimes import RUNTIMES

EXPORT_FOR = {"eager": ("eager",), "compiled": ("eager",), "aoti": ("eager", "compile"),
              "onnxruntime": ("eager", "onnx")}
TOLERANCE = 0.05


def table_seconds(model, inputs, runtime: str, preset: str | None) -> float:
    """Build (and cache) the runtime's latency table; its wall time."""
    space = ap.SearchSpace.from_model(model, inputs, preset=preset)
    start = time.perf_counter()
    ap.latency_table(model, space, inputs, runtime=runtime, rebuild=True)
    return time.perf_counter() - start


def run(args: argparse.Namespace, runtime: str, model, data) -> dict[str, Any]:
    inputs, preset = data.example_inputs(), default_preset(args.model)
    build_seconds = table_seconds(model, inputs, runtime, preset)
    budget = ap.Budget.latency(args.fraction, runtime=runtime)
    start = time.perf_counter()
    result = ap.search(model, inputs, budget=budget, train_data=data.train, val_data=data.val, test_data=data.test,
                       searcher=args.searcher, trials=args.evaluations, seed=args.seed, evaluator=fidelity(args),
                       final={"steps": args.final_finetune_steps, "export": EXPORT_FOR[runtime],
                              "distill": False},  # as the rows before distilling became the default
                       space={"preset": preset})
    search_seconds = time.perf_counter() - start
    ratio, ms, base_ms = latency_ratio(result.pruned_model, model, inputs, rounds=7, runtime=runtime)
    check = result.summary.latency_check
    return {"runtime": runtime, "budget": budget.describe(), "fraction": args.fraction, "latency_ratio": ratio,
            "latency_ms": ms, "baseline_latency_ms": base_ms,
            "met_within_5pct": ratio <= args.fraction * (1 + TOLERANCE),
            "flops_ratio": result.summary.flops_ratio, "test_accuracy": result.summary.pruned.accuracy,
            "table_build_seconds": build_seconds, "search_seconds": search_seconds,
            "latency_check": None if check is None else asdict(check),
            "slower_in": list(result.summary.slower_in), "evaluations": len(result.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.6, help="latency budget fraction (default 0.6)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, of " + ", ".join(RUNTIMES))
    parser.add_argument("--searcher", default="random")
    parser.add_argument("--evaluations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final-finetune-steps", type=int, default=50)
    parser.add_argument("--results", help="result file (default bench/results/latency_search.json)")
    add_fidelity_options(parser)
    args = apply_quick(parser.parse_args(), RESULTS / "latency_search.json", RESULTS / "quick" / "latency_search.json")
    if args.quick:  # the small CNN is mostly per-layer overhead: pruning reaches about 70% of its eager latency
        args.evaluations, args.final_finetune_steps, args.fraction = 4, 10, 0.9
        args.runtimes = "eager,onnxruntime" if args.runtimes == ",".join(RUNTIMES) else args.runtimes
    runtimes = args.runtimes.split(",")
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        parser.error(f"unknown --runtimes {unknown}; accepted: {', '.join(RUNTIMES)}")
    model, data, _ = load_baseline(args)
    config = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "searcher": args.searcher,
              "seed": args.seed, "evaluations": args.evaluations, "evaluator": fidelity(args),
              "final_finetune_steps": args.final_finetune_steps, "latency": {"batch": 1, "threads": 1},
              "fraction": args.fraction, "tolerance": TOLERANCE}
    results = Path(args.results)  # rows of other runtimes are kept: runs can be split and resumed
    kept = json.loads(results.read_text()).get("rows", []) if results.exists() else []
    rows = [r for r in kept if r.get("runtime") in RUNTIMES and r["runtime"] not in runtimes]
    for runtime in runtimes:  # written after each runtime, so a stopped run keeps its rows
        rows.append(run(args, runtime, model, data))
        print(rows[-1], flush=True)
        rows.sort(key=lambda r: RUNTIMES.index(r["runtime"]))
        write_json(results, {"config": config, "rows": rows})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
