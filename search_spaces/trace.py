"""The tracer behind :meth:`search_spaces.space.SearchSpace.from_model`: one forward pass and Torch-Pruning's
dependency graph turned into channel groups and per-layer cost entries, and the trace-time check of every group.

It returns plain parts (:class:`Traced`) and never builds the space itself, so :mod:`search_spaces.space` depends
on it and not the other way round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from search_spaces.ground.errors import ConfigError, TraceError
from search_spaces.ground.options import check_fraction, check_int
from search_spaces.ground.time_limit import TimeUp, interrupt_after
from search_spaces.group_check import broken_groups, check_kept, head_check, reference
from search_spaces.groups import GRANULARITIES, ChannelGroup, LayerCost, Segment, default_round_to
from search_spaces.head_groups import HeadGroupTrace, head_features, head_groups
from search_spaces.layer_costs import Slices, layer_costs
from search_spaces.measure import flop_counting
from search_spaces.presets import Preset, load_preset
from search_spaces.surgery import CONV_TYPES as _CONV_TYPES
from search_spaces.surgery import (
    architecture_name,
    channel_groups,
    coupled_groups,
    dependency_graph,
    unwrapped_parameters,
)

# The tracer's warnings keep the logger name they had before it left space.py (callers filter on it).
log = logging.getLogger("search_spaces.space")
# The ratio the trace-time check removes from each group besides its max_ratio (the "small" cut).
CHECK_SMALL_RATIO = 0.1
# Modules whose output channels root a prunable group (Torch-Pruning's root module types).
ROOT_MODULE_TYPES: tuple[type[nn.Module], ...] = (*_CONV_TYPES, nn.Linear)
# CPU seconds tracing plus the group check may take by default (Torch-Pruning's walk took minutes on a few blocks).
TRACE_TIME_LIMIT = 120.0
# Default largest sparsity of one weight tensor in an element space (channel spaces default to 0.8).
ELEMENT_MAX_RATIO = 0.99


@dataclass(frozen=True)
class TraceOptions:
    """The checked options of one trace: preset, channel rounding, largest ratio, CPU time limit, granularity."""

    spec: Preset
    round_to: int | None  # None: chosen from the traced widths (default_round_to)
    max_ratio: float
    time_limit: float | None
    granularity: str


@dataclass(frozen=True)
class Traced:
    """What a trace found: the space's groups, layer costs and whole-model figures, and the groups Torch-Pruning
    cannot map (name -> why), which the space leaves out."""

    architecture: str
    groups: list[ChannelGroup]
    layers: list[LayerCost]
    base_flops: int
    base_params: int
    constant_flops: int
    constant_params: int
    ignored: list[str]
    round_to: int = 1
    unmapped: dict[str, str] = field(default_factory=dict)


def trace_options(
    preset: str | Preset | None, round_to: int | None, max_ratio: float | None, time_limit: float | None,
    granularity: str,
) -> TraceOptions:
    """Check :meth:`SearchSpace.from_model`'s options and fill the defaults (the preset's, else the granularity's).

    Raises:
        ConfigError: a bad option (unknown granularity or preset, ratio outside (0, 1), ...).
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity {granularity!r} is not accepted; accepted: {', '.join(GRANULARITIES)}")
    spec = preset if isinstance(preset, Preset) or preset is None else load_preset(preset)
    spec = spec or Preset(name=None)
    if granularity == "element":
        if round_to not in (None, 1):
            raise ConfigError(f"round_to={round_to!r} applies to channels; an element space prunes single weights")
        round_to, max_ratio = 1, ELEMENT_MAX_RATIO if max_ratio is None else max_ratio
    round_to = spec.round_to if round_to is None else round_to
    max_ratio = spec.max_ratio if max_ratio is None else max_ratio
    if round_to is not None:
        check_int("round_to", round_to, low=1)
    check_fraction("max_ratio", max_ratio, low_inclusive=False, high_inclusive=False)
    if time_limit is not None and (not isinstance(time_limit, (int, float)) or time_limit <= 0):
        raise ConfigError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    return TraceOptions(spec, None if round_to is None else int(round_to), float(max_ratio), time_limit, granularity)


@contextmanager
def tracing(model: nn.Module, time_limit: float | None) -> Iterator[None]:
    """Run the block with ``model`` in eval mode (its mode restored after) and within ``time_limit`` CPU seconds.

    Raises:
        TraceError: the time limit passed (the message says where and what to do).
    """
    was_training = model.training
    model.eval()
    try:
        with interrupt_after(time_limit):
            yield
    except TimeUp as up:
        raise TraceError(
            f"tracing {architecture_name(model)} and checking its channel groups took more than {time_limit:g} "
            f"s of CPU time ({up.where or 'in Torch-Pruning'}): leave the layers it is stuck on out with "
            "ignore=[module names], or allow more time with SearchSpace.from_model(..., time_limit=None) and pass "
            "that space to search"
        ) from None
    finally:
        model.train(was_training)


def _execution_order(model: nn.Module, inputs: tuple[Any, ...]) -> dict[str, int]:
    """Order in which leaf modules first run in a forward pass."""
    order: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(module: nn.Module, _inp: Any, _out: Any) -> None:
        if names[module] not in order:
            order[names[module]] = len(order)

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return order


def _leaf_flops(model: nn.Module, inputs: tuple[Any, ...]) -> tuple[int, dict[str, int], dict[str, list[int]]]:
    """Total FLOPs (torch.utils.flop_counter), FLOPs per leaf module and output spatial sizes."""
    prefix = type(model).__name__ + "."
    spatial: dict[str, list[int]] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        spatial[names[module]] = list(out.shape[2:])

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _CONV_TYPES)]
    try:
        with torch.no_grad(), flop_counting() as counter:
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    per_module = {
        key[len(prefix):]: int(sum(ops.values()))
        for key, ops in counter.get_flop_counts().items()
        if key.startswith(prefix)
    }
    return int(counter.get_total_flops()), per_module, spatial


def _forward_facts(
    model: nn.Module, inputs: tuple[Any, ...], arch: str
) -> tuple[dict[str, int], int, dict[str, int], dict[str, list[int]]]:
    """Execution order, total FLOPs, FLOPs per leaf and output spatial sizes of one forward pass.

    Raises:
        TraceError: the user's forward pass fails on ``inputs``.
    """
    try:
        return _execution_order(model, inputs), *_leaf_flops(model, inputs)
    except Exception as exc:  # any failure of the user's forward pass: report it as untraceable
        raise TraceError(f"cannot run {arch} on the example inputs: {type(exc).__name__}: {exc}") from exc


def trace_channels(
    model: nn.Module, inputs: tuple[Any, ...], options: TraceOptions, ignore: list[str | nn.Module]
) -> Traced:
    """One entry per prunable coupled channel group of ``model`` (in eval mode), in network order."""
    spec = options.spec
    arch = architecture_name(model)
    order, total_flops, leaf_flops, spatial = _forward_facts(model, inputs, arch)
    graph = dependency_graph(model, inputs)
    modules = dict(model.named_modules())
    ignored_names = _ignored(model, modules, order, spec, ignore)
    ignored_ids = {id(sub) for n in ignored_names for sub in modules[n].modules()}
    raw, unmapped = _raw_groups(graph, modules, ignored_ids)
    heads = head_groups(model, ignored_ids, leaf_flops, set(order))
    raw, unmapped = _with_heads(raw, unmapped, heads)
    per_head = {name for h in heads for name in h.seg_out}
    loose = sorted(set(unwrapped_parameters(graph).values()) - per_head)
    if loose:
        log.warning("%s: %d parameters outside Conv/Linear/Norm layers (%s) are pruned along their channel "
                    "dimension; the group check excludes groups this breaks", arch, len(loose), ", ".join(loose[:5]))
    _check_bounds(spec, arch, {entry.name for entry in raw}, {*unmapped, *ignored_names})
    raw.sort(key=lambda entry: min((order[m] for m in entry.members if m in order), default=len(order)))
    layers, constant_params, overflow = layer_costs(model, modules, leaf_flops, *_group_segments(raw))
    layers += [h.matmuls for h in heads if h.matmuls is not None]
    unmapped.update(overflow)
    base_params = sum(p.numel() for p in model.parameters())
    totals = _Totals(flops=total_flops, params=base_params, leaf_flops=leaf_flops, spatial=spatial)
    round_to = options.round_to or default_round_to([entry.channels for entry in raw if entry.unit == "channel"])
    groups = [_make_group(i, entry, modules, totals, spec, round_to, options.max_ratio) for i, entry in enumerate(raw)]
    if unmapped:
        log.warning("%s: %d channel groups Torch-Pruning cannot map are excluded from the search: %s", arch,
                    len(unmapped), "; ".join(f"{name}: {why}" for name, why in unmapped.items()))
    return Traced(
        architecture=arch,
        groups=groups,
        layers=layers,
        base_flops=total_flops,
        base_params=base_params,
        constant_flops=total_flops - sum(lc.flops_unit * lc.out_dim * lc.in_dim for lc in layers),
        constant_params=constant_params,
        ignored=sorted(ignored_names),
        round_to=round_to,
        unmapped=unmapped,
    )


def trace_elements(
    model: nn.Module, inputs: tuple[Any, ...], options: TraceOptions, ignore: list[str | nn.Module]
) -> Traced:
    """One entry per Conv/Linear weight tensor that runs on ``inputs``, in execution order, none left out but
    ``ignore`` and the preset's (the output layer included: masking never changes a shape)."""
    spec, max_ratio = options.spec, options.max_ratio
    arch = architecture_name(model)
    order, total_flops, leaf_flops, spatial = _forward_facts(model, inputs, arch)
    modules = dict(model.named_modules())
    ignored = _named(modules, arch, [*spec.ignore, *ignore])
    weighted = sorted((n for n, m in modules.items() if isinstance(m, ROOT_MODULE_TYPES) and n in order
                       and n not in ignored and isinstance(m.weight, nn.Parameter)), key=order.__getitem__)
    if not weighted:
        raise TraceError(f"{arch} has no Conv or Linear weight to prune on the example inputs (all ignored?)")
    base_params = sum(p.numel() for p in model.parameters())
    groups, layers = [], []
    for index, name in enumerate(weighted):
        module, numel = modules[name], modules[name].weight.numel()
        depthwise = isinstance(module, _CONV_TYPES) and module.groups == module.in_channels > 1
        out_channels = module.out_channels if isinstance(module, _CONV_TYPES) else module.out_features
        flops = leaf_flops.get(name, 0)
        groups.append(ChannelGroup(
            name=name, index=index, channels=numel,
            max_ratio=_group_max_ratio(name, numel, spec, 1, max_ratio), round_to=1, members=(name,),
            consumers=(), flops_share=flops / total_flops if total_flops else 0.0,
            params_share=numel / base_params,
            features=_features(module, out_channels, depthwise, spatial.get(name, [1]), flops, numel),
        ))
        layers.append(LayerCost(name=name, flops_unit=0, weight_unit=0, per_out_params=1,
                                out_segments=(Segment(name, numel),), in_segments=(Segment(None, 1),)))
    return Traced(
        architecture=arch, groups=groups, layers=layers, base_flops=total_flops, base_params=base_params,
        constant_flops=total_flops, constant_params=base_params - sum(g.channels for g in groups),
        ignored=sorted(ignored),
    )


def check_groups(
    model: nn.Module, inputs: tuple[Any, ...], groups: Sequence[ChannelGroup],
    predict: Callable[[Mapping[str, int]], tuple[int, int]], arch: str,
) -> dict[str, str]:
    """The groups that break when pruned alone (name -> why; see :func:`search_spaces.group_check.check_kept`).

    All groups are first pruned together, by a small ratio (run) and by their max_ratio (run, and FLOPs and params
    compared with ``predict``, the cost model's figures for kept channels); only when that fails are they split
    (halving) until the failing ones are found.

    Raises:
        TraceError: no group can be pruned.
    """
    ref = reference(model, inputs)
    by_name = {g.name: g for g in groups}

    def check(names: list[str]) -> str | None:
        chosen = [by_name[n] for n in names]
        for ratio in (CHECK_SMALL_RATIO, None):  # the costs are compared at the max ratios (one FLOP count)
            kept = {g.name: g.kept_channels(g.max_ratio if ratio is None else min(ratio, g.max_ratio)) for g in chosen}
            try:
                reason = check_kept(model, ref, kept, predict if ratio is None else None)
            except TimeUp:
                raise TimeUp(f"pruning and running the groups of {', '.join(names[:3])}"
                             f"{'...' if len(names) > 3 else ''} to check them") from None
            if reason is not None:
                return reason
        return None

    prunable = [g.name for g in groups if g.max_ratio > 0]
    excluded = head_check(model, inputs, [n for n in prunable if by_name[n].unit == "head"])
    excluded |= broken_groups([n for n in prunable if n not in excluded], check)
    if not excluded:
        return {}
    lines = "; ".join(f"{name}: {why}" for name, why in excluded.items())
    if len(excluded) == len(prunable):
        raise TraceError(f"no channel group of {arch} can be pruned safely: every one breaks the model "
                         f"when pruned ({lines})")
    log.warning("%s: %d of %d channel groups break when pruned and are excluded from the search: %s",
                arch, len(excluded), len(groups), lines)
    return excluded


@dataclass(frozen=True)
class _RawGroup:
    """One coupled group as Torch-Pruning traced it: root name, channel count, members, consumers and how
    many of each layer's output (``seg_out``) and input (``seg_in``) channels follow it."""

    name: str
    channels: int
    members: list[str]
    consumers: list[str]
    seg_out: dict[str, int]
    seg_in: dict[str, int]
    parts: int = 1
    unit: str = "channel"


@dataclass(frozen=True)
class _Totals:
    """Whole-model figures every group's shares and features are computed from."""

    flops: int
    params: int
    leaf_flops: dict[str, int]
    spatial: dict[str, list[int]]


def _ignored(
    model: nn.Module, modules: dict[str, nn.Module], order: dict[str, int], spec: Preset,
    ignore: list[str | nn.Module],
) -> set[str]:
    """Module names whose output channels are kept: the preset's and the user's, and the output layer."""
    arch = architecture_name(model)
    ignored = _named(modules, arch, [*spec.ignore, *ignore])
    roots = sorted((n for n, m in modules.items() if isinstance(m, ROOT_MODULE_TYPES) and n in order),
                   key=order.__getitem__)
    if not roots:
        raise TraceError(f"{arch} has no Conv or Linear layer that ran on the example inputs")
    ignored.add(roots[-1])  # the output layer keeps its channels
    return ignored


def _check_bounds(spec: Preset, arch: str, groups: set[str], left_out: set[str]) -> None:
    """Raise :class:`ConfigError` if the preset bounds a group the model does not have (a misspelled name)."""
    unknown = sorted(n for n in set(spec.ratio_bounds) - groups
                     if not any(n == out or n.startswith(f"{out}.") for out in left_out))
    if unknown:
        owner = f"preset {spec.name!r}" if spec.name else "the preset"
        raise ConfigError(f"{owner} bounds groups {arch} does not have: {unknown}; its groups are "
                          f"named by their first layer: {', '.join(sorted(groups))}")


def _named(modules: dict[str, nn.Module], arch: str, items: list[str | nn.Module]) -> set[str]:
    """The module names of ``items`` (names or modules); raises :class:`ConfigError` naming the unknown ones."""
    names = {m: n for n, m in modules.items()}
    named = {names.get(item, "<module not in model>") if isinstance(item, nn.Module) else item for item in items}
    unknown = sorted(n for n in named if n not in modules)
    if unknown:
        raise ConfigError(f"ignored modules not found in {arch}: {unknown}")
    return named


def _raw_groups(
    graph: tp.DependencyGraph, modules: dict[str, nn.Module], ignored_modules: set[int]
) -> tuple[list[_RawGroup], dict[str, str]]:
    """Every prunable coupled group of the graph (more than one channel), ignored modules (by id) left out, and the
    roots whose group Torch-Pruning fails to build (name -> why).

    Parameters outside Conv/Linear/Norm layers that a group prunes are recorded as members by their name.
    """
    names = {m: n for n, m in modules.items()}
    loose = unwrapped_parameters(graph)
    raw, failed = [], {}
    for root, group in coupled_groups(graph, ignored_modules, ROOT_MODULE_TYPES):
        if isinstance(group, Exception):
            failed[names[root]] = f"Torch-Pruning cannot follow its channels ({type(group).__name__}: {group})"
            continue
        channels = graph.get_out_channels(root)
        entry = _RawGroup(names[root], channels or 0, [], [], {}, {}, channel_groups(graph, group))
        for dep, idxs in group:
            target = dep.target.module
            if isinstance(target, nn.Parameter) and id(target) in loose:
                entry.seg_out[loose[id(target)]] = len(idxs)
                continue
            if not isinstance(target, nn.Module) or target not in names:
                continue
            if graph.is_out_channel_pruning_fn(dep.handler):
                entry.members.append(names[target])
                entry.seg_out[names[target]] = len(idxs)
            elif graph.is_in_channel_pruning_fn(dep.handler):
                entry.consumers.append(names[target])
                entry.seg_in[names[target]] = len(idxs)
        if channels is None or channels <= 1 or any(graph.get_out_channels(modules[m]) == 1 for m in entry.members):
            continue
        raw.append(entry)
    return raw, failed


def _with_heads(raw: list[_RawGroup], unmapped: dict[str, str], heads: list[HeadGroupTrace]
                ) -> tuple[list[_RawGroup], dict[str, str]]:
    """The channel groups and failures left when each attention module's heads are a group: channel groups that
    prune a layer the heads set (Torch-Pruning's group of a fused qkv projection) give way to the head group."""
    taken = {layer for h in heads for layer in h.seg_out}
    kept = [entry for entry in raw if not taken & set(entry.members)]
    kept += [_RawGroup(h.name, h.layout.heads, [m for m in h.seg_out if m in taken], list(h.seg_in), h.seg_out,
                       h.seg_in, unit="head") for h in heads]
    return kept, {name: why for name, why in unmapped.items() if name not in taken}


def _group_max_ratio(name: str, channels: int, spec: Preset, round_to: int, max_ratio: float) -> float:
    """The largest ratio a policy may give a group: the preset's bound, and never fewer than ``round_to``
    (or zero) channels left."""
    group_max = min(spec.ratio_bounds.get(name, max_ratio), max_ratio)
    floor = max(1, round_to)
    group_max = max(0.0, min(group_max, (channels - floor) / channels))
    while group_max > 0 and int(channels * (1 - group_max)) < floor:
        group_max = max(0.0, group_max - 1e-9)
    return group_max


def _features(
    root: nn.Module, out_channels: int, depthwise: bool, size: list[int], flops: int, params: int
) -> dict[str, float]:
    """An entry's descriptors for agents (AMC's layer embedding): op type, channels, kernel, stride, feature map
    size, FLOPs and parameters."""
    is_conv = isinstance(root, _CONV_TYPES)
    return {
        "op_type": 0.0 if not is_conv else (2.0 if depthwise else 1.0),  # attention heads: head_features
        "in_channels": float(root.in_channels if is_conv else root.in_features),
        "out_channels": float(out_channels),
        "kernel": float(root.kernel_size[0]) if is_conv else 1.0,
        "stride": float(root.stride[0]) if is_conv else 1.0,
        "feature_size": float(size[0]) if size else 1.0,
        "flops": float(flops),
        "params": float(params),
    }


def _make_group(
    index: int, entry: _RawGroup, modules: dict[str, nn.Module], totals: _Totals, spec: Preset, round_to: int,
    max_ratio: float,
) -> ChannelGroup:
    """The ``index``-th entry of the space for a traced group, with its shares, features and largest ratio."""
    if entry.unit == "head":  # whole heads: their width is the model's head_dim, no rounding on top
        features = head_features(modules[entry.name], entry.channels, totals.leaf_flops.get(entry.name, 0))
        unit = 1
    else:
        unit = math.lcm(round_to, entry.parts)  # grouped layers keep the same number of channels in every part
        features = _channel_features(entry, modules, totals)
    flops, params = features["flops"], features["params"]
    return ChannelGroup(
        name=entry.name,
        index=index,
        channels=entry.channels,
        max_ratio=_group_max_ratio(entry.name, entry.channels, spec, unit, max_ratio),
        round_to=unit,
        members=tuple(entry.members),
        consumers=tuple(entry.consumers),
        flops_share=flops / totals.flops if totals.flops else 0.0,
        params_share=params / totals.params if totals.params else 0.0,
        features=features,
        channel_groups=entry.parts,
        unit=entry.unit,
    )


def _channel_features(entry: _RawGroup, modules: dict[str, nn.Module], totals: _Totals) -> dict[str, float]:
    """AMC's descriptors of a channel group: its root's op, widths and kernel, and the layers it touches."""
    touched = set(entry.members) | set(entry.consumers)
    flops = sum(totals.leaf_flops.get(m, 0) for m in touched)
    params = sum(p.numel() for m in touched if m in modules for p in modules[m].parameters(recurse=False))
    depthwise = any(
        isinstance(modules[m], _CONV_TYPES) and modules[m].groups == modules[m].in_channels > 1 for m in entry.members
    )
    return _features(modules[entry.name], entry.channels, depthwise, totals.spatial.get(entry.name, [1]), flops,
                     params)


def _group_segments(raw_groups: list[_RawGroup]) -> tuple[Slices, Slices]:
    """Per layer, the slices of its output (first) and input (second) channels that follow each group."""
    out_of: dict[str, list[Segment]] = {}
    in_of: dict[str, list[Segment]] = {}
    for entry in raw_groups:
        for m, size in entry.seg_out.items():
            out_of.setdefault(m, []).append(Segment(entry.name, size))
        for m, size in entry.seg_in.items():
            in_of.setdefault(m, []).append(Segment(entry.name, size))
    return out_of, in_of
