"""Random search: independent uniform ratios per group, repaired into the budget."""

from __future__ import annotations

from autoprune.searcher import SeededSearcher, check_fit
from search_spaces.policy import Policy


class RandomSearcher(SeededSearcher):
    """Samples each group's ratio uniformly in ``[0, max_ratio]``, then fits the sample to the budget.

    Args:
        fit: ``budget`` (default) moves every sample onto the budget's boundary: infeasible samples are
            repaired (ratios pushed toward their max), samples with slack are scaled down so the budget is
            used fully. ``repair`` only repairs infeasible samples. ``none`` evaluates samples as drawn.
    """

    name = "random"

    def __init__(self, *, fit: str = "budget") -> None:
        super().__init__()
        self.fit = check_fit(fit, "random")

    def _ask(self, trial_id: int) -> Policy:
        ratios = {g.name: float(self.rng.uniform(0.0, g.max_ratio)) for g in self.context.space}
        return self.context.policy(self.context.fit(ratios, self.fit))
