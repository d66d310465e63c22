"""Names to objects: built-in searchers, models and datasets, those installed packages register through entry
points, and (trusted input only) ``package.module:attribute`` import strings.

An import string runs the named module's code, so it is for input you trust (your own configs). Set
``AUTOPRUNE_ALLOW_IMPORTS=0`` to refuse them; installed packages register their models, datasets and searchers
safely through the entry point groups ``autoprune.models``, ``autoprune.datasets`` and ``autoprune.searchers``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from search_spaces.ground.errors import ConfigError, unknown_name

SEARCHERS: dict[str, str] = {
    "amc": "agents.amc:AMCSearcher",
    "global": "agents.global_magnitude:GlobalSearcher",
    "optuna": "agents.optuna_search:OptunaSearcher",
    "random": "agents.random_search:RandomSearcher",
    "ray_tune": "agents.ray_tune:RayTuneSearcher",
    "sensitivity": "agents.sensitivity:SensitivitySearcher",
    "uniform": "agents.uniform:UniformSearcher",
}
ALLOW_IMPORTS = "AUTOPRUNE_ALLOW_IMPORTS"


def imports_allowed() -> bool:
    """Whether ``package.module:attribute`` strings may be imported (``AUTOPRUNE_ALLOW_IMPORTS``, default on)."""
    return os.environ.get(ALLOW_IMPORTS, "1").strip().lower() not in ("0", "false", "no", "off")


def import_object(spec: str, *, kind: str, trusted: bool = False) -> Any:
    """Import ``package.module:attribute`` and return the attribute (refused when imports are closed, unless
    ``trusted``: autoprune's own built-ins)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{kind} {spec!r} is not of the form 'package.module:attribute'")
    if not trusted and not imports_allowed():
        raise ConfigError(f"{kind} {spec!r}: import strings are turned off ({ALLOW_IMPORTS}=0); use a built-in "
                          f"name or one an installed package registers as an entry point")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for {kind} {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r} ({kind} {spec!r})") from None


def registered(group: str) -> dict[str, Any]:
    """Entry points of ``group`` (e.g. ``autoprune.models``) by name."""
    return {ep.name: ep for ep in entry_points(group=group)}


def lookup(kind: str, name: str, builtins: Mapping[str, Any]) -> Any:
    """A built-in by name, else an installed package's entry point (group ``autoprune.<kind>s``), else an import
    string; an unknown name lists what is accepted."""
    if ":" in name:
        return import_object(name, kind=kind)
    if name in builtins:
        found = builtins[name]
        return import_object(found, kind=kind, trusted=True) if isinstance(found, str) else found
    plugins = registered(f"autoprune.{kind}s")
    if name in plugins:
        try:
            return plugins[name].load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{kind} {name!r} is registered by an installed package ({plugins[name].value}) "
                              f"that cannot be loaded: {exc}") from exc
    raise unknown_name(kind, name, [*builtins, *plugins, "package.module:attribute"])


def searcher_class(name: str) -> type:
    """The searcher class registered under ``name`` (built-in, entry point, or ``package.module:Class``)."""
    return lookup("searcher", name, SEARCHERS)
