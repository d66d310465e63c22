"""A latency-budgeted search against a FLOPs-budgeted one at equal measured latency.

The FLOPs-budgeted search runs first; its final model's latency ratio (measured side by side with the
unpruned model: batch 1, one thread) becomes the budget of a latency-budgeted search with the same searcher,
evaluator and number of evaluations. Both final models are measured again the same way.

    python bench/latency_search.py              # ResNet-20 on Fashion-MNIST, sensitivity, 50 evaluations
    python bench/latency_search.py --quick      # small CNN on digits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from dataclasses import asdict

from common import RESULTS, add_fidelity_options, apply_quick, fidelity, load_baseline, write_json

import autoprune as ap
from search_spaces import default_preset
from search_spaces.measure import latency_ratio


def run(args: argparse.Namespace, budget: ap.Budget, model, data) -> dict[str, Any]:
    inputs = data.example_inputs()
    result = ap.search(model, inputs, budget=budget, train_data=data.train, val_data=data.val, test_data=data.test,
                       searcher=args.searcher, trials=args.evaluations, seed=args.seed, evaluator=fidelity(args),
                       final={"steps": args.final_finetune_steps}, space={"preset": default_preset(args.model)})
    ratio, ms, base_ms = latency_ratio(result.pruned_model, model, inputs, rounds=7)
    check = result.summary.latency_check
    return {"budget": budget.describe(), "metric": budget.metric, "fraction": budget.fraction,
            "test_accuracy": result.summary.pruned.accuracy,
            "baseline_test_accuracy": result.summary.baseline.accuracy,
            "flops_ratio": result.summary.flops_ratio, "latency_ratio": ratio, "latency_ms": ms,
            "baseline_latency_ms": base_ms,
            "latency_check": None if check is None else asdict(check),
            "evaluations": len(result.trials)}


def reachable_latency_ratio(model, inputs, args: argparse.Namespace) -> float:
    """The latency table's predicted ratio with every group at its max ratio (the table is cached for the search)."""
    space = ap.SearchSpace.from_model(model, inputs, preset=default_preset(args.model))
    cost_model = ap.CostModel(space, ap.latency_table(model, space, inputs))
    return cost_model.ratio(space.max_ratios, ap.Budget.latency(1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flops", type=float, default=0.5, help="FLOPs fraction of the first search (default 0.5)")
    parser.add_argument("--searcher", default="sensitivity")
    parser.add_argument("--evaluations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final-finetune-steps", type=int, default=300)
    parser.add_argument("--results", help="result file (default bench/results/latency_search.json)")
    add_fidelity_options(parser)
    args = apply_quick(parser.parse_args(), RESULTS / "latency_search.json", RESULTS / "quick" / "latency_search.json")
    if args.quick:
        args.evaluations, args.final_finetune_steps = 12, 20
    model, data, _ = load_baseline(args)
    by_flops = run(args, ap.Budget.flops(args.flops), model, data)
    print(by_flops, flush=True)
    # timing noise can put a tiny model's measured ratio above 1, or below what the latency table says pruning can
    # reach at all (a 0.5 ms model is mostly overhead): the budget stays between the two
    floor = reachable_latency_ratio(model, data.example_inputs(), args)
    fraction = min(max(by_flops["latency_ratio"], floor), 1.0)
    by_latency = run(args, ap.Budget.latency(fraction), model, data)
    print(by_latency, flush=True)
    config = {"model": args.model, "dataset": args.dataset, "searcher": args.searcher, "seed": args.seed,
              "evaluations": args.evaluations, "evaluator": fidelity(args),
              "final_finetune_steps": args.final_finetune_steps, "latency": {"batch": 1, "threads": 1}}
    write_json(Path(args.results), {"config": config, "rows": [by_flops, by_latency]})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
