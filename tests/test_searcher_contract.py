"""The contract every registered searcher must honour (like Optuna's sampler test suite)."""

from __future__ import annotations

import math

import pytest
import torch

from autoprune import Budget, CostModel
from autoprune.errors import ConfigError
from autoprune.evaluate import Score
from autoprune.models import resnet20
from autoprune.registry import SEARCHERS, searcher_class
from autoprune.searcher import SearchContext, Searcher
from search_spaces import SearchSpace

MODEL = resnet20().eval()
INPUTS = torch.zeros(1, 3, 16, 16)
SPACE = SearchSpace.from_model(MODEL, INPUTS)
BUDGET = Budget.flops(0.5)


# registered name -> options that make the searcher exercise its learning path within a few trials
FAST_OPTIONS = {"amc": {"warmup": 2, "batch_size": 8, "hidden": [32, 32]}}
# extra configurations run through the same contract: (registered name, options)
VARIANTS = {
    "optuna-cmaes": ("optuna", {"sampler": "cmaes"}),
    "optuna-nsga2": ("optuna", {"sampler": "nsga2"}),
    "ray_tune-basic": ("ray_tune", {"algorithm": "basic"}),
}


def _searcher(name: str, seed: int = 0) -> Searcher:
    registered, options = VARIANTS.get(name, (name, FAST_OPTIONS.get(name, {})))
    searcher = searcher_class(registered)(**options)
    searcher.setup(SearchContext(space=SPACE, budget=BUDGET, cost_model=CostModel(SPACE), seed=seed, trials=50,
                                 model=MODEL, example_inputs=INPUTS))
    return searcher


def _score(policy, *, ok: bool = True) -> Score:
    """A synthetic score that prefers keeping channels in early groups."""
    accuracy = 1.0 - sum(r * (i + 1) for i, r in enumerate(policy.vector(SPACE.names))) / 100
    cost = CostModel(SPACE).cost(policy)
    if not ok:
        return Score.failed("boom", fidelity=0, seconds=0.0)
    return Score(accuracy, 1 - accuracy, cost.flops, cost.params, True, 0, 0.0)


def _ask_many(searcher: Searcher, n: int) -> list:
    trials = []
    for _ in range(n):
        trial = searcher.ask()
        if trial is None:
            break
        trials.append(trial)
    return trials


NAMES = sorted(SEARCHERS) + sorted(VARIANTS)
# searchers whose scan deliberately evaluates policies outside the budget (only their final pick is inside)
PROBING = {"sensitivity"}


@pytest.mark.parametrize("name", NAMES)
def test_asks_valid_feasible_policies_with_unique_ids(name: str) -> None:
    searcher = _searcher(name)
    trials = _ask_many(searcher, 6)
    assert trials, "a searcher must propose at least one trial"
    assert len({t.id for t in trials}) == len(trials)
    for trial in trials:
        trial.policy.validate(SPACE)
        assert name in PROBING or CostModel(SPACE).feasible(trial.policy, BUDGET)
        assert all(math.isfinite(r) for r in trial.policy.values())


@pytest.mark.parametrize("name", NAMES)
def test_tell_in_any_order_and_failures(name: str) -> None:
    searcher = _searcher(name)
    trials = _ask_many(searcher, 4)
    for i, trial in enumerate(reversed(trials)):
        searcher.tell(trial, _score(trial.policy, ok=i != 1))
    assert searcher.pending == ()
    with pytest.raises(ConfigError, match="not pending"):
        searcher.tell(trials[0], _score(trials[0].policy))
    _ask_many(searcher, 2)  # still usable after out-of-order tells and a failed score


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_policies(name: str) -> None:
    a = [t.policy for t in _ask_many(_searcher(name, seed=3), 5)]
    b = [t.policy for t in _ask_many(_searcher(name, seed=3), 5)]
    assert a == b


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_continues_identically(name: str) -> None:
    original = _searcher(name, seed=1)
    for trial in _ask_many(original, 3):
        original.tell(trial, _score(trial.policy))
    state = original.state_dict()
    restored = _searcher(name, seed=99)  # the seed must come from the state, not setup
    restored.load_state_dict(state)
    expected = _ask_many(original, 3)
    got = _ask_many(restored, 3)
    assert [t.id for t in got] == [t.id for t in expected]
    assert [t.policy for t in got] == [t.policy for t in expected]


def test_random_differs_across_seeds_and_fills_the_budget() -> None:
    a = [t.policy for t in _ask_many(_searcher("random", seed=0), 3)]
    b = [t.policy for t in _ask_many(_searcher("random", seed=1), 3)]
    assert a != b
    for policy in a:
        assert 0.48 < CostModel(SPACE).ratio(policy, "flops") <= 0.5


def test_uniform_proposes_exactly_one_policy_even_after_a_restart() -> None:
    searcher = _searcher("uniform")
    trial = searcher.ask()
    assert trial is not None and searcher.ask() is None
    assert len({round(r, 9) for r in trial.policy.values()}) == 1
    searcher.tell(trial, _score(trial.policy))
    restored = _searcher("uniform")
    restored.load_state_dict(searcher.state_dict())
    assert restored.ask() is None


def test_ask_before_setup_is_an_error() -> None:
    with pytest.raises(ConfigError, match="setup"):
        searcher_class("random")().ask()
    with pytest.raises(ConfigError, match="fit='x'"):
        searcher_class("random")(fit="x")
