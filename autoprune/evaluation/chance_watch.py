"""A warning when the first candidates all score near chance: the search-time score then cannot rank them.

Measured here: MobileNetV2 at 30% FLOPs scored with BatchNorm recalibration alone gives every candidate 9-20%
accuracy on 10 classes, and the searchers that learn from that score lose to ``uniform`` (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from autoprune.evaluation.evaluator import EvaluatorConfig
from autoprune.trial import Score

# Candidates looked at before judging, and "near chance": the best of them below this multiple of chance.
CHECK_AFTER = 10
NEAR_CHANCE = 2.0


@dataclass
class ChanceWatch:
    """Watches a search's first scores; :meth:`observe` returns a warning once if they are all near chance.

    Every successful score counts, at whatever rung a scheduler stopped it (a promoted candidate's is its
    full-fidelity score); under the cascade (``screened``), each candidate's adaptive-BN screen, which is what
    its searchers learn from.

    Attributes:
        chance: accuracy of a guess (1 / the number of classes; 0 turns the watch off).
        evaluator: how candidates are scored (named in the warning).
        after: first scores looked at.
        screened: the search runs the cascade scheduler: the screens are watched.
    """

    chance: float
    evaluator: EvaluatorConfig
    after: int = CHECK_AFTER
    screened: bool = False
    _accuracies: list[float] = field(default_factory=list, init=False, repr=False)

    def resume(self, accuracies: Iterable[float | None]) -> None:
        """Take a resumed run's earlier successful scores as its first ones (judged then, not again)."""
        finite = [a for a in accuracies if isinstance(a, (int, float)) and math.isfinite(a)]
        self._accuracies = finite[: self.after]

    def observe(self, score: Score) -> str | None:
        """Note a finished candidate's score; the warning when it completes the first ``after`` successful scores
        and their best is below ``NEAR_CHANCE`` times chance (None otherwise, and after that)."""
        accuracy = score.first_accuracy if self.screened else score.accuracy
        if len(self._accuracies) >= self.after or not score.ok or not math.isfinite(accuracy):
            return None
        self._accuracies.append(accuracy)
        return self.verdict()

    @property
    def column(self) -> str:
        """The trials table's column this watch reads."""
        return "first_accuracy" if self.screened else "accuracy"

    def verdict(self) -> str | None:
        """The warning if the first ``after`` successful scores are in and all near chance, else None."""
        if len(self._accuracies) < self.after or (best := max(self._accuracies)) >= NEAR_CHANCE * self.chance:
            return None
        config = self.evaluator
        if self.screened:
            return (f"the first {self.after} candidates' adaptive-BN screens score at most {best:.1%} (chance: "
                    f"{self.chance:.1%}): the cascade's searchers learn from these screens, which cannot rank "
                    "candidates at this budget; use scheduler none or asha (searchers then learn from finetuned "
                    "scores), or loosen the budget")
        more = ("give candidates finetune steps (evaluator finetune_steps=30, the product's default, ranks "
                "candidates best for its cost: docs/benchmarks.md)" if config.finetune_steps == 0 else
                f"give candidates more finetune steps than {config.finetune_steps}")
        return (f"the first {self.after} candidates score at most {best:.1%} (chance: {self.chance:.1%}) with "
                f"{config.bn_batches} BatchNorm batches and up to {config.finetune_steps} finetune steps: the "
                f"search-time score cannot rank candidates at this budget; {more}, or loosen the budget")
