from __future__ import annotations

import optuna
import pytest

import autoprune as ap
from agents.optuna_search import JOURNAL, OptunaSearcher, journal_storage
from search_spaces.cost import uniform_ratios
from search_spaces.ground.errors import ConfigError

FAST = {"bn_batches": 1, "finetune_steps": 1, "val_batches": 1}


def _search(model, digits, **kwargs):
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val, trials=4,
                   evaluator=FAST, final={"measure_latency": False}, searcher="optuna")
    options.update(kwargs)
    return ap.search(model, digits.example_inputs(), **options)


def test_resumed_study_continues_as_the_uninterrupted_one_from_a_pickle_free_state(trained_cnn, digits,
                                                                                     tmp_path) -> None:
    straight = _search(trained_cnn, digits, trials=5)
    run = tmp_path / "run"
    _search(trained_cnn, digits, trials=3, run={"dir": run})
    resumed = _search(trained_cnn, digits, trials=5, run={"dir": run, "resume": True})
    ratios = [c for c in straight.trials.columns if c.startswith("ratio:")]
    assert resumed.trials[ratios].equals(straight.trials[ratios])
    assert resumed.trials["feasible"].all()
    assert not list(run.rglob("*.pkl"))
    # the study in Optuna's own storage, rewritten on resume: each trial once, scored as in the trials table
    study = optuna.load_study(study_name="autoprune", storage=journal_storage(run / JOURNAL))
    assert [t.number for t in study.trials] == list(range(5))
    assert [t.value for t in study.trials] == pytest.approx(list(resumed.trials["accuracy"]))


def test_the_first_trials_are_the_uniform_and_global_policies_and_constraints_are_recorded(trained_cnn,
                                                                                           digits) -> None:
    searcher = OptunaSearcher()
    result = _search(trained_cnn, digits, searcher=searcher, trials=3)
    uniform = uniform_ratios(ap.CostModel(result.space), ap.Budget.flops(0.5))
    global_ = _search(trained_cnn, digits, searcher="global", trials=1).best_policy
    for i, start in enumerate((uniform, dict(global_))):
        row = result.trials.iloc[i]
        assert all(float(row["ratio:" + n]) == pytest.approx(r, abs=1e-9) for n, r in start.items())
    assert set(searcher.study.trials[0].constraints) == {"budget_violation"}
    assert OptunaSearcher(warm_start=False).warm_start == ()
    assert OptunaSearcher(warm_start=["global"]).warm_start == ("global",)
    with pytest.raises(ConfigError, match="warm_start must be true, false or a list of uniform, global; got "
                                          "\\['sensitivity'\\]"):
        OptunaSearcher(warm_start=["sensitivity"])


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


def test_single_objective_proposals_use_the_budget_fully(trained_cnn, digits) -> None:
    result = _search(trained_cnn, digits, trials=5, searcher_options={"sampler": "random", "warm_start": False},
                     space={"round_to": 1})  # every width: a fit can land within 2% of the budget
    assert (result.trials["flops_ratio"] > 0.48).all() and (result.trials["flops_ratio"] <= 0.5).all()
    front = _search(trained_cnn, digits, trials=5, searcher_options={"sampler": "nsga2"})
    assert OptunaSearcher(sampler="nsga2").fit == "repair" and len(front.trials) == 5
    with pytest.raises(ConfigError, match="fit='grow'"):
        OptunaSearcher(fit="grow")
