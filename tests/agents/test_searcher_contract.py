"""Every registered searcher (and a few option variants) runs through autoprune.testing's contract."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune import Budget, CostModel
from autoprune.builtins.registry import SEARCHERS, searcher_class
from autoprune.searcher import Searcher
from autoprune.testing import SearcherContract, ask_many, contract_problem, synthetic_score
from search_spaces.ground.errors import ConfigError

# registered name -> options that make the searcher exercise its learning path within a few trials
FAST_OPTIONS = {"amc": {"warmup": 2, "batch_size": 8, "hidden": [32, 32]}}
# extra configurations run through the same contract: (registered name, options)
VARIANTS = {
    "optuna-cmaes": ("optuna", {"sampler": "cmaes"}),
    "optuna-nsga2": ("optuna", {"sampler": "nsga2"}),
    "ray_tune-basic": ("ray_tune", {"algorithm": "basic"}),
}
NAMES = sorted(SEARCHERS) + sorted(VARIANTS)
# searchers whose scan deliberately evaluates policies outside the budget (only their final pick is inside)
PROBING = {"sensitivity"}
SPACE = contract_problem()[2]
BUDGET = SearcherContract.budget


def _make(name: str) -> Searcher:
    registered, options = VARIANTS.get(name, (name, FAST_OPTIONS.get(name, {})))
    return searcher_class(registered)(**options)


class TestRegisteredSearchers(SearcherContract):
    @pytest.fixture(autouse=True, params=NAMES)
    def _searcher_name(self, request: pytest.FixtureRequest) -> None:
        self.name = request.param
        self.probing = request.param in PROBING

    def make_searcher(self) -> Searcher:
        return _make(self.name)


def _searcher(name: str, seed: int = 0) -> Searcher:
    contract = TestRegisteredSearchers()
    contract.name = name
    return contract.set_up(seed)


def test_random_differs_across_seeds_and_fills_the_budget() -> None:
    a = [t.policy for t in ask_many(_searcher("random", seed=0), 3)]
    b = [t.policy for t in ask_many(_searcher("random", seed=1), 3)]
    assert a != b
    for policy in a:
        assert 0.48 < CostModel(SPACE).ratio(policy, Budget.flops(1.0)) <= 0.5


def test_uniform_proposes_exactly_one_policy_even_after_a_restart() -> None:
    searcher = _searcher("uniform")
    trial = searcher.ask()
    assert trial is not None and searcher.ask() is None
    assert len({round(r, 9) for r in trial.policy.values()}) == 1
    searcher.tell(trial, synthetic_score(trial.policy, SPACE))
    restored = _searcher("uniform")
    restored.load_state_dict(searcher.state_dict())
    assert restored.ask() is None


def test_ask_before_setup_is_an_error() -> None:
    with pytest.raises(ConfigError, match="setup"):
        searcher_class("random")().ask()
    with pytest.raises(ConfigError, match="fit='x'"):
        searcher_class("random")(fit="x")


class _Unseeded(Searcher):
    """Draws from fresh entropy: ignores the seed and the saved state."""

    def _ask(self, trial_id: int):
        rng = np.random.default_rng()
        space = self.context.space
        return self.context.policy(self.context.repair({g.name: float(rng.uniform(0, g.max_ratio)) for g in space}))


class _OverBudget(Searcher):
    """Proposes the unpruned model, which misses any budget below 100%."""

    def _ask(self, trial_id: int):
        return self.context.policy(dict.fromkeys(self.context.space.names, 0.0))


def test_the_contract_fails_a_searcher_that_breaks_it() -> None:
    unseeded, over = SearcherContract(), SearcherContract()
    unseeded.make_searcher, over.make_searcher = _Unseeded, _OverBudget
    with pytest.raises(AssertionError):
        unseeded.test_same_seed_same_policies()
    with pytest.raises(AssertionError):
        unseeded.test_state_round_trip_continues_identically()
    with pytest.raises(AssertionError, match="over budget"):
        over.test_asks_valid_feasible_policies_with_unique_ids()
