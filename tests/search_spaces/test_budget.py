from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoprune import Budget, BudgetError, Cost, CostModel, repair
from autoprune.builtins.models import resnet20, small_cnn
from search_spaces import SearchSpace
from search_spaces.cost import tighten, uniform_ratios

SPACES = {  # small_cnn keeps every width: its floor is one that rounding to 3 places would put out of reach
    "small_cnn": SearchSpace.from_model(small_cnn(), torch.zeros(1, 1, 8, 8), round_to=1),
    "resnet20": SearchSpace.from_model(resnet20(), torch.zeros(1, 3, 16, 16)),
}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Budget.flops(0), "fraction must be in"),
        (lambda: Budget.flops(1.5), "fraction must be in"),
        (lambda: Budget.flops(), "exactly one of"),
        (lambda: Budget.flops(0.5, absolute=10), "exactly one of"),
        (lambda: Budget.params(absolute=-3), "positive number"),
        (lambda: Budget.from_dict({"latency_ms": 0.5}), "'latency_ms' is not supported; accepted: flops, params"),
        (lambda: Budget.from_dict({"flops": 0.5, "params": 0.5}), "one entry"),
    ],
)
def test_bad_budgets_name_the_value(make, match) -> None:
    with pytest.raises(BudgetError, match=match):
        make()


def test_budget_limits_relative_and_absolute() -> None:
    cost = CostModel(SPACES["small_cnn"])
    assert Budget.flops(0.5).limit(cost.base) == cost.base.flops / 2
    assert Budget.params(absolute=1000).limit(cost.base) == 1000
    assert Budget.from_dict({"params": 0.3}) == Budget.params(0.3)
    assert Budget.from_dict(Budget.flops(0.2).to_dict()) == Budget.flops(0.2)


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_uniform_is_one_ratio_that_just_meets_the_budget(name: str, fraction: float) -> None:
    space = SPACES[name]
    cost, budget = CostModel(space), Budget.flops(fraction)
    ratios = uniform_ratios(cost, budget)
    values = {round(r, 9) for n, r in ratios.items() if r < space[n].max_ratio}
    assert len(values) == 1
    assert cost.feasible(ratios, budget)
    assert not cost.feasible({n: max(0.0, r - 0.02) for n, r in ratios.items()}, budget)


def test_impossible_budget_is_a_clear_error() -> None:
    cost = CostModel(SPACES["resnet20"])
    with pytest.raises(BudgetError, match="cannot be met.*max_ratio"):
        cost.check_reachable(Budget.flops(0.01))
    with pytest.raises(BudgetError, match="cannot be met"):
        repair(dict.fromkeys(SPACES["resnet20"].names, 0.0), cost, Budget.flops(0.01))


@pytest.mark.parametrize(("cost", "base"), [(383720487, 751961427), (133031423, 771168318), (108985032, 666464150)])
def test_a_fraction_equal_to_the_costs_ratio_is_met(cost: int, base: int) -> None:
    """``cost / base * base`` falls one ulp short of ``cost`` for these: the ratio a user is told must be met."""
    assert (cost / base) * base < cost
    assert Budget.flops(cost / base).allows(Cost(cost, 1), Cost(base, 1))
    assert not Budget.flops(cost / base * (1 - 1e-12)).allows(Cost(cost, 1), Cost(base, 1))


@pytest.mark.parametrize("metric", ["flops", "params"])
def test_the_bound_an_unreachable_budget_offers_is_reachable(metric: str) -> None:
    model, make = CostModel(SPACES["small_cnn"]), getattr(Budget, metric)
    floor = model.ratio(SPACES["small_cnn"].max_ratios, make(1.0))
    assert round(floor, 3) < floor  # rounded to the nearest, the offer would be out of reach
    with pytest.raises(BudgetError, match=r"loosen the budget to >= (\d\.\d{3})$") as caught:
        model.check_reachable(make(0.01))
    model.check_reachable(make(float(re.search(r">= (\d\.\d{3})", str(caught.value)).group(1))))
    model.check_reachable(make(floor))
    with pytest.raises(BudgetError, match=r"loosen the budget to absolute >= ([\d,]+)$") as caught:
        model.check_reachable(make(absolute=10))
    offered = re.search(r"absolute >= ([\d,]+)", str(caught.value)).group(1)
    model.check_reachable(make(absolute=int(offered.replace(",", ""))))


@pytest.mark.parametrize("budget", [Budget.flops(0.4), Budget.params(absolute=30_000)])
def test_excess_and_allows_agree(budget: Budget) -> None:
    model = CostModel(SPACES["small_cnn"])
    for ratio in [i / 20 for i in range(17)]:
        cost = model.cost(dict.fromkeys(SPACES["small_cnn"].names, ratio))
        assert budget.allows(cost, model.base) == (budget.excess(cost, model.base) <= 0)
        assert budget.allows(cost, model.base) == budget.meets(budget.predicted(cost), model.base)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(SPACES)),
    fraction=st.floats(0.2, 1.0),
    metric=st.sampled_from(["flops", "params"]),
    data=st.data(),
)
def test_repair_and_tighten_always_end_feasible(name, fraction, metric, data) -> None:
    space = SPACES[name]
    cost, budget = CostModel(space), Budget.from_dict({metric: fraction})
    ratios = {g.name: data.draw(st.floats(0, g.max_ratio)) for g in space}
    fixed = repair(ratios, cost, budget)
    assert cost.feasible(fixed, budget)
    assert all(0 <= fixed[g.name] <= g.max_ratio for g in space)
    if cost.feasible(ratios, budget):
        assert fixed == ratios
    tight = tighten(ratios, cost, budget)
    assert cost.feasible(tight, budget)
    space.policy(tight)


class _StubTable:
    """A latency table predicting ``base_ms`` unpruned and ``pruned_ms`` for anything pruned."""

    def __init__(self, base_ms: float, pruned_ms: float) -> None:
        self.base_ms, self.pruned_ms = base_ms, pruned_ms

    def predict(self, dims) -> float:
        return self.pruned_ms

    def check_layers(self, full) -> None:
        pass


def test_an_unreachable_latency_budget_offers_ms_or_says_pruning_does_not_speed_up() -> None:
    space = SPACES["small_cnn"]
    with pytest.raises(BudgetError, match=r"loosen the budget to >= 0\.800 \(ms >= 0\.800\)$"):
        CostModel(space, _StubTable(1.0, 0.8)).check_reachable(Budget.latency(0.5))
    with pytest.raises(BudgetError, match=r"loosen the budget to ms >= 0\.800$"):
        CostModel(space, _StubTable(1.0, 0.8)).check_reachable(Budget.latency(ms=0.5))
    with pytest.raises(BudgetError, match="predicts no speed-up from pruning .*takes 1.500 ms.*FLOPs budget"):
        CostModel(space, _StubTable(1.0, 1.5)).check_reachable(Budget.latency(0.9))
