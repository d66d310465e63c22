"""The Executor interface: drive a searcher's ask/tell and run its evaluations somewhere."""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprune.evaluation.evaluator import Evaluator
from autoprune.evaluation.rungs import Scheduler
from autoprune.searcher import Searcher
from autoprune.trial import Completed


class Executor(abc.ABC):
    """Runs a search's evaluations: in this process, or as Ray Tune trials.

    ``run`` asks ``searcher`` for trials, evaluates them with ``evaluator`` through the rungs of
    ``scheduler`` (which alone decides whether a candidate continues), tells the searcher each score (in
    completion order) and then hands the result to ``on_result``, until ``remaining`` trials have finished
    or the searcher has nothing more to propose while nothing is running.
    """

    @abc.abstractmethod
    def run(
        self,
        searcher: Searcher,
        evaluator: Evaluator,
        *,
        scheduler: Scheduler,
        remaining: int,
        on_result: Callable[[Completed], None],
        run_dir: Path | None = None,
    ) -> None:
        """Run until ``remaining`` trials are done (or the searcher stops)."""

    def describe(self) -> dict[str, Any]:
        """Settings recorded in the run directory."""
        return {"kind": type(self).__name__}
