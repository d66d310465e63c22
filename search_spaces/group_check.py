"""The trace-time check of channel groups: prune the model, run it, compare with what the cost model says, and
put it back as it was."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from search_spaces.attention import head_layout, prune_heads
from search_spaces.measure import count_params, run_counting_flops
from search_spaces.surgery import dependency_graph, prune_in_place

# (kept channels per group name) -> predicted (FLOPs, params) of the model pruned to them
Predict = Callable[[Mapping[str, int]], tuple[int, int]]
# How close a model with one head removed must come to the model with that head silenced (float32 round-off).
HEAD_TOLERANCE = 1e-4
# The containers of a module's state that pruning replaces entries of.
_STATE = ("_parameters", "_buffers", "_modules")


@dataclass(frozen=True)
class Reference:
    """What every pruned model must still do: the unpruned model's output shapes on the example inputs; and the
    model's dependency graph when it can be reused from check to check (None: traced for each check)."""

    inputs: tuple[Any, ...]
    shapes: tuple[tuple[int, ...], ...]
    graph: tp.DependencyGraph | None = None


def reference(model: nn.Module, inputs: tuple[Any, ...]) -> Reference:
    """The unpruned model's output shapes on ``inputs``, and its dependency graph to reuse (unless the graph prunes
    parameters outside layers: Torch-Pruning re-keys its nodes when it replaces those)."""
    with torch.no_grad():
        shapes = tuple(tuple(t.shape) for t in _tensors(model(*inputs)))
    try:
        graph = dependency_graph(model, inputs)
    except Exception:  # the model cannot be traced: every check says so by tracing it again
        return Reference(inputs, shapes)
    return Reference(inputs, shapes, None if graph.unwrapped_parameters else graph)


def check_kept(model: nn.Module, ref: Reference, kept: Mapping[str, int], predict: Predict | None) -> str | None:
    """Prune ``model`` to ``kept`` channels per group and run it: None if it behaves, else why not.

    It behaves when pruning succeeds, its outputs have the unpruned shapes and are finite, and (unless ``predict``
    is None: a cheaper plain forward pass) its FLOPs and parameters are the ones ``predict`` gives. ``model`` (and
    the reference's graph) are put back as they were afterwards (cheaper than a deep copy or a new trace: pruning
    replaces tensors, it never writes into them).
    """
    try:
        with _restored(model, ref.graph):
            graph = ref.graph if ref.graph is not None else dependency_graph(model, ref.inputs)
            prune_in_place(model, graph, kept, tp.importance.MagnitudeImportance(p=1))
            if predict is None:  # eval mode, as when counting: BatchNorm statistics must not move (restored on exit)
                with torch.no_grad():
                    flops, outputs = None, model.eval()(*ref.inputs)
            else:
                flops, outputs = run_counting_flops(model, ref.inputs)
            outputs, params = _tensors(outputs), count_params(model)
    except Exception as exc:  # any failure of pruning or of the pruned forward pass disqualifies the group
        return f"pruning breaks the model ({type(exc).__name__}: {_first_line(exc)})"
    shapes = tuple(tuple(t.shape) for t in outputs)
    if shapes != ref.shapes:
        return f"pruning changes the output shapes from {list(ref.shapes)} to {list(shapes)}"
    if not all(bool(torch.isfinite(t).all()) for t in outputs if t.is_floating_point()):
        return "the pruned model's outputs are not finite"
    if predict is None:
        return None
    expected = predict(kept)
    if (flops, params) != expected:
        return (f"the pruned model has {flops} FLOPs and {params} params, the cost model predicts {expected[0]} and "
                f"{expected[1]} (a dependency Torch-Pruning does not see)")
    return None


def head_check(model: nn.Module, inputs: tuple[Any, ...], names: list[str]) -> dict[str, str]:
    """The attention modules among ``names`` whose heads are not laid out as assumed (name -> why).

    For each, the model with its first head removed must compute what the unpruned model computes with that head's
    columns of the output projection set to zero: the sizes only suggest where a head's q, k and v rows and
    per-head tensors are, this confirms it. The model is put back after each check.
    """
    wrong = {}
    for name in names:
        module = model.get_submodule(name)
        layout = head_layout(module)
        if layout is None or layout.heads < 2:
            continue
        with torch.no_grad(), _restored(model):
            proj = getattr(module, layout.proj)
            silenced = proj.weight.detach().clone()
            silenced[:, layout.channel_indices([0])] = 0
            proj.weight = nn.Parameter(silenced)
            expected = _tensors(model.eval()(*inputs))
        try:
            with torch.no_grad(), _restored(model):
                prune_heads(module, layout, [0])
                actual = _tensors(model.eval()(*inputs))
        except Exception as exc:  # any failure of the pruned forward pass disqualifies the module
            wrong[name] = f"pruning breaks the model ({type(exc).__name__}: {_first_line(exc)})"
            continue
        same = len(actual) == len(expected) and all(
            a.shape == e.shape and torch.allclose(a, e, rtol=HEAD_TOLERANCE, atol=HEAD_TOLERANCE)
            for a, e in zip(actual, expected, strict=True))
        if not same:
            wrong[name] = ("removing a head does not equal silencing it: its qkv outputs are not laid out as "
                           "[3, heads, head_dim], or a tensor sized like its heads is not per head")
    return wrong


def broken_groups(names: list[str], check: Callable[[list[str]], str | None], *, failing: bool = False
                  ) -> dict[str, str]:
    """Groups among ``names`` whose ``check`` fails, found by halving: sets that pass together are not split.

    ``failing``: ``names`` is known to fail (the other half of a failing set passed), so it is split without
    being checked whole; a single group is always checked, for its reason.
    """
    if not failing or len(names) == 1:
        reason = check(names)
        if reason is None:
            return {}
        if len(names) == 1:
            return {names[0]: reason}
    middle = len(names) // 2
    first = broken_groups(names[:middle], check)
    return first | broken_groups(names[middle:], check, failing=not first)


@contextmanager
def _restored(model: nn.Module, graph: tp.DependencyGraph | None = None) -> Iterator[None]:
    """Put every module's attributes, parameters, buffers and children back as they were on exit; with ``graph``,
    also its operator nodes' split and concat sizes (which pruning edits in place) and its pruning history."""
    modules = list(model.modules())
    if graph is not None:
        mine = {id(m) for m in modules}
        modules += [n.module for n in graph.module2node.values()
                    if isinstance(n.module, nn.Module) and id(n.module) not in mine]
    saved = [(m, {k: list(v) if isinstance(v, list) else v for k, v in vars(m).items()},
              {k: dict(vars(m)[k]) for k in _STATE}) for m in modules]
    history = list(graph.pruning_history()) if graph is not None else None
    try:
        yield
    finally:
        for module, attributes, state in saved:
            vars(module).clear()
            vars(module).update(attributes)
            for key, entries in state.items():
                attributes[key].clear()
                attributes[key].update(entries)
        if graph is not None:
            graph._pruning_history = history  # Torch-Pruning has no public way to reset it


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors in a model's output (a tensor, or nested tuples, lists and dicts of them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def _first_line(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else ""
