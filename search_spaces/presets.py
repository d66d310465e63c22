"""Per-architecture presets (YAML): ignored layers, ratio bounds and channel rounding."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import ConfigError, unknown_name
from search_spaces.io import read_text

PRESET_DIR = Path(__file__).parent / "presets"
_KEYS = {"ignore", "max_ratio", "round_to", "ratio_bounds", "description"}


@dataclass(frozen=True)
class Preset:
    """Defaults for one architecture.

    Attributes:
        name: preset name (file stem) or None for the built-in defaults.
        ignore: module names whose output channels are never pruned.
        max_ratio: default largest fraction removed from a group.
        round_to: kept channels are a multiple of this.
        ratio_bounds: per-group overrides of ``max_ratio``, keyed by group name.
    """

    name: str | None
    ignore: tuple[str, ...] = ()
    max_ratio: float = 0.8
    round_to: int = 1
    ratio_bounds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"preset {self.name!r}" if self.name else "preset"
        if not isinstance(self.ignore, tuple) or not all(isinstance(n, str) for n in self.ignore):
            raise ConfigError(f"{where}: ignore must be a list of module names, got {self.ignore!r}")
        if not _is_number(self.max_ratio) or not 0 < self.max_ratio < 1:
            raise ConfigError(f"{where}: max_ratio must be a number in (0, 1), got {self.max_ratio!r}")
        if not isinstance(self.round_to, int) or isinstance(self.round_to, bool) or self.round_to < 1:
            raise ConfigError(f"{where}: round_to must be a positive integer, got {self.round_to!r}")
        if not isinstance(self.ratio_bounds, dict):
            raise ConfigError(f"{where}: ratio_bounds must map group names to ratios, got {self.ratio_bounds!r}")
        for group, bound in self.ratio_bounds.items():
            if not isinstance(group, str) or not _is_number(bound) or not 0 <= bound < 1:
                raise ConfigError(f"{where}: ratio_bounds[{group!r}] must be a number in [0, 1), got {bound!r}")


def _is_number(value: object) -> bool:
    """A real, finite number (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    try:
        data: Any = yaml.safe_load(read_text(path, what="preset file")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"preset file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or set(data) - _KEYS:
        extra = sorted(set(data) - _KEYS) if isinstance(data, dict) else data
        raise ConfigError(f"preset {str(path)!r} has unknown entries {extra}; accepted: {sorted(_KEYS)}")
    ignore = data.get("ignore") or []
    return Preset(
        name=path.stem,
        ignore=tuple(ignore) if isinstance(ignore, list) else ignore,
        max_ratio=data.get("max_ratio", 0.8),
        round_to=data.get("round_to", 1),
        ratio_bounds=data.get("ratio_bounds") or {},
    )
