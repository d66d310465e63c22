"""Pruning schedules: how a policy's final ratios are reached over training steps, and pruning along them.

Each schedule maps a step to the fraction of the way each layer's (or group's) final ratio ``r`` is applied:

- ``one_shot``: ``r`` at ``begin_step`` (default 0), then finetuning.
- ``constant``: the same, named after TensorFlow Model Optimization's ``ConstantSparsity``.
- ``iterative``: ``stages`` prunings spread evenly from ``begin_step`` to ``end_step``, each removing the same
  fraction of what is left: ``s_j = 1 - (1 - r) ** (j / stages)`` (iterative magnitude pruning).
- ``agp``: Zhu & Gupta's automated gradual pruning (tfmot's ``PolynomialDecay`` with power 3): every
  ``frequency`` steps from ``begin_step`` to ``end_step``,
  ``s_t = r + (s_0 - r) * (1 - (t - begin_step) / (end_step - begin_step)) ** 3`` with ``s_0 = initial_sparsity``.

:func:`prune_gradually` trains between the pruning events (SGD, the evaluator's recipe) and prunes for real: masks
for an element policy, Torch-Pruning surgery in stages for a channel policy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from autoprune.evaluation.evaluator import finetune
from autoprune.prune.channels import PruneResult, prune
from autoprune.prune.masks import apply_masks
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.options import check_int, check_number
from search_spaces.groups import kept_channels
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace

KINDS = ("one_shot", "constant", "iterative", "agp")


@dataclass(frozen=True)
class PruningSchedule:
    """When the pruning happens over ``steps`` training steps (see the module docstring for the formulas).

    Attributes:
        kind: ``one_shot``, ``constant``, ``iterative`` or ``agp``.
        steps: training steps in all (the last pruning event is followed by the steps left); 0 leaves them to
            the caller: the final step of a search sets them to its ``final_finetune_steps`` (and only then is
            ``end_step`` checked against them).
        begin_step: first pruning event.
        end_step: last pruning event (iterative, agp; default: ``steps // 2``, leaving half the steps to recover).
        stages: prunings of ``iterative``.
        frequency: steps between ``agp``'s pruning events.
        initial_sparsity: ``agp``'s sparsity at ``begin_step`` (capped by each layer's final ratio).
    """

    kind: str = "one_shot"
    steps: int = 0
    begin_step: int = 0
    end_step: int | None = None
    stages: int = 3
    frequency: int = 10
    initial_sparsity: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"schedule {self.kind!r} is not accepted; accepted: {', '.join(KINDS)}")
        check_int("schedule steps", self.steps, low=0)
        check_int("begin_step", self.begin_step, low=0)
        check_int("stages", self.stages, low=1)
        check_int("frequency", self.frequency, low=1)
        check_number("initial_sparsity", self.initial_sparsity, low=0)
        if self.initial_sparsity >= 1:
            raise ConfigError(f"initial_sparsity must be below 1, got {self.initial_sparsity!r}")
        if self.end_step is not None:
            check_int("end_step", self.end_step, low=0)
        if self.last_step < self.begin_step or (self.steps and self.overruns):
            raise ConfigError(f"pruning must end between begin_step={self.begin_step} and steps={self.steps}, "
                              f"got end_step={self.last_step}")

    @property
    def overruns(self) -> bool:
        """The last pruning event lies past the training steps (``steps`` 0: not set yet, see the class doc)."""
        return self.last_step > max(self.steps, self.begin_step)

    @classmethod
    def from_value(cls, value: str | dict[str, Any] | PruningSchedule | None) -> PruningSchedule:
        """A schedule from its name, a mapping of its fields, or itself (None: one-shot)."""
        if value is None or isinstance(value, PruningSchedule):
            return value or cls()
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ConfigError(f"unknown schedule keys {unknown}; accepted: {', '.join(cls.__dataclass_fields__)}")
            return cls(**value)
        raise ConfigError(f"a schedule is a name ({', '.join(KINDS)}) or a mapping of its fields, got {value!r}")

    @property
    def last_step(self) -> int:
        """The step of the last pruning event (the final ratios hold from there on)."""
        if self.kind in ("one_shot", "constant"):
            return self.begin_step
        return self.steps // 2 if self.end_step is None else self.end_step

    def events(self) -> list[int]:
        """The steps at which the model is pruned, in order (the last one reaches the final ratios)."""
        begin, end = self.begin_step, self.last_step
        if self.kind in ("one_shot", "constant") or end == begin:
            return [begin]
        if self.kind == "iterative":
            return sorted({begin + round(j * (end - begin) / self.stages) for j in range(1, self.stages + 1)})
        return sorted({*range(begin, end, self.frequency), end})

    def ratio_at(self, step: int, final: float) -> float:
        """A layer's ratio after the pruning events up to ``step``, for its final ratio ``final``."""
        done = [t for t in self.events() if t <= step]
        if not done:
            return 0.0
        t, begin, end = done[-1], self.begin_step, self.last_step
        if t >= end:
            return final
        if self.kind == "iterative":
            j = self.events().index(t) + 1
            return 1 - (1 - final) ** (j / self.stages)
        start = min(self.initial_sparsity, final)
        return final + (start - final) * (1 - (t - begin) / (end - begin)) ** 3


def prune_gradually(
    model: nn.Module, policy: Policy, example_inputs: Any, *, train_data: Iterable, schedule: PruningSchedule,
    lr: float = 0.01, weight_decay: float = 5e-4, space: SearchSpace | None = None, importance: str = "l1",
    teacher: nn.Module | None = None,
) -> PruneResult:
    """Prune a copy of ``model`` to ``policy`` along ``schedule``, training between the pruning events.

    Every event applies :meth:`PruningSchedule.ratio_at` to each layer's final ratio; the last gives exactly the
    kept counts of a one-shot prune (so the cost model's figures hold). Training is SGD with a cosine schedule
    per segment between events (the evaluator's finetune). An element policy is masked (``torch.nn.utils.prune``)
    and keeps its masks; a channel policy is pruned by Torch-Pruning at every event, its history the concatenation.
    With a ``teacher``, the training distills from it.
    """
    space = space or SearchSpace.from_model(model, example_inputs, check=False, max_ratio=0.999,
                                            granularity=(policy.fingerprint or {}).get("granularity", "channel"))
    policy.validate(space)
    if schedule.overruns:
        raise ConfigError(f"the schedule's last pruning event (step {schedule.last_step}) lies past its "
                          f"steps={schedule.steps}; give the schedule its training steps")
    current, history = copy.deepcopy(model), []
    done = 0
    for event in schedule.events():
        finetune(current, train_data, steps=event - done, lr=lr, weight_decay=weight_decay, teacher=teacher)
        done = event
        targets = {g.name: kept_channels(g.channels, schedule.ratio_at(event, policy[g.name]), g.round_to)
                   for g in space if policy[g.name] > 0}
        if space.granularity == "element":
            apply_masks(current, targets, importance=importance)
        else:
            step = _pruned_to(current, targets, example_inputs, importance)
            current, history = step.model, history + step.history
    finetune(current, train_data, steps=schedule.steps - done, lr=lr, weight_decay=weight_decay, teacher=teacher)
    return PruneResult(current, history)


def _pruned_to(model: nn.Module, kept: dict[str, int], example_inputs: Any, importance: str) -> PruneResult:
    """``model`` (maybe pruned before) pruned so each named group keeps ``kept`` channels of the original."""
    now = SearchSpace.from_model(model, example_inputs, check=False, max_ratio=0.999)
    ratios = {}
    for name, target in kept.items():
        channels = now[name].channels
        # the ratio whose kept count int(C * (1 - r)) is exactly target (a multiple of round_to already)
        ratios[name] = max(0.0, (channels - target - 0.5) / channels) if target < channels else 0.0
    return prune(model, now.policy({n: ratios.get(n, 0.0) for n in now.names}), example_inputs,
                 importance=importance, space=now)
