"""The element-wise pruning sections of docs/benchmarks.md, from bench/results/sparsity/ and
bench/results/sparsity_recovery/ (rendered by bench/report.py)."""

from __future__ import annotations

import statistics
from typing import Any

from common import METHODS, accuracy_drop, mean_sd

SEARCHED = ("sensitivity", "amc", "optuna", "random")
GOAL_SPARSITY = 0.9


def _sparsity(budget: float) -> float:
    return round(1 - budget, 4)


def sparsity_section(records: list[dict[str, Any]]) -> list[str]:
    """Per model: accuracy, non-zeros, measured sizes and latency of each method at each sparsity."""
    lines = ["## Element-wise pruning", "",
             "`python bench/compare_searchers.py --granularity element --budgets 0.5,0.3,0.1` — one sparsity per "
             "Conv/Linear weight tensor under a non-zero budget (`Budget.nonzeros`; sparsity = 1 - budget), masks "
             "from `torch.nn.utils.prune`, then the same final finetune. Sizes are the state dict written densely "
             "(zeros stored) and in the sparse form (bitmask + non-zero values), gzip-compressed, measured by "
             "writing both. Latency: batch 1, one thread, measured beside the unpruned model while other "
             "benchmarks ran: dense kernels multiply the zeros, so no speedup is expected. Mean ± sd over seeds.",
             ""]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_model.setdefault(record["row"]["model"], []).append(record)
    for model, items in by_model.items():
        config = items[0]["config"]
        lines += [f"### `{model}` on `{config['dataset']}`", "",
                  f"Every candidate: {config['bn_batches']} BatchNorm batches, {config['finetune_steps']} finetune "
                  f"steps, {config['val_batches']} validation batches; {config['evaluations']} evaluations per "
                  f"search; {config['final_finetune_steps']} final finetune steps.", "",
                  "| sparsity | method | seeds | test accuracy (%) | drop (pt) | non-zeros kept (%) | gzip size, dense "
                  "(kB) | gzip size, sparse form (kB) | unpruned gzip (kB) | latency speedup | evaluations | wall "
                  "time (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
        for record in items:
            row = record["row"]
            groups.setdefault((_sparsity(row["budget"]), row["method"]), []).append(row)
        order = {m: i for i, m in enumerate(METHODS)}
        for (sparsity, method), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
            speedups = [r["baseline_latency_ms"] / r["latency_ms"] for r in rows if r.get("latency_ms")]
            drops, kept = [accuracy_drop(r) for r in rows], [r["nonzeros_ratio"] for r in rows]
            lines.append(
                f"| {sparsity:.0%} | {method} | {len(rows)} | {mean_sd([r['test_accuracy'] for r in rows], 100)} | "
                f"{mean_sd(drops, 100)} | {mean_sd(kept, 100, 1)}"
                f" | {mean_sd([r['sizes']['dense_gzip_bytes'] for r in rows], 1e-3, 0)} | "
                f"{mean_sd([r['sizes']['sparse_gzip_bytes'] for r in rows], 1e-3, 0)} | "
                f"{rows[0]['baseline_sizes']['dense_gzip_bytes'] / 1e3:.0f} | "
                f"{mean_sd(speedups, 1, 2) if speedups else '-'}x | "
                f"{statistics.mean(r['evaluations'] for r in rows):.0f} | "
                f"{statistics.mean(r['search_seconds'] for r in rows):.0f} |")
        lines += ["", *goal_lines(groups), ""]
    return lines


def goal_lines(groups: dict[tuple[float, str], list[dict[str, Any]]]) -> list[str]:
    """Whether a searched per-layer policy keeps more accuracy than local uniform at 90% sparsity."""
    uniform = groups.get((GOAL_SPARSITY, "uniform"))
    searched = {m: rows for (s, m), rows in groups.items() if s == GOAL_SPARSITY and m in SEARCHED}
    if not uniform or not searched:
        return [f"Goal at {GOAL_SPARSITY:.0%} sparsity (a searched policy keeps more accuracy than local uniform): "
                "not measured yet."]
    base = statistics.mean(accuracy_drop(r) for r in uniform)
    best = min(searched, key=lambda m: statistics.mean(accuracy_drop(r) for r in searched[m]))
    drop = statistics.mean(accuracy_drop(r) for r in searched[best])
    seeds = min(len(uniform), len(searched[best]))
    verdict = "met" if drop < base else "not met"
    caveat = "" if seeds >= 3 else " (fewer than 3 seeds)"
    return [f"Goal at {GOAL_SPARSITY:.0%} sparsity: the best searched method (`{best}`, {len(searched[best])} seeds) "
            f"drops {100 * drop:.2f} pt against local uniform's {100 * base:.2f} pt ({len(uniform)} seeds): "
            f"{100 * (base - drop):+.2f} pt kept, **{verdict}**{caveat}."]


def recovery_section(records: list[dict[str, Any]]) -> list[str]:
    """One-shot vs AGP, and finetune vs rewinding vs scratch, on the same policy, per number of training steps."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    baselines = {record["config"].get("baseline_sha256") for record in records}
    for record in records:  # rows of different baselines (retrained elsewhere: the same recipe, other weights) apart
        row, config = record["row"], record["config"]
        digest = config.get("baseline_sha256")
        label = f"baseline {digest[:8]}" if digest else "earlier baseline"
        variant = row["variant"] if len(baselines) == 1 else f"{row['variant']} ({label})"
        groups.setdefault((row["experiment"], variant, config["final_steps"]), []).append(row)
    config = records[0]["config"]
    lines = ["## Schedules and recovery", "",
             f"`python bench/sparsity_recovery.py` — the `uniform` policy of `{config['model']}`, the same "
             "training steps after (or while) pruning for every variant at one step count (`steps`, "
             "`--final-steps`), then the test set. "
             "Schedule: 90% sparsity (`Budget.nonzeros(0.1)`), one-shot (prune, then finetune) vs AGP (Zhu & Gupta, "
             "every 10 steps over the first half (`agp`) or the first third (`agp_early`), then the rest at the "
             "final sparsity). Recovery: 30% FLOPs, "
             "channels removed; finetune (lr 0.01, cosine), the same finetune distilling from the unpruned model "
             "(`distill`), learning-rate rewinding (the training's peak lr 0.05, "
             "cosine), and the pruned architecture trained from a random init with the same steps (far fewer than "
             "the baseline's training, so this is the cost-matched comparison, not Liu et al.'s full retraining). "
             "Mean ± sd over seeds.", "",
             "| experiment | variant | steps | seeds | test accuracy (%) | drop (pt) | FLOPs kept (%) | "
             "non-zeros kept (%) |",
             "|---|---|---|---|---|---|---|---|"]
    for (experiment, variant, steps), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2])):
        accuracy, drops = [r["test_accuracy"] for r in rows], [accuracy_drop(r) for r in rows]
        flops, kept = [r["flops_ratio"] for r in rows], [r["nonzeros_ratio"] for r in rows]
        lines.append(f"| {experiment} | {variant} | {steps} | {len(rows)} | {mean_sd(accuracy, 100)} | "
                     f"{mean_sd(drops, 100)} | {mean_sd(flops, 100, 1)} | {mean_sd(kept, 100, 1)} |")
    for (experiment, variant, steps), rows in sorted(groups.items(), key=lambda kv: kv[0][2]):
        if experiment == "schedule" and variant.startswith("agp"):
            lines += schedule_verdict(groups.get(("schedule", "one_shot", steps), []), rows, variant, steps)
    return [*lines, ""]


def schedule_verdict(one_shot: list[dict[str, Any]], agp: list[dict[str, Any]], name: str,
                     steps: int) -> list[str]:
    """An AGP variant minus one-shot test accuracy (both trained ``steps``), paired by seed, and whether it is at
    least as good."""
    by_seed = {r["seed"]: r["test_accuracy"] for r in one_shot}
    differences = [r["test_accuracy"] - by_seed[r["seed"]] for r in agp if r["seed"] in by_seed]
    if not differences:
        return []
    gain = statistics.mean(differences)
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    if gain >= 0:
        verdict = "at least as good"
    elif -gain <= spread:
        verdict = "worse by less than the seed-to-seed spread of the difference (a tie within noise)"
    else:
        verdict = "worse"
    return ["", f"`{name}` vs one-shot at 90%, {steps} steps, paired by seed ({len(differences)} seeds): "
            f"{100 * gain:+.2f} ± {100 * spread:.2f} pt: {verdict}."]
