"""The final step: the best policy's model, pruned, checked against the budget, finetuned and compared."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from torch import nn

from autoprune.evaluate import Evaluator, finetune, recalibrate_batchnorm, validate
from autoprune.latency_check import check_and_repair
from autoprune.pruning import PruneResult
from autoprune.rescore import RescoreConfig
from autoprune.summary import ModelFigures, RescoredCandidate, Summary
from search_spaces.budget import Budget, LatencyBudget, LatencySetting
from search_spaces.errors import AutopruneError
from search_spaces.measure import count_flops, count_params, latency_ratio, with_batch
from search_spaces.options import check_int, check_number
from search_spaces.policy import Policy


@dataclass(frozen=True)
class FinalConfig:
    """How the exported model is made from the best policy.

    Attributes:
        steps: finetune steps for the best policy's model before the final report.
        lr: learning rate of that finetune (None: the evaluator's).
        measure_latency: time the baseline and the pruned model side by side for the summary.
        rescore: how the best candidates are scored again before one is chosen.
    """

    steps: int = 0
    lr: float | None = None
    measure_latency: bool = True
    rescore: RescoreConfig = field(default_factory=RescoreConfig)

    def __post_init__(self) -> None:
        check_int("final_finetune_steps", self.steps, low=0)
        if self.lr is not None:
            check_number("final_lr", self.lr, low=0)


@dataclass(frozen=True)
class FinalModel:
    """The exported policy, its pruned and finetuned model (with the pruning history) and the summary."""

    policy: Policy
    pruned: PruneResult
    summary: Summary


def finalize(
    policy: Policy, *, evaluator: Evaluator, budget: Budget, test_data: Iterable, config: FinalConfig,
    best_trial: tuple[int, float], trials: int, failed_trials: int, rescored: pd.DataFrame | None = None,
) -> FinalModel:
    """Prune ``policy`` for real, make sure the budget holds, finetune, and compare with the baseline.

    ``best_trial`` is the (id, search-time accuracy) of the trial ``policy`` comes from; ``rescored`` the
    re-scored top candidates it was chosen from (if any), recorded in the summary.
    """
    model, inputs = evaluator.model, evaluator.example_inputs
    latency_check = None
    if isinstance(budget, LatencyBudget):  # the table predicted it; the measurement decides (and repairs)
        policy, pruned, latency_check = check_and_repair(policy, model, inputs, budget, evaluator.cost_model,
                                                         evaluator.prune)
    else:
        pruned = evaluator.prune(policy)
    _recover(pruned.model, evaluator, config)
    if budget.exact:
        _check_exact(pruned.model, inputs, budget, evaluator)
    baseline, final = _figures(model, test_data, inputs), _figures(pruned.model, test_data, inputs)
    setting = budget.timing(inputs)
    speedup = None
    if config.measure_latency:
        baseline, final, speedup = _with_latency(model, pruned.model, inputs, setting, baseline, final)
    summary = Summary(
        budget=budget, best_trial_id=best_trial[0], search_accuracy=best_trial[1], final_finetune_steps=config.steps,
        trials=trials, failed_trials=failed_trials, baseline=baseline, pruned=final, latency_check=latency_check,
        latency_speedup=speedup, latency_setting=setting if config.measure_latency else None,
        rescored=() if rescored is None else tuple(RescoredCandidate(**r) for r in rescored.to_dict("records")),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"), excluded=dict(evaluator.cost_model.space.excluded),
    )
    scores = {"search_accuracy": best_trial[1], "final_accuracy": final.accuracy, "flops": final.flops,
              "params": final.params, "flops_ratio": summary.flops_ratio}
    return FinalModel(policy.with_metadata(budget=budget.to_dict(), scores=scores), pruned, summary)


def _recover(model: nn.Module, evaluator: Evaluator, config: FinalConfig) -> None:
    """BatchNorm recalibration and the final finetune, on the evaluator's device; the model ends on the CPU."""
    recipe = evaluator.config
    model.to(recipe.device)
    recalibrate_batchnorm(model, evaluator.train_data, recipe.bn_batches, device=recipe.device)
    finetune(model, evaluator.train_data, steps=config.steps, lr=recipe.lr if config.lr is None else config.lr,
             weight_decay=recipe.weight_decay, device=recipe.device)
    model.to("cpu")  # exported, counted and timed on the CPU


def _check_exact(model: nn.Module, inputs: Any, budget: Budget, evaluator: Evaluator) -> None:
    """The analytic cost model is exact for this budget: the real model must meet it (an invariant)."""
    measured, limit = budget.measure(model, inputs), budget.limit(evaluator.cost_model.base)
    if measured > limit:
        raise AutopruneError(f"internal error: final model has {measured:,} {budget.metric} > budget {limit:,.0f}")


def _figures(model: nn.Module, data: Iterable, inputs: Any) -> ModelFigures:
    accuracy, loss = validate(model, data)
    return ModelFigures(accuracy=accuracy, loss=loss, flops=count_flops(model, inputs), params=count_params(model))


def _with_latency(
    model: nn.Module, pruned: nn.Module, inputs: Any, setting: LatencySetting, baseline: ModelFigures,
    final: ModelFigures,
) -> tuple[ModelFigures, ModelFigures, float]:
    """Both models timed side by side (as the latency check does); returns the figures and the speedup."""
    ratio, pruned_ms, base_ms = latency_ratio(pruned, model, with_batch(inputs, setting.batch),
                                              threads=setting.threads, device=setting.device)
    return replace(baseline, latency_ms=base_ms), replace(final, latency_ms=pruned_ms), 1 / ratio

