"""In-process executor: evaluates one trial at a time in the calling process."""

from __future__ import annotations

import os
from collections import deque

from autoprune.executors.base import Completed, Executor
from autoprune.searcher import Trial


class LocalExecutor(Executor):
    """Evaluates trials sequentially, in submission order, in this process."""

    def __init__(self) -> None:
        self._queue: deque[Trial] = deque()

    @property
    def capacity(self) -> int:
        return 1

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(self, trial: Trial) -> None:
        self._queue.append(trial)

    def wait(self) -> list[Completed]:
        trial = self._queue.popleft()
        score = self.evaluator.evaluate_safely(trial.policy, fidelity=trial.fidelity)
        return [Completed(trial, score, {"node": "local", "pid": os.getpid()})]
