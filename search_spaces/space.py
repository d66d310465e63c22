"""SearchSpace: the model's coupled channel groups, traced once with Torch-Pruning's dependency graph.

The space holds only strings and numbers (no module references), so it pickles and can be shipped to
remote workers. Its per-layer cost entries let :class:`search_spaces.cost.CostModel` compute a policy's
FLOPs and parameters exactly without touching the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.ground.errors import ConfigError, TraceError
from search_spaces.ground.inputs import as_tuple
from search_spaces.ground.options import check_fraction, check_int, check_module
from search_spaces.ground.time_limit import TimeUp, interrupt_after
from search_spaces.group_check import broken_groups, check_kept, reference
from search_spaces.measure import sparse_tensor_bytes
from search_spaces.policy import Policy
from search_spaces.presets import Preset, load_preset
from search_spaces.surgery import CONV_TYPES as _CONV_TYPES
from search_spaces.surgery import (
    architecture_name,
    channel_groups,
    coupled_groups,
    dependency_graph,
    unwrapped_parameters,
)

log = logging.getLogger(__name__)
# The ratio the trace-time check removes from each group besides its max_ratio (the "small" cut).
CHECK_SMALL_RATIO = 0.1
# Modules whose output channels root a prunable group (Torch-Pruning's root module types).
ROOT_MODULE_TYPES: tuple[type[nn.Module], ...] = (*_CONV_TYPES, nn.Linear)
# CPU seconds tracing plus the group check may take by default (Torch-Pruning's walk took minutes on a few blocks).
TRACE_TIME_LIMIT = 120.0
# What one entry of a space prunes: coupled channel groups (structured) or a weight tensor's elements.
GRANULARITIES = ("channel", "element")
# Default largest sparsity of one weight tensor in an element space (channel spaces default to 0.8).
ELEMENT_MAX_RATIO = 0.99
# Bytes per stored value of the sparse and dense size figures (float32 weights).
VALUE_BYTES = 4


@dataclass(frozen=True)
class ChannelGroup:
    """One set of coupled channels that is pruned together.

    Attributes:
        name: qualified name of the group's root module (Torch-Pruning's root), stable across instances.
        index: position in network (execution) order.
        channels: number of channels in the group.
        max_ratio: largest fraction of channels a policy may remove.
        round_to: kept channels are rounded down to a multiple of this (when any are removed); a multiple of
            ``channel_groups``.
        members: modules whose output channels are removed with this group.
        consumers: modules whose input channels are removed with this group.
        flops_share: fraction of the model's FLOPs in layers this group touches.
        params_share: fraction of the model's parameters in layers this group touches.
        features: per-group descriptors for agents (op type, channels, kernel, stride, feature map size, ...).
        channel_groups: equal parts its layers split the channels into (grouped convolutions, GroupNorm); each
            part loses the same number of channels.
    """

    name: str
    index: int
    channels: int
    max_ratio: float
    round_to: int
    members: tuple[str, ...]
    consumers: tuple[str, ...]
    flops_share: float
    params_share: float
    features: Mapping[str, float] = field(default_factory=dict)
    channel_groups: int = 1

    def kept_channels(self, ratio: float) -> int:
        """Channels left after removing ``ratio`` of them, exactly as Torch-Pruning's pruner counts."""
        return kept_channels(self.channels, ratio, self.round_to)


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """Channels of ``channels`` left after removing ``ratio`` of them, rounded down to multiples of ``round_to``."""
    kept = int(channels * (1 - ratio))
    if kept < channels and round_to > 1:
        kept -= kept % round_to
    return kept


@dataclass(frozen=True)
class Segment:
    """A slice of one layer dimension that follows a group (``group`` None: never pruned)."""

    group: str | None
    size: int


@dataclass(frozen=True)
class LayerCost:
    """Analytic cost of one parametrized leaf module as a function of its kept channels.

    FLOPs = ``flops_unit * out * in``; params = ``weight_unit * out * in + per_out_params * out``,
    where ``out`` and ``in`` are the kept sizes of the output and (per channel group) input dimensions.
    """

    name: str
    flops_unit: int
    weight_unit: int
    per_out_params: int
    out_segments: tuple[Segment, ...]
    in_segments: tuple[Segment, ...]

    @property
    def out_dim(self) -> int:
        return sum(s.size for s in self.out_segments)

    @property
    def in_dim(self) -> int:
        return sum(s.size for s in self.in_segments)


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
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
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


class SearchSpace(Sequence[ChannelGroup]):
    """A sequence of coupled channel groups (or, element-wise, of weight tensors) of one model, in network order.

    Build it with :meth:`from_model`; it never keeps references to the model. In an element space
    (``granularity == "element"``) each entry is one Conv/Linear weight tensor, its ``channels`` the tensor's
    element count and its ratio the tensor's sparsity: FLOPs and stored parameters never change (dense kernels
    multiply the zeros); non-zeros and the sparse size do.
    """

    def __init__(
        self,
        *,
        architecture: str,
        groups: Sequence[ChannelGroup],
        layers: Sequence[LayerCost],
        base_flops: int,
        base_params: int,
        constant_flops: int,
        constant_params: int,
        ignored: Sequence[str] = (),
        preset: str | None = None,
        round_to: int = 1,
        excluded: Mapping[str, str] | None = None,
        granularity: str = "channel",
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ConfigError(f"granularity {granularity!r} is not accepted; accepted: {', '.join(GRANULARITIES)}")
        self.granularity = granularity
        self.architecture = architecture
        self.groups: tuple[ChannelGroup, ...] = tuple(groups)
        self.layers: tuple[LayerCost, ...] = tuple(layers)
        self.base_flops = base_flops
        self.base_params = base_params
        self.constant_flops = constant_flops
        self.constant_params = constant_params
        self.ignored = tuple(ignored)
        self.excluded: dict[str, str] = dict(excluded or {})
        self.preset = preset
        self._round_to = round_to
        self._by_name = {g.name: g for g in self.groups}

    # -- sequence protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups)

    def __getitem__(self, key: int | str) -> ChannelGroup:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise ConfigError(f"no channel group named {key!r}; groups: {', '.join(self.names)}") from None
        return self.groups[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_name

    def __repr__(self) -> str:
        entries = "groups" if self.granularity == "channel" else "weight tensors"
        return (
            f"SearchSpace({self.architecture}, {len(self)} {entries}, "
            f"{self.base_flops / 1e6:.2f} MFLOPs, {self.base_params / 1e3:.1f} k params)"
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Group names in network order."""
        return tuple(g.name for g in self.groups)

    @property
    def max_ratios(self) -> dict[str, float]:
        """Each group's largest allowed ratio."""
        return {g.name: g.max_ratio for g in self.groups}

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Architecture name plus group names and channel counts (element counts, with the granularity, in an
        element space); stored with every policy."""
        identity = {
            "architecture": self.architecture,
            "groups": {g.name: g.channels for g in self.groups},
            "round_to": self.round_to,
        }
        return identity if self.granularity == "channel" else {**identity, "granularity": self.granularity}

    @property
    def round_to(self) -> int:
        """Channel rounding shared by every group."""
        return self._round_to

    # -- analytic cost (CostModel's arithmetic) ----------------------------------------------------
    def kept(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept channel count per group (groups ``ratios`` does not name keep all)."""
        return {g.name: g.kept_channels(ratios.get(g.name, 0.0)) for g in self.groups}

    def layer_dims(self, kept: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """Kept (input, output) size of every parametrized layer when each group keeps ``kept`` channels."""
        channels = {g.name: g.channels for g in self.groups}
        left = {**channels, **kept}

        def size(segments: tuple[Segment, ...]) -> int:
            return sum(s.size if s.group is None else s.size * left[s.group] // channels[s.group] for s in segments)

        return {layer.name: (size(layer.in_segments), size(layer.out_segments)) for layer in self.layers}

    def figures(self, dims: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """FLOPs and stored parameters of the model whose layers keep ``dims`` (see :meth:`layer_dims`).

        In an element space both stay the unpruned model's: the zeros are still stored and multiplied.
        """
        if self.granularity == "element":
            return self.base_flops, self.base_params
        return self._sums(dims)

    def nonzeros(self, dims: Mapping[str, tuple[int, int]]) -> int:
        """Non-zero parameters of the model whose layers keep ``dims`` (all of them, after channel pruning)."""
        return self._sums(dims)[1]

    def sparse_bytes(self, dims: Mapping[str, tuple[int, int]]) -> int:
        """Bytes of the parameters in the sparse format (``autoprune.prune.sparse_format``): float32 values, and a
        weight tensor with zeros stored as a bitmask plus its non-zero values when that is smaller."""
        if self.granularity == "channel":
            return VALUE_BYTES * self._sums(dims)[1]
        stored = VALUE_BYTES * self.constant_params
        for layer in self.layers:
            stored += sparse_tensor_bytes(layer.out_dim, dims[layer.name][1], VALUE_BYTES)
        return stored

    def _sums(self, dims: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        flops, params = self.constant_flops, self.constant_params
        for layer in self.layers:
            in_dim, out_dim = dims[layer.name]
            flops += layer.flops_unit * out_dim * in_dim
            params += layer.weight_unit * out_dim * in_dim + layer.per_out_params * out_dim
        return flops, params

    def without(self, excluded: Mapping[str, str]) -> SearchSpace:
        """This space with the groups named by ``excluded`` (name -> reason) removed: their channels stay."""
        groups = [replace(g, index=i) for i, g in enumerate(g for g in self.groups if g.name not in excluded)]

        def kept_whole(segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
            return tuple(Segment(None, s.size) if s.group in excluded else s for s in segments)

        layers = [replace(lc, out_segments=kept_whole(lc.out_segments), in_segments=kept_whole(lc.in_segments))
                  for lc in self.layers]
        return SearchSpace(
            architecture=self.architecture, groups=groups, layers=layers, base_flops=self.base_flops,
            base_params=self.base_params, constant_flops=self.constant_flops, constant_params=self.constant_params,
            ignored=self.ignored, preset=self.preset, round_to=self.round_to, excluded={**self.excluded, **excluded},
            granularity=self.granularity,
        )

    def policy(self, ratios: Mapping[str, float] | Sequence[float]) -> Policy:
        """Make a validated :class:`autoprune.Policy` for this space from a mapping or a vector in order."""
        if not isinstance(ratios, Mapping):
            values = [float(r) for r in ratios]
            if len(values) != len(self):
                raise ConfigError(f"expected {len(self)} ratios (one per group), got {len(values)}")
            ratios = dict(zip(self.names, values, strict=True))
        policy = Policy(ratios, fingerprint=self.fingerprint)
        policy.validate(self)
        return policy

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_inputs: Any,
        *,
        preset: str | Preset | None = None,
        ignore: Sequence[str | nn.Module] = (),
        round_to: int | None = None,
        max_ratio: float | None = None,
        check: bool = True,
        time_limit: float | None = TRACE_TIME_LIMIT,
        granularity: str = "channel",
    ) -> SearchSpace:
        """Trace ``model`` and return one entry per coupled channel group (or per weight tensor).

        Every group is checked once (``check``): pruned by a small ratio and by its max_ratio on a copy, the
        model must run, keep its output shapes, give finite outputs and have the FLOPs and parameters the cost
        model predicts. Groups that fail are left out, with a warning; ``space.excluded`` says why.

        Args:
            model: the trained model (not modified).
            example_inputs: a tensor or tuple of tensors the model accepts (the batch sets FLOPs' scale).
            preset: name of a built-in preset (``search_spaces/presets/*.yaml``) or a :class:`Preset`.
            ignore: module names (or modules) whose output channels must not be pruned, besides the
                output layer, which is always excluded.
            round_to: kept channels are rounded down to a multiple of this (default: preset, else 1).
            max_ratio: largest fraction removed from any group (default: preset, else 0.8).
            check: check every group by pruning a copy (off only for spaces used to validate a policy).
            time_limit: CPU seconds tracing and checking may take (None: no limit; enforced in the main thread).
            granularity: ``"channel"`` (structured: channels removed, the model gets smaller and faster) or
                ``"element"`` (unstructured: one sparsity per Conv/Linear weight tensor, zeros masked in place;
                ``max_ratio`` defaults to 0.99 and the output layer may be pruned too).

        Raises:
            TraceError: the model cannot be run or traced on ``example_inputs``, no group can be pruned, or
                ``time_limit`` passed.
            ConfigError: a bad option (unknown ignored module, ratio outside [0, 1), ...).
        """
        check_module("model", model)
        inputs = as_tuple(example_inputs)
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
        check_int("round_to", round_to, low=1)
        check_fraction("max_ratio", max_ratio, low_inclusive=False, high_inclusive=False)
        round_to, max_ratio = int(round_to), float(max_ratio)

        if time_limit is not None and (not isinstance(time_limit, (int, float)) or time_limit <= 0):
            raise ConfigError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
        was_training = model.training
        model.eval()
        try:
            with interrupt_after(time_limit):
                if granularity == "element":
                    return cls._trace_elements(model, inputs, spec, list(ignore), float(max_ratio))
                space = cls._trace(model, inputs, spec, list(ignore), round_to, float(max_ratio))
                return _checked(space, model, inputs) if check else space
        except TimeUp as up:
            raise TraceError(
                f"tracing {architecture_name(model)} and checking its channel groups took more than {time_limit:g} "
                f"s of CPU time ({up.where or 'in Torch-Pruning'}): leave the layers it is stuck on out with "
                "ignore=[module names], or allow more time with SearchSpace.from_model(..., time_limit=None) and pass "
                "that space to search"
            ) from None
        finally:
            model.train(was_training)

    @classmethod
    def _trace(
        cls, model: nn.Module, inputs: tuple[Any, ...], spec: Preset, ignore: list[str | nn.Module], round_to: int,
        max_ratio: float,
    ) -> SearchSpace:
        arch = architecture_name(model)
        order, total_flops, leaf_flops, spatial = _forward_facts(model, inputs, arch)
        graph = dependency_graph(model, inputs)
        loose = sorted(unwrapped_parameters(graph).values())
        if loose:
            log.warning("%s: %d parameters outside Conv/Linear/Norm layers (%s) are pruned along their channel "
                     "dimension; the group check excludes groups this breaks", arch, len(loose), ", ".join(loose[:5]))
        modules = dict(model.named_modules())
        ignored_names = _ignored(model, modules, order, spec, ignore)
        raw, unmapped = _raw_groups(graph, modules, ignored_names)
        _check_bounds(spec, arch, {entry.name for entry in raw}, {*unmapped, *ignored_names})
        raw.sort(key=lambda entry: min((order[m] for m in entry.members if m in order), default=len(order)))
        layers, constant_params, overflow = cls._layer_costs(model, modules, leaf_flops, raw)
        unmapped.update(overflow)
        base_params = sum(p.numel() for p in model.parameters())
        totals = _Totals(flops=total_flops, params=base_params, leaf_flops=leaf_flops, spatial=spatial)
        space = cls(
            architecture=arch,
            groups=[_make_group(i, entry, modules, totals, spec, round_to, max_ratio) for i, entry in enumerate(raw)],
            layers=layers,
            base_flops=total_flops,
            base_params=base_params,
            constant_flops=total_flops - sum(lc.flops_unit * lc.out_dim * lc.in_dim for lc in layers),
            constant_params=constant_params,
            ignored=sorted(ignored_names),
            preset=spec.name,
            round_to=round_to,
        )
        if unmapped:
            log.warning("%s: %d channel groups Torch-Pruning cannot map are excluded from the search: %s", arch,
                        len(unmapped), "; ".join(f"{name}: {why}" for name, why in unmapped.items()))
        return space.without(unmapped) if unmapped else space

    @classmethod
    def _trace_elements(
        cls, model: nn.Module, inputs: tuple[Any, ...], spec: Preset, ignore: list[str | nn.Module], max_ratio: float
    ) -> SearchSpace:
        """One entry per Conv/Linear weight tensor that runs on ``inputs``, in execution order, none left out but
        ``ignore`` and the preset's (the output layer included: masking never changes a shape)."""
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
        return cls(
            architecture=arch, groups=groups, layers=layers, base_flops=total_flops, base_params=base_params,
            constant_flops=total_flops, constant_params=base_params - sum(g.channels for g in groups),
            ignored=sorted(ignored), preset=spec.name, granularity="element",
        )

    @staticmethod
    def _layer_costs(
        model: nn.Module, modules: dict[str, nn.Module], leaf_flops: dict[str, int], raw_groups: list[_RawGroup]
    ) -> tuple[list[LayerCost], int, dict[str, str]]:
        """Per-layer cost entries (which groups set each layer's widths), the parameters no group touches and the
        groups whose channels Torch-Pruning maps onto more channels than a layer has (name -> why: excluded).

        A parameter outside any Conv/Linear/Norm layer that a group prunes (a layer scale, a position
        embedding) is an entry of its own, named by the parameter.
        """
        out_of: dict[str, list[Segment]] = {}
        in_of: dict[str, list[Segment]] = {}
        for entry in raw_groups:
            for m, size in entry.seg_out.items():
                out_of.setdefault(m, []).append(Segment(entry.name, size))
            for m, size in entry.seg_in.items():
                in_of.setdefault(m, []).append(Segment(entry.name, size))
        loose = {n: p for n, p in model.named_parameters() if n in out_of}
        overflow: dict[str, str] = {}

        def segments(known: list[Segment], total: int, name: str) -> tuple[Segment, ...]:
            rest = total - sum(s.size for s in known)
            if rest < 0:  # Torch-Pruning's index mapping (splits, reshapes) claims more channels than there are
                why = f"Torch-Pruning maps {total - rest} channels onto the {total} of {name}"
                for s in known:
                    overflow.setdefault(s.group, why)
                return (Segment(None, total),)
            return (*known, Segment(None, rest)) if rest > 0 else tuple(known)

        layers: list[LayerCost] = []
        constant_params = 0
        for name, module in modules.items():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            n_params = sum(p.numel() for p in own)
            if isinstance(module, (*_CONV_TYPES, nn.Linear)):
                if isinstance(module, nn.Linear):
                    out_dim, in_dim, unit = module.out_features, module.in_features, 1
                else:
                    depthwise = module.groups == module.in_channels and module.groups > 1
                    out_dim = module.out_channels
                    in_dim = 1 if depthwise else module.in_channels // module.groups
                    unit = int(module.weight[0, 0].numel())
                    if depthwise:
                        in_of.pop(name, None)
                    elif module.groups > 1:  # each output channel sees one part of the input: a share per group
                        in_of[name] = [Segment(s.group, s.size // module.groups) for s in in_of.get(name, [])]
                flops = leaf_flops.get(name, 0)
                layers.append(
                    LayerCost(
                        name=name,
                        flops_unit=flops // (out_dim * in_dim),
                        weight_unit=unit,
                        per_out_params=1 if module.bias is not None else 0,
                        out_segments=segments(out_of.get(name, []), out_dim, name),
                        in_segments=segments(in_of.get(name, []), in_dim, name),
                    )
                )
            elif name in out_of and all(p.dim() == 1 for p in own):  # BatchNorm, LayerNorm, PReLU, ...
                per_channel = sum(p.numel() for p in own) // own[0].numel()
                layers.append(
                    LayerCost(
                        name=name,
                        flops_unit=0,
                        weight_unit=0,
                        per_out_params=per_channel,
                        out_segments=segments(out_of[name], own[0].numel(), name),
                        in_segments=(Segment(None, 1),),
                    )
                )
            else:
                constant_params += n_params - sum(p.numel() for p in own if any(p is q for q in loose.values()))
        for name, param in loose.items():
            channels = [d for d in param.shape if d > 1][-1]  # Torch-Pruning prunes the last non-singleton dim
            layers.append(LayerCost(name=name, flops_unit=0, weight_unit=0, per_out_params=param.numel() // channels,
                                    out_segments=segments(out_of[name], channels, name),
                                    in_segments=(Segment(None, 1),)))
        return layers, constant_params, overflow


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
    graph: tp.DependencyGraph, modules: dict[str, nn.Module], ignored: set[str]
) -> tuple[list[_RawGroup], dict[str, str]]:
    """Every prunable coupled group of the graph (more than one channel), ignored modules left out, and the roots
    whose group Torch-Pruning fails to build (name -> why).

    Parameters outside Conv/Linear/Norm layers that a group prunes are recorded as members by their name.
    """
    names = {m: n for n, m in modules.items()}
    loose = unwrapped_parameters(graph)
    ignored_modules = {id(sub) for n in ignored for sub in modules[n].modules()}
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
        "op_type": 0.0 if not is_conv else (2.0 if depthwise else 1.0),
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
    unit = math.lcm(round_to, entry.parts)  # grouped layers keep the same number of channels in every part
    touched = set(entry.members) | set(entry.consumers)
    flops = sum(totals.leaf_flops.get(m, 0) for m in touched)
    params = sum(p.numel() for m in touched if m in modules for p in modules[m].parameters(recurse=False))
    root = modules[entry.name]
    depthwise = any(
        isinstance(modules[m], _CONV_TYPES) and modules[m].groups == modules[m].in_channels > 1 for m in entry.members
    )
    features = _features(root, entry.channels, depthwise, totals.spatial.get(entry.name, [1]), flops, params)
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
    )


def _checked(space: SearchSpace, model: nn.Module, inputs: tuple[Any, ...]) -> SearchSpace:
    """``space`` without the groups that break when pruned alone (see :func:`search_spaces.group_check.check_kept`).

    All groups are first pruned together, by a small ratio (run) and by their max_ratio (run, and FLOPs and params
    compared with the cost model); only when that fails are they split (halving) until the failing ones are found.

    Raises:
        TraceError: no group can be pruned.
    """
    ref = reference(model, inputs)

    def predict(kept: Mapping[str, int]) -> tuple[int, int]:
        return space.figures(space.layer_dims(kept))

    def check(names: list[str]) -> str | None:
        for ratio in (CHECK_SMALL_RATIO, None):  # the costs are compared at the max ratios (one FLOP count)
            kept = {n: space[n].kept_channels(space[n].max_ratio if ratio is None else min(ratio, space[n].max_ratio))
                    for n in names}
            try:
                reason = check_kept(model, ref, kept, predict if ratio is None else None)
            except TimeUp:
                raise TimeUp(f"pruning and running the groups of {', '.join(names[:3])}"
                             f"{'...' if len(names) > 3 else ''} to check them") from None
            if reason is not None:
                return reason
        return None

    prunable = [g.name for g in space if g.max_ratio > 0]
    excluded = broken_groups(prunable, check)
    if not excluded:
        return space
    lines = "; ".join(f"{name}: {why}" for name, why in excluded.items())
    if len(excluded) == len(prunable):
        raise TraceError(f"no channel group of {space.architecture} can be pruned safely: every one breaks the model "
                         f"when pruned ({lines})")
    log.warning("%s: %d of %d channel groups break when pruned and are excluded from the search: %s",
                space.architecture, len(excluded), len(space), lines)
    return space.without(excluded)
