"""The final check of a latency budget: measure the pruned model, and repair the policy if it misses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from autoprune.budget import Budget, CostModel, repair
from autoprune.latency import latency_ratio, measure_latency_ms, with_batch
from autoprune.policy import Policy

log = logging.getLogger(__name__)
MAX_REPAIRS = 6
SAFETY = 0.98  # each repair aims this much under the measured miss, so noise does not undo it


def measured_latency(candidate: nn.Module, reference: nn.Module, example_inputs: Any, budget: Budget) -> dict:
    """Measured latency of ``candidate`` against ``budget``; fractions are judged by a side-by-side ratio."""
    inputs = with_batch(example_inputs, budget.batch)
    setting = {"threads": budget.threads, "device": budget.device}
    if budget.fraction is not None:
        ratio, ms, base_ms = latency_ratio(candidate, reference, inputs, **setting)
        return {"measured_ms": ms, "baseline_ms": base_ms, "measured_ratio": ratio,
                "met": ratio <= budget.fraction}
    ms = measure_latency_ms(candidate, inputs, **setting)
    return {"measured_ms": ms, "met": ms <= budget.absolute}


def check_and_repair(
    policy: Policy, model: nn.Module, example_inputs: Any, budget: Budget, cost_model: CostModel,
    prune: Callable[[Policy], Any],
) -> tuple[Policy, Any, dict[str, Any]]:
    """Measure ``policy``'s pruned model; while it misses ``budget``, prune more and measure again.

    Each repair lowers the table's target by the measured miss (and a 2% margin) and moves the policy onto
    it with :func:`autoprune.repair`. Returns the final policy, its PruneResult and the check's record.
    """
    limit = budget.limit(cost_model.base)
    space = cost_model.space
    floor = cost_model.cost(space.max_ratios).latency_ms
    pruned = prune(policy)
    record: dict[str, Any] = {}
    for attempt in range(MAX_REPAIRS + 1):
        predicted = cost_model.cost(policy).latency_ms
        record = {"predicted_ms": predicted, "limit_predicted_ms": limit, "repairs": attempt,
                  **measured_latency(pruned.model, model, example_inputs, budget)}
        at_floor = dict(policy) == space.max_ratios
        if record["met"] or attempt == MAX_REPAIRS or at_floor:
            if not record["met"]:
                log.warning("latency budget still missed after %d repairs%s: %s", attempt,
                            " (every group at its max ratio)" if at_floor else "", record)
            break
        miss = (record["measured_ratio"] / budget.fraction if budget.fraction is not None
                else record["measured_ms"] / budget.absolute)
        target = min(limit, predicted) / miss * SAFETY  # aim under what was measured, not under the old limit
        log.info("measured latency misses the budget by %.1f%%; repairing to %.3f ms predicted",
                 100 * (miss - 1), target)
        if target <= floor:
            ratios = space.max_ratios
        else:
            ratios = repair(policy, cost_model, Budget.latency(ms=target, **budget.setting))
        policy = space.policy(ratios)
        pruned = prune(policy)
    return policy, pruned, record
