"""The searcher contract, importable by plug-in authors (as ``optuna.testing`` ships Optuna's sampler tests).

Every searcher must: propose valid policies with unique trial ids (inside the budget unless it probes),
accept scores in any order and failed ones, propose the same policies for the same seed, and continue
identically after ``state_dict()`` / ``load_state_dict()``. Run the checks on your own searcher with pytest::

    from autoprune.testing import SearcherContract

    class TestMySearcher(SearcherContract):
        def make_searcher(self):
            return MySearcher(step=0.1)

The checks run on a ResNet-20 space (16x16 inputs) at 50% FLOPs with synthetic scores, in seconds.
Requires pytest.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from autoprune.builtins.models import resnet20
from autoprune.searcher import SearchContext, Searcher
from autoprune.study.state import from_bytes, to_bytes
from autoprune.trial import Score, Trial
from search_spaces.budget import Budget
from search_spaces.cost import CostModel
from search_spaces.ground.errors import ConfigError
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace

__all__ = ["SearcherContract", "ask_many", "contract_problem", "synthetic_score"]


@functools.cache
def contract_problem() -> tuple[nn.Module, torch.Tensor, SearchSpace]:
    """The model, example inputs and space the contract runs on (built once per process)."""
    model = resnet20().eval()
    inputs = torch.zeros(1, 3, 16, 16)
    return model, inputs, SearchSpace.from_model(model, inputs, round_to=1)  # every width: proposals stay distinct


def synthetic_score(policy: Policy, space: SearchSpace, *, ok: bool = True) -> Score:
    """A deterministic score that prefers keeping channels in early groups (or a failed score)."""
    if not ok:
        return Score.failed("synthetic failure", fidelity=0, seconds=0.0)
    accuracy = 1.0 - sum(r * (i + 1) for i, r in enumerate(policy.vector(space.names))) / 100
    cost = CostModel(space).cost(policy)
    return Score(accuracy, 1 - accuracy, cost.flops, cost.params, True, 0, 0.0)


def ask_many(searcher: Searcher, n: int) -> list[Trial]:
    """Up to ``n`` trials, fewer if the searcher has nothing more to propose."""
    trials = []
    for _ in range(n):
        trial = searcher.ask()
        if trial is None:
            break
        trials.append(trial)
    return trials


class SearcherContract:
    """The contract checks as pytest test methods; subclass it and implement :meth:`make_searcher`.

    Attributes:
        budget: the budget searchers are set up with.
        probing: True for searchers that deliberately evaluate policies outside the budget while they
            search (e.g. a sensitivity scan); their proposals are then not checked against the budget.
    """

    budget: Budget = Budget.flops(0.5)
    probing: bool = False

    def make_searcher(self) -> Searcher:
        """A new, not yet set up, instance of the searcher under test."""
        raise NotImplementedError("subclasses of SearcherContract implement make_searcher()")

    def set_up(self, seed: int = 0) -> Searcher:
        """A searcher from :meth:`make_searcher`, set up on the contract's problem with ``seed``."""
        model, inputs, space = contract_problem()
        searcher = self.make_searcher()
        searcher.setup(SearchContext(space=space, budget=self.budget, cost_model=CostModel(space), seed=seed,
                                     trials=50, model=model, example_inputs=inputs))
        return searcher

    def test_asks_valid_feasible_policies_with_unique_ids(self) -> None:
        space = contract_problem()[2]
        trials = ask_many(self.set_up(), 6)
        assert trials, "a searcher must propose at least one trial"
        assert len({t.id for t in trials}) == len(trials), "trial ids must be unique"
        for trial in trials:
            trial.policy.validate(space)
            assert self.probing or CostModel(space).feasible(trial.policy, self.budget), "policy over budget"
            assert all(math.isfinite(r) for r in trial.policy.values())

    def test_tell_in_any_order_and_failures(self) -> None:
        space = contract_problem()[2]
        searcher = self.set_up()
        trials = ask_many(searcher, 4)
        for i, trial in enumerate(reversed(trials)):
            searcher.tell(trial, synthetic_score(trial.policy, space, ok=i != 1))
        assert searcher.pending == ()
        with pytest.raises(ConfigError, match="not pending"):
            searcher.tell(trials[0], synthetic_score(trials[0].policy, space))
        ask_many(searcher, 2)  # still usable after out-of-order tells and a failed score

    def test_same_seed_same_policies(self) -> None:
        first = [t.policy for t in ask_many(self.set_up(seed=3), 5)]
        second = [t.policy for t in ask_many(self.set_up(seed=3), 5)]
        assert first == second

    def test_state_round_trip_continues_identically(self) -> None:
        space = contract_problem()[2]
        original = self.set_up(seed=1)
        for trial in ask_many(original, 3):
            original.tell(trial, synthetic_score(trial.policy, space))
        restored = self.set_up(seed=99)  # the seed must come from the state, not setup
        saved = to_bytes(original.state_dict())  # as a run directory stores it: JSON and tensors, no pickle
        restored.load_state_dict(from_bytes(*saved, source="the searcher's state"))
        expected, got = ask_many(original, 3), ask_many(restored, 3)
        assert [t.id for t in got] == [t.id for t in expected]
        assert [t.policy for t in got] == [t.policy for t in expected]
