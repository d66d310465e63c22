"""The Searcher interface: ask for trials, tell their scores, keyed by trial id."""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autoprune.builtins.registry import searcher_class
from autoprune.trial import Trial
from search_spaces.budget import Budget
from search_spaces.cost import CostModel, repair, tighten
from search_spaces.ground.errors import ConfigError
from search_spaces.policy import Policy

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from torch import nn

    from autoprune.trial import Score
    from search_spaces.space import SearchSpace


#: How a searcher's proposals are fitted to the budget (see :meth:`SearchContext.fit`).
FITS = ("budget", "repair", "none")


def check_fit(fit: str, searcher: str) -> str:
    """``fit`` if it is one of :data:`FITS`, else a ConfigError naming it."""
    if fit not in FITS:
        raise ConfigError(f"{searcher} searcher fit={fit!r} is not accepted; accepted: {', '.join(FITS)}")
    return fit


@dataclass(frozen=True)
class SearchContext:
    """What a searcher gets to know about the problem, once, before the first ask.

    Attributes:
        space: the search space (groups, bounds, features).
        budget: the budget every evaluated policy should meet.
        cost_model: exact analytic FLOPs/params of a policy.
        seed: the search seed.
        trials: how many evaluations the search will run (None: unknown).
        run_dir: the run directory, for searchers that keep files of their own (None: in memory).
        model: the unpruned model, for searchers that rank channels by weights (e.g. ``global``).
        example_inputs: inputs for tracing ``model``.
        full_fidelity: finetune steps of a complete evaluation; scores with a lower ``fidelity`` were
            stopped early by a multi-fidelity scheduler.
        learning_fidelity: the fidelity at which the scheduler scores every candidate (None: the full one; 0
            under the cascade, which screens each candidate by its adaptive-BN score first); searchers learn
            from accuracies at it (:meth:`comparable_accuracy`).
    """

    space: SearchSpace
    budget: Budget
    cost_model: CostModel
    seed: int
    trials: int | None = None
    run_dir: Path | None = None
    model: nn.Module | None = None
    example_inputs: Any = None
    full_fidelity: int = 0
    learning_fidelity: int | None = None

    def comparable_accuracy(self, score: Score) -> float | None:
        """The accuracy a searcher learns from: the score's at the learning fidelity, which every candidate has
        (under a cascade, its screen's :attr:`Score.first_accuracy`); None for a failed score, or one stopped
        by the scheduler before it (not comparable with the others)."""
        at = self.full_fidelity if self.learning_fidelity is None else self.learning_fidelity
        if not score.ok:
            return None
        if at < self.full_fidelity:
            value = score.first_accuracy
        elif score.fidelity >= at:
            value = score.accuracy
        else:
            return None
        return value if math.isfinite(value) else None

    def feasible(self, ratios: Mapping[str, float]) -> bool:
        return self.cost_model.feasible(ratios, self.budget)

    def repair(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """Map ``ratios`` into the budget (unchanged if already feasible)."""
        return repair(ratios, self.cost_model, self.budget)

    def fit(self, ratios: Mapping[str, float], how: str) -> dict[str, float]:
        """Fit proposed ratios to the budget, ``how`` one of :data:`FITS`.

        ``budget``: onto the budget's boundary (infeasible ones repaired, ones with slack scaled down so the
        budget is used fully); ``repair``: infeasible ones repaired only; ``none``: as proposed.
        """
        if how == "budget":
            return tighten(ratios, self.cost_model, self.budget)
        return self.repair(ratios) if how == "repair" else dict(ratios)

    def policy(self, ratios: Mapping[str, float]) -> Policy:
        return self.space.policy(ratios)


class Searcher(abc.ABC):
    """Proposes policies and learns from their scores.

    Lifecycle: ``setup(context)`` once, then any interleaving of ``ask()`` and ``tell()``; several
    ``ask()`` calls may precede the matching ``tell()`` calls, which may arrive in any order (parallel
    executors). ``ask()`` returns None when the searcher has nothing to propose until running trials
    report back; ``search()`` asks again after each completion and stops once nothing is running. ``state_dict()``
    and ``load_state_dict()`` make a search resumable; a state dict may hold numpy arrays and tensors.

    Subclasses implement ``_ask`` and may override ``_tell``; ids are handed out here.
    """

    name: str = "searcher"

    def __init__(self) -> None:
        self._context: SearchContext | None = None
        self._next_id = 0
        self._pending: dict[int, Trial] = {}

    @property
    def context(self) -> SearchContext:
        if self._context is None:
            raise ConfigError(f"{type(self).__name__}.setup(context) must be called before ask() or tell()")
        return self._context

    def setup(self, context: SearchContext) -> None:
        """Receive the space, budget, cost model and seed. Called once by ``search()``."""
        self._context = context
        self._setup(context)

    def _setup(self, context: SearchContext) -> None:  # noqa: B027 (optional hook)
        """Hook for subclasses: initialise state that depends on the space or the seed."""

    def ask(self) -> Trial | None:
        """The next trial to evaluate, or None when there is nothing to propose (now, or ever)."""
        policy = self._ask(self._next_id)
        if policy is None:
            return None
        trial = Trial(self._next_id, policy)
        self._next_id += 1
        self._pending[trial.id] = trial
        return trial

    def tell(self, trial: Trial, score: Score) -> None:
        """Report ``score`` for a trial this searcher asked for (in any order)."""
        if trial.id not in self._pending:
            raise ConfigError(f"trial {trial.id} is not pending in this {type(self).__name__}")
        del self._pending[trial.id]
        self._tell(trial, score)

    @abc.abstractmethod
    def _ask(self, trial_id: int) -> Policy | None:
        """Propose a policy (validated against the space) for trial ``trial_id``, or None."""

    def _tell(self, trial: Trial, score: Score) -> None:  # noqa: B027 (optional hook)
        """Learn from a score. Default: nothing (non-adaptive searchers)."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """Tables this searcher made that its run keeps, by file name (e.g. ``sensitivity.csv``); the study writes
        them into the run directory. Default: none."""
        return {}

    def skip_ids_below(self, first_free: int) -> None:
        """Never hand out an id below ``first_free`` (ids already used by recorded trials)."""
        self._next_id = max(self._next_id, first_free)

    @property
    def pending(self) -> tuple[int, ...]:
        """Ids of trials asked for and not yet told."""
        return tuple(self._pending)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after a restart (pending trials are dropped: they re-run)."""
        return {"next_id": self._next_id, **self._state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._next_id = int(state["next_id"])
        self._pending.clear()
        self._load_state_dict(state)

    def _state_dict(self) -> dict[str, Any]:
        return {}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what ``_state_dict`` saved."""


class SeededSearcher(Searcher):
    """A searcher with a numpy ``Generator`` seeded from the search seed, saved in its state."""

    def _setup(self, context: SearchContext) -> None:
        self.rng = np.random.default_rng(context.seed)

    def _state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def make_searcher(searcher: str | Searcher, options: Mapping[str, Any] | None = None) -> Searcher:
    """A searcher from a name (or ``package.module:Class``) and keyword options, or an instance as given."""
    if isinstance(searcher, Searcher):
        if options:
            raise ConfigError("searcher_options apply only when the searcher is given by name")
        return searcher
    if not isinstance(searcher, str):
        raise ConfigError(f"searcher must be a name or a Searcher instance, got {type(searcher).__name__}")
    cls = searcher_type(searcher, options or {})
    try:
        return cls(**dict(options or {}))
    except TypeError as exc:
        raise ConfigError(f"bad options {dict(options or {})!r} for searcher {searcher!r}: {exc}") from exc


def searcher_type(name: str, options: Mapping[str, Any]) -> type[Searcher]:
    """The Searcher subclass registered as ``name``, checked (cheaply, nothing built) to accept ``options``.

    Raises:
        ConfigError: ``name`` is not a Searcher subclass, or an option is one it does not take (the message
            lists those it does).
    """
    cls = searcher_class(name)
    if not (isinstance(cls, type) and issubclass(cls, Searcher)):
        raise ConfigError(f"searcher {name!r} is {cls!r}, not an autoprune.Searcher subclass")
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return cls  # takes any keyword: the searcher checks its own
    accepted = [p.name for p in parameters if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                         inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        takes = f"accepted: {', '.join(accepted)}" if accepted else "it takes no options"
        raise ConfigError(f"searcher {name!r} has no option {', '.join(map(repr, unknown))}; {takes} "
                          "(docs/agents.md)")
    return cls
