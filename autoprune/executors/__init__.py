"""Executors run evaluations: in-process (``local``); the Ray Tune executor plugs in beside it."""

from __future__ import annotations

from autoprune.errors import unknown_name
from autoprune.executors.base import Completed, Executor
from autoprune.executors.local import LocalExecutor

EXECUTORS = {"local": LocalExecutor}


def make_executor(executor: str | Executor) -> Executor:
    """An executor instance from a name (``local``) or an instance."""
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, list(EXECUTORS))
    return EXECUTORS[executor]()


__all__ = ["EXECUTORS", "Completed", "Executor", "LocalExecutor", "make_executor"]
