"""The final step: the best policy's model, pruned, checked against the budget, finetuned and compared."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd
import torch
from torch import nn

from autoprune.evaluation.evaluator import Evaluator, validate
from autoprune.evaluation.training import TrainConfig
from autoprune.final.latency_check import check_and_repair, remeasured
from autoprune.final.recovery import RECOVERIES, recover
from autoprune.final.rescore import RescoreConfig
from autoprune.final.schedule import PruningSchedule, prune_gradually
from autoprune.final.speed_check import checked_runtimes, describe_slower, repair_until_not_slower, speed_checks
from autoprune.final.summary import LatencyCheck, ModelFigures, RescoredCandidate, SpeedCheck, Summary
from autoprune.prune.channels import PruneResult
from autoprune.prune.export import check_formats
from autoprune.prune.masks import make_permanent
from autoprune.study.identity import state_digest
from search_spaces.budget import Budget, LatencyBudget, LatencySetting
from search_spaces.ground.errors import AutopruneError, ConfigError
from search_spaces.ground.options import check_int, check_number, from_mapping
from search_spaces.measure import count_flops, count_nonzeros, count_params
from search_spaces.policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalConfig:
    """How the exported model is made from the best policy.

    Attributes:
        steps: finetune steps for the best policy's model before the final report (with a gradual schedule:
            the schedule's training steps in all).
        lr: learning rate of that finetune (None: the evaluator's).
        measure_latency: time the baseline and the pruned model side by side for the summary.
        rescore: how the best candidates are scored again before one is chosen.
        schedule: how the policy is reached (:class:`autoprune.final.schedule.PruningSchedule`, a name or a mapping;
            default one-shot); its ``steps`` are ``steps``.
        recovery: after one-shot pruning: ``finetune``, ``lr_rewind``, ``weight_rewind`` or ``scratch``
            (:mod:`autoprune.final.recovery`).
        train_lr: the baseline training's peak learning rate (what rewinding and scratch training use).
        rewind_state: an early state dict of the unpruned model (``weight_rewind`` only).
        distill: the final training learns from the unpruned model too (knowledge distillation,
            :func:`autoprune.evaluation.evaluator.recovery_loss`), in every recovery and schedule; costs one forward
            pass of the unpruned model per step. On by default: on ResNet-20 at 30% FLOPs it recovered 0.3-0.5 pt
            more than plain finetuning at equal steps on every policy measured (docs/benchmarks.md).
        export: the forms the model is exported in (``eager``, ``sparse``, ``export``, ``compile``, ``onnx``; see
            :func:`autoprune.export_model`), each checked for the same outputs and, with ``measure_latency``,
            timed against the unpruned model in its runtime (never slower).
    """

    steps: int = 0
    lr: float | None = None
    measure_latency: bool = True
    rescore: RescoreConfig = field(default_factory=RescoreConfig)
    schedule: PruningSchedule = field(default_factory=PruningSchedule)
    recovery: str = "finetune"
    train_lr: float = TrainConfig.lr
    rewind_state: Mapping[str, torch.Tensor] | None = field(default=None, repr=False)
    export: tuple[str, ...] = ("eager",)
    distill: bool = True

    def __post_init__(self) -> None:
        check_int("final steps", self.steps, low=0)
        object.__setattr__(self, "rescore", RescoreConfig.from_value(self.rescore))
        object.__setattr__(self, "export", check_formats(self.export))
        if self.lr is not None:
            check_number("final_lr", self.lr, low=0)
        check_number("train_lr", self.train_lr, low=0, inclusive=False)
        if not isinstance(self.distill, bool):
            raise ConfigError(f"final distill must be true or false, got {self.distill!r}")
        # the schedule trains for the final steps: its end_step is checked against them here, before any search
        object.__setattr__(self, "schedule", replace(PruningSchedule.from_value(self.schedule), steps=self.steps))
        if self.recovery not in RECOVERIES:
            raise ConfigError(f"final recovery {self.recovery!r} is not accepted; accepted: {', '.join(RECOVERIES)}")
        if self.gradual and self.recovery != "finetune":
            raise ConfigError(f"a {self.schedule.kind} schedule trains while it prunes; recovery {self.recovery!r} "
                              "applies to one-shot pruning only")
        if (self.recovery == "weight_rewind") != (self.rewind_state is not None):
            raise ConfigError("recovery 'weight_rewind' needs a rewind checkpoint (an early state dict of the "
                              "unpruned model), and only it takes one")

    @classmethod
    def from_value(cls, value: FinalConfig | Mapping[str, Any] | None) -> FinalConfig:
        """From a mapping of the fields (unknown keys refused), an instance as given, or the defaults."""
        return from_mapping(cls, value, what="final options")

    def settings(self) -> dict[str, Any]:
        """What decides the exported model, as JSON (``summary.json`` records it; a resumed search whose settings
        differ makes the model again)."""
        return json.loads(json.dumps({
            "steps": self.steps, "lr": self.lr, "schedule": asdict(self.schedule), "recovery": self.recovery,
            "train_lr": self.train_lr, "rescore": self.rescore.to_dict(), "measure_latency": self.measure_latency,
            "rewind_sha256": None if self.rewind_state is None else state_digest(self.rewind_state),
            **({} if self.export == ("eager",) else {"export": list(self.export)}),
            **({"distill": True} if self.distill else {}),
        }))

    @property
    def gradual(self) -> bool:
        """The final model is pruned along a schedule (training between prunings) rather than at once."""
        return self.schedule.kind not in ("one_shot", "constant") or self.schedule.begin_step > 0


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
    setting = budget.timing(inputs)
    policy, pruned, latency_check, speed = _pruned_and_timed(policy, evaluator, budget, config, setting)
    pruned = PruneResult(_recover(pruned, evaluator, config), pruned.history)
    make_permanent(pruned.model)  # element masks folded into plain weights: the exported model has zeros
    if config.measure_latency and not speed:  # timed as exported: masks folded in (latency budgets timed already)
        speed = speed_checks(model, pruned.model, inputs, setting, checked_runtimes(setting, config.export))
    if budget.exact:
        _check_exact(pruned.model, inputs, budget, evaluator)
    baseline, final = _figures(model, test_data, inputs), _figures(pruned.model, test_data, inputs)
    speedup = speed[0].speedup if speed else None  # the setting's runtime: one statistic, as printed
    if speed:
        baseline, final = (replace(baseline, latency_ms=speed[0].baseline_ms),
                           replace(final, latency_ms=speed[0].pruned_ms))
    if speed and not isinstance(budget, LatencyBudget) and any(c.slower for c in speed):
        log.warning("%s", describe_slower(speed))
    summary = Summary(
        budget=budget, best_trial_id=best_trial[0], search_accuracy=best_trial[1], final_finetune_steps=config.steps,
        trials=trials, failed_trials=failed_trials, baseline=baseline, pruned=final, latency_check=latency_check,
        latency_speedup=speedup, latency_setting=setting if config.measure_latency else None, speed=speed,
        rescored=() if rescored is None else tuple(RescoredCandidate(**r) for r in rescored.to_dict("records")),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"), excluded=dict(evaluator.cost_model.space.excluded),
        final_settings=config.settings(),
    )
    scores = {"search_accuracy": best_trial[1], "final_accuracy": final.accuracy, "flops": final.flops,
              "params": final.params, "nonzeros": final.nonzeros, "flops_ratio": summary.flops_ratio}
    return FinalModel(policy.with_metadata(budget=budget.to_dict(), scores=scores), pruned, summary)


def _recover(pruned: PruneResult, evaluator: Evaluator, config: FinalConfig) -> nn.Module:
    """BatchNorm recalibration and the final recovery (none after a gradual schedule, which trained already), on
    the evaluator's device; the model returned is on the CPU."""
    recipe, steps = evaluator.config, 0 if config.gradual else config.steps
    model = recover(evaluator.model, pruned, evaluator.example_inputs, strategy=config.recovery,
                    train_data=evaluator.train_data, steps=steps,
                    lr=recipe.lr if config.lr is None else config.lr, train_lr=config.train_lr,
                    weight_decay=recipe.weight_decay, bn_batches=recipe.bn_batches, rewind_state=config.rewind_state,
                    device=recipe.device, teacher=_teacher(evaluator, config, recipe.device, steps))
    return model.to("cpu")  # exported, counted and timed on the CPU


def _teacher(evaluator: Evaluator, config: FinalConfig, device: str, steps: int) -> nn.Module | None:
    """The unpruned model, frozen in eval mode on ``device``, when the final training distills over ``steps``."""
    return copy.deepcopy(evaluator.model).eval().to(device) if config.distill and steps > 0 else None


def _check_exact(model: nn.Module, inputs: Any, budget: Budget, evaluator: Evaluator) -> None:
    """The analytic cost model is exact for this budget: the real model must meet it (an invariant)."""
    base = evaluator.cost_model.base
    measured, limit = budget.measure(model, inputs), budget.limit(base)
    if not budget.meets(measured, base):
        raise AutopruneError(f"internal error: final model has {measured:,} {budget.metric} > budget {limit:,.0f}")


def _figures(model: nn.Module, data: Iterable, inputs: Any) -> ModelFigures:
    accuracy, loss = validate(model, data)
    return ModelFigures(accuracy=accuracy, loss=loss, flops=count_flops(model, inputs), params=count_params(model),
                        nonzeros=count_nonzeros(model))


def _pruned_and_timed(
    policy: Policy, evaluator: Evaluator, budget: Budget, config: FinalConfig, setting: LatencySetting,
) -> tuple[Policy, PruneResult, LatencyCheck | None, tuple[SpeedCheck, ...]]:
    """The policy pruned for real; a latency budget measured and repaired, and, with ``measure_latency``, timed
    against the unpruned model in every runtime it is exported for (never slower). Other budgets are timed after
    recovery, as exported (no speed checks here)."""
    model, inputs = evaluator.model, evaluator.example_inputs
    latency_check = None
    if isinstance(budget, LatencyBudget):  # the table predicted it; the measurement decides (and repairs)
        policy, pruned, latency_check = check_and_repair(policy, model, inputs, budget, evaluator.cost_model,
                                                         evaluator.prune)
    elif config.gradual:
        recipe = evaluator.config
        pruned = prune_gradually(model, policy, inputs, train_data=evaluator.train_data, schedule=config.schedule,
                                 lr=recipe.lr if config.lr is None else config.lr, weight_decay=recipe.weight_decay,
                                 space=evaluator.cost_model.space, importance=recipe.importance,
                                 teacher=_teacher(evaluator, config, "cpu", config.steps))
    else:
        pruned = evaluator.prune(policy)
    if latency_check is None or not config.measure_latency:
        return policy, pruned, latency_check, ()
    runtimes = checked_runtimes(setting, config.export)
    known = SpeedCheck(setting.runtime, latency_check.baseline_ms,
                       latency_check.measured_ratio * latency_check.baseline_ms)
    speed = speed_checks(model, pruned.model, inputs, setting, runtimes, known=known)
    if any(c.slower for c in speed):
        policy, pruned, speed, repairs = repair_until_not_slower(
            policy, pruned, speed, budget=budget, cost_model=evaluator.cost_model, prune=evaluator.prune,
            measure=lambda candidate: speed_checks(model, candidate, inputs, setting, runtimes))
        latency_check = remeasured(latency_check, speed[0], budget, evaluator.cost_model, policy, repairs)
    return policy, pruned, latency_check, speed
