"""Executors run evaluations: in-process (``local``) or as Ray Tune trials (``ray``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from autoprune.executors.base import Completed, Executor
from autoprune.executors.local import LocalExecutor
from autoprune.executors.options import RayOptions
from search_spaces.ground.errors import ConfigError, unknown_name
from search_spaces.ground.options import from_mapping

EXECUTORS = ("local", "ray")


def make_executor(executor: str | Executor, options: Mapping[str, Any] | RayOptions | None = None) -> Executor:
    """An executor from a name (``local``, ``ray``) and its options (a mapping or :class:`RayOptions`), or an
    instance as given."""
    if isinstance(executor, Executor):
        if options:
            raise ConfigError("executor_options apply only when the executor is given by name")
        return executor
    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, list(EXECUTORS))
    if executor == "local":
        if options:
            raise ConfigError(f"the local executor takes no options, got {options!r}")
        return LocalExecutor()
    from autoprune.executors.ray_tune import RayExecutor  # imports Ray only when asked for

    if isinstance(options, RayOptions):
        return RayExecutor(**asdict(options))
    return from_mapping(RayExecutor, dict(options or {}), what="ray executor options")


__all__ = ["EXECUTORS", "Completed", "Executor", "LocalExecutor", "RayOptions", "make_executor"]
