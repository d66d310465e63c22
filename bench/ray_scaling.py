"""Evaluations per minute: local executor vs Ray Tune executor with 1 and 2 single-threaded workers.

ResNet-20 on Fashion-MNIST (the cached baseline), random search, the same evaluator fidelity for every
setting, measured in turn in one process (``--repeats`` rounds, medians). Per setting, from the time each
trial finished and the evaluator's own seconds per trial:

- start-up: from calling ``search()`` to the start of the first evaluation (search set-up; Ray's start,
  its worker and the evaluator's fetch);
- steady evaluations per minute: completions after the first ``w`` (w workers) over the time after them;
- seconds per evaluation per worker in steady state, the evaluator's own seconds per evaluation (pruning,
  recalibration, finetuning, validation) and the overhead per trial between the two.

Writes ``bench/results/ray_scaling.json``; ``bench/report.py`` renders it.

    python bench/ray_scaling.py [--evaluations 12] [--finetune-steps 20] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import BASELINE, RESULTS, load_baseline, write_json

import autoprune as ap
from autoprune.study.study import Progress

SETTINGS = {
    "local, 1 thread": ("local", 1),
    "ray, 1 worker": (ap.RayOptions(cpus_per_trial=1, max_concurrent=1), 1),
    "ray, 2 workers": (ap.RayOptions(cpus_per_trial=1, max_concurrent=2), 2),
}


def timed_search(
    model, data, args: argparse.Namespace, executor: str | ap.RayOptions, workers: int
) -> dict[str, float]:
    """One search's wall time, start-up, steady throughput and per-trial overhead (final report not timed)."""
    start = time.perf_counter()
    finished: list[float] = []

    def on_progress(event: Progress) -> None:
        if event.stage == "trial":
            finished.append(time.perf_counter() - start)

    result = ap.search(
        model, data.example_inputs(), budget=ap.Budget.flops(0.5), train_data=data.train, val_data=data.val,
        searcher="random", trials=args.evaluations, seed=0, executor=executor,
        evaluator={"bn_batches": 5, "finetune_steps": args.finetune_steps, "val_batches": 4},
        final={"measure_latency": False, "steps": 0}, run={"progress": on_progress})
    evaluator_seconds = list(result.trials["seconds"])  # in the order the trials finished
    assert len(finished) == len(evaluator_seconds) == args.evaluations > workers
    steady = finished[-1] - finished[workers - 1]
    per_worker = workers * steady / (args.evaluations - workers)
    own = statistics.mean(evaluator_seconds[workers:])
    return {
        "wall_seconds": finished[-1], "startup_seconds": finished[0] - evaluator_seconds[0],
        "steady_evaluations_per_minute": 60 * (args.evaluations - workers) / steady,
        "seconds_per_evaluation": per_worker, "evaluator_seconds": own, "overhead_seconds_per_trial": per_worker - own,
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=12, help="evaluations per setting (default 12)")
    parser.add_argument("--finetune-steps", type=int, default=20, help="finetune steps per evaluation")
    parser.add_argument("--epochs", type=int, default=BASELINE["epochs"], help="baseline training epochs (cached)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the settings in turn (medians)")
    parser.add_argument("--results", default=str(RESULTS / "ray_scaling.json"), help="result file")
    parser.add_argument("--note", default="", help="what else ran on the machine (recorded in the result)")
    args = parser.parse_args()
    model, data, _ = load_baseline(argparse.Namespace(**{**BASELINE, "epochs": args.epochs}))
    torch.set_num_threads(1)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, setting in SETTINGS.items():
            runs[name].append(timed_search(model, data, args, *setting))
    settings = {name: medians(r) for name, r in runs.items()}
    local, one, two = (settings[name]["steady_evaluations_per_minute"] for name in SETTINGS)
    result: dict[str, Any] = {
        "model": "resnet20", "dataset": "fashion-mnist", "evaluations": args.evaluations,
        "finetune_steps": args.finetune_steps, "repeats": args.repeats, "settings": settings, "runs": runs,
        "ray_1_worker_vs_local": one / local, "ray_2_workers_vs_local": two / local,
        "ray_overhead_seconds_per_trial": settings["ray, 1 worker"]["overhead_seconds_per_trial"],
        "note": "settings measured in turn in one process, medians over the repeats; " + args.note,
    }
    write_json(Path(args.results), result)
    print(f"wrote {args.results}: " + ", ".join(f"{name} {s['steady_evaluations_per_minute']:.2f}/min steady"
                                                for name, s in settings.items()))


if __name__ == "__main__":
    main()
