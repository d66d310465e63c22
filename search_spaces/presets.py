"""Per-architecture presets (YAML): ignored layers, ratio bounds and channel rounding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from search_spaces.ground.documents import loads_yaml
from search_spaces.ground.errors import ConfigError, unknown_name
from search_spaces.ground.io import read_text
from search_spaces.ground.options import check_fraction, check_int

PRESET_DIR = Path(__file__).parent / "presets"
_KEYS = {"ignore", "max_ratio", "round_to", "ratio_bounds", "description"}


@dataclass(frozen=True)
class Preset:
    """Defaults for one architecture.

    Attributes:
        name: preset name (file stem) or None for the built-in defaults.
        ignore: module names (or modules) whose output channels are never pruned.
        max_ratio: default largest fraction removed from a group.
        round_to: kept channels are a multiple of this (None: chosen from the model's widths, see
            :func:`search_spaces.groups.default_round_to`).
        ratio_bounds: per-group overrides of ``max_ratio``, keyed by group name.
    """

    name: str | None
    ignore: tuple[str | nn.Module, ...] = ()
    max_ratio: float = 0.8
    round_to: int | None = None
    ratio_bounds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"preset {self.name!r}: " if self.name else "preset: "
        ignore = self.ignore
        if isinstance(ignore, (str, bytes)) or not isinstance(ignore, Sequence) or not all(
                isinstance(n, (str, nn.Module)) for n in ignore):
            raise ConfigError(f"{where}ignore must be a list of module names, got {ignore!r}")
        bounds = self.ratio_bounds
        if not isinstance(bounds, Mapping):
            raise ConfigError(f"{where}ratio_bounds must map group names to ratios, got {bounds!r}")
        for group, bound in bounds.items():  # YAML reads a Sequential's group "0" as the integer 0
            if not isinstance(group, (str, int)) or isinstance(group, bool):
                raise ConfigError(f"{where}ratio_bounds keys are group names, got {group!r}")
            check_fraction(f"{where}ratio_bounds[{str(group)!r}]", bound, low_inclusive=True, high_inclusive=True)
        check_fraction(f"{where}max_ratio", self.max_ratio, low_inclusive=False, high_inclusive=False)
        if self.round_to is not None:
            check_int(f"{where}round_to", self.round_to, low=1)
        object.__setattr__(self, "ignore", tuple(ignore))
        object.__setattr__(self, "ratio_bounds", {str(g): float(b) for g, b in bounds.items()})
        object.__setattr__(self, "max_ratio", float(self.max_ratio))
        object.__setattr__(self, "round_to", None if self.round_to is None else int(self.round_to))


def available_presets() -> list[str]:
    """Names of the presets shipped in ``search_spaces/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def default_preset(model_name: str) -> str | None:
    """The preset of a built-in model (same name), or None."""
    return model_name if model_name in available_presets() else None


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a preset by built-in name or from a YAML file path."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise unknown_name("preset", str(name_or_path), [*available_presets(), "path/to/preset.yaml"])
    elif not path.exists():
        raise ConfigError(f"preset file {str(path)!r} does not exist")
    data: Any = loads_yaml(read_text(path, what="preset file"), what=f"preset file {str(path)!r}") or {}
    if not isinstance(data, dict) or set(data) - _KEYS:
        extra = sorted(set(data) - _KEYS) if isinstance(data, dict) else data
        raise ConfigError(f"preset {str(path)!r} has unknown entries {extra}; accepted: {sorted(_KEYS)}")
    return Preset(
        name=path.stem,
        ignore=data.get("ignore") or (),
        max_ratio=data.get("max_ratio", 0.8),
        round_to=data.get("round_to"),
        ratio_bounds=data.get("ratio_bounds") or {},
    )
