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

from agents.sensitivity import sensitivity
from autoprune.composition.options import RunOptions
from autoprune.composition.search import SearchResult, search
from autoprune.errors import (
    AutopruneError,
    BudgetError,
    ConfigError,
    DataError,
    EvaluationFailedError,
    PolicyError,
    RunDirError,
    TraceError,
    UnknownNameError,
)
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
from autoprune.executors.options import RayOptions
from autoprune.final.finalize import FinalConfig
from autoprune.final.recovery import recover
from autoprune.final.schedule import PruningSchedule, prune_gradually
from autoprune.final.summary import LatencyCheck, ModelFigures, Summary
from autoprune.latency.table import LatencyTable, latency_table
from autoprune.prune.channels import apply_policy
from autoprune.prune.export import export_model, load_pruned_model
from autoprune.prune.masks import make_permanent
from autoprune.prune.sparse_format import export_sizes, load_sparse, save_sparse
from autoprune.report.sparsity_tables import sparsity_report
from autoprune.searcher import Searcher
from autoprune.service.client import Client, Run, ServiceError
from autoprune.study.study import Progress
from autoprune.trial import Score, Trial
from search_spaces.budget import Budget, Cost, LatencySetting
from search_spaces.cost import CostModel, repair
from search_spaces.groups import ChannelGroup
from search_spaces.measure import measure_latency_ms
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace
from search_spaces.space_options import SpaceOptions

__version__ = "0.1.0"

__all__ = [
    "AutopruneError",
    "Budget",
    "BudgetError",
    "ChannelGroup",
    "Client",
    "ConfigError",
    "Cost",
    "CostModel",
    "DataError",
    "EvaluationFailedError",
    "Evaluator",
    "EvaluatorConfig",
    "FinalConfig",
    "LatencyCheck",
    "LatencySetting",
    "LatencyTable",
    "ModelFigures",
    "Policy",
    "PolicyError",
    "Progress",
    "PruningSchedule",
    "RayOptions",
    "Run",
    "RunDirError",
    "RunOptions",
    "Score",
    "SearchResult",
    "SearchSpace",
    "Searcher",
    "ServiceError",
    "SpaceOptions",
    "Summary",
    "TraceError",
    "Trial",
    "UnknownNameError",
    "apply_policy",
    "export_model",
    "export_sizes",
    "latency_table",
    "load_pruned_model",
    "load_sparse",
    "make_permanent",
    "measure_latency_ms",
    "prune_gradually",
    "recover",
    "repair",
    "save_sparse",
    "search",
    "sensitivity",
    "sparsity_report",
]

