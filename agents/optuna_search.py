"""Optuna samplers as searchers: TPE (default), CMA-ES, NSGA-II (accuracy vs FLOPs), random, or any sampler.

One float parameter per group in ``[0, max_ratio]``. A sampled point that misses the budget is repaired
(the core's repair step) before evaluation, and its raw budget violation is recorded with
``trial.set_constraint`` so constraint-aware samplers learn where the budget lies; a point with slack is
scaled onto the budget's boundary (``fit``), since unused budget is lost accuracy. The first trials are the
hand-made baselines' policies, uniform and global magnitude (``warm_start``), so the sampler starts where
one evaluation of them ends.

A sampler given by name is created afresh for every ask, seeded by (search seed, trial number): its
proposals depend only on the study's trials. The searcher's state is therefore the log of asks and tells,
and a resumed search replays it into a fresh study (nothing is pickled). With a run directory the study lives in
Optuna's journal storage, ``RUN_DIR/optuna.journal``, for ``optuna.load_study`` and optuna-dashboard; autoprune
only writes it (a resume rewrites it from the log), never reads it back: Optuna's storages pickle CMA-ES state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal

from agents.starts import check_starts, starting_ratios
from autoprune.searcher import SearchContext, Searcher, check_fit
from autoprune.trial import Trial
from search_spaces.ground.errors import ConfigError
from search_spaces.policy import Policy

SAMPLERS = ("tpe", "cmaes", "nsga2", "random")
CONSTRAINT = "budget_violation"
JOURNAL = "optuna.journal"  # the study's journal storage in the run directory


def journal_storage(path: Path | str) -> optuna.storages.JournalStorage:
    """Optuna's journal storage in the file ``path``: what ``optuna.load_study(storage=...)`` opens."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"optuna sampler {name!r} is not accepted; accepted: {', '.join(SAMPLERS)} "
                      "or an optuna.samplers.BaseSampler instance")


class OptunaSearcher(Searcher):
    """Optuna's ask-and-tell interface behind autoprune's ask/tell.

    Args:
        sampler: ``tpe``, ``cmaes``, ``nsga2``, ``random``, or an ``optuna.samplers.BaseSampler``.
        multi_objective: optimise (accuracy up, FLOPs ratio down) jointly; the trials table's Pareto
            front (``result.pareto``) is the answer. Default: True for ``nsga2``, else False.
        fit: how a sampled point is fitted to the budget before evaluation: ``budget`` (onto the boundary, so
            the budget is used fully; default for one objective), ``repair`` (only infeasible points; default
            for two objectives, whose front needs the cheaper points), ``none``.
        warm_start: the first trials: ``uniform`` and ``global`` (True, default), a list of them, or none.
        study_name: name of the Optuna study (``optuna.load_study(study_name=..., storage=journal_storage(
            RUN_DIR / "optuna.journal"))`` opens it).
    """

    name = "optuna"

    def __init__(
        self,
        *,
        sampler: str | optuna.samplers.BaseSampler = "tpe",
        multi_objective: bool | None = None,
        fit: str | None = None,
        warm_start: bool | Sequence[str] = True,
        study_name: str = "autoprune",
    ) -> None:
        super().__init__()
        if not isinstance(sampler, (str, optuna.samplers.BaseSampler)):
            raise ConfigError(f"optuna sampler must be a name or a BaseSampler, got {type(sampler).__name__}")
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            make_sampler(sampler, 0)  # raises the error naming the accepted samplers
        self.sampler_spec = sampler
        self.multi_objective = sampler == "nsga2" if multi_objective is None else bool(multi_objective)
        self.fit = check_fit(fit or ("repair" if self.multi_objective else "budget"), "optuna")
        self.warm_start = check_starts(warm_start, "optuna")
        self.study_name = study_name
        self._trials: dict[int, int] = {}  # autoprune trial id -> optuna trial number

    def _setup(self, context: SearchContext) -> None:
        optuna.logging.set_verbosity(logging.WARNING)
        self._start(context.seed)

    def _start(self, seed: int) -> None:
        """A fresh study (the starting points enqueued first): in the run directory's journal, rewritten, or in
        memory; the event log starts empty."""
        self.seed = seed
        self._events: list[list[Any]] = []
        directions = ["maximize", "minimize"] if self.multi_objective else ["maximize"]
        self.study = optuna.create_study(study_name=self.study_name, sampler=self._sampler(0),
                                         directions=directions, storage=self._storage())
        self._starts = starting_ratios(self.context, self.warm_start)
        for ratios in self._starts:
            self.study.enqueue_trial(ratios)

    def _storage(self) -> optuna.storages.BaseStorage | None:
        """The journal storage in the run directory, emptied (the event log rebuilds it); None: in memory."""
        run_dir = self.context.run_dir
        if run_dir is None:
            return None
        path = Path(run_dir) / JOURNAL
        path.unlink(missing_ok=True)
        return journal_storage(path)

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        spec = self.sampler_spec
        return make_sampler(spec, (self.seed * 1_000_003 + number) % 2**32) if isinstance(spec, str) else spec

    def _ask(self, trial_id: int) -> Policy:
        sampled = self._ask_study()
        if self._trials[trial_id] < len(self._starts):  # a starting point is evaluated as its baseline made it
            return self.context.policy(sampled)
        return self.context.policy(self.context.fit(sampled, self.fit))

    def _ask_study(self) -> dict[str, float]:
        """Ask the study for its next trial (recorded in the log); returns the sampled ratios."""
        context = self.context
        self.study.sampler = self._sampler(len(self.study.trials))
        trial = self.study.ask()
        sampled = {g.name: trial.suggest_float(g.name, 0.0, g.max_ratio) for g in context.space}
        budget, cost_model = context.budget, context.cost_model
        if not isinstance(self.study.sampler, optuna.samplers.CmaEsSampler):  # CMA-ES ignores constraints
            trial.set_constraint(CONSTRAINT, budget.excess(cost_model.cost(sampled), cost_model.base))
        self._trials[self._next_id] = trial.number
        self._events.append(["ask"])
        return sampled

    def _tell(self, trial: Trial, score: Any) -> None:
        number = self._trials.pop(trial.id)
        accuracy = self.context.comparable_accuracy(score)
        if not score.ok:
            outcome: list[Any] = ["fail"]
        elif accuracy is None:  # stopped by the scheduler before the compared fidelity: Optuna's "pruned"
            outcome = ["pruned"]
        else:
            flops_ratio = score.flops / self.context.cost_model.base.flops
            outcome = ["value", [accuracy, flops_ratio] if self.multi_objective else [accuracy]]
        self._events.append(["tell", number, *outcome])
        self._tell_study(number, outcome)

    def _tell_study(self, number: int, outcome: list[Any]) -> None:
        if outcome[0] == "value":
            values = outcome[1]
            self.study.tell(number, values if self.multi_objective else values[0])
        else:
            state = optuna.trial.TrialState.FAIL if outcome[0] == "fail" else optuna.trial.TrialState.PRUNED
            self.study.tell(number, state=state)

    def _state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "events": [list(e) for e in self._events]}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(self.sampler_spec, str):
            raise ConfigError("an optuna searcher given a sampler instance cannot be restored; give the sampler "
                              f"by name ({', '.join(SAMPLERS)}) to make the search resumable")
        self._start(int(state["seed"]))  # the same asks and tells, in order, rebuild the same study
        for event in state["events"]:
            if event[0] == "ask":
                self._ask_study()
            else:
                self._tell_study(int(event[1]), list(event[2:]))
        self._events = [list(e) for e in state["events"]]
        self._trials.clear()
        for stale in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self._events.append(["tell", stale.number, "fail"])  # asked, never told: its trial runs again
            self._tell_study(stale.number, ["fail"])
