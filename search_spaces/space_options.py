"""How a model is traced into a search space: the options of ``SearchSpace.from_model`` as one value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces.ground.errors import ConfigError
from search_spaces.ground.options import check_fraction, from_mapping


@dataclass(frozen=True)
class SpaceOptions:
    """What ``search()`` traces when it is not given a prebuilt space.

    Attributes:
        preset: per-architecture defaults (ignored layers, ratio bounds, ``round_to``); None: the model's own.
        ignore: module names (or name patterns) left unpruned.
        round_to: kept channels are a multiple of this (None: the preset's, 8 when latency is measured on a GPU;
            a resumed run keeps its own); ``"auto"``: the multiple measured from latency staircases in the runtimes
            the model will run in (:mod:`search_spaces.widths`).
        max_ratio: the largest fraction of a group's channels that may be removed (None: the preset's).
        granularity: ``channel`` (structured: smaller, faster model) or ``element`` (one sparsity per tensor).
    """

    preset: str | None = None
    ignore: tuple[str, ...] = ()
    round_to: int | str | None = None
    max_ratio: float | None = None
    granularity: str = "channel"

    def __post_init__(self) -> None:
        if self.ignore is None:
            object.__setattr__(self, "ignore", ())
        if isinstance(self.ignore, str) or not isinstance(self.ignore, (list, tuple)) or not all(
                isinstance(name, str) for name in self.ignore):
            raise ConfigError(f"space ignore must be a list of module names, got {self.ignore!r}")
        object.__setattr__(self, "ignore", tuple(self.ignore))
        if isinstance(self.round_to, str) and self.round_to != "auto":
            raise ConfigError(f"space round_to must be a positive integer or 'auto', got {self.round_to!r}")
        if self.max_ratio is not None:  # as a preset's: some channels of every group are kept
            check_fraction("space max_ratio", self.max_ratio, low_inclusive=False, high_inclusive=False)
        if self.round_to == "auto" and self.granularity != "channel":
            raise ConfigError("round_to 'auto' measures channel widths; an element space prunes single weights")

    @classmethod
    def from_value(cls, value: SpaceOptions | Mapping[str, Any] | None) -> SpaceOptions:
        """From a mapping of the fields (unknown keys refused), an instance as given, or the defaults."""
        return from_mapping(cls, value, what="space options")
