"""Uniform baseline: one ratio for every group, found by bisection to just meet the budget."""

from __future__ import annotations

from typing import Any

from autoprune.searcher import Searcher
from search_spaces.cost import uniform_ratios
from search_spaces.policy import Policy


class UniformSearcher(Searcher):
    """The literature's "predefined" baseline: a single evaluation of the uniform policy."""

    name = "uniform"

    def __init__(self) -> None:
        super().__init__()
        self._done = False

    def _ask(self, trial_id: int) -> Policy | None:
        if self._done:
            return None
        self._done = True
        return self.context.policy(uniform_ratios(self.context.cost_model, self.context.budget))

    def _state_dict(self) -> dict[str, Any]:
        return {"done": self._done}

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self._done = bool(state["done"])
