"""Search spaces: coupled channel groups traced from a model, and per-architecture presets."""

from search_spaces.groups import ChannelGroup, LayerCost, Segment
from search_spaces.presets import Preset, available_presets, default_preset, load_preset
from search_spaces.space import SearchSpace

__all__ = [
    "ChannelGroup",
    "LayerCost",
    "Preset",
    "SearchSpace",
    "Segment",
    "available_presets",
    "default_preset",
    "load_preset",
]
