"""The analytic cost model: FLOPs, parameters (and, with a lookup table, latency) of a policy without pruning."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol

from search_spaces.budget import Budget, Cost
from search_spaces.ground.errors import BudgetError
from search_spaces.space import SearchSpace

LayerDims = Mapping[str, tuple[int, int]]


class LatencyPredictor(Protocol):
    """What the cost model needs of a latency lookup table (``autoprune.LatencyTable`` is one)."""

    @property
    def base_ms(self) -> float:
        """Predicted latency of the unpruned model."""

    def predict(self, dims: LayerDims) -> float:
        """Predicted latency in ms of a model whose layers keep ``dims`` (input, output) sizes."""

    def check_layers(self, full: LayerDims) -> None:
        """Raise unless the table was built for layers of these unpruned sizes."""


class CostModel:
    """Exact analytic FLOPs and params of a policy, from the space's per-layer cost entries.

    FLOPs are what ``torch.utils.flop_counter`` counts on the space's example inputs. With a latency
    table, costs also carry the table's predicted latency.
    """

    def __init__(self, space: SearchSpace, latency: LatencyPredictor | None = None) -> None:
        if latency is not None and space.granularity == "element":
            raise BudgetError("latency budgets need channel pruning: element-wise zeros leave dense kernels as slow "
                              "as before; use Budget.nonzeros or Budget.size with an element space")
        self.space = space
        self.latency = latency
        full = {layer.name: (layer.in_dim, layer.out_dim) for layer in space.layers}
        base_latency = latency.base_ms if latency is not None else None
        self.base = Cost(space.base_flops, space.base_params, base_latency, space.base_params,
                         space.sparse_bytes(full))
        if latency is not None:
            latency.check_layers(full)

    def kept(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept channel count per group."""
        return self.space.kept(ratios)

    def layer_dims(self, ratios: Mapping[str, float]) -> dict[str, tuple[int, int]]:
        """Kept (input, output) size of every parametrized layer after applying ``ratios``."""
        return self.space.layer_dims(self.space.kept(ratios))

    def cost(self, ratios: Mapping[str, float]) -> Cost:
        """FLOPs and params (and predicted latency, with a table) after applying ``ratios``."""
        dims = self.layer_dims(ratios)
        flops, params = self.space.figures(dims)
        latency = self.latency.predict(dims) if self.latency is not None else None
        return Cost(flops, params, latency, self.space.nonzeros(dims), self.space.sparse_bytes(dims))

    def ratio(self, ratios: Mapping[str, float], budget: Budget) -> float:
        """Cost of ``ratios`` in ``budget``'s metric, relative to the unpruned model."""
        return budget.predicted(self.cost(ratios)) / budget.predicted(self.base)

    def feasible(self, ratios: Mapping[str, float], budget: Budget) -> bool:
        return budget.allows(self.cost(ratios), self.base)

    def check_reachable(self, budget: Budget) -> None:
        """Raise :class:`BudgetError` if even the most pruned policy misses ``budget``."""
        if self.feasible(self.space.max_ratios, budget):
            return
        floor = budget.predicted(self.cost(self.space.max_ratios))
        best = floor / budget.predicted(self.base)
        if budget.unit:
            leaves = (f"takes {floor:.3f} {budget.unit} ({best:.1%} of the unpruned "
                      f"{budget.predicted(self.base):.3f} {budget.unit}, predicted)")
            amount = f"{budget.unit} >= {_round_up(floor)}"
        else:
            leaves, amount = f"leaves {best:.1%} of the {budget.metric}", f"absolute >= {math.ceil(floor):,}"
        if best > 1:  # a latency table can predict the most pruned model slower than the unpruned one
            raise BudgetError(
                f"budget {budget.describe()} cannot be met: the latency table predicts no speed-up from pruning "
                f"(every group at its max_ratio {leaves}); time a larger batch or use a FLOPs budget"
            )
        if budget.absolute is not None:
            loosen = amount
        else:
            loosen = f">= {_round_up(best)}" + (f" ({amount})" if budget.unit else "")
        raise BudgetError(
            f"budget {budget.describe()} cannot be met: pruning every group to its max_ratio still {leaves}; "
            f"raise max_ratio or loosen the budget to {loosen}"
        )


def bisect_feasible(
    make: Callable[[float], dict[str, float]],
    cost_model: CostModel,
    budget: Budget,
    *,
    iterations: int = 40,
) -> dict[str, float]:
    """Smallest ``t`` in [0, 1] whose ``make(t)`` meets the budget (cost must not increase with ``t``).

    Raises:
        BudgetError: ``make(1)`` is infeasible.
    """
    if cost_model.feasible(make(0.0), budget):
        return make(0.0)
    if not cost_model.feasible(make(1.0), budget):
        cost_model.check_reachable(budget)
        raise BudgetError(f"budget {budget.describe()} cannot be met along this repair path")
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if cost_model.feasible(make(mid), budget):
            hi = mid
        else:
            lo = mid
    return make(hi)


def repair(ratios: Mapping[str, float], cost_model: CostModel, budget: Budget) -> dict[str, float]:
    """Map an infeasible policy to a feasible one by moving every ratio toward its max by the same fraction.

    A feasible policy comes back unchanged. ``r_i(t) = r_i + t * (max_i - r_i)``, with the smallest ``t``
    that meets the budget (bisection on the exact analytic cost).
    """
    maxima = cost_model.space.max_ratios
    start = {n: min(float(ratios[n]), maxima[n]) for n in maxima}
    return bisect_feasible(
        lambda t: {n: r + t * (maxima[n] - r) for n, r in start.items()}, cost_model, budget
    )


def tighten(ratios: Mapping[str, float], cost_model: CostModel, budget: Budget) -> dict[str, float]:
    """Scale a feasible policy's ratios down by one common factor until it just meets the budget.

    Uses the budget fully instead of over-pruning; an infeasible policy is first repaired.
    """
    start = repair(ratios, cost_model, budget)
    return bisect_feasible(lambda t: {n: r * t for n, r in start.items()}, cost_model, budget)


def uniform_ratios(cost_model: CostModel, budget: Budget) -> dict[str, float]:
    """The same ratio for every group (capped at each group's max), just meeting the budget."""
    maxima = cost_model.space.max_ratios
    top = max(maxima.values())
    return bisect_feasible(lambda t: {n: min(t * top, m) for n, m in maxima.items()}, cost_model, budget)


def _round_up(value: float) -> str:
    """``value`` to 3 decimals, rounded up: a bound the user copies from an error message is then met."""
    return f"{math.ceil(value * 1000) / 1000:.3f}"
