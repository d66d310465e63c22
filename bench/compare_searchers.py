"""Search quality: every searcher at FLOPs budgets (or, element-wise, non-zero budgets), same evaluator fidelity
and evaluations, 3 seeds.

For each (method, budget, seed) this runs ``autoprune.search`` on a baseline trained on Fashion-MNIST
(ResNet-20 by default, ``--model mobilenet_v2`` for the depthwise family; trained once and cached), then the
same final finetune for every best policy, and writes one JSON file per row to
``bench/results/search_quality/<model>-<method>-<budget>-<seed>.json`` (machine, versions, config and the
row, with the best-so-far validation accuracy after every evaluation). Rows already there are skipped and a stopped
search resumes from its run directory, so the benchmark runs in parts (row locks are ``flock``s, released when a
process dies; a resumed row records ``resumed_trials`` and adds those trials' seconds to its wall time). A results
directory holds one table per model: it takes no rows made with other settings (evaluator, evaluations, final
finetune, or other baseline weights, whose sha256 each row records). ``bench/report.py`` renders
``docs/benchmarks.md`` from the rows.

    python bench/compare_searchers.py                       # 6 methods x budgets 0.3,0.5 x seeds 0,1,2
    python bench/compare_searchers.py --methods amc --budgets 0.3 --seeds 0
    python bench/compare_searchers.py --model mobilenet_v2 --budgets 0.3 --seeds 0,1 \
        --methods uniform,global,sensitivity,amc,optuna
    python bench/compare_searchers.py --quick               # small CNN on digits, 12 evaluations
    python bench/compare_searchers.py --granularity element --budgets 0.1 --methods uniform,global,sensitivity,amc
    python bench/compare_searchers.py --budgets 0.3 --methods random,amc,optuna --evaluations 30 \
        --scheduler cascade --promote 0.2 --results bench/results/quality_per_compute/resnet20-cascade-30 \
        --run-root bench/runs/quality_per_compute/cascade-30   # quality per compute: a cheaper search

Each row records its ``evaluation_seconds`` (the sum of its candidates' evaluation seconds, one thread each),
``full_scores`` (candidates scored at the full fidelity), ``full_equivalents`` (its evaluation seconds in units of
its own median full evaluation: the compute as a count of full evaluations, whatever else loaded the machine) and
``rescore_seconds`` (the final step's re-score). ``--recount`` recomputes the first three of the rows in
``--results`` from their run directories' trials tables.
The final step distilling instead, on the same searches' best policies (they resume, finished, from their run
directories; the final step runs again, distilled):

    python bench/compare_searchers.py --budgets 0.3 --methods random --evaluations 50 --final-distill \
        --results bench/results/quality_per_compute/resnet20-full-50-distill \
        --run-root bench/runs/quality_per_compute/full-50

With ``--granularity element`` a budget is the fraction of parameters left non-zero (``Budget.nonzeros``), each
weight tensor gets its own sparsity, rows go to ``bench/results/sparsity/element-<model>-...json`` and carry
the non-zero count, the measured sizes of the dense and sparse exports (raw and gzip) and the measured latency.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    METHODS,
    RESULTS,
    add_fidelity_options,
    apply_quick,
    changed_settings,
    fidelity,
    load_baseline,
    write_json,
)

import autoprune as ap
from autoprune.builtins.registry import SEARCHERS
from autoprune.evaluation.evaluator import validate
from autoprune.study.identity import model_digest
from search_spaces import default_preset
from search_spaces.ground.io import atomic_write_text

MAX_EVALUATIONS = 200


def method_options(method: str, evaluations: int, groups: int) -> dict[str, Any]:
    """Searcher options for a method at a number of evaluations.

    AMC warms up on a third of them; the sensitivity scan gets as many levels per group as fit.
    """
    if method == "amc":
        return {"warmup": max(1, evaluations // 3)}
    if method == "optuna":
        return {"sampler": "tpe"}
    if method == "sensitivity":
        count = max(1, min(10, (evaluations - 2) // groups))
        return {"levels": [round((i + 1) / count, 4) for i in range(count)]}
    return {}


def best_so_far(trials: pd.DataFrame, fidelity: int) -> list[float | None]:
    """Best feasible full-fidelity validation accuracy after each evaluation, in trial order."""
    best, curve = -math.inf, []
    for _, row in trials.sort_values("trial_id").iterrows():
        if row["status"] == "ok" and row["feasible"] and row["fidelity"] >= fidelity:
            best = max(best, float(row["accuracy"]))
        curve.append(best if math.isfinite(best) else None)
    return curve


def settings_conflict(results: Path, config: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The first row in ``results`` of the same model and granularity made with other settings (evaluator,
    evaluations, baseline weights...), with what differs as ``{key: (theirs, ours)}``: the rows of one table share
    their settings, so such a directory takes no new rows. A row that records no baseline sha256 (rows before it
    was recorded) differs from every baseline: its weights cannot be checked."""
    for path in sorted(results.glob("*.json")):
        try:
            saved = json.loads(path.read_text())["config"]
            same_kind = saved.get("model") == config["model"] and saved.get("granularity") == config.get("granularity")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise SystemExit(f"{path} is not a benchmark row ({exc!r}); move it out of {results}") from exc
        differing = changed_settings(saved, config)
        if same_kind and differing:
            return path, differing
    return None


def refuse_other_settings(results: Path, config: dict[str, Any]) -> None:
    """Exit, naming the row and what differs, when ``results`` holds rows made with other settings."""
    conflict = settings_conflict(results, config)
    if conflict is not None:
        path, differing = conflict
        raise SystemExit(f"{path} was made with other settings ({{setting: (its, this run's)}}: {differing}); the "
                         "rows of one table share their settings: use another --results")


def row_name(model: str, method: str, budget: float, seed: int, granularity: str = "channel") -> str:
    """The file stem (and run directory name) of one benchmark row."""
    stem = f"{model}-{method}-{budget}-{seed}"
    return stem if granularity == "channel" else f"{granularity}-{stem}"


@contextlib.contextmanager
def row_lock(path: Path) -> Iterator[bool]:
    """Whether this process may run the row: False while another process holds the ``flock`` on its lock file
    (parts of the benchmark run side by side, one per core). The OS releases it when the holder ends, so a
    process killed with its session leaves no lock behind (as ``autoprune.study.rundir``'s lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"skip {path.stem} (another process is running it)", flush=True)
            yield False
            return
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        yield True
    finally:
        os.close(descriptor)  # closing drops the flock


def compute_figures(trials: pd.DataFrame, full: int) -> dict[str, Any]:
    """What a search's candidates cost: seconds (one thread each), how many were scored at the ``full`` fidelity,
    and the seconds in units of the search's own median full evaluation (its load cancels out). A candidate that
    passed rungs validated once per rung: the unit leaves those extra validations out, as a plain full evaluation
    has one."""
    seconds = float(trials["seconds"].sum())
    finished = trials[(trials["status"] == "ok") & (trials["fidelity"] >= full)]
    extra = finished["validate_seconds"] * finished["rung"] / (finished["rung"] + 1)
    unit = float((finished["seconds"] - extra).median()) if len(finished) else math.nan
    return {"evaluation_seconds": seconds, "full_scores": len(finished), "full_equivalents": seconds / unit}


def recount(args: argparse.Namespace) -> None:
    """Recompute the compute figures of every row in ``--results`` from its run directory's trials table."""
    for path in sorted(Path(args.results).glob("*.json")):
        record = json.loads(path.read_text())
        row = record["row"]
        name = row_name(row["model"], row["method"], row["budget"], row["seed"], args.granularity)
        trials = pd.read_csv(Path(args.run_root) / name / "trials.csv")
        row.update(compute_figures(trials, record["config"]["finetune_steps"]))
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")  # the row's own machine and date kept
        print(f"recounted {path.name}: {row['full_equivalents']:.1f} full evaluations")


def scheduler_setting(args: argparse.Namespace) -> dict[str, Any]:
    """The ``run={"scheduler": ...}`` setting the arguments ask for."""
    if args.scheduler == "cascade":
        return {"kind": "cascade", "promote": args.promote}
    return {"kind": args.scheduler}


def run_row(args: argparse.Namespace, method: str, budget: float, seed: int, model, data) -> dict[str, Any]:
    inputs = data.example_inputs()
    element = args.granularity == "element"
    space = ap.SearchSpace.from_model(model, inputs, preset=None if element else default_preset(args.model),
                                      granularity=args.granularity)
    run_dir = Path(args.run_root) / row_name(args.model, method, budget, seed, args.granularity)
    start, started_at = time.perf_counter(), time.time()
    result = ap.search(
        model, inputs, budget=ap.Budget.nonzeros(budget) if element else ap.Budget.flops(budget),
        train_data=data.train, val_data=data.val,
        test_data=data.test, searcher=method, searcher_options=method_options(method, args.evaluations, len(space)),
        trials=args.evaluations, seed=seed, evaluator=fidelity(args), space=space,
        final={"steps": args.final_finetune_steps, "distill": args.final_distill},
        run={"dir": run_dir, "resume": run_dir.exists(), "scheduler": scheduler_setting(args)})
    seconds = time.perf_counter() - start
    summary = result.summary
    ok = result.trials[result.trials["status"] == "ok"]
    earlier = result.trials[result.trials["finished_at"] < started_at]  # a resumed search's trials of before
    extra = {}
    if element:
        extra = {"granularity": "element", "nonzeros_ratio": summary.nonzeros_ratio,
                 "nonzeros": summary.pruned.nonzeros, "baseline_nonzeros": summary.baseline.nonzeros,
                 "sizes": ap.export_sizes(result.pruned_model.state_dict()),  # both written the same way
                 "baseline_sizes": ap.export_sizes(model.state_dict())}
    return {
        **extra,
        "model": args.model, "method": method, "budget": budget, "seed": seed,
        "test_accuracy": summary.pruned.accuracy,
        "baseline_test_accuracy": summary.baseline.accuracy,
        "flops_ratio": summary.flops_ratio,
        "params_ratio": summary.params_ratio,
        "latency_ms": summary.pruned.latency_ms,
        "baseline_latency_ms": summary.baseline.latency_ms,
        "search_val_accuracy": summary.search_accuracy,
        "evaluations": len(result.trials),
        "search_seconds": seconds + float(earlier["seconds"].sum()),
        "resumed_trials": len(earlier),
        "seconds_per_evaluation": float(ok["seconds"].median()) if len(ok) else None,
        # the compute the search's candidates cost (one thread each), and the final step's re-score of the best few
        **compute_figures(result.trials, args.finetune_steps),
        "rescore_seconds": sum(r.seconds for r in summary.rescored),
        "best_val_accuracy_by_evaluation": best_so_far(result.trials, args.finetune_steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated searcher names")
    parser.add_argument("--budgets", default="0.3,0.5",
                        help="comma-separated FLOPs fractions kept (non-zero fractions with --granularity element; "
                        "default 0.3,0.5)")
    parser.add_argument("--granularity", choices=("channel", "element"), default="channel",
                        help="channel groups (default) or one sparsity per weight tensor")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--evaluations", type=int, default=100,
                        help=f"evaluations per search (default 100, at most {MAX_EVALUATIONS})")
    parser.add_argument("--final-finetune-steps", type=int, default=300)
    parser.add_argument("--run-root", default="bench/runs/search_quality", help="search run directories")
    parser.add_argument("--results", help="directory of the per-row JSON files (default bench/results/search_quality)")
    parser.add_argument("--scheduler", choices=("none", "asha", "cascade"), default="none",
                        help="multi-fidelity scheduler of every search (default none)")
    parser.add_argument("--promote", type=float, default=0.25,
                        help="cascade: the share of screened candidates scored fully (default 0.25)")
    parser.add_argument("--recount", action="store_true",
                        help="recompute the compute figures of the rows in --results from their run directories")
    parser.add_argument("--final-distill", action="store_true",
                        help="the final finetune distills from the unpruned model (pointed at another table's "
                        "--run-root, it resumes those finished searches: the same best policies, distilled)")
    add_fidelity_options(parser)
    parsed = parser.parse_args()
    kind = "search_quality" if parsed.granularity == "channel" else "sparsity"
    args = apply_quick(parsed, RESULTS / kind, RESULTS / "quick" / kind)
    if args.quick:
        args.evaluations, args.final_finetune_steps, args.seeds = 12, 20, "0"
        args.run_root = str(Path(args.results) / "runs")
    if not 1 <= args.evaluations <= MAX_EVALUATIONS:
        parser.error(f"--evaluations must be in [1, {MAX_EVALUATIONS}], got {args.evaluations}")
    unknown = set(args.methods.split(",")) - set(SEARCHERS)
    if unknown:
        parser.error(f"unknown --methods {sorted(unknown)}; accepted: {', '.join(sorted(SEARCHERS))}")
    if args.recount:
        return recount(args)
    results = Path(args.results)
    config = {k: getattr(args, k) for k in ("model", "dataset", "epochs", "bn_batches", "finetune_steps",
                                            "val_batches", "final_finetune_steps", "evaluations")}
    if args.granularity != "channel":  # channel rows predate the option: their config does not name it
        config["granularity"] = args.granularity
    if args.scheduler != "none":  # as granularity: rows before the option ran without a scheduler
        config["scheduler"] = scheduler_setting(args)
    if args.final_distill:
        config["final_distill"] = True
    refuse_other_settings(results, config)  # before the baseline is (perhaps) trained
    model, data, info = load_baseline(args)
    config["checkpoint"] = Path(info["checkpoint"]).name
    config["baseline_sha256"] = model_digest(model)
    config["baseline_test_accuracy"] = validate(model, data.test)[0]
    refuse_other_settings(results, config)
    for budget in (float(b) for b in args.budgets.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for method in args.methods.split(","):
                name = row_name(args.model, method, budget, seed, args.granularity)
                path = results / f"{name}.json"
                if path.exists():
                    print(f"skip {path.name} (done)")
                    continue
                with row_lock(Path(args.run_root) / f"{name}.lock") as mine:
                    if not mine or path.exists():  # running elsewhere, or finished there meanwhile
                        continue
                    row = run_row(args, method, budget, seed, model, data)
                    print(json.dumps(row), flush=True)  # printed whole first: a refused row is not lost
                    refuse_other_settings(results, config)  # a process beside this one may have written rows
                    write_json(path, {"config": {**config, "seeds": args.seeds}, "row": row})


if __name__ == "__main__":
    main()
