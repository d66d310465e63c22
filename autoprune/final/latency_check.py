"""The final check of a latency budget: measure the pruned model, and repair the policy if it misses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from autoprune.final.summary import LatencyCheck, SpeedCheck
from autoprune.prune.channels import PruneResult
from search_spaces.budget import LatencyBudget
from search_spaces.cost import CostModel, repair
from search_spaces.measure import latency_ratio, with_batch
from search_spaces.policy import Policy

log = logging.getLogger(__name__)
MAX_REPAIRS = 6
SAFETY = 0.98  # each repair aims this much under the measured miss, so noise does not undo it


def measured_latency(
    candidate: nn.Module, reference: nn.Module, example_inputs: Any, budget: LatencyBudget
) -> tuple[float, bool, float, float]:
    """``(ms, met, baseline_ms, ratio)`` of ``candidate`` timed side by side with ``reference``; a fraction is
    judged by the ratio, an absolute budget by the milliseconds."""
    setting = budget.setting
    ratio, ms, base_ms = latency_ratio(candidate, reference, with_batch(example_inputs, setting.batch),
                                       threads=setting.threads, device=setting.device, runtime=setting.runtime)
    return ms, ratio <= budget.fraction if budget.fraction is not None else ms <= budget.absolute, base_ms, ratio


def check_and_repair(
    policy: Policy, model: nn.Module, example_inputs: Any, budget: LatencyBudget, cost_model: CostModel,
    prune: Callable[[Policy], PruneResult],
) -> tuple[Policy, PruneResult, LatencyCheck]:
    """Measure ``policy``'s pruned model; while it misses ``budget``, prune more and measure again.

    Each repair lowers the table's target by the measured miss (and a 2% margin) and moves the policy onto
    it with :func:`autoprune.repair`. Returns the final policy, its PruneResult and the check's record.
    """
    limit = budget.limit(cost_model.base)
    space = cost_model.space
    pruned = prune(policy)
    for attempt in range(MAX_REPAIRS + 1):
        ms, met, base_ms, ratio = measured_latency(pruned.model, model, example_inputs, budget)
        check = LatencyCheck(predicted_ms=budget.predicted(cost_model.cost(policy)), limit_predicted_ms=limit,
                             repairs=attempt, measured_ms=ms, met=met, baseline_ms=base_ms, measured_ratio=ratio)
        at_floor = dict(policy) == space.max_ratios
        if met or attempt == MAX_REPAIRS or at_floor:
            if not met:
                log.warning("latency budget still missed after %d repairs%s: %s", attempt,
                            " (every group at its max ratio)" if at_floor else "", check)
            break
        miss = ratio / budget.fraction if budget.fraction is not None else ms / budget.absolute
        target = min(limit, check.predicted_ms) / miss * SAFETY  # aim under what was measured, not the old limit
        log.info("measured latency misses the budget by %.1f%%; repairing to %.3f ms predicted",
                 100 * (miss - 1), target)
        policy = repaired_to(policy, cost_model, budget, target)
        pruned = prune(policy)
    return policy, pruned, check


def repaired_to(policy: Policy, cost_model: CostModel, budget: LatencyBudget, target_ms: float) -> Policy:
    """``policy`` moved onto a table target of ``target_ms`` (every group at its max ratio when the target is at or
    below what the table says pruning can reach)."""
    space = cost_model.space
    floor = budget.predicted(cost_model.cost(space.max_ratios))
    if target_ms <= floor:
        return space.policy(space.max_ratios)
    return space.policy(repair(policy, cost_model, replace(budget, fraction=None, absolute=target_ms)))


def remeasured(check: LatencyCheck, timed: SpeedCheck, budget: LatencyBudget, cost_model: CostModel,
               policy: Policy, repairs: int) -> LatencyCheck:
    """``check`` brought up to date for ``policy`` (pruned further ``repairs`` times after it), from a new
    side-by-side timing in the budget's runtime."""
    ratio = timed.pruned_ms / timed.baseline_ms
    met = ratio <= budget.fraction if budget.fraction is not None else timed.pruned_ms <= budget.absolute
    return replace(check, predicted_ms=budget.predicted(cost_model.cost(policy)), repairs=check.repairs + repairs,
                   measured_ms=timed.pruned_ms, met=met, baseline_ms=timed.baseline_ms, measured_ratio=ratio)
