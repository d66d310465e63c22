"""Budgets: an upper bound on one cost of the pruned model, each kind knowing how it is predicted and measured.

``Budget.flops(0.5)`` means "at most 50% of the original FLOPs"; ``Budget.params(absolute=1e5)`` means "at
most 100k parameters"; ``Budget.latency(0.5)`` means "at most half the unpruned model's measured latency"
for ``batch`` inputs on ``threads`` CPU threads (or a CUDA ``device``).

A budget predicts a policy's cost from an analytic :class:`Cost` (exact for FLOPs and parameters, a lookup
table's prediction for latency; see :mod:`search_spaces.cost`) and measures it on a real, pruned model.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import nn

from search_spaces.ground.documents import describe_number
from search_spaces.ground.errors import BudgetError, did_you_mean
from search_spaces.ground.inputs import batch_size
from search_spaces.ground.options import is_finite_number
from search_spaces.measure import (
    count_flops,
    count_nonzeros,
    count_params,
    count_sparse_bytes,
    measure_latency_ms,
    with_batch,
)
from search_spaces.runtimes import RUNTIMES

DEVICES = ("cpu", "cuda")
_LATENCY_KEYS = ("batch", "threads", "device", "runtime")


@dataclass(frozen=True)
class Cost:
    """FLOPs, stored parameters, (with a latency table) predicted latency in ms, non-zero parameters and bytes of
    the parameters in the sparse format of a (pruned) model (the last two: None when not computed)."""

    flops: int
    params: int
    latency_ms: float | None = None
    nonzeros: int | None = None
    sparse_bytes: int | None = None


@dataclass(frozen=True)
class LatencySetting:
    """Where latency is measured: ``batch`` inputs, ``threads`` CPU threads, on ``device``, in ``runtime``
    (``eager``, ``compiled``, ``aoti`` or ``onnxruntime``: where the exported model will run)."""

    batch: int = 1
    threads: int = 1
    device: str = "cpu"
    runtime: str = "eager"

    def __post_init__(self) -> None:
        for name in ("batch", "threads"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
                raise BudgetError(f"latency budget {name} must be a positive integer, got {value!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES:
            raise BudgetError(f"latency budget device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.runtime not in RUNTIMES:
            raise BudgetError(f"latency budget runtime {self.runtime!r} is not supported; accepted: "
                              f"{', '.join(RUNTIMES)}{did_you_mean(self.runtime, RUNTIMES)}")

    @classmethod
    def for_inputs(cls, example_inputs: Any) -> LatencySetting:
        """One CPU thread at the example inputs' batch size: how a summary times non-latency budgets."""
        return cls(batch=batch_size(example_inputs))

    def to_dict(self) -> dict[str, Any]:
        """The setting as JSON; ``runtime`` only when it is not ``eager`` (so earlier run directories, which had
        none, still resume)."""
        runtime = {} if self.runtime == "eager" else {"runtime": self.runtime}
        return {"batch": self.batch, "threads": self.threads, "device": self.device, **runtime}


@dataclass(frozen=True)
class Budget(abc.ABC):
    """An upper bound on a cost metric, relative to the unpruned model (``fraction``) or ``absolute``.

    Build one with :meth:`flops`, :meth:`params`, :meth:`latency` or :meth:`from_dict`.
    """

    fraction: float | None = None
    absolute: float | None = None

    metric: ClassVar[str]
    unit: ClassVar[str] = ""
    #: True when the analytic cost model predicts the metric exactly (no measured check needed).
    exact: ClassVar[bool] = True
    #: The one granularity this metric can steer (None: either): ``element`` for metrics that count the zeros
    #: element pruning leaves, ``channel`` for latency (zeros leave dense kernels as slow as before).
    granularity: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.absolute is None):
            raise BudgetError(
                f"a {self.metric} budget needs exactly one of fraction or absolute, "
                f"got fraction={describe_number(self.fraction)}, absolute={describe_number(self.absolute)}"
            )
        if self.fraction is not None and not _is_number(self.fraction, hi_inclusive=True, hi=1):
            raise BudgetError(f"budget fraction must be in (0, 1], got {describe_number(self.fraction)}")
        if self.absolute is not None and not _is_number(self.absolute, hi=math.inf):
            raise BudgetError(f"absolute {self.metric} budget must be a positive number, got "
                              f"{describe_number(self.absolute)}")
        for name in ("fraction", "absolute"):  # numpy numbers are accepted and stored as Python floats
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

    # -- construction ------------------------------------------------------------------------------
    @staticmethod
    def flops(fraction: float | None = None, *, absolute: float | None = None) -> FlopsBudget:
        """At most ``fraction`` of the unpruned FLOPs (or ``absolute`` FLOPs)."""
        return FlopsBudget(fraction, absolute)

    @staticmethod
    def params(fraction: float | None = None, *, absolute: float | None = None) -> ParamsBudget:
        """At most ``fraction`` of the unpruned parameter count (or ``absolute`` parameters)."""
        return ParamsBudget(fraction, absolute)

    @staticmethod
    def nonzeros(fraction: float | None = None, *, absolute: float | None = None) -> NonzerosBudget:
        """At most ``fraction`` of the unpruned parameters non-zero (or ``absolute`` non-zeros): the budget of
        element-wise (unstructured) pruning, where the stored parameter count never changes."""
        return NonzerosBudget(fraction, absolute)

    @staticmethod
    def size(fraction: float | None = None, *, absolute: float | None = None) -> SizeBudget:
        """At most ``fraction`` of the unpruned parameters' bytes (or ``absolute`` bytes) in the sparse format:
        float32 values, a weight tensor with zeros stored as a bitmask plus its non-zeros when smaller."""
        return SizeBudget(fraction, absolute)

    @staticmethod
    def latency(
        fraction: float | None = None, *, ms: float | None = None, batch: int = 1, threads: int = 1,
        device: str = "cpu", runtime: str = "eager",
    ) -> LatencyBudget:
        """At most ``fraction`` of the unpruned model's measured latency (or ``ms`` milliseconds).

        Latency is one forward pass on ``batch`` inputs, ``threads`` CPU threads, on ``device``, in ``runtime``:
        ``eager`` PyTorch, ``compiled`` (``torch.compile``), ``aoti`` (AOTInductor, the ``compile`` export) or
        ``onnxruntime`` (the ``onnx`` export), each built as the export builds it.
        """
        return LatencyBudget(fraction, ms, LatencySetting(batch, threads, device, runtime))

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Budget:
        """Accepts :meth:`to_dict` output or the config shorthand ``{"flops": 0.5}``."""
        if not isinstance(data, Mapping):
            raise BudgetError(f"a budget must be a mapping like {{'flops': 0.5}}, got {data!r}")
        setting = {k: data[k] for k in _LATENCY_KEYS if k in data}
        if "metric" in data:
            unknown = set(data) - {"metric", "fraction", "absolute", *_LATENCY_KEYS}
            if unknown:
                raise BudgetError(f"unknown budget keys {sorted(unknown)}; accepted: metric, fraction, absolute, "
                                  "batch, threads, device, runtime")
            return _make(data["metric"], data.get("fraction"), data.get("absolute"), setting)
        rest = {k: v for k, v in data.items() if k not in setting}
        if len(rest) != 1:
            raise BudgetError(f"a budget needs one entry like {{'flops': 0.5}} or {{'latency': 0.5, 'batch': 1}}, "
                              f"got {dict(data)!r}")
        ((metric, value),) = rest.items()
        return _make(metric, value, None, setting)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "fraction": self.fraction, "absolute": self.absolute}

    # -- prediction and measurement ----------------------------------------------------------------
    def check_granularity(self, granularity: str) -> None:
        """Raise :class:`BudgetError` if this budget cannot steer a search at ``granularity``."""
        if self.granularity is None or granularity == self.granularity:
            return
        why = ("counts the zeros that element pruning leaves; channel pruning removes whole channels (budget it by "
               "params or flops)" if self.granularity == "element" else
               "needs channels removed: element pruning leaves zeros that dense kernels multiply as before (budget "
               "it by nonzeros or size)")
        raise BudgetError(
            f"a {self.metric} budget {why}; it needs granularity {self.granularity!r}, not {granularity!r} "
            f"(search(granularity={self.granularity!r}), 'granularity: {self.granularity}' in a config, "
            f"--granularity {self.granularity} on the command line)"
        )

    @abc.abstractmethod
    def predicted(self, cost: Cost) -> float:
        """This budget's metric out of an analytic cost."""

    @abc.abstractmethod
    def measure(self, model: nn.Module, example_inputs: Any) -> float:
        """This budget's metric measured on a real model."""

    def timing(self, example_inputs: Any) -> LatencySetting:
        """Where a summary times the models: one CPU thread at the example inputs' batch size."""
        return LatencySetting.for_inputs(example_inputs)

    def limit(self, base: Cost) -> float:
        """The bound in absolute units for a model whose unpruned cost is ``base``."""
        return self.absolute if self.absolute is not None else self.fraction * self.predicted(base)

    def meets(self, value: float, base: Cost) -> bool:
        """Whether ``value`` of this budget's metric (predicted or measured) meets the budget of a model whose
        unpruned cost is ``base``.

        A fraction is compared with ``value``'s ratio to ``base`` (as :meth:`CostModel.ratio` reports it), not with
        ``fraction * base``: that product may round one ulp below the value a ratio names exactly."""
        if self.absolute is not None:
            return value <= self.absolute
        return value / self.predicted(base) <= self.fraction

    def allows(self, cost: Cost, base: Cost) -> bool:
        """Whether ``cost`` meets the budget of a model whose unpruned cost is ``base``."""
        return self.meets(self.predicted(cost), base)

    def excess(self, cost: Cost, base: Cost) -> float:
        """How far ``cost`` is over the budget, as a fraction of ``base``'s cost (<= 0 exactly when :meth:`allows`)."""
        if self.absolute is not None:
            return (self.predicted(cost) - self.absolute) / self.predicted(base)
        return self.predicted(cost) / self.predicted(base) - self.fraction

    def describe(self) -> str:
        if self.fraction is not None:
            return f"{self.metric} <= {self.fraction:.0%} of the unpruned model"
        return f"{self.metric} <= {self.absolute:,.0f}"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class FlopsBudget(Budget):
    """At most a fraction (or an absolute number) of the unpruned model's FLOPs."""

    metric: ClassVar[str] = "flops"

    def predicted(self, cost: Cost) -> float:
        return cost.flops

    def measure(self, model: nn.Module, example_inputs: Any) -> float:
        return count_flops(model, example_inputs)


@dataclass(frozen=True)
class ParamsBudget(Budget):
    """At most a fraction (or an absolute number) of the unpruned model's parameters."""

    metric: ClassVar[str] = "params"

    def predicted(self, cost: Cost) -> float:
        return cost.params

    def measure(self, model: nn.Module, example_inputs: Any) -> float:
        return count_params(model)


@dataclass(frozen=True)
class NonzerosBudget(Budget):
    """At most a fraction (or an absolute number) of the unpruned model's parameters non-zero."""

    metric: ClassVar[str] = "nonzeros"
    granularity: ClassVar[str | None] = "element"

    def predicted(self, cost: Cost) -> float:
        return cost.params if cost.nonzeros is None else cost.nonzeros

    def measure(self, model: nn.Module, example_inputs: Any) -> float:
        return count_nonzeros(model)


@dataclass(frozen=True)
class SizeBudget(Budget):
    """At most a fraction (or an absolute number of bytes) of the unpruned parameters' size in the sparse format."""

    metric: ClassVar[str] = "size"
    unit: ClassVar[str] = "bytes"
    granularity: ClassVar[str | None] = "element"

    def predicted(self, cost: Cost) -> float:
        if cost.sparse_bytes is None:
            raise BudgetError("a size budget needs the cost model's sparse size (search_spaces.cost.CostModel)")
        return cost.sparse_bytes

    def measure(self, model: nn.Module, example_inputs: Any) -> float:
        return count_sparse_bytes(model)


@dataclass(frozen=True)
class LatencyBudget(Budget):
    """At most a fraction of the unpruned model's measured latency, or ``absolute`` milliseconds.

    Predicted from a latency lookup table (so only as good as the table); measured with
    ``torch.utils.benchmark`` under :attr:`setting`.
    """

    setting: LatencySetting = LatencySetting()

    metric: ClassVar[str] = "latency"
    granularity: ClassVar[str | None] = "channel"
    unit: ClassVar[str] = "ms"
    exact: ClassVar[bool] = False

    def predicted(self, cost: Cost) -> float:
        if cost.latency_ms is None:
            raise BudgetError("a latency budget needs a cost model with a latency table (autoprune.LatencyTable)")
        return cost.latency_ms

    def measure(self, model: nn.Module, example_inputs: Any, *, min_run_time: float = 0.1) -> float:
        s = self.setting
        return measure_latency_ms(model, with_batch(example_inputs, s.batch), threads=s.threads, device=s.device,
                                  min_run_time=min_run_time, runtime=s.runtime)

    def timing(self, example_inputs: Any) -> LatencySetting:
        """Where this budget is measured."""
        return self.setting

    @property
    def batch(self) -> int:
        return self.setting.batch

    @property
    def threads(self) -> int:
        return self.setting.threads

    @property
    def device(self) -> str:
        return self.setting.device

    def describe(self) -> str:
        s = self.setting
        where = f" (batch {s.batch}, {s.threads} thread(s), {s.device}, {s.runtime})"
        if self.fraction is not None:
            return f"latency <= {self.fraction:.0%} of the unpruned model{where}"
        return f"latency <= {self.absolute:,.3f} ms{where}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.setting.to_dict()}


KINDS: dict[str, type[Budget]] = {
    b.metric: b for b in (FlopsBudget, ParamsBudget, NonzerosBudget, SizeBudget, LatencyBudget)
}


def _make(metric: object, fraction: Any, absolute: Any, setting: Mapping[str, Any]) -> Budget:
    if metric not in KINDS:
        raise BudgetError(f"budget metric {metric!r} is not supported; accepted: {', '.join(KINDS)}")
    if metric == LatencyBudget.metric:
        return LatencyBudget(fraction, absolute, LatencySetting(**setting))
    if setting:
        raise BudgetError(f"batch, threads, device and runtime apply to latency budgets only, not {metric} "
                          f"(got {setting})")
    return KINDS[str(metric)](fraction, absolute)


def _is_number(value: object, *, hi: float, hi_inclusive: bool = False) -> bool:
    if not is_finite_number(value):
        return False
    return 0 < value <= hi if hi_inclusive else 0 < value < hi  # type: ignore[operator]
