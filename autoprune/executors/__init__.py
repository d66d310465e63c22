"""Executors run evaluations: in-process (``local``) or as Ray Tune trials (``ray``)."""

from __future__ import annotations

from dataclasses import asdict

from autoprune.executors.base import Executor
from autoprune.executors.local import LocalExecutor
from autoprune.executors.options import RayOptions
from search_spaces.ground.errors import unknown_name

EXECUTORS = ("local", "ray")


def make_executor(executor: str | RayOptions | Executor) -> Executor:
    """An executor from a name (``local``, ``ray``), from :class:`RayOptions` (Ray Tune with those options), or an
    instance as given."""
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, RayOptions):
        from autoprune.executors.ray_tune import RayExecutor  # imports Ray only when asked for

        return RayExecutor(**asdict(executor))
    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, list(EXECUTORS))
    return LocalExecutor() if executor == "local" else make_executor(RayOptions())


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayOptions", "make_executor"]
