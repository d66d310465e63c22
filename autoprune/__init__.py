"""autoprune: AutoML structure search for PyTorch.

Find per-layer channel pruning ratios under a FLOPs or params budget, and get back the policy and the
physically smaller model::

    import autoprune as ap
    space = ap.SearchSpace.from_model(model, example_inputs)
    result = ap.search(model, example_inputs, budget=ap.Budget.flops(0.5),
                       train_data=train_loader, val_data=val_loader, searcher="random", trials=50)
    pruned = ap.apply_policy(model, result.best_policy, example_inputs)
"""

from __future__ import annotations

from typing import Any

from autoprune.budget import Budget, Cost, CostModel, repair
from autoprune.errors import (
    AutopruneError,
    BudgetError,
    ConfigError,
    DataError,
    PolicyError,
    RunDirError,
    TraceError,
    UnknownNameError,
)
from autoprune.policy import Policy
from autoprune.pruning import apply_policy

__version__ = "0.1.0"

_LAZY = {
    # search_spaces imports autoprune's core, so it is loaded on first use to avoid an import cycle.
    "SearchSpace": ("search_spaces.space", "SearchSpace"),
    "ChannelGroup": ("search_spaces.space", "ChannelGroup"),
    "Evaluator": ("autoprune.evaluate", "Evaluator"),
    "EvaluatorConfig": ("autoprune.evaluate", "EvaluatorConfig"),
    "Score": ("autoprune.evaluate", "Score"),
    "Searcher": ("autoprune.searcher", "Searcher"),
    "Trial": ("autoprune.searcher", "Trial"),
    "search": ("autoprune.loop", "search"),
    "SearchResult": ("autoprune.loop", "SearchResult"),
    "load_pruned_model": ("autoprune.export", "load_pruned_model"),
    "export_model": ("autoprune.export", "export_model"),
    "LatencyTable": ("autoprune.latency_lut", "LatencyTable"),
    "latency_table": ("autoprune.latency_lut", "latency_table"),
    "measure_latency_ms": ("autoprune.latency", "measure_latency_ms"),
    "sensitivity": ("agents.sensitivity", "sensitivity"),
}

__all__ = [
    "AutopruneError",
    "Budget",
    "BudgetError",
    "ChannelGroup",
    "ConfigError",
    "Cost",
    "CostModel",
    "DataError",
    "Evaluator",
    "EvaluatorConfig",
    "LatencyTable",
    "Policy",
    "PolicyError",
    "RunDirError",
    "Score",
    "SearchResult",
    "SearchSpace",
    "Searcher",
    "TraceError",
    "Trial",
    "UnknownNameError",
    "apply_policy",
    "export_model",
    "latency_table",
    "load_pruned_model",
    "measure_latency_ms",
    "repair",
    "search",
    "sensitivity",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
