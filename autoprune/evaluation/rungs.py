"""The scheduler: the one owner of multi-fidelity. It alone decides at which finetune steps (rungs) a candidate
is scored early and whether it continues; both executors honour it (Ray Tune through an adapter).

A rung at 0 steps is the adaptive-BN score (BatchNorm recalibrated, no finetuning): a different, cheaper proxy
than a few steps of finetuning, which the cascade screens every candidate with. A candidate that continues
keeps finetuning the same model on the same schedule: its score at the full fidelity is exactly the one a full
evaluation gives. Searchers only see scores, each with its fidelity, and learn from the scores that every
candidate has at one fidelity (:meth:`Scheduler.learning_fidelity`).
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from autoprune.evaluation.evaluator import CANDIDATE_FAILURES, Evaluator
from autoprune.trial import Score
from search_spaces.ground.errors import AutopruneError, ConfigError, unknown_name
from search_spaces.ground.options import check_fraction, check_int, from_mapping
from search_spaces.policy import Policy

KINDS = ("none", "asha", "cascade")
# The cascade's default share of candidates promoted from the adaptive-BN screen to the full score.
CASCADE_PROMOTE = 0.25
# Ray executor options that chose the scheduler before it was a setting of its own (still accepted).
LEGACY_EXECUTOR_KEYS = ("fidelity", "grace_period", "reduction_factor")


class Scheduler(abc.ABC):
    """Decides rungs and stops. ``state_dict()`` / ``load_state_dict()`` make it resumable."""

    @abc.abstractmethod
    def rungs(self, full: int) -> tuple[int, ...]:
        """Finetune steps below ``full`` at which a candidate is scored and may be stopped."""

    @abc.abstractmethod
    def keep_going(self, trial_id: int, steps: int, accuracy: float, *, feasible: bool = True) -> bool:
        """Whether a candidate scored ``accuracy`` at rung ``steps`` (within the budget or not) continues."""

    def learning_fidelity(self, full: int) -> int:
        """The fidelity at which every candidate is scored, so searchers compare (learn from) scores there: the
        full one, unless candidates are screened at a cheaper rung first."""
        return full

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (stateless by default)
        """Restore what :meth:`state_dict` saved."""


class FullFidelity(Scheduler):
    """Every candidate finetunes fully: no rungs, no stops."""

    def rungs(self, full: int) -> tuple[int, ...]:
        return ()

    def keep_going(self, trial_id: int, steps: int, accuracy: float, *, feasible: bool = True) -> bool:
        return True


class _Promotion(Scheduler):
    """Promotes the best ``keep`` share of the candidates scored at a rung so far (asynchronously, as ASHA: the
    first candidate at a rung always continues; a repeated report keeps the first decision)."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self.recorded: dict[int, dict[int, tuple[float, bool]]] = {}  # rung steps -> trial -> (accuracy, kept)

    def keep_going(self, trial_id: int, steps: int, accuracy: float, *, feasible: bool = True) -> bool:
        seen = self.recorded.setdefault(steps, {})
        if trial_id in seen:  # the same report again (a retried trial): the first decision stands
            return seen[trial_id][1]
        value = accuracy if math.isfinite(accuracy) and self._promotable(feasible) else -math.inf
        seen[trial_id] = (value, math.isfinite(value) and value >= self._cutoff([v for v, _ in seen.values()]))
        return seen[trial_id][1]

    def _promotable(self, feasible: bool) -> bool:
        """Whether a candidate within (``True``) or over the budget may be promoted at all."""
        return True

    def _cutoff(self, values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return -math.inf
        return float(np.percentile(finite, (1 - self.keep) * 100))

    def state_dict(self) -> dict[str, Any]:
        return {"recorded": {str(s): {str(t): list(d) for t, d in seen.items()} for s, seen in self.recorded.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recorded = {int(s): {int(t): (float(d[0]), bool(d[1])) for t, d in seen.items()}
                         for s, seen in state.get("recorded", {}).items()}


class ASHA(_Promotion):
    """Asynchronous successive halving (Li et al., 2020), as Ray Tune's ``ASHAScheduler`` decides.

    Rungs sit at ``grace_period * reduction_factor**k`` finetune steps below the full finetune. At each rung
    a candidate continues if its accuracy is at least the ``1 - 1/reduction_factor`` quantile of the
    accuracies recorded at that rung so far (the first candidate at a rung always continues).
    """

    def __init__(self, *, grace_period: int | None = None, reduction_factor: int = 3) -> None:
        if grace_period is not None:
            check_int("scheduler grace_period", grace_period, low=1)
        check_int("scheduler reduction_factor", reduction_factor, low=2)
        super().__init__(keep=1 / reduction_factor)
        self.grace_period, self.reduction_factor = grace_period, reduction_factor

    def rungs(self, full: int) -> tuple[int, ...]:
        if full <= 1:
            return ()
        rung, rungs = self.grace_period or max(1, full // 9), []
        while rung < full:
            rungs.append(rung)
            rung *= self.reduction_factor
        return tuple(rungs)


class Cascade(_Promotion):
    """Screen every candidate with the adaptive-BN score, finetune only the promising ones.

    The one rung is at 0 finetune steps: the candidate is pruned, its BatchNorm recalibrated and it is scored
    (about a seventh of a 30-step evaluation on ResNet-20, docs/benchmarks.md). It continues to the full score
    if it is within the budget and its accuracy is at least the ``1 - promote`` quantile of the earlier screens
    within the budget. Searchers learn from the screen accuracy, which every candidate has
    (:attr:`Score.first_accuracy`); the best policy is chosen among full scores, and the final step's re-score
    then scores the top few higher still.
    """

    def __init__(self, *, promote: float = CASCADE_PROMOTE) -> None:
        check_fraction("scheduler promote (the share of screened candidates scored fully)", promote,
                       low_inclusive=False, high_inclusive=True)
        super().__init__(keep=promote)
        self.promote = promote

    def rungs(self, full: int) -> tuple[int, ...]:
        return (0,) if full >= 1 else ()

    def learning_fidelity(self, full: int) -> int:
        return 0 if full >= 1 else full

    def _promotable(self, feasible: bool) -> bool:
        # searchers learn from the screen, and a candidate over the budget is never the best policy: finetuning
        # one fully buys nothing, and its screen does not raise the bar for the others
        return feasible


@dataclass(frozen=True)
class SchedulerConfig:
    """Which scheduler a search uses: ``none`` (full fidelity), ``asha`` or ``cascade``, with its options.

    Attributes:
        kind: ``none``, ``asha`` or ``cascade``.
        grace_period: ASHA: finetune steps before the first rung (default: full steps / 9).
        reduction_factor: ASHA: keep the best 1/reduction_factor at each rung; rungs at
            ``grace_period * reduction_factor**k`` steps.
        promote: cascade: the share of candidates promoted from the adaptive-BN screen to the full score
            (default 0.25).
    """

    kind: str = "none"
    grace_period: int | None = None
    reduction_factor: int = 3
    promote: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise unknown_name("scheduler", self.kind, list(KINDS))
        self.make()  # options are checked by the scheduler itself

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any] | SchedulerConfig | None) -> SchedulerConfig:
        """From a name (``asha``), a mapping (``{kind: asha, grace_period: 5}``) or a config."""
        if value is None or isinstance(value, str):
            return cls(kind=value or "none")
        return from_mapping(cls, value, what="scheduler options")

    def make(self) -> Scheduler:
        if self.promote is not None and self.kind != "cascade":
            raise ConfigError(f"promote applies to the cascade scheduler, not {self.kind!r}")
        if self.kind == "asha":
            return ASHA(grace_period=self.grace_period, reduction_factor=self.reduction_factor)
        if self.grace_period is not None or self.reduction_factor != 3:
            raise ConfigError(f"grace_period and reduction_factor apply to the asha scheduler, not {self.kind!r}")
        if self.kind == "cascade":
            return Cascade(promote=CASCADE_PROMOTE if self.promote is None else self.promote)
        return FullFidelity()

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``promote`` only when set (run directories written before it existed resume unchanged)."""
        return {k: v for k, v in asdict(self).items() if k != "promote" or v is not None}


def check_schedulable(config: SchedulerConfig, finetune_steps: int) -> None:
    """A scheduler with rungs stops candidates during their finetune: it needs finetune steps to split."""
    if config.kind == "cascade" and finetune_steps < 1:
        raise ConfigError("the cascade scheduler screens candidates by their adaptive-BN score before finetuning "
                          "them, but the evaluator's finetune_steps is 0 (every score is already adaptive-BN); give "
                          "finetune_steps of at least 1 (e.g. 30), or scheduler none")
    if config.kind == "asha" and finetune_steps < 2:
        raise ConfigError(f"the {config.kind} scheduler stops candidates at finetune rungs, but the evaluator's "
                          f"finetune_steps is {finetune_steps} (0 is adaptive-BN scoring); give finetune_steps "
                          "of at least 2 (e.g. 30), or scheduler none")


def split_legacy_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], SchedulerConfig | None]:
    """Ray executor options as ``(the executor's own, the scheduler they named or None)``.

    ``{"fidelity": "asha", "grace_period": 5}`` was how ASHA was asked for before the scheduler had its own
    setting; it still means ``SchedulerConfig(kind="asha", grace_period=5)``.
    """
    rest = {k: v for k, v in options.items() if k not in LEGACY_EXECUTOR_KEYS}
    if len(rest) == len(options):
        return rest, None
    legacy = {k: options[k] for k in LEGACY_EXECUTOR_KEYS if k in options}
    kind = legacy.pop("fidelity", None) or "none"
    return rest, SchedulerConfig(kind=kind, **(legacy if kind != "none" else {}))


def scheduled_score(evaluator: Evaluator, scheduler: Scheduler, trial_id: int, policy: Policy) -> Score:
    """Evaluate ``policy`` through the scheduler's rungs until it stops it or the full fidelity is reached.

    A candidate-caused failure becomes a failed Score (see :meth:`Evaluator.evaluate_safely`).
    """
    full = evaluator.config.finetune_steps
    start = time.perf_counter()
    score = None
    try:
        for score in evaluator.evaluate_rungs(policy, rungs=scheduler.rungs(full)):
            if score.fidelity < full and not scheduler.keep_going(trial_id, score.fidelity, score.accuracy,
                                                                   feasible=score.feasible):
                break
    except AutopruneError:
        raise
    except CANDIDATE_FAILURES as exc:
        done = score.fidelity if score is not None else 0
        return Score.failed(exc, fidelity=done, seconds=time.perf_counter() - start)
    assert score is not None  # evaluate_rungs always yields the full-fidelity score last
    return score
