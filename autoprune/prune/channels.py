"""Real structured pruning with Torch-Pruning: the only module that calls its pruner."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from autoprune.prune.masks import apply_masks, make_permanent
from search_spaces.attention import head_layout
from search_spaces.ground.errors import ConfigError, DataError, PolicyError, unknown_name
from search_spaces.ground.inputs import as_tuple
from search_spaces.ground.options import check_module
from search_spaces.policy import Policy
from search_spaces.space import SearchSpace
from search_spaces.surgery import (
    PruningHistory,
    architecture_name,
    dependency_graph,
    head_importance,
    prune_in_place,
    replay,
)
from search_spaces.trace import ROOT_MODULE_TYPES

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
NEEDS_GRADIENTS = frozenset({"taylor"})


@dataclass(frozen=True)
class PruneResult:
    """A pruned model and the Torch-Pruning history that replays its surgery on a fresh instance."""

    model: nn.Module
    history: PruningHistory


def make_importance(importance: str | tp.importance.Importance) -> tp.importance.Importance:
    """An importance criterion by name (l1, l2, bn_scale, taylor, random) or a Torch-Pruning instance."""
    if isinstance(importance, tp.importance.Importance):
        return importance
    if importance not in IMPORTANCES:
        raise unknown_name("importance", importance, list(IMPORTANCES))
    return IMPORTANCES[importance]()


def _accumulate_gradients(model: nn.Module, data: Iterable | None, batches: int) -> None:
    if data is None:
        raise DataError("importance 'taylor' needs gradients: pass data= (batches of (inputs, targets))")
    model.zero_grad()
    seen = 0
    for inputs, targets in itertools.islice(data, batches):
        nn.functional.cross_entropy(model(inputs), targets).backward()
        seen += 1
    if seen == 0:
        raise DataError("importance 'taylor' got no batches from data=")


def as_policy(policy: Policy | Mapping[str, float]) -> Policy:
    """``policy`` itself, or a plain mapping group name → ratio as a policy without a fingerprint."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, Mapping):
        return Policy(dict(policy))
    raise ConfigError(f"a policy is an autoprune Policy or a mapping group name -> ratio, got {type(policy).__name__}")


def prune(
    model: nn.Module,
    policy: Policy | Mapping[str, float],
    example_inputs: Any,
    *,
    importance: str | tp.importance.Importance = "l1",
    data: Iterable | None = None,
    gradient_batches: int = 4,
    round_to: int | None = None,
    space: SearchSpace | None = None,
) -> PruneResult:
    """Prune a copy of ``model`` by ``policy``.

    An element policy (its space's ``granularity == "element"``) masks each named weight tensor with
    ``torch.nn.utils.prune`` to its sparsity instead (the history is empty; see :mod:`autoprune.prune.masks`).

    Each policy key names a group's root module; that group keeps exactly the channels
    :meth:`ChannelGroup.kept_channels` counts (so the cost model's figures hold), the least important ones
    removed by Torch-Pruning's dependency graph (``search_spaces.surgery``). Groups the policy does not name
    keep their channels; the output layer can never be named. ``round_to`` defaults to the space's, else the
    one recorded in the policy's fingerprint. Given the model's ``space``, the policy is checked against it
    (every group named); otherwise the model is traced to check it.
    """
    check_module("model", model)
    policy = as_policy(policy)
    inputs = as_tuple(example_inputs)
    granularity = (policy.fingerprint or {}).get("granularity", "channel")
    if space is not None:
        policy.validate(space)
    else:
        if round_to is None and policy.fingerprint is not None:
            round_to = policy.fingerprint.get("round_to")
        space = SearchSpace.from_model(model, inputs, round_to=None if granularity == "element" else round_to or 1,
                                       max_ratio=0.999, check=False, granularity=granularity)
        policy.validate(space, partial=True)
    if space.granularity == "element":
        if not isinstance(importance, str):
            raise ConfigError("element pruning ranks weights by name ('l1', 'l2', 'random'), not by a Torch-Pruning "
                              "importance")
        kept = {name: space[name].kept_channels(ratio) for name, ratio in policy.items() if ratio > 0}
        return PruneResult(apply_masks(copy.deepcopy(model), kept, importance=importance), [])
    groups = [space[name] for name, ratio in policy.items() if ratio > 0]
    if round_to is not None:
        groups = [g if g.unit == "head" else replace(g, round_to=math.lcm(round_to, g.channel_groups))
                  for g in groups]
    target = copy.deepcopy(model)
    scorer = make_importance(importance)
    was_training = target.training
    if isinstance(importance, str) and importance in NEEDS_GRADIENTS:
        target.eval()
        _accumulate_gradients(target, data, gradient_batches)
    target.eval()
    kept = {g.name: g.kept_channels(policy[g.name]) for g in groups}
    history = prune_in_place(target, dependency_graph(target, inputs), kept, scorer)
    target.zero_grad(set_to_none=True)
    target.train(was_training)
    return PruneResult(target, history)


def apply_policy(
    model: nn.Module,
    policy: Policy | Mapping[str, float],
    example_inputs: Any,
    *,
    importance: str | tp.importance.Importance = "l1",
    data: Iterable | None = None,
    round_to: int | None = None,
) -> nn.Module:
    """Return a new, physically smaller model: ``model`` pruned by ``policy``. ``model`` is untouched. An element
    policy gives a model of the same shapes with the pruned weights zero (masks folded in, :func:`make_permanent`).

    Args:
        model: the trained model.
        policy: per-group ratios: a :class:`autoprune.Policy`, or a mapping group name → ratio.
        example_inputs: inputs for tracing.
        importance: channel criterion: ``l1`` (default), ``l2``, ``bn_scale`` (Network Slimming),
            ``taylor`` (needs ``data``), ``random``, or a Torch-Pruning importance instance.
        data: batches of ``(inputs, targets)`` for gradient-based importance.
        round_to: kept channels rounded down to this multiple (default: the policy's, else 1).
    """
    return make_permanent(prune(model, policy, example_inputs, importance=importance, data=data,
                                round_to=round_to).model)


def group_importances(
    model: nn.Module,
    example_inputs: Any,
    *,
    group_names: Iterable[str],
    importance: str | tp.importance.Importance = "l1",
) -> dict[str, torch.Tensor]:
    """Per-channel importance of each named group, as Torch-Pruning's criterion scores the whole group.

    Magnitude criteria are normalized per group (Torch-Pruning's default), so scores are comparable
    across groups: this is what its global ranking thresholds. An attention module pruned by whole heads gets one
    score per head (:func:`search_spaces.surgery.head_importance`).
    """
    inputs = as_tuple(example_inputs)
    was_training = model.training
    model.eval()
    graph = dependency_graph(model, inputs)
    scorer = make_importance(importance)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    wanted = set(group_names)
    scores: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in sorted(wanted):  # attention modules pruned by whole heads: one score per head
            layout = head_layout(modules[name]) if name in modules else None
            if layout is not None:
                scores[name] = head_importance(model, graph, name, layout, scorer).cpu()
        for group in graph.get_all_groups(root_module_types=ROOT_MODULE_TYPES):
            root = names.get(group[0].dep.target.module)
            if root in wanted and root not in scores:
                score = scorer(group)
                if score is None:
                    raise ConfigError(f"importance {importance!r} cannot score group {root!r} of "
                                      f"{type(model).__name__} (bn_scale needs a BatchNorm in every group)")
                scores[root] = score.detach().cpu()
    model.train(was_training)
    missing = sorted(wanted - set(scores))
    if missing:
        raise ConfigError(f"groups {missing} are not channel groups of {type(model).__name__}")
    return scores


def replay_history(model: nn.Module, history: PruningHistory, example_inputs: Any) -> nn.Module:
    """Re-apply a saved pruning history to a fresh, unpruned instance, in place; returns it."""
    if not isinstance(history, list):
        raise ConfigError(f"pruning history must be a list of [module, is_out, indices], got {type(history)}")
    for number, step in enumerate(history):
        if not _is_history_step(step):
            raise ConfigError(f"pruning history entry {number} is not [module name, is_out (true/false), channel "
                              f"indices (non-negative integers)]: {str(step)[:200]}")
    modules = {name: module for name, module in model.named_modules() if name}
    unknown = sorted({step[0] for step in history} - set(modules))
    if unknown:
        raise ConfigError(f"the pruning history names modules {architecture_name(model)} does not have "
                          f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}): the model given must be "
                          "a fresh instance of the architecture that was pruned")
    was_training = model.training
    model.eval()
    graph = dependency_graph(model, as_tuple(example_inputs))
    try:
        replay(model, graph, history)
    except (IndexError, RuntimeError, ValueError, PolicyError) as exc:  # indices past a layer's channels
        raise ConfigError(f"the pruning history does not fit {architecture_name(model)} ({exc}): the model given must "
                          "be a fresh instance of the architecture that was pruned") from exc
    model.train(was_training)
    return model


def _is_history_step(step: Any) -> bool:
    """Whether ``step`` is one ``[module name, is_out, indices]`` entry of a pruning history."""
    if not isinstance(step, (list, tuple)) or len(step) != 3:
        return False
    name, is_out, indices = step
    return (isinstance(name, str) and bool(name) and isinstance(is_out, bool) and isinstance(indices, list)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices))
