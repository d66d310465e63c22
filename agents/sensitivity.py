"""Distiller-style sensitivity analysis: prune each group alone at several ratios, then allocate.

The scan evaluates the unpruned model and every (group, level) with only that group pruned to
``level * max_ratio``. The allocation then starts from no pruning and repeatedly advances the group whose
next level costs the least accuracy per FLOP (or parameter) saved, until the budget is met; the last step
is bisected so the budget is met just. As a searcher the scan points are ordinary trials (mostly over
budget, so never "best") followed by one allocated policy; ``sensitivity(...)`` runs the scan alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.report.sensitivity_plot import write_sensitivity
from autoprune.searcher import SearchContext, Searcher
from autoprune.study.rundir import NEW_DIR_HINT, SENSITIVITY_TABLE, check_can_start
from autoprune.trial import Score, Trial
from search_spaces.budget import Budget
from search_spaces.cost import CostModel, bisect_feasible, repair
from search_spaces.ground.errors import ConfigError, EvaluationFailedError
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace

DEFAULT_LEVELS = (0.25, 0.5, 0.75, 1.0)


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(v) for v in levels)
    if not values or any(not 0 < v <= 1 for v in values) or list(values) != sorted(set(values)):
        raise ConfigError(f"sensitivity levels must be increasing fractions in (0, 1], got {list(levels)!r}")
    return values


def scan_plan(space: SearchSpace, levels: Sequence[float]) -> list[tuple[str | None, float]]:
    """The unpruned probe ``(None, 0)`` then ``(group, ratio)`` for every group and level."""
    return [(None, 0.0)] + [(g.name, level * g.max_ratio) for g in space for level in levels]


def allocate(table: pd.DataFrame, baseline: float, cost_model: CostModel, budget: Budget) -> dict[str, float]:
    """Greedy allocation: cheapest accuracy loss per unit of the budget's metric saved, until feasible. Where the
    scanned levels run out first, every ratio moves toward its max by one fraction (``repair``) until it is."""
    if not math.isfinite(baseline):
        raise EvaluationFailedError("the unpruned probe of the sensitivity scan failed; nothing to compare with")
    space = cost_model.space
    curves: dict[str, list[tuple[float, float]]] = {}
    for group in space:
        rows = table[table["group"] == group.name].sort_values("ratio")
        loss, points = 0.0, [(0.0, 0.0)]
        for ratio, accuracy in zip(rows["ratio"], rows["accuracy"], strict=True):
            if not math.isfinite(accuracy):
                continue  # a failed probe: that level is skipped, the next one still counts
            loss = max(loss, baseline - accuracy)  # losses never shrink with more pruning
            points.append((float(ratio), loss))
        curves[group.name] = points
    step = dict.fromkeys(space.names, 0)
    ratios = dict.fromkeys(space.names, 0.0)
    while not cost_model.feasible(ratios, budget):
        here = budget.predicted(cost_model.cost(ratios))
        best, best_value = None, math.inf
        for name, points in curves.items():
            if step[name] + 1 >= len(points):
                continue
            ratio, loss = points[step[name] + 1]
            saved = here - budget.predicted(cost_model.cost({**ratios, name: ratio}))
            if saved <= 0:
                continue
            value = (loss - points[step[name]][1]) / saved
            if value < best_value:
                best, best_value = name, value
        if best is None:  # the scanned levels (or a flat stretch of a latency table) stop short of the budget:
            cost_model.check_reachable(budget)  # the rest of the way toward every group's max, evenly
            return repair(ratios, cost_model, budget)
        previous = ratios[best]
        step[best] += 1
        target = curves[best][step[best]][0]
        candidate = {**ratios, best: target}
        if cost_model.feasible(candidate, budget):  # bisect the last step so the budget is met just
            return bisect_feasible(
                lambda t, base=ratios, name=best, p=previous, q=target: {**base, name: p + t * (q - p)},
                cost_model, budget,
            )
        ratios = candidate
    return ratios


class SensitivitySearcher(Searcher):
    """Scan (unpruned + groups x levels), then one allocated policy.

    Args:
        levels: fractions of each group's max ratio to scan. When the search has fewer trials than the
            scan needs, evenly spaced levels are dropped; at least one level per group is required.
    """

    name = "sensitivity"

    def __init__(self, *, levels: Sequence[float] = DEFAULT_LEVELS) -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        self._results: dict[int, tuple[str | None, float, Score]] = {}
        self._allocated = False

    def _setup(self, context: SearchContext) -> None:
        levels = self.levels
        if context.trials is not None:
            fit = (context.trials - 2) // len(context.space)
            if fit < 1:
                raise ConfigError(f"sensitivity needs at least {len(context.space) + 2} trials for "
                                  f"{len(context.space)} groups (one level each), got {context.trials}")
            if fit < len(levels):
                keep = np.unique(np.linspace(len(levels) - 1, 0, fit).round().astype(int))
                levels = tuple(levels[i] for i in sorted(keep))
        self.plan = scan_plan(context.space, levels)
        self._todo = list(self.plan)
        self._probes: dict[int, tuple[str | None, float]] = {}

    def _ask(self, trial_id: int) -> Policy | None:
        if self._todo:
            group, ratio = self._todo.pop(0)
            self._probes[trial_id] = (group, ratio)
            ratios = dict.fromkeys(self.context.space.names, 0.0)
            if group is not None:
                ratios[group] = ratio
            return self.context.policy(ratios)
        if self._allocated or len(self._results) < len(self.plan):
            return None  # wait for the scan (or done)
        self._allocated = True
        table, baseline = self.table()
        ratios = allocate(table, baseline, self.context.cost_model, self.context.budget)
        return self.context.policy(ratios)

    def _tell(self, trial: Trial, score: Score) -> None:
        probe = self._probes.pop(trial.id, None)
        if probe is not None:
            self._results[trial.id] = (*probe, score)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The scan, once the policy is allocated (the study writes it as ``sensitivity.csv``)."""
        return {SENSITIVITY_TABLE: self.table()[0]} if self._allocated else {}

    def table(self) -> tuple[pd.DataFrame, float]:
        """The scan so far: one row per (group, ratio), and the unpruned accuracy."""
        return scan_table(self._results.values(), self.context.cost_model, accuracy=self._scan_accuracy)

    def _scan_accuracy(self, score: Score) -> float:
        """A probe's accuracy: under the cascade its screen (every probe has one), else its own score's (under ASHA
        the rung that stopped it: a level is better judged low than skipped)."""
        comparable = self.context.comparable_accuracy(score)
        return score.accuracy if comparable is None else comparable

    def _state_dict(self) -> dict[str, Any]:
        results = {k: (g, r, s.to_dict()) for k, (g, r, s) in self._results.items()}
        return {"results": results, "allocated": self._allocated}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._results = {int(k): (g, r, Score(**s)) for k, (g, r, s) in state["results"].items()}
        self._allocated = bool(state["allocated"])
        done = {(g, r) for g, r, _ in self._results.values()}
        # probes asked before a restart but never told are asked again
        self._todo = [p for p in self.plan if p not in done]
        self._probes.clear()


def scan_table(results: Iterable[tuple[str | None, float, Score]], cost_model: CostModel, *,
               accuracy: Callable[[Score], float | None] | None = None) -> tuple[pd.DataFrame, float]:
    """Rows (group, ratio, accuracy, loss, flops_ratio, params_ratio) and the unpruned accuracy.

    ``accuracy`` reads the accuracy compared from each score (default: the score's own; the screen under the
    cascade); None reads as NaN. ``loss`` is the score's own (its last rung's).
    """
    rows, baseline = [], math.nan
    for group, ratio, score in results:
        value = score.accuracy if accuracy is None else accuracy(score)
        value = math.nan if value is None else value
        if group is None:
            baseline = value
            continue
        rows.append({"group": group, "ratio": ratio, "accuracy": value, "loss": score.loss,
                     "flops_ratio": score.flops / cost_model.base.flops if score.ok else math.nan,
                     "params_ratio": score.params / cost_model.base.params if score.ok else math.nan})
    order = {name: i for i, name in enumerate(cost_model.space.names)}
    table = pd.DataFrame(rows, columns=["group", "ratio", "accuracy", "loss", "flops_ratio", "params_ratio"])
    table = table.sort_values(["group", "ratio"], key=lambda c: c.map(order) if c.name == "group" else c)
    return table.reset_index(drop=True), baseline


@dataclass(frozen=True)
class SensitivityResult:
    """The scan table (one row per group and ratio), the unpruned accuracy, and the written files."""

    table: pd.DataFrame
    baseline_accuracy: float
    table_path: Path | None
    plot_path: Path | None


def sensitivity(
    model: nn.Module,
    example_inputs: Any,
    *,
    train_data: Iterable,
    val_data: Iterable,
    levels: Sequence[float] = DEFAULT_LEVELS,
    evaluator: EvaluatorConfig | Mapping[str, Any] | None = None,
    space: SearchSpace | None = None,
    run_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SensitivityResult:
    """Prune each group alone at each level (fraction of its max ratio) and score it.

    Writes ``sensitivity.csv`` and ``sensitivity.png`` (one curve per group) to ``run_dir`` if given, which must
    be new or empty (a search's run directory is never written into).
    """
    levels = _check_levels(levels)
    if run_dir is not None:
        check_can_start(run_dir, resume=False, hint=NEW_DIR_HINT)
    space = space or SearchSpace.from_model(model, example_inputs)
    cost_model = CostModel(space)
    scorer = Evaluator(model, example_inputs, train_data=train_data, val_data=val_data, budget=Budget.flops(1.0),
                       cost_model=cost_model, config=EvaluatorConfig.from_dict(evaluator))
    plan = scan_plan(space, levels)
    results = []
    for i, (group, ratio) in enumerate(plan):
        ratios = dict.fromkeys(space.names, 0.0)
        if group is not None:
            ratios[group] = ratio
        results.append((group, ratio, scorer.evaluate_safely(space.policy(ratios))))
        if progress is not None:
            progress(i + 1, len(plan))
    table, baseline = scan_table(results, cost_model)
    paths: tuple[Path | None, Path | None] = (None, None)
    if run_dir is not None:
        paths = write_sensitivity(table, baseline, Path(run_dir))
    return SensitivityResult(table, baseline, *paths)
