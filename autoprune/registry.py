"""Lazy lookup of searchers and user objects by name, so the core never imports agents eagerly."""

from __future__ import annotations

import importlib
from typing import Any

from search_spaces.errors import ConfigError, unknown_name

SEARCHERS: dict[str, str] = {
    "amc": "agents.amc:AMCSearcher",
    "global": "agents.global_magnitude:GlobalSearcher",
    "optuna": "agents.optuna_search:OptunaSearcher",
    "random": "agents.random_search:RandomSearcher",
    "ray_tune": "agents.ray_tune:RayTuneSearcher",
    "sensitivity": "agents.sensitivity:SensitivitySearcher",
    "uniform": "agents.uniform:UniformSearcher",
}


def import_object(spec: str, *, kind: str) -> Any:
    """Import ``package.module:attribute`` and return the attribute."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{kind} {spec!r} is not of the form 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for {kind} {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r} ({kind} {spec!r})") from None


def searcher_class(name: str) -> type:
    """Return the searcher class registered under ``name`` (or given as ``package.module:Class``)."""
    if ":" in name:
        return import_object(name, kind="searcher")
    if name not in SEARCHERS:
        raise unknown_name("searcher", name, [*SEARCHERS, "package.module:Class"])
    return import_object(SEARCHERS[name], kind="searcher")

