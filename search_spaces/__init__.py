"""Search spaces: coupled channel groups traced from a model, and per-architecture presets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces.ground.lazy import lazy_exports

# Public name → the module that defines it, imported on first use (torch loads with the first of them).
_HOMES = {
    "available_presets": "search_spaces.presets",
    "ChannelGroup": "search_spaces.groups",
    "default_preset": "search_spaces.presets",
    "LayerCost": "search_spaces.groups",
    "load_preset": "search_spaces.presets",
    "Preset": "search_spaces.presets",
    "SearchSpace": "search_spaces.space",
    "Segment": "search_spaces.groups",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)

if TYPE_CHECKING:  # the same names, imported eagerly, for type checkers and IDEs
    from search_spaces.groups import ChannelGroup, LayerCost, Segment
    from search_spaces.presets import Preset, available_presets, default_preset, load_preset
    from search_spaces.space import SearchSpace
