"""How a search's trials run and where they are recorded: the run options of ``search()`` as one value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprune.evaluation.rungs import SchedulerConfig
from autoprune.study.study import ProgressCallback
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.options import from_mapping


@dataclass(frozen=True)
class RunOptions:
    """The run: its directory, resuming, multi-fidelity, a wall-clock limit, trackers and progress.

    Attributes:
        dir: directory for the outputs (None: nothing written). Must be empty unless ``resume``.
        resume: continue the search in ``dir`` with its saved trials and searcher state.
        scheduler: multi-fidelity: ``none`` (default: every candidate finetunes fully), ``asha`` (stops poor
            candidates at early finetune rungs) or ``cascade`` (screens every candidate by its adaptive-BN score,
            finetunes the best ``promote`` share), or a mapping / :class:`SchedulerConfig` with their options;
            on either executor.
        time_budget: a wall-clock limit on the trials, in seconds or as ``"2h"``, ``"90m"``, ``"1h30m"``, counted
            from the call: once it has passed no trial starts, the running ones finish, and the best policy so
            far goes through the final step (not counted). The run directory stays resumable.
        tracking: ``"tensorboard"`` and/or ``"mlflow"``: every trial and the final result recorded under ``dir``
            (see :mod:`autoprune.study.tracking`; needs ``dir``).
        progress: ``True`` shows the search's progress (rich bars in a terminal or a notebook, one line per event
            in a log); or a callable, called with a :class:`autoprune.Progress` after every trial and at each stage.
        record: extra settings recorded in the run directory's ``config.json`` (e.g. by the CLI).
    """

    dir: str | Path | None = None
    resume: bool = False
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    time_budget: float | str | None = None
    tracking: tuple[str, ...] | str = ()
    progress: bool | ProgressCallback | None = None
    record: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.dir is not None and not isinstance(self.dir, (str, Path)):
            raise ConfigError(f"run dir must be a path, got {self.dir!r}")
        if not isinstance(self.resume, bool):
            raise ConfigError(f"run resume must be true or false, got {self.resume!r}")
        if self.resume and self.dir is None:
            raise ConfigError("run resume=True needs the run's dir")
        object.__setattr__(self, "scheduler", SchedulerConfig.from_value(self.scheduler))

    @classmethod
    def from_value(cls, value: RunOptions | Mapping[str, Any] | None) -> RunOptions:
        """From a mapping of the fields (unknown keys refused), an instance as given, or the defaults."""
        return from_mapping(cls, value, what="run options")
