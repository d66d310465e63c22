"""Ray Tune's own search algorithms (``OptunaSearch``, ``HyperOptSearch``, ...) behind autoprune's ask/tell.

The adapter drives a ``ray.tune.search.Searcher`` through its public interface (``set_search_properties``,
``suggest``, ``on_trial_complete``, ``save``/``restore``), in this process: no Ray cluster is needed. One
``tune.uniform(0, max_ratio)`` parameter per group; suggestions that miss the budget are repaired.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError
from autoprune.policy import Policy
from autoprune.searcher import SearchContext, Searcher, Trial

ALGORITHMS = {
    "optuna": ("ray.tune.search.optuna", "OptunaSearch", "seed"),
    "hyperopt": ("ray.tune.search.hyperopt", "HyperOptSearch", "random_state_seed"),
}
METRIC = "accuracy"


class RayTuneSearcher(Searcher):
    """A Ray Tune search algorithm, by name (``optuna``, ``hyperopt``) or as a ``ray.tune.search.Searcher``.

    Args:
        algorithm: the algorithm's name or instance (an instance must not have a search space set yet).
        options: keyword options for the named algorithm's constructor.
    """

    name = "ray_tune"

    def __init__(self, *, algorithm: Any = "optuna", options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
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
        from ray import tune

        self.algorithm = self._build(context.seed)
        config = {g.name: tune.uniform(0.0, g.max_ratio) for g in context.space}
        if not self.algorithm.set_search_properties(METRIC, "max", config):
            raise ConfigError(f"{type(self.algorithm).__name__} already has a search space or metric; pass a fresh "
                              "instance (autoprune sets one parameter per channel group)")

    def _ask(self, trial_id: int) -> Policy | None:
        from ray.tune.search import Searcher as TuneSearcher

        suggestion = self.algorithm.suggest(str(trial_id))
        if suggestion is None or suggestion == TuneSearcher.FINISHED:
            return None
        ratios = {name: float(suggestion[name]) for name in self.context.space.names}
        return self.context.policy(self.context.repair(ratios))

    def _tell(self, trial: Trial, score: Any) -> None:
        if not score.ok:
            self.algorithm.on_trial_complete(str(trial.id), error=True)
            return
        self.algorithm.on_trial_complete(str(trial.id), result={METRIC: score.accuracy, "flops": score.flops})

    def _state_dict(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "searcher.pkl"
            self.algorithm.save(str(path))
            return {"algorithm": path.read_bytes()}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "searcher.pkl"
            path.write_bytes(state["algorithm"])
            self.algorithm.restore(str(path))
