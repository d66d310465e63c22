"""Schedules and recovery on one policy: one-shot vs AGP at 90% sparsity, and finetune vs finetune distilling from the
unpruned model vs learning-rate rewinding vs training from scratch for a structured 30%-FLOPs policy.

Both policies are the ``uniform`` searcher's (one evaluation: the policy is fixed, only the final step differs), on
the benchmark baseline (ResNet-20 on Fashion-MNIST, cached). Every variant gets the same final training steps
(default 300) and runs for seeds 0, 1, 2. One JSON file per row goes to
``bench/results/sparsity_recovery/<experiment>-<variant>-<seed>.json`` (``...-<seed>-<steps>steps.json`` for a
``--final-steps`` other than the default, so longer schedules sit beside the default ones); rows already there
are skipped, so the benchmark runs in parts (one process per core: rows are locked while they run).
``bench/report.py`` renders the "Schedules and recovery" section of ``docs/benchmarks.md``.

    python bench/sparsity_recovery.py                          # both experiments, seeds 0,1,2
    python bench/sparsity_recovery.py --experiments schedule --seeds 0
    python bench/sparsity_recovery.py --experiments schedule --variants one_shot,agp_early --final-steps 1000
    python bench/sparsity_recovery.py --quick                  # small CNN on digits
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, add_fidelity_options, apply_quick, fidelity, load_baseline, write_json
from compare_searchers import row_lock

import autoprune as ap
from autoprune.study.identity import model_digest
from search_spaces import default_preset


def agp_until(fraction: float) -> Callable[[int], dict[str, Any]]:
    """AGP final-step options whose pruning ends at ``fraction`` of the final steps (the rest recovers)."""
    return lambda steps: {"schedule": {"kind": "agp", "frequency": 10, "end_step": round(fraction * steps)}}


# experiment -> (granularity, budget, {variant: FinalConfig options of the final step, or a function of its steps})
EXPERIMENTS: dict[str, tuple[str, ap.Budget, dict[str, dict[str, Any] | Callable[[int], dict[str, Any]]]]] = {
    "schedule": ("element", ap.Budget.nonzeros(0.1), {
        "one_shot": {"schedule": "one_shot"},
        "agp": {"schedule": {"kind": "agp", "frequency": 10}},
        "agp_early": agp_until(1 / 3),
    }),
    "recovery": ("channel", ap.Budget.flops(0.3), {
        "finetune": {"recovery": "finetune"},
        "distill": {"recovery": "finetune", "distill": True},
        "lr_rewind": {"recovery": "lr_rewind"},
        "scratch": {"recovery": "scratch"},
    }),
}


DEFAULT_FINAL_STEPS = 300
QUICK_FINAL_STEPS = 20


def row_name(experiment: str, variant: str, seed: int, final_steps: int, default_steps: int) -> str:
    """The row's file stem: the step count is part of it unless it is the mode's default."""
    steps = "" if final_steps == default_steps else f"-{final_steps}steps"
    return f"{experiment}-{variant}-{seed}{steps}"


def run_row(args: argparse.Namespace, experiment: str, variant: str, seed: int, model, data,
            run_dir: Path) -> dict[str, Any]:
    granularity, budget, variants = EXPERIMENTS[experiment]
    inputs = data.example_inputs()
    space = ap.SearchSpace.from_model(model, inputs, granularity=granularity,
                                      preset=default_preset(args.model) if granularity == "channel" else None)
    options = variants[variant]
    start = time.perf_counter()
    result = ap.search(
        model,
        inputs,
        budget=budget,
        train_data=data.train,
        val_data=data.val,
        test_data=data.test,
        searcher="uniform",
        trials=1,
        seed=seed,
        evaluator=fidelity(args),
        space=space,
        # plain cross-entropy unless the variant distills: each variant changes one thing from the plain finetune
        final={"steps": args.final_steps, "distill": False,
               **(options(args.final_steps) if callable(options) else options)},
        run={"dir": run_dir},
    )
    summary = result.summary
    return {
        "experiment": experiment, "variant": variant, "seed": seed, "model": args.model,
        "granularity": granularity, "budget": budget.to_dict(),
        "test_accuracy": summary.pruned.accuracy, "baseline_test_accuracy": summary.baseline.accuracy,
        "flops_ratio": summary.flops_ratio, "nonzeros_ratio": summary.nonzeros_ratio,
        "latency_ms": summary.pruned.latency_ms, "baseline_latency_ms": summary.baseline.latency_ms,
        "sizes": ap.export_sizes(result.pruned_model.state_dict()),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS), help="comma-separated: schedule, recovery")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", help="comma-separated variants to run (default: every variant of each "
                        "experiment)")
    parser.add_argument("--final-steps", type=int, default=DEFAULT_FINAL_STEPS,
                        help=f"training steps after (or while) pruning (default {DEFAULT_FINAL_STEPS})")
    parser.add_argument("--run-root", default="bench/runs/sparsity_recovery")
    parser.add_argument("--results", help="directory of the per-row JSON files (default "
                        "bench/results/sparsity_recovery)")
    add_fidelity_options(parser)
    args = apply_quick(parser.parse_args(), RESULTS / "sparsity_recovery", RESULTS / "quick" / "sparsity_recovery")
    if args.quick:
        args.final_steps, args.seeds, args.run_root = QUICK_FINAL_STEPS, "0", str(Path(args.results) / "runs")
    unknown = set(args.experiments.split(",")) - set(EXPERIMENTS)
    if unknown:
        parser.error(f"unknown --experiments {sorted(unknown)}; accepted: {', '.join(EXPERIMENTS)}")
    known = [v for experiment in args.experiments.split(",") for v in EXPERIMENTS[experiment][2]]
    variants = args.variants.split(",") if args.variants else known
    if set(variants) - set(known):
        parser.error(f"unknown --variants {sorted(set(variants) - set(known))}; accepted: {', '.join(known)}")
    if args.final_steps <= 0:
        parser.error(f"--final-steps must be a positive number of steps, got {args.final_steps}")
    model, data, info = load_baseline(args)
    config = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "final_steps": args.final_steps,
              "checkpoint": Path(info["checkpoint"]).name, "baseline_sha256": model_digest(model), **fidelity(args)}
    for experiment in args.experiments.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in (v for v in EXPERIMENTS[experiment][2] if v in variants):
                name = row_name(experiment, variant, seed, args.final_steps,
                                QUICK_FINAL_STEPS if args.quick else DEFAULT_FINAL_STEPS)
                path = Path(args.results) / f"{name}.json"
                if path.exists():
                    done = json.loads(path.read_text())["config"]["final_steps"]
                    if done != args.final_steps:
                        sys.exit(f"{path} holds a row trained {done} steps, not {args.final_steps}: move it away")
                    print(f"skip {path.name} (done)")
                    continue
                run_dir = Path(args.run_root) / name
                with row_lock(Path(args.run_root) / f"{name}.lock") as mine:
                    if not mine or path.exists():
                        continue
                    if run_dir.exists():  # a row stopped midway: its final step starts again
                        shutil.rmtree(run_dir)
                    row = run_row(args, experiment, variant, seed, model, data, run_dir)
                    write_json(path, {"config": config, "row": row})
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
