"""The entries of a search space: coupled channel groups and the per-layer cost entries that follow them.

Plain values (strings and numbers only, no module references), so a space built from them pickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# What one entry of a space prunes: coupled channel groups (structured) or a weight tensor's elements.
GRANULARITIES = ("channel", "element")

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
        unit: what ``channels`` counts: ``"channel"``, or ``"head"`` for a multi-head attention module whose whole
            heads are pruned (:mod:`search_spaces.attention`; its ratio is a fraction of the heads).
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
    unit: str = "channel"

    def kept_channels(self, ratio: float) -> int:
        """Channels left after removing ``ratio`` of them, exactly as Torch-Pruning's pruner counts."""
        return kept_channels(self.channels, ratio, self.round_to)


# Without a preset or an explicit value, models whose (upper) median group has at least WIDE_CHANNELS channels keep
# multiples of WIDE_ROUND_TO (bench/latency_speedup.py: at round_to 1 such models ran slower than unpruned in
# ONNX Runtime; narrower models would lose most of their widths to the rounding).
WIDE_CHANNELS = 32
WIDE_ROUND_TO = 8


def default_round_to(channels: Sequence[int]) -> int:
    """The channel multiple for a model with groups of these widths when neither a preset nor the user sets one."""
    widths = sorted(channels)
    return WIDE_ROUND_TO if widths and widths[len(widths) // 2] >= WIDE_CHANNELS else 1


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
