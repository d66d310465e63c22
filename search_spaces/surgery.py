"""Channel surgery with Torch-Pruning's dependency graph: the one place where channels are removed.

Each coupled group keeps exactly the channel count the caller asks for; a group whose layers are split
into equal channel groups (grouped convolutions, GroupNorm) loses the same channels in every one of them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from search_spaces.attention import HeadLayout, head_layout, head_scores, prune_heads
from search_spaces.ground.errors import ConfigError, PolicyError, TraceError
from search_spaces.ground.time_limit import TimeUp

log = logging.getLogger(__name__)
PruningHistory = list[tuple[str, bool, list[int]]]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAPPING = tp.dependency.index_mapping
_INDEX_MAPPINGS = {
    tp.ops.OPTYPE.CONCAT: _MAPPING.update_concat_index_mapping,
    tp.ops.OPTYPE.SPLIT: _MAPPING.update_split_index_mapping,
    tp.ops.OPTYPE.RESHAPE: _MAPPING.update_reshape_index_mapping,
    tp.ops.OPTYPE.UNBIND: _MAPPING.update_unbind_index_mapping,
    tp.ops.OPTYPE.EXPAND: _MAPPING.update_expand_index_mapping,
    tp.ops.OPTYPE.SLICE: _MAPPING.update_slice_index_mapping,
}


class _MappingUpdates:
    """Stands in for Torch-Pruning's ``index_mapping`` module where its graph module calls it: the same, except that
    graphs in ``frozen`` (by id) are not updated (see :func:`index_mappings_frozen`), and Torch-Pruning's warnings
    (``Maximum recursive depth reached!`` when it cannot count a concatenation's channels) become one line of ours
    per process: the group check excludes the groups they break."""

    def __init__(self, real: ModuleType) -> None:
        self.real = real
        self.frozen: set[int] = set()
        self.reported: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def update_index_mapping(self, graph: tp.DependencyGraph) -> None:
        if id(graph) in self.frozen:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.real.update_index_mapping(graph)
        for message in sorted({str(w.message) for w in caught} - self.reported):
            self.reported.add(message)
            if "recursive depth" in message:
                log.warning("Torch-Pruning cannot follow every concatenation's channels (%r); the group check "
                            "(check=True, the default) excludes the groups this breaks", message)
            else:
                log.warning("Torch-Pruning: %s", message)


@contextmanager
def index_mappings_frozen(graph: tp.DependencyGraph) -> Iterator[None]:
    """Build many groups of ``graph`` while nothing is pruned: its index mappings are computed once here.

    Torch-Pruning recomputes every cat/split/reshape index mapping of the whole graph each time it builds a group
    (most of DenseNet's trace time); until a group is pruned they cannot change. Other graphs are not affected.
    """
    module = tp.dependency.graph
    if not isinstance(module.index_mapping, _MappingUpdates):
        module.index_mapping = _MappingUpdates(module.index_mapping)
    updates = module.index_mapping
    updates.update_index_mapping(graph)
    updates.frozen.add(id(graph))
    try:
        yield
    finally:
        updates.frozen.discard(id(graph))


def architecture_name(model: nn.Module) -> str:
    """The architecture part of a model fingerprint: the class's module and qualified name."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def dependency_graph(model: nn.Module, inputs: tuple[Any, ...]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (in eval mode) traced on ``inputs``.

    Torch-Pruning's own warnings (about parameters outside Conv/Linear/Norm layers, ...) are silenced:
    the search space reports them in one line of its own.
    """
    graph = tp.DependencyGraph()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                graph.build_dependency(model, example_inputs=inputs, verbose=False)
            except Exception:  # the last step, index mapping through cat/split/reshape, may fail on a few nodes
                if not hasattr(graph, "module2node"):
                    raise
                _isolate_unmappable(graph)
    except Exception as exc:  # Torch-Pruning's tracer fails in many ways on models it cannot handle
        raise TraceError(
            f"Torch-Pruning cannot trace {architecture_name(model)} into a dependency graph: "
            f"{type(exc).__name__}: {exc}. It follows convolutions, norms, linear layers and most tensor ops, not "
            "data-dependent control flow or non-tensor outputs."
        ) from exc
    _cut_channel_splits(graph)
    return graph


def _isolate_unmappable(graph: tp.DependencyGraph) -> None:
    """Cut out of the graph the cat/split/reshape nodes whose channel index mapping Torch-Pruning fails to
    compute (it raises on some channel shuffles and concats); the group check then finds what breaks."""
    for node in graph.module2node.values():
        update = _INDEX_MAPPINGS.get(node.type)
        if update is None:
            continue
        try:
            update(graph, node)
        except Exception:  # whatever Torch-Pruning's shape inference raises here, the node cannot be mapped
            _isolate(node)
    tp.dependency.index_mapping.update_index_mapping(graph)


def _isolate(node: tp.dependency.Node) -> None:
    """Remove every dependency from and to ``node``: no group is traced through it, and Torch-Pruning no longer
    maps channels through it (an elementwise node has no index mapping to update)."""
    for neighbour in (*node.inputs, *node.outputs):
        neighbour.dependencies = [dep for dep in neighbour.dependencies if dep.target is not node]
    node.dependencies = []
    node.type = tp.ops.OPTYPE.ELEMENTWISE


def _cut_channel_splits(graph: tp.DependencyGraph) -> None:
    """Cut the graph at reshapes that split the channel dimension into several (``x.view(B, r, C // r, H, W)``)
    and at slices (``x[:, :C]``, channel-padding residuals).

    Torch-Pruning maps channels through them by guesswork, and following those mappings around a
    split-attention block or a ReXNet residual takes it minutes; cut there, the groups on either side that
    break when pruned are found and excluded by the group check instead.
    """
    for node in graph.module2node.values():
        if node.type == tp.ops.OPTYPE.SLICE or (node.type == tp.ops.OPTYPE.RESHAPE and any(
            dep.target in node.outputs and _splits(dep.index_mapping[0]) for dep in node.dependencies
        )):
            _isolate(node)


def _splits(mapping: object) -> bool:
    """Whether an index mapping from a reshape to its output spreads each channel over a new dimension."""
    return isinstance(mapping, tp.dependency.index_mapping._FlattenIndexMapping) and mapping.reverse


def unwrapped_parameters(graph: tp.DependencyGraph) -> dict[int, str]:
    """The parameters Torch-Pruning found outside any Conv/Linear/Norm layer (layer scales, ...): id -> name."""
    return {id(u.parameters): graph._param_to_name[u.parameters] for u in graph.unwrapped_parameters}


def channel_groups(graph: tp.DependencyGraph, group: tp.dependency.Group) -> int:
    """How many equal channel groups the layers of ``group`` split its channels into (1: none).

    Grouped (non-depthwise) convolutions and GroupNorm do; Torch-Pruning's pruner counts them the same way.
    """
    counts = [1]
    for dep, _ in group:
        module = dep.target.module
        depthwise = isinstance(module, CONV_TYPES) and module.groups == module.out_channels
        if not isinstance(module, nn.Module) or depthwise:
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None:
            continue
        if graph.is_out_channel_pruning_fn(dep.handler):
            counts.append(pruner.get_out_channel_groups(module))
        elif graph.is_in_channel_pruning_fn(dep.handler):
            counts.append(pruner.get_in_channel_groups(module))
    return max(counts)


def coupled_groups(
    graph: tp.DependencyGraph, ignored: set[int], root_types: tuple[type[nn.Module], ...]
) -> Iterator[tuple[nn.Module, tp.dependency.Group | Exception]]:
    """Each coupled group once, as Torch-Pruning's ``get_all_groups`` finds them, with its root module.

    Groups containing an ``ignored`` module (by id) are left out. A root whose group Torch-Pruning fails to
    build comes with the exception instead of a group, and the enumeration goes on.
    """
    visited: set[int] = set()
    with index_mappings_frozen(graph):
        for module in list(graph.module2node):
            if id(module) in ignored or id(module) in visited or not isinstance(module, root_types):
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            try:
                group = root_group(graph, module)
            except TimeUp:
                raise TimeUp(f"Torch-Pruning building the channel group of {graph._module2name.get(module)}") from None
            except Exception as exc:  # Torch-Pruning's index mappings fail in many ways on what it cannot follow
                yield module, exc
                continue
            outputs = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
            visited.update(id(m) for m in outputs)
            if not any(id(m) in ignored for m in outputs):
                yield module, group


def root_group(graph: tp.DependencyGraph, root: nn.Module) -> tp.dependency.Group:
    """The coupled group of every output channel of ``root``."""
    channels = graph.get_out_channels(root)
    return graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, list(range(channels)))


def prune_in_place(
    model: nn.Module, graph: tp.DependencyGraph, kept: Mapping[str, int], importance: tp.importance.Importance
) -> PruningHistory:
    """Prune ``model`` (traced into ``graph``) in place so that each named group keeps ``kept[name]`` channels.

    The least important channels go, scored by ``importance`` on the unpruned model (averaged over the
    channel groups of grouped layers, so each loses the same ones). A group named by an attention module keeps
    ``kept[name]`` whole heads (:mod:`search_spaces.attention`), scored by their qkv channels' scores
    (:func:`head_importance`).
    Returns Torch-Pruning's history, followed by one ``(attention module, True, removed heads)`` entry per
    head group.

    Raises:
        ConfigError: ``importance`` cannot score a group.
        PolicyError: a kept count is not a multiple of the group's channel groups, or empties a layer.
    """
    modules = dict(model.named_modules())
    plans, head_plans = [], []
    with torch.no_grad(), index_mappings_frozen(graph):
        for name, keep in kept.items():
            root = modules[name]
            layout = head_layout(root)
            if layout is not None:
                if keep < layout.heads:
                    head_plans.append((name, layout, _least_important_heads(model, graph, name, layout, keep,
                                                                            importance)))
                continue
            group = root_group(graph, root)
            channels, parts = graph.get_out_channels(root), channel_groups(graph, group)
            if keep >= channels:
                continue
            if keep % parts or keep <= 0:
                raise PolicyError(f"group {name!r} cannot keep {keep} of {channels} channels: it needs a positive "
                                  f"multiple of its {parts} channel groups")
            scores = importance(group)
            if scores is None:
                raise ConfigError(f"importance {type(importance).__name__} cannot score group {name!r} of "
                                  f"{architecture_name(model)} (bn_scale needs a BatchNorm in every group; magnitude "
                                  "criteria a layer with weights)")
            width = channels // parts
            order = torch.argsort(scores.detach().float().view(parts, width).mean(0))[: (channels - keep) // parts]
            plans.append((name, root, sorted(int(i) + p * width for p in range(parts) for i in order)))
    for name, root, idxs in plans:
        group = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, idxs)
        if not graph.check_pruning_group(group):
            raise PolicyError(f"pruning {len(idxs)} channels of group {name!r} would leave a layer without channels")
        group.prune()
    for name, layout, removed in head_plans:
        prune_heads(modules[name], layout, removed)
    history = [(str(n), bool(is_out), [int(i) for i in idxs]) for n, is_out, idxs in graph.pruning_history()]
    return history + [(name, True, removed) for name, _, removed in head_plans]


def _least_important_heads(
    model: nn.Module, graph: tp.DependencyGraph, name: str, layout: HeadLayout, keep: int,
    importance: tp.importance.Importance,
) -> list[int]:
    """The heads of attention module ``name`` to remove so that ``keep`` stay, the lowest-scored first.

    Raises:
        PolicyError: ``keep`` leaves no head.
        ConfigError: ``importance`` cannot score the module's qkv projection.
    """
    if keep <= 0:
        raise PolicyError(f"attention group {name!r} cannot keep {keep} of its {layout.heads} heads: at least one "
                          "head must stay")
    order = torch.argsort(head_importance(model, graph, name, layout, importance))
    return sorted(int(h) for h in order[: layout.heads - keep])


def head_importance(
    model: nn.Module, graph: tp.DependencyGraph, name: str, layout: HeadLayout, importance: tp.importance.Importance
) -> torch.Tensor:
    """One score per head of attention module ``name``: the mean score of its q, k and v channels in the group of
    its qkv projection (so on the scale of channel scores).

    Raises:
        ConfigError: ``importance`` cannot score the module's qkv projection.
    """
    scores = importance(root_group(graph, dict(model.named_modules())[f"{name}.{layout.qkv}"]))
    if scores is None:
        raise ConfigError(f"importance {type(importance).__name__} cannot score the heads of {name!r} "
                          f"({architecture_name(model)}): bn_scale needs a BatchNorm in the group, which attention "
                          "has not; heads are scored by magnitude (l1, l2) or gradient (taylor) criteria")
    return head_scores(scores[: 3 * layout.channels], layout) / (3 * layout.head_dim)


def replay(model: nn.Module, graph: tp.DependencyGraph, history: PruningHistory) -> None:
    """Replay a pruning history on ``model`` (traced into ``graph``) in its order: runs of Torch-Pruning steps
    through the graph, and each ``(attention module, True, heads)`` step by removing those heads.

    Raises:
        PolicyError: a head step names heads the module does not have, or all of them.
    """
    modules = dict(model.named_modules())
    run: PruningHistory = []
    for step in [*history, None]:
        layout = head_layout(modules[step[0]]) if step is not None and step[0] in modules else None
        if step is not None and layout is None:
            run.append(step)
            continue
        if run:
            graph.load_pruning_history([(n, o, list(i)) for n, o, i in run])
            run = []
        if step is not None:
            prune_heads(modules[step[0]], layout, step[2])
