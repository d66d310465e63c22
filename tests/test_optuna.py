from __future__ import annotations

import optuna
import pytest

import autoprune as ap
from agents.optuna_search import JOURNAL, OptunaSearcher
from search_spaces.errors import ConfigError

FAST = {"bn_batches": 1, "finetune_steps": 1, "val_batches": 1}


def _search(model, digits, **kwargs):
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val, trials=4,
                   evaluator=FAST, measure_latency=False, searcher="optuna")
    options.update(kwargs)
    return ap.search(model, digits.example_inputs(), **options)


def test_study_lives_in_a_journal_and_resumes(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    _search(trained_cnn, digits, run_dir=run, trials=3)
    journal = run / JOURNAL
    assert journal.exists()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert len(optuna.load_study(study_name="autoprune", storage=storage).trials) == 3
    resumed = _search(trained_cnn, digits, run_dir=run, trials=5, resume=True)
    study = optuna.load_study(study_name="autoprune", storage=storage)
    assert len(resumed.trials) == 5 and len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert set(study.trials[0].constraints) == {"budget_violation"}
    assert resumed.trials["feasible"].all()


def test_nsga2_is_multi_objective_and_fills_the_pareto_front(trained_cnn, digits) -> None:
    result = _search(trained_cnn, digits, searcher_options={"sampler": "nsga2"}, trials=5)
    assert not result.pareto.empty
    assert result.pareto["flops"].is_monotonic_increasing and result.pareto["accuracy"].is_monotonic_increasing


def test_sampler_instances_and_bad_names() -> None:
    sampler = optuna.samplers.TPESampler(seed=0)
    assert OptunaSearcher(sampler=sampler).sampler_spec is sampler
    with pytest.raises(ConfigError, match="'bayes'.*tpe, cmaes, nsga2, random"):
        OptunaSearcher(sampler="bayes")
    with pytest.raises(ConfigError, match="BaseSampler"):
        OptunaSearcher(sampler=42)


def test_searcher_given_as_an_object(trained_cnn, digits) -> None:
    result = _search(trained_cnn, digits, searcher=OptunaSearcher(sampler=optuna.samplers.RandomSampler(seed=1)),
                     trials=2)
    assert len(result.trials) == 2 and result.best_policy is not None
