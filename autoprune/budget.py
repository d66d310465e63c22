"""Budgets and the analytic cost model (FLOPs and parameters of a policy, without pruning)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoprune.errors import BudgetError

if TYPE_CHECKING:
    from autoprune.latency_lut import LatencyTable
    from autoprune.policy import Policy
    from search_spaces.space import SearchSpace

METRICS = ("flops", "params", "latency")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Cost:
    """FLOPs, parameter count and (with a latency table) predicted latency in ms of a (pruned) model."""

    flops: int
    params: int
    latency_ms: float | None = None

    def metric(self, name: str) -> float:
        if name == "latency":
            if self.latency_ms is None:
                raise BudgetError("a latency budget needs a cost model with a latency table (autoprune.LatencyTable)")
            return self.latency_ms
        return self.flops if name == "flops" else self.params


@dataclass(frozen=True)
class Budget:
    """An upper bound on a cost metric, relative to the unpruned model or absolute.

    ``Budget.flops(0.5)`` means "at most 50% of the original FLOPs"; ``Budget.params(absolute=1e5)``
    means "at most 100k parameters"; ``Budget.latency(0.5)`` means "at most half the unpruned model's
    measured latency" for ``batch`` inputs on ``threads`` CPU threads (or a CUDA ``device``).
    """

    metric: str
    fraction: float | None = None
    absolute: float | None = None
    batch: int = 1
    threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise BudgetError(f"budget metric {self.metric!r} is not supported; accepted: {', '.join(METRICS)}")
        if (self.fraction is None) == (self.absolute is None):
            raise BudgetError(
                f"a {self.metric} budget needs exactly one of fraction or absolute, "
                f"got fraction={self.fraction!r}, absolute={self.absolute!r}"
            )
        if self.fraction is not None and not _is_number(self.fraction, lo=0, hi=1, hi_inclusive=True):
            raise BudgetError(f"budget fraction must be in (0, 1], got {self.fraction!r}")
        if self.absolute is not None and not _is_number(self.absolute, lo=0, hi=math.inf):
            raise BudgetError(f"absolute {self.metric} budget must be a positive number, got {self.absolute!r}")
        if self.metric != "latency" and (self.batch, self.threads, self.device) != (1, 1, "cpu"):
            raise BudgetError(
                f"batch, threads and device apply to latency budgets only, not {self.metric} "
                f"(got batch={self.batch!r}, threads={self.threads!r}, device={self.device!r})"
            )
        for name in ("batch", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BudgetError(f"latency budget {name} must be a positive integer, got {value!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES:
            raise BudgetError(f"latency budget device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    @classmethod
    def flops(cls, fraction: float | None = None, *, absolute: float | None = None) -> Budget:
        """At most ``fraction`` of the unpruned FLOPs (or ``absolute`` FLOPs)."""
        return cls("flops", fraction, absolute)

    @classmethod
    def params(cls, fraction: float | None = None, *, absolute: float | None = None) -> Budget:
        """At most ``fraction`` of the unpruned parameter count (or ``absolute`` parameters)."""
        return cls("params", fraction, absolute)

    @classmethod
    def latency(
        cls, fraction: float | None = None, *, ms: float | None = None, batch: int = 1, threads: int = 1,
        device: str = "cpu",
    ) -> Budget:
        """At most ``fraction`` of the unpruned model's measured latency (or ``ms`` milliseconds).

        Latency is one forward pass on ``batch`` inputs, ``threads`` CPU threads, on ``device``.
        """
        return cls("latency", fraction, ms, batch, threads, device)

    @property
    def setting(self) -> dict[str, Any]:
        """Where latency is measured: batch, threads and device."""
        return {"batch": self.batch, "threads": self.threads, "device": self.device}

    def limit(self, base: Cost) -> float:
        """The budget's bound in absolute units for a model whose unpruned cost is ``base``."""
        return self.absolute if self.absolute is not None else self.fraction * base.metric(self.metric)

    def describe(self) -> str:
        where = f" (batch {self.batch}, {self.threads} thread(s), {self.device})" if self.metric == "latency" else ""
        if self.fraction is not None:
            return f"{self.metric} <= {self.fraction:.0%} of the unpruned model{where}"
        unit = " ms" if self.metric == "latency" else ""
        return f"{self.metric} <= {self.absolute:,.{3 if unit else 0}f}{unit}{where}"

    def to_dict(self) -> dict[str, Any]:
        data = {"metric": self.metric, "fraction": self.fraction, "absolute": self.absolute}
        return {**data, **self.setting} if self.metric == "latency" else data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """Accepts ``to_dict`` output or the config shorthand ``{"flops": 0.5}``."""
        if not isinstance(data, Mapping):
            raise BudgetError(f"a budget must be a mapping like {{'flops': 0.5}}, got {data!r}")
        setting = {k: data[k] for k in ("batch", "threads", "device") if k in data}
        if "metric" in data:
            unknown = set(data) - {"metric", "fraction", "absolute", "batch", "threads", "device"}
            if unknown:
                raise BudgetError(f"unknown budget keys {sorted(unknown)}; accepted: metric, fraction, absolute, "
                                  "batch, threads, device")
            return cls(data["metric"], data.get("fraction"), data.get("absolute"), **setting)
        rest = {k: v for k, v in data.items() if k not in setting}
        if len(rest) != 1:
            raise BudgetError(f"a budget needs one entry like {{'flops': 0.5}} or {{'latency': 0.5, 'batch': 1}}, "
                              f"got {dict(data)!r}")
        ((metric, value),) = rest.items()
        return cls(metric, fraction=value, **setting)


def _is_number(value: object, *, lo: float, hi: float, hi_inclusive: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return lo < value <= hi if hi_inclusive else lo < value < hi


class CostModel:
    """Exact analytic FLOPs and params of a policy, from the space's per-layer cost entries.

    FLOPs are what ``torch.utils.flop_counter`` counts on the space's example inputs. With a latency
    table (:class:`autoprune.LatencyTable`), costs also carry the table's predicted latency.
    """

    def __init__(self, space: SearchSpace, latency: LatencyTable | None = None) -> None:
        self.space = space
        self.latency = latency
        full = {layer.name: (layer.in_dim, layer.out_dim) for layer in space.layers}
        base_latency = latency.base_ms if latency is not None else None
        self.base = Cost(space.base_flops, space.base_params, base_latency)
        if latency is not None:
            latency.check_layers(full)

    def kept(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept channel count per group."""
        return {g.name: g.kept_channels(ratios.get(g.name, 0.0)) for g in self.space}

    def layer_dims(self, ratios: Mapping[str, float]) -> dict[str, tuple[int, int]]:
        """Kept (input, output) size of every parametrized layer after applying ``ratios``."""
        kept = self.kept(ratios)
        channels = {g.name: g.channels for g in self.space}

        def size(segments: tuple) -> int:
            return sum(
                s.size if s.group is None else s.size * kept[s.group] // channels[s.group] for s in segments
            )

        return {layer.name: (size(layer.in_segments), size(layer.out_segments)) for layer in self.space.layers}

    def cost(self, ratios: Mapping[str, float] | Policy) -> Cost:
        """FLOPs and params (and predicted latency, with a table) after applying ``ratios``."""
        dims = self.layer_dims(ratios)
        flops, params = self.space.constant_flops, self.space.constant_params
        for layer in self.space.layers:
            in_dim, out_dim = dims[layer.name]
            flops += layer.flops_unit * out_dim * in_dim
            params += layer.weight_unit * out_dim * in_dim + layer.per_out_params * out_dim
        latency = self.latency.predict(dims) if self.latency is not None else None
        return Cost(flops, params, latency)

    def ratio(self, ratios: Mapping[str, float], metric: str) -> float:
        """Cost of ``ratios`` relative to the unpruned model for ``metric``."""
        return self.cost(ratios).metric(metric) / self.base.metric(metric)

    def feasible(self, ratios: Mapping[str, float], budget: Budget) -> bool:
        return self.cost(ratios).metric(budget.metric) <= budget.limit(self.base)

    def check_reachable(self, budget: Budget) -> None:
        """Raise :class:`BudgetError` if even the most pruned policy misses ``budget``."""
        floor = self.cost(self.space.max_ratios)
        if floor.metric(budget.metric) > budget.limit(self.base):
            best = floor.metric(budget.metric) / self.base.metric(budget.metric)
            if budget.metric == "latency":
                raise BudgetError(
                    f"budget {budget.describe()} cannot be met: pruning every group to its max_ratio still takes "
                    f"{floor.latency_ms:.3f} ms ({best:.1%} of the unpruned {self.base.latency_ms:.3f} ms, "
                    f"predicted); raise max_ratio or loosen the budget to >= {best:.3f} "
                    f"(ms >= {floor.latency_ms:.3f})"
                )
            raise BudgetError(
                f"budget {budget.describe()} cannot be met: pruning every group to its max_ratio still leaves "
                f"{best:.1%} of the {budget.metric}; raise max_ratio or loosen the budget to >= {best:.3f}"
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
