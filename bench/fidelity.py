"""Candidate score fidelity: which cheap score (proxy) best predicts a pruned model's final test accuracy?

A fixed, deterministic list of feasible policies at a 30% FLOPs budget on ResNet-20 / Fashion-MNIST spans the
space (uniform, global magnitude, linear skews, FLOPs-driven and protective allocations, random policies fitted
onto the budget, extremes). Every policy gets the search benchmark's final recovery (BN recalibration, 300
finetune steps at lr 0.01; the ground truth is test accuracy on the full test split) and every proxy:
adaptive-BN (recalibration only), cross-entropy finetuning for 10/30/100 steps, knowledge distillation from the
unpruned model for 10/30/100 steps, on 4 or 16 validation batches, scored by accuracy or by validation loss.
Each proxy is one run of the product's Evaluator (its own cosine schedule; `kd` runs use its `distill` option) and its
seconds per candidate are measured (prune +
recovery + validation). One row per policy is appended to ``bench/results/fidelity_rows.jsonl`` (a stopped run
resumes); at the end, Spearman and Kendall correlations with bootstrap intervals go to
``bench/results/fidelity.json`` and ``bench/report.py`` renders them.

    python bench/fidelity.py                    # 40 policies, ~5 min each on one thread (--shard I/N: one per core)
    python bench/fidelity.py --policies 60
    python bench/fidelity.py --summarize        # fidelity.json from the rows so far
    python bench/fidelity.py --quick            # small CNN on digits, 6 policies, tiny steps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import BASELINE, FIDELITY, QUICK_BASELINE, QUICK_FIDELITY, RESULTS, load_baseline, write_json

import autoprune as ap
from agents.global_magnitude import GlobalSearcher
from autoprune.evaluation.evaluator import KD_ALPHA, KD_TEMPERATURE, Evaluator, validate
from autoprune.searcher import SearchContext

BUDGET = 0.3
SEED = 0
GROUND_TRUTH_STEPS = 300  # bench/compare_searchers.py --final-finetune-steps
# A search compares policies fitted onto the budget's boundary: the correlation among those alone is the harder test.
NEAR_BUDGET = 0.9  # policies at >= 90% of the budget's FLOPs
DEFAULT_RULE = "among proxies whose Spearman is within 0.05 of the best Spearman, the cheapest (seconds per candidate)"


@dataclass(frozen=True)
class Run:
    """One recovery of a pruned candidate: BN recalibration, ``steps`` of (KD) finetuning, validation."""

    name: str
    steps: int
    val_batches: int
    kd: bool = False


@dataclass(frozen=True)
class Proxy:
    """A candidate score: ``metric`` (accuracy, or loss where lower is better) of one run."""

    name: str
    run: str
    metric: str = "accuracy"


def runs_and_proxies(steps: tuple[int, int, int]) -> tuple[list[Run], list[Proxy]]:
    """The recovery runs (short, medium and long finetuning ``steps``) and the proxies read from them."""
    short, medium = steps[:2]
    runs = [Run("adaptive_bn_val4", 0, 4), Run("adaptive_bn_val16", 0, 16)]
    runs += [Run(f"finetune{s}", s, 4) for s in steps]
    runs += [Run(f"finetune{s}_val16", s, 16) for s in (short, medium)]
    runs += [Run(f"kd{s}", s, 4, kd=True) for s in steps]
    proxies = [Proxy(r.name, r.name) for r in runs]
    proxies += [Proxy(f"{name}_loss", name, "loss")
                for name in ("adaptive_bn_val16", f"finetune{short}_val16", f"finetune{medium}_val16")]
    return runs, proxies


# -- policies ----------------------------------------------------------------------------------------------


def _bisect(make: Callable[[float], dict[str, float]], feasible: Callable[[dict[str, float]], bool],
            hi: float) -> dict[str, float] | None:
    """``make(t)`` for the smallest ``t`` in [0, hi] that is feasible (feasibility monotone in ``t``), or None."""
    if not feasible(make(hi)):
        return None
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if feasible(make(mid)) else (mid, hi)
    return make(hi)


class PolicyMaker:
    """Feasible ratio dicts for one space and budget."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, space: Any, cost_model: Any, budget: Any) -> None:
        self.model, self.inputs, self.space = model, inputs, space
        self.cost_model, self.budget = cost_model, budget
        self.names: list[str] = list(space.names)
        self.maxima: dict[str, float] = dict(space.max_ratios)

    def feasible(self, ratios: dict[str, float]) -> bool:
        return self.cost_model.feasible(ratios, self.budget)

    def repaired(self, ratios: dict[str, float]) -> dict[str, float]:
        """``ap.repair``: every ratio moved toward its max by one fraction until the budget is met."""
        return ap.repair(ratios, self.cost_model, self.budget)

    def fitted(self, ratios: dict[str, float]) -> dict[str, float]:
        """Onto the budget's boundary, as the random searcher fits samples: repaired if infeasible, else scaled down."""
        repaired = self.repaired(ratios)
        return _bisect(lambda t: {n: t * r for n, r in repaired.items()}, self.feasible, 1.0) or repaired

    def scaled(self, shape: dict[str, float]) -> dict[str, float]:
        """Ratios proportional to ``shape`` (capped at each max), scaled to just meet the budget."""
        hi = max(self.maxima[n] / shape[n] for n in self.names if shape[n] > 0)

        def make(t: float) -> dict[str, float]:
            return {n: min(self.maxima[n], t * shape[n]) for n in self.names}

        fitted = _bisect(make, self.feasible, hi)
        return fitted if fitted is not None else self.repaired(make(hi))

    def ramp(self, slope: float) -> dict[str, float]:
        """Linear in network position: ``slope`` > 0 prunes late groups more, < 0 early groups more."""
        last = max(1, len(self.names) - 1)
        return self.scaled({n: max(0.0, 1 + slope * (i / last - 0.5)) for i, n in enumerate(self.names)})

    def flops_saving(self) -> dict[str, float]:
        """FLOPs fraction saved by pruning each group alone to its max (cost-model sensitivity)."""
        return {n: 1 - self.cost_model.ratio({n: self.maxima[n]}, self.budget) for n in self.names}

    def global_magnitude(self, importance: str) -> dict[str, float]:
        """The ``global`` searcher's policy: Torch-Pruning's global ranking, one threshold on normalized scores."""
        searcher = GlobalSearcher(importance=importance)
        searcher.setup(SearchContext(space=self.space, budget=self.budget, cost_model=self.cost_model, seed=SEED,
                                     model=self.model, example_inputs=self.inputs))
        return dict(searcher.ask().policy)

    def policies(self, count: int) -> list[tuple[str, dict[str, float]]]:
        """The first ``count`` of a fixed list: structured families first (diverse order), then random ones."""
        names, maxima = self.names, self.maxima
        saving = self.flops_saving()
        first, last = names[0], names[-1]
        structured: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("uniform", lambda: self.scaled(dict.fromkeys(names, 1.0))),
            ("global_l1", lambda: self.global_magnitude("l1")),
            ("ramp_late_1.0", lambda: self.ramp(1.0)),
            ("ramp_early_1.0", lambda: self.ramp(-1.0)),
            ("extreme_all_max", lambda: dict(maxima)),
            ("flops_proportional", lambda: self.scaled(saving)),
            ("ramp_late_2.0", lambda: self.ramp(2.0)),
            ("ramp_early_2.0", lambda: self.ramp(-2.0)),
            ("global_bn_scale", lambda: self.global_magnitude("bn_scale")),
            ("flops_inverse", lambda: self.scaled({n: 1 / max(s, 1e-3) for n, s in saving.items()})),
            ("protect_first", lambda: self.scaled({n: float(n != first) for n in names})),
            ("protect_last", lambda: self.scaled({n: float(n != last) for n in names})),
            ("protect_ends", lambda: self.scaled({n: float(n not in (first, last)) for n in names})),
            ("ramp_late_0.5", lambda: self.ramp(0.5)),
            ("ramp_early_0.5", lambda: self.ramp(-0.5)),
            ("zigzag", lambda: self.scaled({n: 1.0 if i % 2 else 0.3 for i, n in enumerate(names)})),
            ("extreme_half_budget", lambda: self._tighter(0.5)),
            ("extreme_sacrifice_first", lambda: self.repaired({**dict.fromkeys(names, 0.0), first: maxima[first]})),
        ]
        rng = np.random.default_rng(SEED)
        made = [(name, make()) for name, make in structured[:count]]
        for i in range(count - len(made)):
            draw = rng.uniform(size=len(names)) if i % 2 == 0 else rng.beta(0.4, 0.4, size=len(names))
            kind = "uniform" if i % 2 == 0 else "beta0.4"
            start = {n: float(d) * maxima[n] for n, d in zip(names, draw, strict=True)}
            made.append((f"random_{kind}_{i}", self.fitted(start)))
        return made

    def _tighter(self, factor: float) -> dict[str, float]:
        """Uniform ratios meeting ``factor`` times the budget (feasible, but over-pruned)."""
        tight = ap.Budget.flops(self.budget.fraction * factor)
        return _bisect(lambda t: {n: t * m for n, m in self.maxima.items()},
                       lambda r: self.cost_model.feasible(r, tight), 1.0) or dict(self.maxima)


# -- recovery and scoring -----------------------------------------------------------------------------------


def recover(context: dict[str, Any], policy: Any, *, scored: Iterable, steps: int, kd: bool,
            val_batches: int | None, args: argparse.Namespace) -> dict[str, float]:
    """The product's evaluator on one policy: prune a copy, recalibrate BN, finetune (or distill), validate on
    ``scored``: accuracy, loss and seconds."""
    config = ap.EvaluatorConfig(bn_batches=args.bn_batches, finetune_steps=steps, distill=kd, lr=args.lr,
                                val_batches=val_batches, seed=SEED)
    evaluator = Evaluator(context["model"], context["inputs"], train_data=context["data"].train, val_data=scored,
                          budget=ap.Budget.flops(BUDGET), cost_model=context["cost_model"], config=config)
    score = evaluator.evaluate(policy)
    return {"accuracy": score.accuracy, "loss": score.loss, "seconds": score.seconds}


def measure_row(args: argparse.Namespace, name: str, ratios: dict[str, float], context: dict[str, Any],
                runs: list[Run], proxies: list[Proxy]) -> dict[str, Any]:
    """Ground truth and every proxy of one policy."""
    data = context["data"]
    policy = context["space"].policy(ratios)
    truth = recover(context, policy, scored=data.test, steps=args.ground_truth_steps, kd=False, val_batches=None,
                    args=args)
    results = {run.name: recover(context, policy, scored=data.val, steps=run.steps, kd=run.kd,
                                 val_batches=run.val_batches, args=args) for run in runs}
    return {
        "policy": name, "ratios": ratios, "flops_ratio": context["cost_model"].ratio(ratios, ap.Budget.flops(1.0)),
        "ground_truth": {"test_accuracy": truth["accuracy"], "test_loss": truth["loss"], "seconds": truth["seconds"]},
        "proxies": {p.name: {"value": results[p.run][p.metric], "seconds": results[p.run]["seconds"]}
                    for p in proxies},
    }


# -- rows and summary ---------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows written so far; a last line cut off by a stopped run is removed from the file."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (Pearson on average ranks, as scipy); NaN for a constant row."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair (as scipy's default); NaN for a constant row."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-2, -1)) / np.sqrt((sx**2).sum((-2, -1)) * (sy**2).sum((-2, -1)))


def bootstrap_ci(x: np.ndarray, y: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 resamples: int = 1000) -> list[float]:
    """95% percentile interval of ``statistic`` over resampled policies (resamples of tied values dropped)."""
    index = np.random.default_rng(SEED).integers(0, len(x), (resamples, len(x)))
    values = np.concatenate([statistic(x[part], y[part]) for part in np.array_split(index, 20)])
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [math.nan, math.nan]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]


def summarize(rows: list[dict[str, Any]], proxies: list[Proxy]) -> list[dict[str, Any]]:
    """Per proxy: Spearman and Kendall vs the ground truth with bootstrap intervals, and the default flag."""
    truth = np.asarray([r["ground_truth"]["test_accuracy"] for r in rows])
    near = np.asarray([r["flops_ratio"] >= NEAR_BUDGET * BUDGET for r in rows])
    out = []
    for proxy in proxies:
        sign = -1.0 if proxy.metric == "loss" else 1.0  # lower loss is better: rank by -loss
        values = sign * np.asarray([r["proxies"][proxy.name]["value"] for r in rows])
        out.append({
            "name": proxy.name,
            "spearman": float(stats.spearmanr(values, truth).statistic),
            "spearman_ci": bootstrap_ci(values, truth, spearman_rows),
            "kendall": float(stats.kendalltau(values, truth).statistic),
            "kendall_ci": bootstrap_ci(values, truth, kendall_rows),
            "spearman_near_budget": float(stats.spearmanr(values[near], truth[near]).statistic)
            if near.sum() >= 3 else math.nan,
            "seconds_per_candidate": float(np.median([r["proxies"][proxy.name]["seconds"] for r in rows])),
            "default": False,
        })
    scored = [p for p in out if math.isfinite(p["spearman"])]
    if scored:
        best = max(p["spearman"] for p in scored)
        min(
            (p for p in scored if p["spearman"] >= best - 0.05), key=lambda p: p["seconds_per_candidate"]
        )["default"] = True
    return out


def write_summary(args: argparse.Namespace, rows: list[dict[str, Any]], config: dict[str, Any],
                  proxies: list[Proxy]) -> Path:
    """``fidelity.json`` from the rows."""
    if len(rows) < 3:
        raise SystemExit(f"{len(rows)} rows in {args.rows}: at least 3 policies are needed for correlations")
    truth_seconds = float(np.median([r["ground_truth"]["seconds"] for r in rows]))
    payload = {
        "config": config,
        "policies": len(rows),
        "near_budget_policies": sum(r["flops_ratio"] >= NEAR_BUDGET * BUDGET for r in rows),
        "near_budget": f"FLOPs ratio >= {NEAR_BUDGET * BUDGET:.2f}",
        "default_rule": DEFAULT_RULE,
        "proxies": summarize(rows, proxies),
        "ground_truth": {
            "metric": "test accuracy on the full test split",
            "recovery": f"prune (l1), BN recalibration ({config['bn_batches']} training batches), "
                        f"{config['ground_truth_steps']} cross-entropy finetune steps (SGD momentum 0.9, cosine, "
                        f"lr {config['lr']}), as bench/compare_searchers.py's final finetune",
            "seconds_per_candidate": truth_seconds,
            "test_accuracy_range": [min(r["ground_truth"]["test_accuracy"] for r in rows),
                                    max(r["ground_truth"]["test_accuracy"] for r in rows)],
            "baseline_test_accuracy": rows[0]["baseline_test_accuracy"],
        },
    }
    return write_json(Path(args.summary), payload)


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=40, help="policies measured (default 40)")
    parser.add_argument("--summarize", action="store_true", help="only write fidelity.json from the existing rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="measure only policies i with i %% N == I (run N processes, one per core; default 0/1)")
    parser.add_argument("--quick", action="store_true", help="small CNN on digits, 6 policies, tiny steps, "
                        "results under bench/results/quick")
    args = parser.parse_args()
    try:
        shard, shards = (int(v) for v in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard expects I/N like 0/2, got {args.shard!r}")
    if not 0 <= shard < shards:
        parser.error(f"--shard I/N needs 0 <= I < N, got {args.shard!r}")
    if args.policies < 3:
        parser.error(f"--policies must be at least 3 (rank correlations), got {args.policies}")
    torch.set_num_threads(args.threads)
    results = RESULTS / "quick" if args.quick else RESULTS
    args.rows, args.summary = str(results / "fidelity_rows.jsonl"), str(results / "fidelity.json")
    base, fid = (QUICK_BASELINE, QUICK_FIDELITY) if args.quick else (BASELINE, FIDELITY)
    args.model, args.dataset, args.epochs = base["model"], base["dataset"], base["epochs"]
    args.bn_batches, args.lr = fid["bn_batches"], fid["lr"]
    args.ground_truth_steps = 20 if args.quick else GROUND_TRUTH_STEPS
    steps = (2, 4, 8) if args.quick else (10, 30, 100)
    if args.quick:
        args.policies = 6
    runs, proxies = runs_and_proxies(steps)
    config = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "budget": {"flops": BUDGET},
              "bn_batches": args.bn_batches, "lr": args.lr, "ground_truth_steps": args.ground_truth_steps,
              "seed": SEED, "kd": {"alpha_cross_entropy": KD_ALPHA, "temperature": KD_TEMPERATURE},
              "runs": [asdict(r) for r in runs]}
    rows_path = Path(args.rows)
    rows = read_rows(rows_path)
    for row in rows:
        if row["config"] != config:
            raise SystemExit(f"{rows_path} has rows made with other settings ({row['config']}); move it away")
    if not args.summarize:
        model, data, info = load_baseline(args)
        inputs = data.example_inputs()
        space = ap.SearchSpace.from_model(model, inputs, preset=args.model)
        cost_model = ap.CostModel(space)
        budget = ap.Budget.flops(BUDGET)
        context = {"model": model, "data": data, "inputs": inputs, "space": space, "cost_model": cost_model}
        baseline_accuracy = validate(model, data.test)[0]
        policies = PolicyMaker(model, inputs, space, cost_model, budget).policies(args.policies)
        done = {r["policy"]: r for r in rows}
        started = time.perf_counter()
        measured = 0
        for i, (name, ratios) in enumerate(policies):
            if not cost_model.feasible(ratios, budget):
                raise SystemExit(f"internal error: policy {name} misses the budget")
            if i % shards != shard:
                continue
            if name in done:
                if done[name]["ratios"] != ratios:
                    raise SystemExit(f"{rows_path}: policy {name} has other ratios than this run makes; move it away")
                continue
            row = {**measure_row(args, name, ratios, context, runs, proxies), "config": config,
                   "checkpoint": Path(info["checkpoint"]).name, "baseline_test_accuracy": baseline_accuracy}
            append_row(rows_path, row)
            rows.append(row)
            measured += 1
            per_policy = (time.perf_counter() - started) / measured
            left = sum(1 for j, (n, _) in enumerate(policies) if j > i and j % shards == shard and n not in done)
            print(f"[{len(rows)}/{len(policies)}] {name}: flops {row['flops_ratio']:.3f}, test accuracy "
                  f"{row['ground_truth']['test_accuracy']:.4f}, {per_policy:.0f} s per policy, "
                  f"~{left * per_policy / 60:.0f} min left", flush=True)
    path = write_summary(args, rows, config, proxies)
    for p in json.loads(path.read_text())["proxies"]:
        low, high = p["spearman_ci"]
        print(f"{p['name']:28s} spearman {p['spearman']:+.3f} [{low:+.2f}, {high:+.2f}]  kendall {p['kendall']:+.3f}  "
              f"{p['seconds_per_candidate']:7.2f} s{'  DEFAULT' if p['default'] else ''}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
