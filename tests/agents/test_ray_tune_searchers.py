from __future__ import annotations

import importlib.util

import pytest
from ray.tune.search.optuna import OptunaSearch

import autoprune as ap
from agents.ray_tune import RayTuneSearcher
from search_spaces.ground.errors import ConfigError

FAST = {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}


def _search(model, digits, **kwargs):
    return ap.search(model, digits.example_inputs(), budget=ap.Budget.flops(0.5), train_data=digits.train,
                     val_data=digits.val, evaluator=FAST, **kwargs, final={"measure_latency": False})


def test_ray_tune_search_algorithm_by_name_and_instance(trained_cnn, digits) -> None:
    by_name = _search(trained_cnn, digits, searcher="ray_tune", trials=3)
    assert len(by_name.trials) == 3 and by_name.trials["feasible"].all()
    instance = _search(trained_cnn, digits, searcher=RayTuneSearcher(algorithm=OptunaSearch(seed=3)), trials=2)
    assert len(instance.trials) == 2 and instance.best_policy is not None


def test_ray_tune_errors_name_the_problem(trained_cnn, digits) -> None:
    with pytest.raises(ConfigError, match="'bohb'.*optuna, hyperopt"):
        RayTuneSearcher(algorithm="bohb")
    configured = OptunaSearch(space={"x": __import__("optuna").distributions.FloatDistribution(0, 1)},
                              metric="a", mode="max")
    with pytest.raises(ConfigError, match="already has a search space"):
        _search(trained_cnn, digits, searcher=RayTuneSearcher(algorithm=configured), trials=1)


@pytest.mark.skipif(importlib.util.find_spec("hyperopt") is not None, reason="hyperopt is installed")
def test_missing_optional_algorithm_is_a_clear_error(trained_cnn, digits) -> None:
    with pytest.raises(ConfigError, match="HyperOptSearch is not available"):
        _search(trained_cnn, digits, searcher="ray_tune", searcher_options={"algorithm": "hyperopt"}, trials=1)


def test_the_optuna_algorithm_makes_its_study_quietly(trained_cnn, digits, caplog) -> None:
    """Optuna's "A new study created in memory" line is held back; optuna's level is left as it was."""
    import optuna

    created = lambda: [r for r in caplog.records if "A new study created" in r.getMessage()]  # noqa: E731
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # what a fresh process has: the line would be printed
    try:
        _search(trained_cnn, digits, searcher="ray_tune", trials=2)
        assert created() == [] and optuna.logging.get_verbosity() == optuna.logging.INFO
        optuna.create_study()  # the user's own studies still say so
        assert len(created()) == 1
    finally:
        optuna.logging.set_verbosity(before)
