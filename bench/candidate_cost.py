"""Where a candidate's time goes: copy, prune, BN recalibration, finetune, validation vs pure compute.

Runs a random search (in-process, the benchmark's evaluator fidelity, torch's default threads) and reads
the per-phase seconds the evaluator records for every trial. For the same pruned models it then times the
unavoidable compute alone: the same number of forward passes (BN recalibration, validation) and
forward/backward/SGD steps (finetuning) on batches of the same sizes already in memory (training batches, and
validation batches for validation). ``overhead`` = median candidate
time / median pure compute.

    python bench/candidate_cost.py            # ResNet-20 on Fashion-MNIST, 12 candidates
    python bench/candidate_cost.py --quick    # small CNN on digits
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, add_fidelity_options, apply_quick, fidelity, load_baseline, write_json

import autoprune as ap
from autoprune.prune.channels import prune
from autoprune.study.trials import policy_of
from search_spaces import default_preset

PHASES = ("copy", "prune", "recalibrate", "finetune", "validate")


def pure_compute_seconds(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                         val_batches: list[tuple[torch.Tensor, torch.Tensor]], config: dict) -> float:
    """Seconds of the forward/backward work an evaluation must do, on in-memory batches of the same sizes (training
    batches for recalibration and finetuning, validation batches for validation), nothing else."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cycle = itertools.cycle(batches)
    start = time.perf_counter()
    model.train()
    with torch.no_grad():
        for inputs, _ in itertools.islice(cycle, config["bn_batches"]):
            model(inputs)
    for inputs, targets in itertools.islice(cycle, config["finetune_steps"]):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for inputs, _ in val_batches:
            model(inputs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=12, help="random candidates timed (default 12)")
    parser.add_argument("--budget", type=float, default=0.3, help="FLOPs fraction kept (default 0.3)")
    parser.add_argument("--results", help="result file (default bench/results/candidate_cost.json)")
    add_fidelity_options(parser)
    args = apply_quick(parser.parse_args(), RESULTS / "candidate_cost.json",
                       RESULTS / "quick" / "candidate_cost.json")
    model, data, _ = load_baseline(args)
    evaluator = fidelity(args)
    inputs = data.example_inputs()
    result = ap.search(model, inputs, budget=ap.Budget.flops(args.budget), train_data=data.train,
                       val_data=data.val, searcher="random", trials=args.candidates, evaluator=evaluator,
                       final={"measure_latency": False}, space={"preset": default_preset(args.model)})
    trials = result.trials[result.trials["status"] == "ok"]
    batches = list(itertools.islice(iter(data.train), 8))
    val_batches = list(itertools.islice(iter(data.val), evaluator["val_batches"]))
    copies, pure = [], []
    for _, row in trials.iterrows():
        tick = time.perf_counter()
        copy.deepcopy(model)
        copies.append(time.perf_counter() - tick)
        policy = policy_of(row, result.space)
        pruned = prune(model, policy, inputs, space=result.space).model
        pure.append(pure_compute_seconds(pruned, batches, val_batches, evaluator))
    median = {
        "copy": statistics.median(copies),
        "prune": statistics.median(trials["prune_seconds"]) - statistics.median(copies),
        "recalibrate": statistics.median(trials["recalibrate_seconds"]),
        "finetune": statistics.median(trials["finetune_seconds"]),
        "validate": statistics.median(trials["validate_seconds"]),
    }
    total = statistics.median(trials["seconds"])
    payload: dict[str, Any] = {
        "config": {"model": args.model, "dataset": args.dataset, "budget": args.budget,
                   "candidates": args.candidates, "evaluator": evaluator},
        "median_seconds": {**median, "total": total, "pure_compute": statistics.median(pure)},
        "share": {k: v / total for k, v in median.items()},
        "overhead_ratio": total / statistics.median(pure),
        "candidates_per_minute": 60 / statistics.mean(trials["seconds"]),
    }
    write_json(Path(args.results), payload)
    print(f"wrote {args.results}: {payload['median_seconds']} overhead x{payload['overhead_ratio']:.2f}, "
          f"{payload['candidates_per_minute']:.1f} candidates/min")


if __name__ == "__main__":
    main()
