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

from typing import TYPE_CHECKING

from autoprune import errors
from autoprune.errors import *  # noqa: F403 - light; importing it gives the errors their public module
from search_spaces.ground.lazy import lazy_exports

__version__ = "0.1.0"

# Public name → the module that defines it, imported on first use: `import autoprune` and the CLI's --help stay
# fast, torch and the rest load when a name that needs them is first touched.
_HOMES = {
    "apply_policy": "autoprune.prune.channels",
    "Budget": "search_spaces.budget",
    "ChannelGroup": "search_spaces.groups",
    "Client": "autoprune.service.client",
    "Cost": "search_spaces.budget",
    "CostModel": "search_spaces.cost",
    "Evaluator": "autoprune.evaluation.evaluator",
    "EvaluatorConfig": "autoprune.evaluation.evaluator",
    "export_model": "autoprune.prune.export",
    "export_sizes": "autoprune.prune.sparse_format",
    "FinalConfig": "autoprune.final.finalize",
    "latency_table": "autoprune.latency.table",
    "LatencyCheck": "autoprune.final.summary",
    "LatencySetting": "search_spaces.budget",
    "LatencyTable": "autoprune.latency.table",
    "load_pruned_model": "autoprune.prune.export",
    "load_sparse": "autoprune.prune.sparse_format",
    "make_permanent": "autoprune.prune.masks",
    "measure_latency_ms": "search_spaces.measure",
    "ModelFigures": "autoprune.final.summary",
    "Policy": "search_spaces.policy",
    "Progress": "autoprune.study.study",
    "prune_gradually": "autoprune.final.schedule",
    "PruningSchedule": "autoprune.final.schedule",
    "RayExecutor": "autoprune.executors.ray_tune",
    "RayOptions": "autoprune.executors.options",
    "recover": "autoprune.final.recovery",
    "repair": "search_spaces.cost",
    "Run": "autoprune.service.client",
    "RunOptions": "autoprune.composition.options",
    "save_sparse": "autoprune.prune.sparse_format",
    "Score": "autoprune.trial",
    "search": "autoprune.composition.search",
    "Searcher": "autoprune.searcher",
    "SearchResult": "autoprune.composition.search",
    "SearchSpace": "search_spaces.space",
    "sensitivity": "agents.sensitivity",
    "ServiceError": "autoprune.service.client",
    "SpaceOptions": "search_spaces.space_options",
    "sparsity_report": "autoprune.report.sparsity_tables",
    "Summary": "autoprune.final.summary",
    "Trial": "autoprune.trial",
}
__all__ = sorted([*_HOMES, *errors.__all__])
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

if TYPE_CHECKING:  # the same names, imported eagerly, for type checkers and IDEs
    from agents.sensitivity import sensitivity
    from autoprune.composition.options import RunOptions
    from autoprune.composition.search import SearchResult, search
    from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig
    from autoprune.executors.options import RayOptions
    from autoprune.executors.ray_tune import RayExecutor
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
