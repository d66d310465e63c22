"""The typed outcome of a search's final step: baseline vs pruned model, as written to ``summary.json``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from search_spaces.budget import Budget, LatencySetting
from search_spaces.ground.errors import RunDirError


@dataclass(frozen=True)
class LatencyCheck:
    """The final measured check of a latency budget (and the repairs it took).

    Attributes:
        predicted_ms: the lookup table's prediction for the final policy.
        limit_predicted_ms: the budget's limit in the table's terms.
        repairs: how many times the policy was pruned further after a missed measurement.
        measured_ms: measured latency of the final pruned model.
        met: whether the measurement meets the budget.
        baseline_ms: the unpruned model measured side by side (None in summaries of older versions, which timed
            it only for fraction budgets).
        measured_ratio: median pruned/unpruned ratio of the side-by-side rounds (None as ``baseline_ms``). The
            summary's latencies and speedup are these same timings.
    """

    predicted_ms: float
    limit_predicted_ms: float
    repairs: int
    measured_ms: float
    met: bool
    baseline_ms: float | None = None
    measured_ratio: float | None = None


@dataclass(frozen=True)
class SpeedCheck:
    """The pruned model against the unpruned one in one runtime, timed side by side (alternating rounds).

    ``pruned_ms`` is ``ratio * baseline_ms`` (one statistic: :func:`search_spaces.measure.alternating_ratio`), so
    ``speedup == baseline_ms / pruned_ms`` exactly.
    """

    runtime: str
    baseline_ms: float
    pruned_ms: float

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.pruned_ms

    @property
    def slower(self) -> bool:
        """The pruned model takes longer than the unpruned one in this runtime."""
        return self.pruned_ms > self.baseline_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup, "slower": self.slower}


#: What makes a pruned model slower than the unpruned one, and what fixes it.
SLOWER_ADVICE = ("channel counts that suit the runtime's kernels: round_to 8 or auto (space={'round_to': 8}, "
                 "--round-to 8, --round-to auto, or round_to in the preset), or a latency budget measured in that "
                 "runtime (Budget.latency(..., runtime=...), --latency-runtime)")


@dataclass(frozen=True)
class ModelFigures:
    """Test-set accuracy and costs of one model (the baseline or the pruned one)."""

    accuracy: float
    loss: float
    flops: int
    params: int
    latency_ms: float | None = None
    nonzeros: int | None = None


@dataclass(frozen=True)
class RescoredCandidate:
    """One of the best candidates scored again at a higher fidelity before the exported one was chosen."""

    trial_id: int
    search_accuracy: float
    accuracy: float
    loss: float
    fidelity: int
    seconds: float


@dataclass(frozen=True)
class Summary:
    """Baseline vs pruned after the final finetune; ``summary.json`` is :meth:`to_dict`.

    Attributes:
        budget: the budget searched for.
        best_trial_id: the trial whose policy was exported.
        search_accuracy: that trial's validation score during the search.
        final_finetune_steps: finetune steps spent on the exported model.
        trials: finished trials; failed_trials: how many of them failed.
        baseline, pruned: accuracy, loss, FLOPs, params (and latency) of each model on the test data.
        latency_check: the measured check of a latency budget (None for other budgets).
        latency_speedup: baseline/pruned latency measured side by side (None when not measured).
        latency_setting: where the latency was measured.
        rescored: the best candidates scored again (the exported one is the most accurate of them).
        finished: local time the outputs were written (ISO 8601).
        excluded: channel groups the trace-time check left out of the search (group name -> reason).
        final_settings: how the exported model was made
            (:meth:`autoprune.final.finalize.FinalConfig.settings`); a resumed search keeps it only when they are
            unchanged.
    """

    budget: Budget
    best_trial_id: int
    search_accuracy: float
    final_finetune_steps: int
    trials: int
    failed_trials: int
    baseline: ModelFigures
    pruned: ModelFigures
    latency_check: LatencyCheck | None = None
    latency_speedup: float | None = None
    latency_setting: LatencySetting | None = None
    rescored: tuple[RescoredCandidate, ...] = ()
    finished: str = ""
    excluded: Mapping[str, str] = field(default_factory=dict)
    final_settings: Mapping[str, Any] = field(default_factory=dict)
    speed: tuple[SpeedCheck, ...] = ()

    @property
    def slower_in(self) -> tuple[str, ...]:
        """The runtimes in which the pruned model was measured slower than the unpruned one."""
        return tuple(check.runtime for check in self.speed if check.slower)

    @property
    def search_best(self) -> RescoredCandidate | None:
        """The re-scored candidate with the best search-time score (the earlier wins a tie; None without a
        re-score): the trial a search's "best accuracy so far" shows."""
        if not self.rescored:
            return None
        return max(self.rescored, key=lambda c: (c.search_accuracy, -c.trial_id))

    @property
    def exported_rescored(self) -> RescoredCandidate | None:
        """The exported trial's re-score (None when it was not re-scored)."""
        return next((c for c in self.rescored if c.trial_id == self.best_trial_id), None)

    def rescore_facts(self) -> tuple[tuple[str, str], ...]:
        """("best by search score", ...) and ("exported after re-scoring", ...) with both trials' numbers, when
        re-scoring exported another trial than the best by search score (empty when it is the same trial)."""
        best, exported = self.search_best, self.exported_rescored
        if best is None or best.trial_id == self.best_trial_id:
            return ()
        again = f", {_rescored_text(exported.accuracy)}" if exported is not None else ""
        return (("best by search score", f"trial {best.trial_id}: {best.search_accuracy:.2%} "
                                         f"({_rescored_text(best.accuracy)})"),
                ("exported after re-scoring", f"trial {self.best_trial_id}: search score "
                                              f"{self.search_accuracy:.2%}{again}"))

    def rescore_story(self) -> str | None:
        """:meth:`rescore_facts` as one line (None when the exported trial is the best by search score)."""
        facts = self.rescore_facts()
        return "; ".join(f"{label}: {text}" for label, text in facts) if facts else None

    @property
    def flops_ratio(self) -> float:
        """Pruned FLOPs over baseline FLOPs."""
        return self.pruned.flops / self.baseline.flops

    @property
    def params_ratio(self) -> float:
        """Pruned parameters over baseline parameters."""
        return self.pruned.params / self.baseline.params

    @property
    def nonzeros_ratio(self) -> float | None:
        """Pruned non-zero parameters over the baseline's (None for summaries written before they were counted)."""
        if self.pruned.nonzeros is None or not self.baseline.nonzeros:
            return None
        return self.pruned.nonzeros / self.baseline.nonzeros

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of ``summary.json`` (ratios stored with the pruned model's figures)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["budget"] = self.budget.to_dict()
        data["baseline"] = _drop_none(asdict(self.baseline))
        data["pruned"] = _drop_none({**asdict(self.pruned), "flops_ratio": self.flops_ratio,
                                     "params_ratio": self.params_ratio, "nonzeros_ratio": self.nonzeros_ratio})
        for name in ("latency_check", "latency_setting"):
            value = getattr(self, name)
            data[name] = None if value is None else _drop_none(asdict(value))
        data["rescored"] = [asdict(r) for r in self.rescored]
        data["speed"] = [check.to_dict() for check in self.speed]
        data["slower_in"] = list(self.slower_in)
        data["rescore_facts"] = [list(fact) for fact in self.rescore_facts()]
        if self.slower_in:
            data["slower_advice"] = SLOWER_ADVICE
        data["excluded"] = dict(self.excluded)
        data["final_settings"] = dict(self.final_settings)
        return _drop_none(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "the summary") -> Summary:
        """Read :meth:`to_dict` output (``summary.json``; ``source`` names it in errors)."""
        try:
            values = dict(data)
            values["budget"] = Budget.from_dict(values["budget"])
            for name in ("baseline", "pruned"):
                figures = {k: v for k, v in values[name].items() if k not in RATIOS}
                values[name] = ModelFigures(**figures)
            if values.get("latency_check") is not None:
                values["latency_check"] = LatencyCheck(**values["latency_check"])
            if values.get("latency_setting") is not None:
                values["latency_setting"] = LatencySetting(**values["latency_setting"])
            values["rescored"] = tuple(RescoredCandidate(**r) for r in values.get("rescored", ()))
            values["speed"] = tuple(SpeedCheck(c["runtime"], c["baseline_ms"], c["pruned_ms"])
                                    for c in values.get("speed", ()))
            values.pop("slower_in", None)
            values.pop("rescore_facts", None)
            values.pop("slower_advice", None)
            return cls(**values)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{source} is not a summary written by this version of autoprune: {exc!r}") from exc


RATIOS = ("flops_ratio", "params_ratio", "nonzeros_ratio")


def _rescored_text(accuracy: float) -> str:
    """A re-scored accuracy as text (a failed re-score is NaN)."""
    return "re-score failed" if math.isnan(accuracy) else f"re-scored {accuracy:.2%}"


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
