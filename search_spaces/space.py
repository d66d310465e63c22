"""SearchSpace: the model's coupled channel groups, traced once with Torch-Pruning's dependency graph.

The space holds only strings and numbers (no module references), so it pickles and can be shipped to
remote workers. Its per-layer cost entries let :class:`search_spaces.cost.CostModel` compute a policy's
FLOPs and parameters exactly without touching the model. The tracing itself is :mod:`search_spaces.trace`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from search_spaces.ground.errors import ConfigError, TraceError
from search_spaces.ground.inputs import as_tuple
from search_spaces.ground.options import check_module
from search_spaces.groups import GRANULARITIES, ChannelGroup, LayerCost, Segment
from search_spaces.measure import sparse_tensor_bytes
from search_spaces.policy import Policy
from search_spaces.presets import Preset
from search_spaces.trace import (
    TRACE_TIME_LIMIT,
    Traced,
    TraceOptions,
    check_groups,
    trace_channels,
    trace_elements,
    trace_options,
    tracing,
)

# Bytes per stored value of the sparse and dense size figures (float32 weights).
VALUE_BYTES = 4


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
            round_to: kept channels are rounded down to a multiple of this (default: the preset's, else 8 when the
                median group has at least 32 channels, else 1: :func:`search_spaces.groups.default_round_to`).
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
        options = trace_options(preset, round_to, max_ratio, time_limit, granularity)
        with tracing(model, options.time_limit):
            if options.granularity == "element":
                return cls._from_trace(trace_elements(model, inputs, options, list(ignore)), options)
            space = cls._from_trace(trace_channels(model, inputs, options, list(ignore)), options)
            if not check:
                return space
            excluded = check_groups(model, inputs, space.groups, lambda kept: space.figures(space.layer_dims(kept)),
                                    space.architecture)
            return space.without(excluded) if excluded else space

    @classmethod
    def _from_trace(cls, traced: Traced, options: TraceOptions) -> SearchSpace:
        """The space of what a trace found, without the groups Torch-Pruning cannot map."""
        space = cls(
            architecture=traced.architecture,
            groups=traced.groups,
            layers=traced.layers,
            base_flops=traced.base_flops,
            base_params=traced.base_params,
            constant_flops=traced.constant_flops,
            constant_params=traced.constant_params,
            ignored=traced.ignored,
            preset=options.spec.name,
            round_to=traced.round_to,
            granularity=options.granularity,
        )
        if traced.unmapped and all(g.name in traced.unmapped for g in traced.groups):
            reasons = "; ".join(f"{name}: {why}" for name, why in list(traced.unmapped.items())[:3])
            more = "; ..." if len(traced.unmapped) > 3 else ""
            raise TraceError(f"no channel group of {traced.architecture} can be pruned: each of its "
                             f"{len(traced.groups)} traced groups maps channels Torch-Pruning cannot follow or that "
                             f"another group also claims ({reasons}{more})")
        return space.without(traced.unmapped) if traced.unmapped else space
