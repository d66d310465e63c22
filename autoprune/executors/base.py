"""The Executor interface: submit trials, collect completions in any order."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoprune.evaluate import Evaluator, Score
    from autoprune.searcher import Trial


@dataclass(frozen=True)
class Completed:
    """A finished trial with its score and where it ran."""

    trial: Trial
    score: Score
    info: dict[str, Any] = field(default_factory=dict)


class Executor(abc.ABC):
    """Runs evaluations for ``search()``; ``start`` once, then ``submit``/``wait`` until done, then ``close``."""

    def start(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many trials may be in flight at once."""

    @abc.abstractmethod
    def submit(self, trial: Trial) -> None:
        """Queue a trial for evaluation."""

    @abc.abstractmethod
    def wait(self) -> list[Completed]:
        """Block until at least one submitted trial finishes; return the finished ones."""

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Trials submitted and not yet returned by ``wait``."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources."""
