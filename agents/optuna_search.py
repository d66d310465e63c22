"""Optuna samplers as searchers: TPE (default), CMA-ES, NSGA-II (accuracy vs FLOPs), random, or any sampler.

One float parameter per group in ``[0, max_ratio]``. A sampled point that misses the budget is repaired
(the core's repair step) before evaluation, and its raw budget violation is recorded with
``trial.set_constraint`` so constraint-aware samplers learn where the budget lies. With a run directory
the study lives in ``<run_dir>/optuna.journal`` (Optuna's ``JournalStorage``), so it resumes and
``optuna-dashboard <run_dir>/optuna.journal`` can open it.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from typing import Any

import optuna

from autoprune.searcher import SearchContext, Searcher, Trial
from search_spaces.errors import ConfigError
from search_spaces.policy import Policy

SAMPLERS = ("tpe", "cmaes", "nsga2", "random")
JOURNAL = "optuna.journal"
CONSTRAINT = "budget_violation"


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
        study_name: name of the study in the journal.
    """

    name = "optuna"

    def __init__(
        self,
        *,
        sampler: str | optuna.samplers.BaseSampler = "tpe",
        multi_objective: bool | None = None,
        study_name: str = "autoprune",
    ) -> None:
        super().__init__()
        if not isinstance(sampler, (str, optuna.samplers.BaseSampler)):
            raise ConfigError(f"optuna sampler must be a name or a BaseSampler, got {type(sampler).__name__}")
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            make_sampler(sampler, 0)  # raises the error naming the accepted samplers
        self.sampler_spec = sampler
        self.multi_objective = sampler == "nsga2" if multi_objective is None else bool(multi_objective)
        self.study_name = study_name
        self._trials: dict[int, int] = {}  # autoprune trial id -> optuna trial number

    def _setup(self, context: SearchContext) -> None:
        optuna.logging.set_verbosity(logging.WARNING)
        sampler = self.sampler_spec
        self.sampler = make_sampler(sampler, context.seed) if isinstance(sampler, str) else sampler
        self.storage: Any = None
        if context.run_dir is not None:
            backend = optuna.storages.journal.JournalFileBackend(str(context.run_dir / JOURNAL))
            self.storage = optuna.storages.JournalStorage(backend)
        directions = ["maximize", "minimize"] if self.multi_objective else ["maximize"]
        self.study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, sampler=self.sampler, directions=directions,
            load_if_exists=True,
        )
        for stale in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self.study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # asked before a crash

    def _ask(self, trial_id: int) -> Policy:
        context = self.context
        trial = self.study.ask()
        sampled = {g.name: trial.suggest_float(g.name, 0.0, g.max_ratio) for g in context.space}
        budget, cost_model = context.budget, context.cost_model
        limit = budget.limit(cost_model.base)
        cost = budget.predicted(cost_model.cost(sampled))
        if not isinstance(self.sampler, optuna.samplers.CmaEsSampler):  # CMA-ES ignores constraints
            violation = (cost - limit) / budget.predicted(cost_model.base)
            trial.set_constraint(CONSTRAINT, violation)
        self._trials[trial_id] = trial.number
        return context.policy(context.repair(sampled))

    def _tell(self, trial: Trial, score: Any) -> None:
        number = self._trials.pop(trial.id)
        if not score.ok:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            return
        if score.fidelity < self.context.full_fidelity:  # stopped early by ASHA: Optuna's "pruned"
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
            return
        flops_ratio = score.flops / self.context.cost_model.base.flops
        self.study.tell(number, [score.accuracy, flops_ratio] if self.multi_objective else score.accuracy)

    def _state_dict(self) -> dict[str, Any]:
        in_memory = self.storage is None
        return {
            "sampler": pickle.dumps(self.sampler),
            "trials": self.study.get_trials(deepcopy=True) if in_memory else None,
        }

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler = pickle.loads(state["sampler"])
        self.study.sampler = self.sampler
        if state["trials"] is not None and self.storage is None:
            done = [t for t in state["trials"] if t.state.is_finished()]
            self.study.add_trials(done)
        self._trials.clear()
