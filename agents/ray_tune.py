"""Ray Tune's own search algorithms (``OptunaSearch``, ``HyperOptSearch``, ...) behind autoprune's ask/tell.

The adapter drives a ``ray.tune.search.Searcher`` through its public interface (``set_search_properties``,
``suggest``, ``on_trial_complete``), in this process: no Ray cluster is needed. One
``tune.uniform(0, max_ratio)`` parameter per group; suggestions are fitted onto the budget's boundary
(``fit``). Its state is the log of suggestions and results: a resumed search replays it into a fresh, equally
seeded algorithm (Tune's own ``save`` pickles, and nothing pickled is read back from a run directory).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from autoprune.searcher import SearchContext, Searcher, check_fit
from autoprune.trial import Trial
from search_spaces.ground.errors import ConfigError
from search_spaces.policy import Policy

ALGORITHMS = {
    "basic": ("agents.ray_tune", "BasicVariantSearch", "seed"),
    "optuna": ("ray.tune.search.optuna", "OptunaSearch", "seed"),
    "hyperopt": ("ray.tune.search.hyperopt", "HyperOptSearch", "random_state_seed"),
}


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's informational lines (its logger, which does not propagate) held back for the duration; its warnings
    still show."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


class BasicVariantSearch:
    """Ray Tune's basic variant generation (random sampling of the Tune search space), as a Tune Searcher.

    ``BasicVariantGenerator`` itself is a trial factory, not a ``Searcher``; this draws each config with
    the same function it uses, ``generate_variants``, seeded per suggestion.
    """

    def __new__(cls, *, seed: int = 0) -> Any:
        from ray.tune.search import Searcher as TuneSearcher
        from ray.tune.search.variant_generator import generate_variants

        class _Basic(TuneSearcher):
            def __init__(self) -> None:
                super().__init__()
                self.space: dict[str, Any] | None = None
                self.seed, self.drawn = seed, 0

            def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
                if self.space is not None:
                    return False
                self._metric, self._mode, self.space = metric, mode, config
                return True

            def suggest(self, trial_id: str) -> dict[str, Any]:
                state = np.random.RandomState([self.seed, self.drawn])
                self.drawn += 1
                _, resolved = next(generate_variants({"config": self.space}, random_state=state))
                return resolved["config"]

            def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
                pass  # non-adaptive

        return _Basic()
METRIC = "accuracy"


class RayTuneSearcher(Searcher):
    """A Ray Tune search algorithm, by name (``basic``, ``optuna``, ``hyperopt``) or as a Tune ``Searcher``.

    Args:
        algorithm: the algorithm's name or instance (an instance must not have a search space set yet).
        options: keyword options for the named algorithm's constructor.
        fit: how a suggestion is fitted to the budget: ``budget`` (onto the boundary; default), ``repair``
            (only infeasible ones), ``none``.
    """

    name = "ray_tune"

    def __init__(self, *, algorithm: Any = "optuna", options: Mapping[str, Any] | None = None,
                 fit: str = "budget") -> None:
        super().__init__()
        self.fit = check_fit(fit, "ray_tune")
        if isinstance(algorithm, str) and algorithm not in ALGORITHMS:
            raise ConfigError(f"ray_tune algorithm {algorithm!r} is not accepted; accepted: "
                              f"{', '.join(ALGORITHMS)} or a ray.tune.search.Searcher instance")
        self.algorithm_spec = algorithm
        self.options = dict(options or {})

    def _build(self, seed: int) -> Any:
        from ray.tune.search import Searcher as TuneSearcher

        spec = self.algorithm_spec
        if not isinstance(spec, str):
            if not isinstance(spec, TuneSearcher):
                raise ConfigError(f"ray_tune algorithm must be a name or a ray.tune.search.Searcher, got {spec!r}")
            return spec
        module, cls_name, seed_arg = ALGORITHMS[spec]
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            return cls(**{seed_arg: seed, **self.options})
        except (ImportError, AssertionError) as exc:
            raise ConfigError(f"Ray Tune's {cls_name} is not available here: {exc}") from exc

    def _setup(self, context: SearchContext) -> None:
        self._start(context.seed)

    def _start(self, seed: int) -> None:
        """A fresh algorithm seeded with ``seed``, given the space; the event log starts empty."""
        from ray import tune

        self.algorithm, self.seed = self._build(seed), seed
        self._events: list[list[Any]] = []
        config = {g.name: tune.uniform(0.0, g.max_ratio) for g in self.context.space}
        with _quiet_optuna():  # OptunaSearch makes its study here: "A new study created in memory ..."
            accepted = self.algorithm.set_search_properties(METRIC, "max", config)
        if not accepted:
            raise ConfigError(f"{type(self.algorithm).__name__} already has a search space or metric; pass a fresh "
                              "instance (autoprune sets one parameter per channel group)")

    def _ask(self, trial_id: int) -> Policy | None:
        from ray.tune.search import Searcher as TuneSearcher

        suggestion = self.algorithm.suggest(str(trial_id))
        self._events.append(["suggest", trial_id])
        if suggestion is None or suggestion == TuneSearcher.FINISHED:
            return None
        ratios = {name: float(suggestion[name]) for name in self.context.space.names}
        return self.context.policy(self.context.fit(ratios, self.fit))

    def _tell(self, trial: Trial, score: Any) -> None:
        # a failed score, or one stopped by the scheduler before the compared fidelity, ends the Tune trial as an error
        accuracy = self.context.comparable_accuracy(score)
        result = None if accuracy is None else {METRIC: accuracy, "flops": score.flops}
        self._events.append(["complete", trial.id, result])
        self._complete(trial.id, result)

    def _complete(self, trial_id: int, result: dict[str, Any] | None) -> None:
        if result is None:
            self.algorithm.on_trial_complete(str(trial_id), error=True)
        else:
            self.algorithm.on_trial_complete(str(trial_id), result=result)

    def _state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "events": [list(e) for e in self._events]}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(self.algorithm_spec, str):
            raise ConfigError("a ray_tune searcher given as an algorithm instance cannot be restored; give it by "
                              "name to make the search resumable")
        self._start(int(state["seed"]))  # a fresh algorithm with the same seed; then the same calls, in order
        for event in state["events"]:
            if event[0] == "suggest":
                self.algorithm.suggest(str(event[1]))
            else:
                self._complete(int(event[1]), event[2])
        self._events = [list(e) for e in state["events"]]
