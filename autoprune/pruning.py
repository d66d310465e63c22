"""Real structured pruning with Torch-Pruning: the only module that calls its pruner."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from autoprune.errors import ConfigError, DataError, PolicyError, unknown_name
from autoprune.policy import Policy

PruningHistory = list[tuple[str, bool, list[int]]]

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
NEEDS_GRADIENTS = frozenset({"taylor"})
ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


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


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


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


def prune(
    model: nn.Module,
    policy: Policy,
    example_inputs: Any,
    *,
    importance: str | tp.importance.Importance = "l1",
    data: Iterable | None = None,
    gradient_batches: int = 4,
    round_to: int | None = None,
    inplace: bool = False,
) -> PruneResult:
    """Prune a copy of ``model`` (or the model itself with ``inplace=True``) by ``policy``.

    Each policy key names a group's root module; its ratio of that group's channels is removed by
    Torch-Pruning (``BasePruner`` with one ratio per group, so coupled layers never disagree).
    """
    target = model if inplace else copy.deepcopy(model)
    inputs = _as_tuple(example_inputs)
    modules = dict(target.named_modules())
    missing = sorted(n for n in policy if n not in modules)
    if missing:
        raise PolicyError(f"policy names modules that {type(model).__name__} does not have: {missing}")
    _check_channels(policy, modules)
    scorer = make_importance(importance)
    was_training = target.training
    if isinstance(importance, str) and importance in NEEDS_GRADIENTS:
        target.eval()
        _accumulate_gradients(target, data, gradient_batches)
    target.eval()
    ratios = {modules[n]: r for n, r in policy.items() if r > 0}
    pruner = tp.pruner.BasePruner(
        target,
        inputs,
        importance=scorer,
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        round_to=round_to,
        root_module_types=list(ROOT_TYPES),
    )
    roots = {group[0].dep.target.module for group in pruner.DG.get_all_groups(root_module_types=ROOT_TYPES)}
    not_roots = sorted(n for n in policy if modules[n] not in roots)
    if not_roots:
        raise PolicyError(
            f"policy keys {not_roots} are not channel-group roots of {type(model).__name__}; "
            "build policies from SearchSpace.from_model(...) of this architecture"
        )
    pruner.step()
    target.zero_grad(set_to_none=True)
    target.train(was_training)
    history = [(name, bool(is_out), [int(i) for i in idxs]) for name, is_out, idxs in pruner.pruning_history()]
    return PruneResult(target, history)


def _check_channels(policy: Policy, modules: dict[str, nn.Module]) -> None:
    if policy.fingerprint is None:
        return
    expected = policy.fingerprint.get("groups", {})
    wrong = {}
    for name, channels in expected.items():
        module = modules.get(name)
        actual = getattr(module, "out_channels", getattr(module, "out_features", None))
        if actual != channels:
            wrong[name] = (channels, actual)
    if wrong:
        detail = ", ".join(f"{n}: policy {c} vs model {a}" for n, (c, a) in wrong.items())
        raise PolicyError(f"policy was made for a model with other channel counts: {detail}")


def apply_policy(
    model: nn.Module,
    policy: Policy,
    example_inputs: Any,
    *,
    importance: str | tp.importance.Importance = "l1",
    data: Iterable | None = None,
    round_to: int | None = None,
) -> nn.Module:
    """Return a new, physically smaller model: ``model`` pruned by ``policy``. ``model`` is untouched.

    Args:
        model: the trained model.
        policy: per-group ratios (see :class:`autoprune.Policy`).
        example_inputs: inputs for tracing.
        importance: channel criterion: ``l1`` (default), ``l2``, ``bn_scale`` (Network Slimming),
            ``taylor`` (needs ``data``), ``random``, or a Torch-Pruning importance instance.
        data: batches of ``(inputs, targets)`` for gradient-based importance.
        round_to: kept channels rounded down to this multiple (use the space's ``round_to``).
    """
    return prune(model, policy, example_inputs, importance=importance, data=data, round_to=round_to).model


def replay_history(model: nn.Module, history: PruningHistory, example_inputs: Any) -> nn.Module:
    """Re-apply a saved pruning history to a fresh, unpruned instance, in place; returns it."""
    if not isinstance(history, list):
        raise ConfigError(f"pruning history must be a list of [module, is_out, indices], got {type(history)}")
    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=_as_tuple(example_inputs), verbose=False)
    graph.load_pruning_history([(str(n), bool(o), list(i)) for n, o, i in history])
    model.train(was_training)
    return model
