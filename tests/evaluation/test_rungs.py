"""The scheduler owns multi-fidelity: rungs, promotions and stops, the same on every executor; re-scoring."""

from __future__ import annotations

import pandas as pd
import pytest
from factories import QualitySearcher, ToyEvaluator

import autoprune as ap
from agents.amc import AMCSearcher
from autoprune.evaluation.rungs import (
    ASHA,
    Cascade,
    FullFidelity,
    SchedulerConfig,
    check_schedulable,
    split_legacy_options,
)
from autoprune.executors import LocalExecutor
from autoprune.final.rescore import ADAPTIVE_BN_RESCORE_STEPS, RescoreConfig, best_rescored, rescore, top_candidates
from autoprune.searcher import SearchContext
from autoprune.testing import contract_problem
from autoprune.trial import Score
from search_spaces.ground.errors import ConfigError, UnknownNameError

# ASHA with reduction factor 3 at rungs 1 and 3 of 9 steps; qualities in trial order. By the rule (continue if
# at least the 2/3 quantile of the scores recorded at that rung so far): 0.5 first everywhere -> 9; 0.3 < 0.5
# at rung 1 -> 1; 0.7 >= q(0.3, 0.5) and >= 0.5 -> 9; 0.6 >= q(.3,.5,.7)=0.567 but < q(.5,.7)=0.633 at rung 3
# -> 3; 0.2 < q(.3,.5,.6,.7)=0.6 -> 1; 0.8 -> 9.
QUALITIES = [0.5, 0.3, 0.7, 0.6, 0.2, 0.8]
EXPECTED_FIDELITY = [9, 1, 9, 3, 1, 9]


def test_asha_rungs_and_options() -> None:
    assert ASHA().rungs(27) == (3, 9)
    assert ASHA(grace_period=2, reduction_factor=2).rungs(10) == (2, 4, 8)
    assert FullFidelity().rungs(27) == ()
    with pytest.raises(UnknownNameError, match="unknown scheduler 'hyperband'; accepted: asha, cascade, none"):
        SchedulerConfig(kind="hyperband")
    with pytest.raises(ConfigError, match="reduction_factor must be an integer >= 2"):
        SchedulerConfig(kind="asha", reduction_factor=1)
    with pytest.raises(ConfigError, match="apply to the asha scheduler"):
        SchedulerConfig(kind="none", grace_period=3)
    assert SchedulerConfig.from_value("asha") == SchedulerConfig(kind="asha")
    assert split_legacy_options({"fidelity": "asha", "grace_period": 2, "cpus_per_trial": 1}) == (
        {"cpus_per_trial": 1}, SchedulerConfig(kind="asha", grace_period=2))


def _run_local(scheduler) -> list:
    model, inputs, space = contract_problem()
    searcher = QualitySearcher(QUALITIES)
    searcher.setup(SearchContext(space=space, budget=ap.Budget.flops(1.0), cost_model=ap.CostModel(space), seed=0,
                                 trials=len(QUALITIES), model=model, example_inputs=inputs))
    done = []
    LocalExecutor().run(searcher, ToyEvaluator(9, space), scheduler=scheduler, remaining=len(QUALITIES),
                        on_result=done.append)
    return done


def test_local_executor_promotes_and_stops_as_asha_specifies() -> None:
    done = _run_local(ASHA(grace_period=1, reduction_factor=3))
    assert [d.score.fidelity for d in done] == EXPECTED_FIDELITY
    assert [d.score.rung for d in done] == [2, 0, 2, 1, 0, 2]
    assert all(d.score.accuracy == pytest.approx(q * f / 9) for d, q, f in zip(done, QUALITIES, EXPECTED_FIDELITY,
                                                                               strict=True))
    assert [d.score.fidelity for d in _run_local(FullFidelity())] == [9] * len(QUALITIES)


def test_scheduler_state_round_trips_mid_search() -> None:
    first, resumed = ASHA(grace_period=1), ASHA(grace_period=1)
    for trial_id, quality in enumerate(QUALITIES[:3]):
        first.keep_going(trial_id, 1, quality)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.keep_going(3 + i, 1, q) for i, q in enumerate(QUALITIES[3:])] == \
           [first.keep_going(3 + i, 1, q) for i, q in enumerate(QUALITIES[3:])]


def test_rescoring_picks_the_true_best_when_the_cheap_score_misleads() -> None:
    space = contract_problem()[2]
    first = space.names[0]
    cheap = {0.1: 0.90, 0.2: 0.80, 0.3: 0.70, 0.4: 0.20}  # ratio of the first group -> search-time accuracy
    true = {0.1: 0.50, 0.2: 0.60, 0.3: 0.95, 0.4: 0.99}  # ... and at the re-score fidelity
    rows = [{"trial_id": i, "status": "ok", "feasible": True, "fidelity": 10, "flops": 1, "accuracy": cheap[r],
             **{f"ratio:{n}": (r if n == first else 0.0) for n in space.names}} for i, r in enumerate(cheap)]
    candidates = top_candidates(pd.DataFrame(rows), 10, 3)
    assert list(candidates["trial_id"]) == [0, 1, 2]  # the fourth never was among the best three

    def score(policy: ap.Policy) -> Score:
        return Score(true[round(policy[first], 3)], 0.0, 1, 1, True, 30, 0.0)

    rescored = rescore(candidates, space, score)
    assert best_rescored(rescored) == 2
    assert list(rescored["search_accuracy"]) == [0.90, 0.80, 0.70] and list(rescored["fidelity"]) == [30] * 3


@pytest.fixture
def fast() -> dict:
    return {"bn_batches": 1, "finetune_steps": 9, "val_batches": 1}


@pytest.mark.parametrize(("scheduler", "kind", "fidelities"), [("asha", ASHA, {1, 3, 9}), ("cascade", Cascade, {0, 9})])
def test_a_scheduled_search_resumes_mid_rung_to_the_uninterrupted_result(trained_cnn, digits, tmp_path, fast,
                                                                         monkeypatch, scheduler, kind,
                                                                         fidelities) -> None:
    def run(trials: int, run_dir, resume: bool = False):
        return ap.search(
            trained_cnn,
            digits.example_inputs(),
            budget=ap.Budget.flops(0.6),
            train_data=digits.train,
            val_data=digits.val,
            trials=trials,
            evaluator=fast,
            run={"scheduler": scheduler, "dir": run_dir, "resume": resume},
            final={"rescore": 0, "measure_latency": False},
        )

    straight = run(8, tmp_path / "straight")
    assert set(straight.trials["fidelity"]) <= fidelities and (straight.trials["fidelity"] < 9).any()
    real, calls = kind.keep_going, {"n": 0}

    def interrupted(self, trial_id: int, steps: int, accuracy: float, **kwargs) -> bool:
        calls["n"] += 1
        if calls["n"] == 6:  # between two rungs of a candidate: as a Ctrl+C or a kill would
            raise KeyboardInterrupt
        return real(self, trial_id, steps, accuracy, **kwargs)

    monkeypatch.setattr(kind, "keep_going", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(8, tmp_path / "parts")
    monkeypatch.setattr(kind, "keep_going", real)
    assert 0 < len(pd.read_csv(tmp_path / "parts" / "trials.csv")) < 8
    resumed = run(8, tmp_path / "parts", resume=True)
    columns = ["trial_id", "fidelity", "rung", "accuracy", "first_accuracy"]
    pd.testing.assert_frame_equal(resumed.trials[columns], straight.trials[columns])


def test_search_rescores_the_best_candidates_and_exports_the_winner(trained_cnn, digits, fast) -> None:
    result = ap.search(
        trained_cnn,
        digits.example_inputs(),
        budget=ap.Budget.flops(0.6),
        train_data=digits.train,
        val_data=digits.val,
        trials=5,
        evaluator=fast,
        final={"rescore": {"top_k": 3, "finetune_steps": 12}, "measure_latency": False},
    )
    rescored = result.summary.rescored
    assert len(rescored) == 3 and all(r.fidelity == 12 for r in rescored)
    best = max(rescored, key=lambda r: r.accuracy)
    assert result.summary.best_trial_id == best.trial_id
    chosen = {r.trial_id for r in rescored}
    others = result.trials[~result.trials["trial_id"].isin(chosen)]
    assert len(chosen) == 3 and min(r.search_accuracy for r in rescored) >= others["accuracy"].max()  # the best 3


def test_a_repeated_report_keeps_the_first_decision() -> None:
    asha = ASHA(grace_period=1)
    assert asha.keep_going(0, 1, 0.5) and not asha.keep_going(1, 1, 0.3)
    for better in (0.9, 0.95):
        asha.keep_going(2 + int(better * 100), 1, better)  # the rung's cutoff rises
    assert asha.keep_going(0, 1, 0.5) and not asha.keep_going(1, 1, 0.99)  # a retried trial: same answers


def test_failed_rescores_are_left_out() -> None:
    space = contract_problem()[2]
    rows = [{"trial_id": i, "status": "ok", "feasible": True, "fidelity": 10, "flops": 1, "accuracy": 0.9 - i / 10,
             **{f"ratio:{n}": 0.1 * i for n in space.names}} for i in range(3)]

    def score(policy: ap.Policy) -> Score:
        first = policy[space.names[0]]
        return Score.failed("diverged", fidelity=3, seconds=0.0) if first < 0.15 else Score(first, 0, 1, 1, True, 30, 0)

    rescored = rescore(pd.DataFrame(rows), space, score)
    assert best_rescored(rescored) == 2 and rescored["accuracy"].isna().sum() == 2
    assert best_rescored(rescored.iloc[:2]) is None  # every re-score failed: the search's own best stands


def test_rescore_fidelity_defaults_to_three_times_the_search_and_30_steps_after_adaptive_bn() -> None:
    assert RescoreConfig().steps(4) == 12 and RescoreConfig().steps(10) == 30
    assert RescoreConfig().steps(0) == ADAPTIVE_BN_RESCORE_STEPS == 30  # adaptive-BN search: re-score finetunes
    assert RescoreConfig(finetune_steps=7).steps(0) == 7


def test_a_scheduler_with_rungs_needs_finetune_steps(trained_cnn, digits) -> None:
    from autoprune.composition.config import SearchConfig

    with pytest.raises(ConfigError, match="finetune_steps is 0 .*adaptive-BN.*at least 2"):
        SearchConfig(scheduler="asha", evaluator={"finetune_steps": 0})  # adaptive BN: no finetune to split
    assert SearchConfig(scheduler="asha", evaluator={"finetune_steps": 9}).scheduler.kind == "asha"
    with pytest.raises(ConfigError, match="asha scheduler stops candidates at finetune rungs"):
        ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.flops(0.5), train_data=digits.train,
                  val_data=digits.val, trials=1, evaluator={"finetune_steps": 1}, run={"scheduler": "asha"})


# The cascade promotes a screen at least the 0.75 quantile of the screens recorded before it (as ASHA): 0.5 first
# -> 9; 0.3 < q(.5) -> 0; 0.7 >= q(.5,.3) = 0.45 -> 9; 0.6 >= q(.5,.3,.7) = 0.6 -> 9; 0.2 -> 0; 0.8 -> 9.
CASCADE_FIDELITY = [9, 0, 9, 9, 0, 9]


def test_the_cascade_screens_every_candidate_and_finetunes_the_best_share() -> None:
    assert Cascade().rungs(30) == (0,) and Cascade().rungs(0) == ()
    assert Cascade().learning_fidelity(30) == 0 and ASHA().learning_fidelity(30) == 30
    done = _run_local(Cascade(promote=0.25))
    assert [d.score.fidelity for d in done] == CASCADE_FIDELITY
    assert [d.score.first_accuracy for d in done] == pytest.approx([q / 9 for q in QUALITIES])  # all screened
    assert SchedulerConfig.from_value({"kind": "cascade", "promote": 0.5}).make().promote == 0.5
    with pytest.raises(ConfigError, match=r"promote \(the share of screened candidates scored fully\) must be a "
                                          r"number in \(0, 1\], got 0"):
        SchedulerConfig(kind="cascade", promote=0)
    with pytest.raises(ConfigError, match="promote applies to the cascade scheduler, not 'asha'"):
        SchedulerConfig(kind="asha", promote=0.5)
    with pytest.raises(ConfigError, match="finetune_steps is 0"):
        check_schedulable(SchedulerConfig(kind="cascade"), 0)
    check_schedulable(SchedulerConfig(kind="cascade"), 1)  # one finetune step is enough to have a screen


def test_searchers_compare_scores_at_the_learning_fidelity() -> None:
    space = contract_problem()[2]
    context = SearchContext(space=space, budget=ap.Budget.flops(1.0), cost_model=ap.CostModel(space), seed=0,
                            full_fidelity=9, learning_fidelity=0)
    screened = Score(0.4, 1.0, 1, 1, True, 0, 0.0, first_accuracy=0.4)
    promoted = Score(0.9, 1.0, 1, 1, True, 9, 0.0, rung=1, first_accuracy=0.5)
    assert context.comparable_accuracy(screened) == 0.4 and context.comparable_accuracy(promoted) == 0.5
    assert context.comparable_accuracy(Score.failed("diverged", fidelity=9, seconds=0.0)) is None
    full = SearchContext(space=space, budget=ap.Budget.flops(1.0), cost_model=ap.CostModel(space), seed=0,
                         full_fidelity=9)
    assert full.comparable_accuracy(promoted) == 0.9 and full.comparable_accuracy(screened) is None


def test_a_cascade_search_screens_all_and_picks_among_full_scores(trained_cnn, digits, fast) -> None:
    agent = AMCSearcher(warmup=2, batch_size=4)
    result = ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.flops(0.6), train_data=digits.train,
                       val_data=digits.val, trials=8, searcher=agent,
                       evaluator=fast, run={"scheduler": {"kind": "cascade", "promote": 0.25}},
                       final={"rescore": 0, "measure_latency": False})
    trials = result.trials
    assert set(trials["fidelity"]) == {0, 9} and trials["first_accuracy"].notna().all()
    screened_only = trials[trials["fidelity"] == 0]
    assert (screened_only["accuracy"] == screened_only["first_accuracy"]).all()
    best = trials[trials["trial_id"] == result.summary.best_trial_id]
    assert int(best["fidelity"].iloc[0]) == 9
    assert agent._told == 8  # the agent learnt from every candidate's screen, not only the promoted ones


def test_the_cascade_finetunes_no_candidate_over_the_budget_or_without_a_score() -> None:
    cascade = Cascade(promote=0.25)
    assert not cascade.keep_going(0, 0, 0.9, feasible=False)  # never the best policy: not worth a finetune
    assert not cascade.keep_going(1, 0, float("nan"))  # no screen accuracy: nothing says it is promising
    assert cascade.keep_going(2, 0, 0.5)  # the first screen within the budget: the bar is not raised by the others
    assert not cascade.keep_going(3, 0, 0.4) and cascade.keep_going(4, 0, 0.6)
    assert ASHA(grace_period=1).keep_going(0, 1, 0.5, feasible=False)  # ASHA's searchers learn from full scores


def test_scheduler_settings_keep_the_format_older_runs_recorded() -> None:
    assert SchedulerConfig().to_dict() == {"kind": "none", "grace_period": None, "reduction_factor": 3}
    assert SchedulerConfig(kind="asha").to_dict() == {"kind": "asha", "grace_period": None, "reduction_factor": 3}
    assert SchedulerConfig(kind="cascade", promote=0.2).to_dict()["promote"] == 0.2
    assert SchedulerConfig.from_value(SchedulerConfig(kind="cascade", promote=0.2).to_dict()).promote == 0.2
