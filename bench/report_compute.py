"""The quality-per-compute section of docs/benchmarks.md, from bench/results/quality_per_compute/<setting>/ (rendered
by bench/report.py): final test accuracy against the evaluation compute each search spent."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from common import accuracy_drop, mean_sd

REFERENCE = ("random", "none", "finetune")  # what cheaper searches are held against: random, full scores, plain final
COMPUTE_SHARE_GOAL = 0.25  # issue 31: the reference's accuracy at a quarter of its evaluation compute


def _scheduler(config: dict[str, Any]) -> str:
    """A table's scheduler as a label: ``none``, ``asha``, ``cascade (promote 0.2)``."""
    setting = config.get("scheduler") or {"kind": "none"}
    if setting["kind"] == "cascade":
        return f"cascade (promote {setting.get('promote')})"
    return setting["kind"]


Variant = tuple[str, str, int, str]  # method, scheduler, candidates, final step (finetune or distill)


def _variants(records: list[dict[str, Any]]) -> dict[tuple[str, float], dict[Variant, list]]:
    """Rows grouped by (model, budget), then by (method, scheduler, candidates, final step)."""
    grouped: dict[tuple[str, float], dict[Variant, list]] = {}
    for record in records:
        row, config = record["row"], record["config"]
        final = "distill" if config.get("final_distill") else "finetune"
        key = (row["method"], _scheduler(config), int(config["evaluations"]), final)
        grouped.setdefault((row["model"], row["budget"]), {}).setdefault(key, []).append(row)
    return grouped


def _reference(variants: dict[Variant, list]) -> tuple[Variant, list] | None:
    """The reference variant: random search with full scores and a plain final finetune (the most evaluations,
    when there are several)."""
    keys = [k for k in variants if (k[0], k[1], k[3]) == REFERENCE]
    if not keys:
        return None
    key = max(keys, key=lambda k: k[2])
    return key, variants[key]


def _goal_lines(variants: dict[Variant, list], reference: tuple[Variant, list]) -> list[str]:
    """Whether each cheaper search reaches the reference's mean accuracy (within its seed sd) at a quarter of its
    median evaluation compute."""
    key, rows = reference
    accuracies = [r["test_accuracy"] for r in rows]
    mean = statistics.mean(accuracies)
    sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    compute = statistics.median(r["full_equivalents"] for r in rows)
    lines = [f"Goal: {100 * mean:.2f}% - {100 * sd:.2f} pt (the mean of {key[0]}-{key[2]} less its seed sd, "
             f"{len(rows)} seeds) within {COMPUTE_SHARE_GOAL:.0%} of its median evaluation compute "
             f"({compute:.1f} full evaluations):", ""]
    for other, others in variants.items():
        if other == key or other[3] != key[3]:  # a distilled final step is compared in its own line below
            continue
        share = statistics.median(r["full_equivalents"] for r in others) / compute
        reached = statistics.mean(r["test_accuracy"] for r in others) >= mean - sd
        verdict = "met" if reached and share <= COMPUTE_SHARE_GOAL else "not met"
        seeds = f"{len(others)} seed{'s' * (len(others) != 1)}"
        lines.append(f"- {other[0]} with {other[1]}, {other[2]} candidates: {verdict} ({share:.2f}x the compute, "
                     f"accuracy {'reached' if reached else 'not reached'}; {seeds})")
    return [*lines, "", *_distill_lines(variants)]


def _distill_lines(variants: dict[Variant, list]) -> list[str]:
    """Each distilled final step against the plain finetune of the same searches' best policies, seed by seed."""
    lines = []
    for key, rows in variants.items():
        plain = {r["seed"]: r for r in variants.get((*key[:3], "finetune"), [])}
        pairs = [(r["test_accuracy"] - plain[r["seed"]]["test_accuracy"]) for r in rows if r["seed"] in plain]
        if key[3] != "distill" or not pairs:
            continue
        gains = ", ".join(f"{100 * g:+.2f}" for g in pairs)
        lines.append(f"Final step distilled from the unpruned model instead of plain finetuning, same best policies "
                     f"({key[0]}, {key[1]}, {key[2]} candidates), same steps: {gains} pt by seed (mean "
                     f"{100 * statistics.mean(pairs):+.2f}).")
    return [*lines, ""] if lines else []


def compute_section(records: list[dict[str, Any]], img: Path, rel: str) -> list[str]:
    """Per model and budget: each search's final test accuracy and evaluation compute, a plot, and the goal."""
    lines = ["## Quality per compute", "",
             "`python bench/compare_searchers.py ... --scheduler cascade --evaluations N --results "
             "bench/results/quality_per_compute/<setting>` (one directory per scheduler and number of candidates; "
             "same baseline, evaluator and 300-step final finetune as the search-quality tables). Evaluation "
             "compute is the sum of the candidates' evaluation seconds (one thread each, beside one other benchmark "
             "process on this 2-core machine and at times the test suite, so seconds vary with the load), and the "
             "same in units of the search's own median full evaluation (full evaluations: the load cancels out; "
             "the goal is judged on it); full scores counts the candidates finetuned and scored at the full fidelity "
             "(the cascade screens every candidate by its adaptive-BN score first). The final step's re-score of "
             "the best 3 (90 finetune steps each) is the same for every search and listed apart. Mean ± sd over "
             "seeds; compute is the median.", ""]
    for (model, budget), variants in sorted(_variants(records).items()):
        lines += [f"### `{model}` at {budget:.0%} FLOPs", "",
                  "| search | scheduler | candidates | final step | seeds | full scores | evaluation compute (s) | "
                  "compute (full evaluations) | re-score (s) | test accuracy (%) | drop (pt) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for (method, scheduler, evaluations, final), rows in sorted(variants.items()):
            lines.append(
                f"| {method} | {scheduler} | {evaluations} | {final} | {len(rows)} | "
                f"{statistics.median(r['full_scores'] for r in rows):.0f} | "
                f"{statistics.median(r['evaluation_seconds'] for r in rows):.0f} | "
                f"{statistics.median(r['full_equivalents'] for r in rows):.1f} | "
                f"{statistics.median(r['rescore_seconds'] for r in rows):.0f} | "
                f"{mean_sd([r['test_accuracy'] for r in rows], 100)} | "
                f"{mean_sd([accuracy_drop(r) for r in rows], 100)} |")
        lines.append("")
        reference = _reference(variants)
        if reference is not None:
            lines += _goal_lines(variants, reference)
        lines += _plot(model, budget, variants, img, rel)
    return lines


def _plot(model: str, budget: float, variants: dict[Variant, list], img: Path, rel: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (method, scheduler, evaluations, final), rows in sorted(variants.items()):
        xs, ys = [r["full_equivalents"] for r in rows], [100 * r["test_accuracy"] for r in rows]
        points = ax.scatter(xs, ys, alpha=0.35, s=18)
        ax.scatter([statistics.median(xs)], [statistics.mean(ys)], color=points.get_facecolor()[0][:3], s=70,
                   marker="D", label=f"{method}, {scheduler.split(' ')[0]}, {evaluations}, {final}",
                   edgecolor="black")
    ax.set_xlabel("evaluation compute (full evaluations: seconds / the search's median full evaluation)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"{model} at {budget:.0%} FLOPs: quality per compute")
    ax.legend(fontsize=7, title="diamond: mean accuracy, median compute", title_fontsize=7)
    fig.tight_layout()
    name = f"quality_per_compute_{model}_{round(100 * budget)}.png"
    fig.savefig(img / name, dpi=110)
    plt.close(fig)
    return [f"![quality per compute, {model}]({rel}/{name})", ""]
