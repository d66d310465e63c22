"""In-process executor: evaluates one trial at a time in the calling process."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from autoprune.evaluation.evaluator import Evaluator
from autoprune.evaluation.rungs import Scheduler, scheduled_score
from autoprune.executors.base import Executor
from autoprune.searcher import Searcher
from autoprune.trial import Completed


class LocalExecutor(Executor):
    """Asks, evaluates (through the scheduler's rungs) and tells one trial at a time, in this process."""

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
        for _ in range(remaining):
            trial = searcher.ask()
            if trial is None:  # nothing runs here in the background, so nothing more will come
                return
            score = scheduled_score(evaluator, scheduler, trial.id, trial.policy)
            searcher.tell(trial, score)
            on_result(Completed(trial, score, {"node": "local", "pid": os.getpid()}))
