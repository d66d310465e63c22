"""The study keeps the books of a search: rows, best accuracy, the searcher's tables, resume."""

from __future__ import annotations

import pandas as pd
import torch
from factories import tiny_model

import autoprune as ap
from autoprune.evaluation.rungs import FullFidelity
from autoprune.searcher import SearchContext
from autoprune.study.rundir import FORMAT_VERSION
from autoprune.study.study import Study
from autoprune.trial import Completed, Score

CONFIG = {"format_version": FORMAT_VERSION, "trials": 3}


class _TableMaker(ap.Searcher):
    """Proposes the unpruned policy and keeps a table of what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[float] = []

    def _ask(self, trial_id: int):
        return self.context.policy(dict.fromkeys(self.context.space.names, 0.0))

    def _tell(self, trial, score) -> None:
        self.told.append(score.accuracy)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"told.csv": pd.DataFrame({"accuracy": self.told})}

    def _state_dict(self):
        return {"told": list(self.told)}

    def _load_state_dict(self, state) -> None:
        self.told = list(state["told"])


def _context(run_dir, full_fidelity: int = 0) -> SearchContext:
    model = tiny_model(in_channels=1, num_classes=3)
    space = ap.SearchSpace.from_model(model, torch.zeros(1, 1, 8, 8))
    return SearchContext(space=space, budget=ap.Budget.flops(1.0), cost_model=ap.CostModel(space), seed=0, trials=3,
                         run_dir=run_dir, full_fidelity=full_fidelity)


def _finish(study: Study, searcher: _TableMaker, accuracy: float, feasible: bool = True, fidelity: int = 0) -> None:
    trial = searcher.ask()
    score = Score(accuracy, 0.1, 10, 10, feasible, fidelity, 0.0)
    searcher.tell(trial, score)
    study.record(Completed(trial, score))


def test_the_study_records_rows_the_best_feasible_accuracy_and_the_searchers_tables(tmp_path) -> None:
    events: list[ap.Progress] = []
    searcher = _TableMaker()
    study = Study.open(_context(tmp_path / "run"), searcher, FullFidelity(), config=CONFIG, resume=False,
                       progress=events.append)
    _finish(study, searcher, 0.6)
    _finish(study, searcher, 0.9, feasible=False)
    study.close()
    assert study.best_accuracy == 0.6  # an infeasible trial is never the best
    assert study.remaining == 1 and [e.stage for e in events] == ["trial", "trial"]
    assert list(pd.read_csv(tmp_path / "run" / "told.csv")["accuracy"]) == [0.6, 0.9]
    assert list(study.table()["trial_id"]) == [0, 1]


def test_the_best_accuracy_shown_is_a_full_fidelity_one(tmp_path) -> None:
    searcher = _TableMaker()
    study = Study.open(_context(tmp_path / "run", full_fidelity=9), searcher, FullFidelity(), config=CONFIG,
                       resume=False)
    _finish(study, searcher, 0.6, fidelity=9)
    _finish(study, searcher, 0.95, fidelity=0)  # a screen or an early rung: not comparable, never the best
    study.close()
    assert study.best_accuracy == 0.6
    resumed = Study.open(_context(tmp_path / "run", full_fidelity=9), _TableMaker(), FullFidelity(), config=CONFIG,
                         resume=True)
    resumed.close()
    assert resumed.best_accuracy == 0.6


def test_a_resumed_study_restores_rows_state_and_the_next_trial_id(tmp_path) -> None:
    first = _TableMaker()
    study = Study.open(_context(tmp_path / "run"), first, FullFidelity(), config=CONFIG, resume=False)
    _finish(study, first, 0.5)
    study.close()
    again = _TableMaker()
    resumed = Study.open(_context(tmp_path / "run"), again, FullFidelity(), config=CONFIG, resume=True)
    assert resumed.resumed and len(resumed.rows) == 1 and again.told == [0.5]
    assert again.ask().id == 1  # ids are never reused
    resumed.close()


def test_a_new_run_that_failed_before_any_trial_leaves_no_directory(tmp_path) -> None:
    study = Study.open(_context(tmp_path / "run"), _TableMaker(), FullFidelity(), config=CONFIG, resume=False)
    study.close(failed=True)
    assert not (tmp_path / "run").exists()
