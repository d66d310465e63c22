"""The ask/tell currency: a Trial goes out, a Score comes back, a Completed trial is recorded."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from search_spaces.policy import Policy


class EvaluationError(RuntimeError):
    """An evaluation diverged (NaN/inf loss); the trial is marked failed and the search goes on."""


@dataclass(frozen=True)
class Trial:
    """One candidate: an id unique within a search and the policy to evaluate."""

    id: int
    policy: Policy


@dataclass(frozen=True)
class Score:
    """The outcome of one evaluation.

    Attributes:
        accuracy: top-1 accuracy on the validation subset (NaN if failed).
        loss: mean cross-entropy on the validation subset (NaN if failed).
        flops: FLOPs of the pruned model on the example inputs (torch.utils.flop_counter).
        params: parameter count of the pruned model.
        feasible: whether the pruned model meets the budget.
        fidelity: finetune steps spent on this candidate.
        rung: how many rungs (scheduler stops) the candidate passed before this score (0: the first score).
        first_accuracy: the accuracy of the candidate's first score (at the scheduler's first rung; this
            score's own without rungs), which every candidate of a search has at the same fidelity.
        seconds: wall time of the evaluation.
        status: ``ok`` or ``failed``.
        error: the failure, if any.
        latency_ms: measured latency of the pruned model (latency budgets only; NaN otherwise).
        prune_seconds: copying and pruning the model, counting its FLOPs (and, for latency budgets, measuring it).
        recalibrate_seconds: BatchNorm recalibration.
        finetune_seconds: finetuning (up to this fidelity).
        validate_seconds: scoring on the validation subset (every rung so far).
    """

    accuracy: float
    loss: float
    flops: int
    params: int
    feasible: bool
    fidelity: int
    seconds: float
    rung: int = 0
    first_accuracy: float = math.nan
    status: str = "ok"
    error: str | None = None
    latency_ms: float = math.nan
    prune_seconds: float = 0.0
    recalibrate_seconds: float = 0.0
    finetune_seconds: float = 0.0
    validate_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def failed(cls, error: BaseException | str, *, fidelity: int, seconds: float) -> Score:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(math.nan, math.nan, 0, 0, False, fidelity, seconds, status="failed", error=text)


@dataclass(frozen=True)
class Completed:
    """A finished trial with its score and where it ran (``node``, ``pid``)."""

    trial: Trial
    score: Score
    info: dict[str, Any] = field(default_factory=dict)
