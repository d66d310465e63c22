"""Executors run evaluations: in-process (``local``) or as Ray Tune trials (``ray``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoprune.errors import ConfigError, unknown_name
from autoprune.executors.base import Completed, Executor
from autoprune.executors.local import LocalExecutor
from autoprune.options import from_mapping

EXECUTORS = ("local", "ray")


def make_executor(executor: str | Executor, options: Mapping[str, Any] | None = None) -> Executor:
    """An executor from a name (``local``, ``ray``) and keyword options, or an instance."""
    if isinstance(executor, Executor):
        if options:
            raise ConfigError("executor_options apply only when the executor is given by name")
        return executor
    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, list(EXECUTORS))
    if executor == "local":
        if options:
            raise ConfigError(f"the local executor takes no options, got {dict(options)!r}")
        return LocalExecutor()
    from autoprune.executors.ray_tune import RayExecutor  # imports Ray only when asked for

    return from_mapping(RayExecutor, dict(options or {}), what="ray executor options")


__all__ = ["EXECUTORS", "Completed", "Executor", "LocalExecutor", "make_executor"]
