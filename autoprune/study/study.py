"""The study: the books of one search (finished trials, the searcher's state, the run directory, resume)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune.evaluation.rungs import Scheduler
from autoprune.searcher import SearchContext, Searcher
from autoprune.study import rundir as rd
from autoprune.study.state import StateError
from autoprune.study.trials import trial_row, trials_table
from autoprune.trial import Completed
from search_spaces.ground.errors import EvaluationFailedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A progress event for callbacks: ``stage`` is ``latency_table``, ``resume``, ``trial``, ``stopped`` (the
    time budget ran out), ``warning`` (e.g. the first candidates all score near chance), ``rescore``, ``final`` or
    ``done``; ``best_accuracy`` is the best feasible full-fidelity score so far (as the best policy is chosen)."""

    stage: str
    completed: int
    total: int
    best_accuracy: float | None = None
    message: str = ""


ProgressCallback = Callable[[Progress], None]


class Study:
    """Records every finished trial (in memory and, with a run directory, on disk) and resumes a search.

    Open one with :meth:`open`; the executor hands each finished trial to :meth:`record`.
    """

    def __init__(self, context: SearchContext, searcher: Searcher, scheduler: Scheduler, run: rd.RunDir | None,
                 progress: ProgressCallback | None = None) -> None:
        self.context, self.searcher, self.scheduler, self.run = context, searcher, scheduler, run
        self.progress = progress
        self.rows: list[dict[str, Any]] = []
        self.best_accuracy: float | None = None
        self.resumed = False

    @classmethod
    def open(cls, context: SearchContext, searcher: Searcher, scheduler: Scheduler, *, config: Mapping[str, Any],
             resume: bool, progress: ProgressCallback | None = None) -> Study:
        """Prepare the run directory, set the searcher up and, when resuming, restore the trials and the
        searcher's and scheduler's state.

        A new run directory is removed again when the searcher's setup fails (nothing ran).
        """
        run = rd.RunDir(context.run_dir) if context.run_dir is not None else None
        resuming = run is not None and run.prepare(config, resume=resume)
        try:
            searcher.setup(context)
            study = cls(context, searcher, scheduler, run, progress)
            if resuming:
                study.resumed = True
                study._restore()
        except BaseException:
            if run is not None and resuming:  # nothing ran: the directory is released ...
                run.close()
            elif run is not None:  # ... or, new, goes away
                run.discard()
            raise
        return study

    def _restore(self) -> None:
        rows, state = self.run.read_log()
        self.rows = rows
        if state is not None:
            try:
                self.searcher.load_state_dict(state["searcher"])
                self.scheduler.load_state_dict(state["scheduler"])
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:  # a state that is not ours
                raise StateError(f"the saved state in {str(self.run.path)!r} does not fit this searcher "
                                 f"({type(exc).__name__}: {exc}); start a new run directory") from exc
        if self.rows:
            self.searcher.skip_ids_below(max(int(r["trial_id"]) for r in self.rows) + 1)
            self.run.write_trials(self.table())  # the derived tables follow the log, whatever happened to them
        full = self.context.full_fidelity
        feasible = [r["accuracy"] for r in self.rows if r["status"] == "ok" and r["feasible"] and r["fidelity"] >= full]
        self.best_accuracy = max(feasible) if feasible else None
        log.info("resuming %s with %d finished trials", self.run.path, len(self.rows))
        self.notify("resume", f"resuming from {len(self.rows)} finished trials")

    def close(self, *, failed: bool = False) -> None:
        """Release the run directory (its lock); a new one that failed before any trial finished is removed, so
        the same search can simply be started again."""
        if self.run is None:
            return
        if failed and not self.resumed and not self.rows:
            self.run.discard()
        else:
            self.run.close()

    @property
    def path(self) -> Path | None:
        """The run directory, if any."""
        return self.run.path if self.run is not None else None

    @property
    def remaining(self) -> int:
        """Trials still to run to reach the search's total."""
        return max(0, (self.context.trials or 0) - len(self.rows))

    def record(self, done: Completed) -> None:
        """Add a finished trial; with a run directory, persist the searcher state and the table."""
        self.rows.append(trial_row(done, self.context.space, self.context.cost_model))
        score = done.score
        if score.ok and score.feasible and score.fidelity >= self.context.full_fidelity:  # as the best policy's
            self.best_accuracy = max(self.best_accuracy or 0.0, score.accuracy)
        message = _describe(done)
        log.info("trial %d: %s", done.trial.id, message)
        if self.run is not None:  # state and row as one record; the tables are derived from the log
            self.run.confirm_config()
            state = {"searcher": self.searcher.state_dict(), "scheduler": self.scheduler.state_dict()}
            self.run.record(self.rows[-1], len(self.rows), state)
            self.run.write_trials(self.table())
            self.run.write_tables(self.searcher.tables())
        self.notify("trial", message)

    def notify(self, stage: str, message: str) -> None:
        """Send a progress event (if anyone listens)."""
        if self.progress is not None:
            self.progress(Progress(stage, len(self.rows), self.context.trials or 0, self.best_accuracy, message))

    def table(self) -> pd.DataFrame:
        """Every finished trial as the trials table."""
        return trials_table(self.rows, self.context.space.names)

    def checked_table(self) -> pd.DataFrame:
        """The trials table; raises when every trial failed (the setup, not the candidates, is at fault)."""
        table = self.table()
        if len(table) and (table["status"] != "ok").all():
            raise EvaluationFailedError(
                f"all {len(table)} trials failed; the first error was: {table['error'].iloc[0]}"
            )
        return table


def _describe(done: Completed) -> str:
    score = done.score
    if not score.ok:
        return f"failed ({score.error})"
    return f"accuracy {score.accuracy:.4f}, flops {score.flops:,}, feasible {score.feasible}, {score.seconds:.2f}s"
