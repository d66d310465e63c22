"""Global-magnitude baseline: Torch-Pruning's global ranking, one threshold across all groups.

Each group's channels are scored once by Torch-Pruning's criterion (normalized per group, as its global
pruning does); a global ratio removes the lowest-scoring channels across all groups, and that ratio is
found by bisection so the allocation just meets the budget. The per-group result is one policy (one
evaluation). With ``importance="bn_scale"`` this is Network Slimming's allocation. In an element space the
scores are the weights' magnitudes, unnormalized: global magnitude pruning (Han et al.; ``torch.nn.utils.prune
.global_unstructured``). Within each group, the
evaluator's importance picks the channels (a global and a local criterion of the same kind rank a
group's channels alike).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autoprune.prune.channels import group_importances
from autoprune.prune.masks import weight_magnitudes
from autoprune.searcher import SearchContext, Searcher
from search_spaces.cost import bisect_feasible
from search_spaces.ground.errors import ConfigError
from search_spaces.policy import Policy

IMPORTANCES = ("l1", "l2", "bn_scale")


def threshold_allocation(scores: dict[str, torch.Tensor], ratio: float, round_to: Mapping[str, int] | None = None
                         ) -> dict[str, int]:
    """Kept channels (or heads) per group when the ``ratio`` lowest of all scores go (Torch-Pruning's global rule),
    rounded down to each group's multiple in ``round_to`` (default 1)."""
    everything = torch.cat(list(scores.values()))
    n_pruned = len(everything) - int(len(everything) * (1 - ratio))
    if n_pruned <= 0:
        return {name: len(s) for name, s in scores.items()}
    threshold = torch.topk(everything, k=n_pruned, largest=False).values[-1]
    kept = {}
    for name, s in scores.items():
        left = len(s) - int((s <= threshold).sum())
        multiple = (round_to or {}).get(name, 1)
        if left < len(s) and multiple > 1:
            left -= left % multiple
        kept[name] = left
    return kept


class GlobalSearcher(Searcher):
    """One policy from a global importance threshold that just meets the budget.

    Args:
        importance: ``l1`` (default), ``l2`` or ``bn_scale`` (Network Slimming).
    """

    name = "global"

    def __init__(self, *, importance: str = "l1") -> None:
        super().__init__()
        if importance not in IMPORTANCES:
            raise ConfigError(f"global importance {importance!r} is not accepted; accepted: {', '.join(IMPORTANCES)}")
        self.importance = importance
        self._done = False

    def _setup(self, context: SearchContext) -> None:
        if context.model is None or context.example_inputs is None:
            raise ConfigError("the global searcher ranks channels by the model's weights: search() passes the "
                              "model; a SearchContext built by hand needs model= and example_inputs=")
        if context.space.granularity == "element":  # one threshold on |w| across all weight tensors
            if self.importance == "bn_scale":
                raise ConfigError("global importance 'bn_scale' ranks channels; an element space ranks weights by "
                                  "magnitude: use 'l1' or 'l2'")
            self.scores = weight_magnitudes(context.model, context.space.names)
            return
        self.scores = group_importances(
            context.model, context.example_inputs, group_names=context.space.names, importance=self.importance
        )

    def allocation(self, global_ratio: float) -> dict[str, float]:
        """Per-group ratios of the global ranking at ``global_ratio``, capped at each group's max."""
        space = self.context.space
        kept = threshold_allocation(self.scores, global_ratio, {g.name: g.round_to for g in space})
        ratios = {}
        for group in space:
            # the ratio whose kept count int(C * (1 - r)) is exactly kept[g], robust to float error
            ratio = max(0.0, (group.channels - kept[group.name] - 0.5) / group.channels)
            ratios[group.name] = min(ratio, group.max_ratio)
        return ratios

    def _ask(self, trial_id: int) -> Policy | None:
        if self._done:
            return None
        self._done = True
        ratios = bisect_feasible(self.allocation, self.context.cost_model, self.context.budget)
        return self.context.policy(ratios)

    def _state_dict(self) -> dict[str, Any]:
        return {"done": self._done}

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self._done = bool(state["done"])
