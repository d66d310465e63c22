"""Never slower: the pruned model timed against the unpruned one in every runtime it is exported for.

Eager PyTorch, and the runtime of each export format asked for (``compile`` runs in AOTInductor, ``onnx`` in ONNX
Runtime; ``eager``, ``sparse`` and ``export`` run eagerly), plus a latency budget's own runtime. A model slower
than the unpruned one is named in the summary with what fixes it; under a latency budget it is pruned further
like a missed budget, and a search that cannot fix it ends with a :class:`BudgetError`: it is never exported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from autoprune.final.latency_check import SAFETY, repaired_to
from autoprune.final.summary import SLOWER_ADVICE, SpeedCheck
from autoprune.prune.channels import PruneResult
from search_spaces.budget import LatencyBudget, LatencySetting
from search_spaces.cost import CostModel
from search_spaces.ground.errors import BudgetError
from search_spaces.measure import latency_ratio, with_batch
from search_spaces.policy import Policy
from search_spaces.runtimes import FORMAT_RUNTIMES

log = logging.getLogger(__name__)
MAX_SPEED_REPAIRS = 4


def checked_runtimes(setting: LatencySetting, formats: Sequence[str]) -> tuple[str, ...]:
    """The setting's runtime, eager, and each export format's runtime, each once, in that order."""
    runtimes = [setting.runtime, "eager", *(FORMAT_RUNTIMES[f] for f in formats)]
    return tuple(dict.fromkeys(runtimes))


def speed_checks(
    model: nn.Module, pruned: nn.Module, example_inputs: Any, setting: LatencySetting, runtimes: Sequence[str], *,
    known: SpeedCheck | None = None,
) -> tuple[SpeedCheck, ...]:
    """``pruned`` against ``model`` in each runtime, timed side by side; ``known`` is a check already made (the
    latency budget's own), reused rather than timed again."""
    inputs = with_batch(example_inputs, setting.batch)
    checks = []
    for runtime in runtimes:
        if known is not None and runtime == known.runtime:
            checks.append(known)
            continue
        ratio, pruned_ms, base_ms = latency_ratio(pruned, model, inputs, threads=setting.threads,
                                                  device=setting.device, runtime=runtime)
        checks.append(SpeedCheck(runtime, base_ms, ratio * base_ms))
        log.info("speed in %s: %.3f -> %.3f ms (%.2fx)", runtime, base_ms, pruned_ms, base_ms / pruned_ms)
    return tuple(checks)


def describe_slower(checks: Sequence[SpeedCheck]) -> str:
    """One sentence naming each runtime the pruned model is slower in, and what fixes it."""
    slow = [f"{c.runtime} ({c.pruned_ms:.3f} ms vs {c.baseline_ms:.3f} ms unpruned)" for c in checks if c.slower]
    return f"the pruned model is slower than the unpruned one in {', '.join(slow)}; fix: {SLOWER_ADVICE}"


def repair_until_not_slower(
    policy: Policy, pruned: PruneResult, checks: tuple[SpeedCheck, ...], *, budget: LatencyBudget,
    cost_model: CostModel, prune: Callable[[Policy], PruneResult],
    measure: Callable[[nn.Module], tuple[SpeedCheck, ...]],
) -> tuple[Policy, PruneResult, tuple[SpeedCheck, ...], int]:
    """Under a latency budget, prune further while the model is slower in a checked runtime (the table's target
    lowered by the worst slowdown, as a missed budget is repaired); a :class:`BudgetError` when that cannot fix it.
    Returns the policy, its pruned model, its checks and how many repairs it took."""
    space, repairs = cost_model.space, 0
    for repairs in range(MAX_SPEED_REPAIRS + 1):
        if repairs == MAX_SPEED_REPAIRS or not any(c.slower for c in checks) or dict(policy) == space.max_ratios:
            break
        slowdown = max(c.pruned_ms / c.baseline_ms for c in checks)
        target = budget.predicted(cost_model.cost(policy)) / slowdown * SAFETY
        log.info("the pruned model is %.1f%% slower in %s; repairing to %.3f ms predicted", 100 * (slowdown - 1),
                 ", ".join(c.runtime for c in checks if c.slower), target)
        policy = repaired_to(policy, cost_model, budget, target)
        pruned = prune(policy)
        checks = measure(pruned.model)
    if any(c.slower for c in checks):
        raise BudgetError(f"{describe_slower(checks)}; nothing was exported")
    return policy, pruned, checks, repairs
