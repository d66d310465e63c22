from __future__ import annotations

import copy
import json
import os
import time

import pandas as pd
import pytest
import torch

import autoprune as ap
from autoprune.builtins.models import small_cnn
from autoprune.evaluation import evaluator as evaluate_module
from autoprune.executors.local import LocalExecutor
from autoprune.report.run_record import RunRecord
from autoprune.study import rundir as rundir_module
from search_spaces.ground.errors import BudgetError, ConfigError, EvaluationFailedError, RunDirError, UnknownNameError
from search_spaces.measure import count_flops

FAST = {"bn_batches": 2, "finetune_steps": 2, "val_batches": 2}


def _search(model, digits, **kwargs):
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val,
                   test_data=digits.test, trials=4, evaluator=FAST)
    options.update(kwargs)
    options["final"] = {"measure_latency": False, **options.get("final", {})}
    return ap.search(model, digits.example_inputs(), **options)


def test_search_writes_a_complete_run_directory(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    result = _search(trained_cnn, digits, run={"dir": run}, final={"steps": 5, "measure_latency": True})
    assert {"config.json", "trials.jsonl", "trials.csv", "trials.parquet", "state", "best_policy.json",
            "summary.json", "model", "final"} <= {p.name for p in run.iterdir()}
    for name in ("best_policy.json", "summary.json", "model"):  # the final outputs are switched in as one unit
        assert (run / name).is_symlink() and (run / name).resolve().parent == (run / "final").resolve()
    assert not list(run.glob(".*.tmp"))
    trials = result.trials
    assert len(trials) == 4 and list(trials["trial_id"]) == [0, 1, 2, 3]
    for column in ("accuracy", "flops", "params", "feasible", "fidelity", "seconds", "status", "node", "pid"):
        assert column in trials.columns
    assert [c for c in trials.columns if c.startswith("ratio:")] == [f"ratio:{n}" for n in result.space.names]
    assert pd.read_parquet(run / "trials.parquet").equals(trials)
    assert result.best_policy == ap.Policy.load(run / "best_policy.json")
    # the exported trial is the re-score's winner among the three most accurate feasible trials
    feasible = trials[trials["feasible"]]
    top = feasible.sort_values(["accuracy", "flops", "trial_id"], ascending=[False, True, True]).head(3)
    rescored = {r.trial_id: r.accuracy for r in result.summary.rescored}
    assert set(rescored) == set(top["trial_id"]) and result.summary.best_trial_id == max(rescored, key=rescored.get)
    exported = trials[trials["trial_id"] == result.summary.best_trial_id].iloc[0]
    assert result.best_policy["stem.0"] == exported["ratio:stem.0"]
    # the exported model, counted independently, is within budget
    fresh = ap.load_pruned_model(small_cnn(), run / "model", digits.example_inputs())
    flops = count_flops(fresh, digits.example_inputs())
    assert flops <= 0.5 * count_flops(trained_cnn, digits.example_inputs())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pruned"]["flops"] == flops and summary["pruned"]["flops_ratio"] <= 0.5
    assert 0 <= summary["pruned"]["accuracy"] <= 1 and summary["baseline"]["accuracy"] > 0.5
    assert summary["baseline"]["latency_ms"] > 0 and summary["pruned"]["latency_ms"] > 0
    assert ap.Summary.from_dict(summary) == result.summary  # summary.json reads back into the typed Summary
    fresh.eval()
    result.pruned_model.eval()
    x = next(iter(digits.test))[0]
    assert torch.allclose(fresh(x), result.pruned_model(x), atol=1e-5)
    assert not result.pareto.empty and result.pareto["accuracy"].is_monotonic_increasing


def test_existing_run_dir_needs_resume_and_resume_extends(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    first = _search(trained_cnn, digits, trials=2, run={"dir": run})
    with pytest.raises(RunDirError, match="not empty.*resume=True"):
        _search(trained_cnn, digits, trials=2, run={"dir": run})
    resumed = _search(trained_cnn, digits, trials=5, run={"dir": run, "resume": True})
    assert list(resumed.trials["trial_id"]) == [0, 1, 2, 3, 4]
    assert resumed.trials.iloc[:2].equals(first.trials)
    # the same search in one go proposes the same policies: the searcher state was restored
    straight = _search(trained_cnn, digits, trials=5)
    ratio_cols = [c for c in straight.trials.columns if c.startswith("ratio:")]
    assert resumed.trials[ratio_cols].equals(straight.trials[ratio_cols])
    with pytest.raises(RunDirError, match="settings changed.*seed"):
        _search(trained_cnn, digits, trials=6, seed=1, run={"dir": run, "resume": True})


def test_failed_evaluations_are_recorded_and_the_search_goes_on(trained_cnn, digits, monkeypatch) -> None:
    calls = {"n": 0}
    real = evaluate_module.recalibrate_batchnorm

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker exploded")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "recalibrate_batchnorm", flaky)
    result = _search(trained_cnn, digits, trials=3)
    assert list(result.trials["status"]) == ["ok", "failed", "ok"]
    assert "worker exploded" in result.trials.loc[1, "error"]
    assert result.best_policy is not None


def test_a_search_without_a_feasible_trial_raises_instead_of_returning_no_policy(trained_cnn, digits) -> None:
    # reachable at every width (every group at its max leaves ~4% of the FLOPs), but unfitted random proposals
    # never get there
    with pytest.raises(BudgetError, match=r"no trial of 2 met budget .*\(0 failed, 2 missed the budget"):
        _search(trained_cnn, digits, searcher="random", searcher_options={"fit": "none"}, trials=2,
                budget=ap.Budget.flops(0.05), space={"round_to": 1})


def test_uniform_searcher_runs_one_evaluation(trained_cnn, digits) -> None:
    result = _search(trained_cnn, digits, searcher="uniform", trials=10)
    assert len(result.trials) == 1 and result.best_policy is not None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"trials": 0}, ConfigError, "trials must be an integer >= 1, got 0"),
        ({"budget": 0.5}, BudgetError, "Budget.flops"),
        ({"budget": ap.Budget.flops(0.001)}, BudgetError, "cannot be met"),
        ({"searcher": "annealing"}, UnknownNameError, "'annealing'.*random.*uniform"),
        ({"searcher_options": {"temperature": 3}}, ConfigError, "temperature"),
        ({"evaluator": {"finetune": 3}}, ConfigError, "unknown evaluator options"),
        ({"executor": "slurm"}, UnknownNameError, "'slurm'.*local"),
    ],
)
def test_bad_arguments_raise_autoprune_errors(trained_cnn, digits, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        _search(trained_cnn, digits, **kwargs)


def test_crash_between_state_and_table_writes_never_repeats_a_trial(trained_cnn, digits, tmp_path,
                                                                    monkeypatch) -> None:
    run = tmp_path / "run"
    real = rundir_module.RunDir.write_trials
    calls = {"n": 0}

    def crash_on_second(self, trials):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after trial 1 was logged, before the derived table was written
        return real(self, trials)

    monkeypatch.setattr(rundir_module.RunDir, "write_trials", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _search(trained_cnn, digits, trials=4, run={"dir": run})
    monkeypatch.setattr(rundir_module.RunDir, "write_trials", real)
    resumed = _search(trained_cnn, digits, trials=4, run={"dir": run, "resume": True})
    ids = list(resumed.trials["trial_id"])
    assert ids == [0, 1, 2, 3]  # the log is the truth: trial 1 is neither lost nor repeated
    ratio_cols = [c for c in resumed.trials.columns if c.startswith("ratio:")]
    assert not resumed.trials[ratio_cols].duplicated().any()


def test_resume_rejects_a_changed_search_space(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    _search(trained_cnn, digits, trials=1, run={"dir": run})
    with pytest.raises(RunDirError, match="space"):
        _search(trained_cnn, digits, trials=2, run={"dir": run, "resume": True}, space={"max_ratio": 0.5})


def test_all_trials_failing_is_an_error_not_an_empty_result(trained_cnn, digits) -> None:
    with pytest.raises(EvaluationFailedError, match="all 2 trials failed.*diverged"):
        _search(trained_cnn, digits, trials=2, evaluator={**FAST, "lr": 1e30})


def test_searcher_setup_failure_leaves_no_run_directory(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="needs at least"):
        _search(trained_cnn, digits, searcher="factories:SearcherThatRefusesTheSpace", run={"dir": run})
    assert not run.exists()
    with pytest.raises(ConfigError, match="not an autoprune.Searcher subclass"):
        _search(trained_cnn, digits, searcher="collections:OrderedDict")


def test_search_leaves_the_model_unchanged(trained_cnn, digits) -> None:
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    trained_cnn.train()
    try:
        _search(trained_cnn, digits, trials=1, final={"steps": 2})
        assert trained_cnn.training
        assert all(torch.equal(before[k], v) for k, v in trained_cnn.state_dict().items())
    finally:
        trained_cnn.eval()


def test_run_directories_of_other_formats_are_refused_naming_the_version(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    _search(trained_cnn, digits, trials=2, run={"dir": run})
    config = json.loads((run / "config.json").read_text())
    assert config["format_version"] == 3
    assert len(_search(trained_cnn, digits, trials=3, run={"dir": run, "resume": True}).trials) == 3
    del config["format_version"]  # as written before the format was versioned (a pickled searcher state)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirError, match="format version 1; this autoprune reads version 3 only"):
        _search(trained_cnn, digits, trials=4, run={"dir": run, "resume": True})
    (run / "config.json").write_text(json.dumps({**config, "format_version": 7}))
    with pytest.raises(RunDirError, match="format version 7"):
        _search(trained_cnn, digits, trials=4, run={"dir": run, "resume": True})


def test_a_bug_surfaces_at_once_instead_of_becoming_failed_trials(trained_cnn, digits, monkeypatch) -> None:
    def buggy(*args, **kwargs):
        raise TypeError("a programming error in the recovery code")

    monkeypatch.setattr(evaluate_module, "recalibrate_batchnorm", buggy)
    with pytest.raises(TypeError, match="programming error"):
        _search(trained_cnn, digits, trials=3)


def test_resume_refuses_other_weights_or_other_data(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    _search(trained_cnn, digits, trials=2, run={"dir": run})
    other = copy.deepcopy(trained_cnn)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(RunDirError, match="the model's weights differ.*same checkpoint and data"):
        _search(other, digits, trials=3, run={"dir": run, "resume": True})
    fewer = list(digits.val)[:2]
    with pytest.raises(RunDirError, match=r"the data \(sizes and a sample\) differ"):
        _search(trained_cnn, digits, trials=3, val_data=fewer[::-1], run={"dir": run, "resume": True})


def test_one_writer_per_run_directory(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    _search(trained_cnn, digits, trials=1, run={"dir": run})
    holder = rundir_module.RunDir(run)
    assert holder.prepare(json.loads((run / "config.json").read_text()), resume=True)
    try:
        with pytest.raises(RunDirError, match=rf"in use by pid {os.getpid()} on host"):
            _search(trained_cnn, digits, trials=2, run={"dir": run, "resume": True})
    finally:
        holder.close()
    assert len(_search(trained_cnn, digits, trials=2, run={"dir": run, "resume": True}).trials) == 2


def test_a_new_run_that_fails_before_any_trial_leaves_nothing_to_clean_up(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ap.DataError, match="no samples"):
        _search(trained_cnn, digits, trials=2, val_data=[], run={"dir": run})
    assert not run.exists()
    assert len(_search(trained_cnn, digits, trials=2, run={"dir": run}).trials) == 2  # simply started again


def test_model_digest_handles_every_dtype() -> None:
    from autoprune.study.identity import model_digest

    model = small_cnn(in_channels=1)
    assert model_digest(model.to(torch.bfloat16)) != model_digest(model.to(torch.float32))


def test_trials_csv_has_no_float_noise_and_the_other_tables_stay_exact(tmp_path) -> None:
    import pandas as pd

    from autoprune.study.rundir import RunDir

    table = pd.DataFrame({"trial_id": [0], "ratio:a": [0.1 + 0.5], "finished_at": [1763785123.456789]})
    RunDir(tmp_path).write_trials(table)
    text = (tmp_path / "trials.csv").read_text()
    assert "0.6000000000000001" not in text and text.splitlines()[1] == "0,0.6,1763785123.46"
    assert pd.read_parquet(tmp_path / "trials.parquet")["ratio:a"].iloc[0] == 0.1 + 0.5


class _FirstIsBest(ap.Searcher):
    """Trial 0 prunes a little, every later one much more: no later trial beats the first. Optionally sleeps in
    the first ask (a slow trial, for time limits)."""

    name = "first_is_best"

    def __init__(self, sleep: float = 0.0) -> None:
        super().__init__()
        self.sleep = sleep

    def _ask(self, trial_id: int) -> ap.Policy:
        if trial_id == 0:
            time.sleep(self.sleep)
        space = self.context.space
        return space.policy([0.1 if trial_id == 0 else 0.6 * g.max_ratio for g in space])


class _Fixed(ap.Searcher):
    """Every trial: the same ratio in every group (capped at its max)."""

    name = "fixed"

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def _ask(self, trial_id: int) -> ap.Policy:
        return self.context.space.policy([min(self.ratio, g.max_ratio) for g in self.context.space])


def test_a_budget_of_exactly_the_policys_ratio_is_met_through_the_final_check(trained_cnn, digits) -> None:
    cost = ap.CostModel(ap.SearchSpace.from_model(trained_cnn, digits.example_inputs(), round_to=1))
    params = cost.cost({g.name: min(0.2, g.max_ratio) for g in cost.space}).params
    base = cost.base.params
    assert params / base * base < params  # fraction * base falls one ulp short of this policy's parameters
    result = _search(
        trained_cnn,
        digits,
        searcher=_Fixed(0.2),
        trials=1,
        budget=ap.Budget.params(params / base),
        final={"rescore": 0, "steps": 1},
        space={"round_to": 1},
    )
    assert result.summary.pruned.params == params


def test_a_resume_without_a_better_trial_keeps_the_final_model(trained_cnn, digits, tmp_path) -> None:
    run, events = tmp_path / "run", []
    options = dict(searcher=_FirstIsBest(), budget=ap.Budget.params(0.99), final={"steps": 3, "rescore": 0})
    first = _search(trained_cnn, digits, trials=2, **options, run={"dir": run})
    stamp, config = first.summary.finished, (run / "config.json").read_bytes()
    with pytest.raises(RunDirError, match=r"trials=1: 2 trials have finished already; give trials >= 2"):
        _search(trained_cnn, digits, trials=1, **{**options, "searcher": _FirstIsBest()},
                run={"dir": run, "resume": True})
    assert (run / "config.json").read_bytes() == config  # the refused resume left the settings as they were
    resumed = _search(trained_cnn, digits, trials=3, **{**options, "searcher": _FirstIsBest()},
                      run={"dir": run, "resume": True, "progress": events.append})
    said = {e.stage: e.message for e in events}
    assert said["resume"] == "resuming from 2 finished trials"
    assert "keeping the final model of trial 0" in said["final"] and "rescore" not in said
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] == stamp and summary["trials"] == 3 and summary["best_trial_id"] == 0
    assert resumed.summary == ap.Summary.from_dict(summary) and resumed.best_policy == first.best_policy
    x = next(iter(digits.test))[0]
    with torch.no_grad():
        assert torch.allclose(resumed.pruned_model(x), first.pruned_model.eval()(x), atol=1e-5)


def test_a_resume_makes_the_final_model_again_when_its_settings_changed_or_it_is_damaged(trained_cnn, digits,
                                                                                        tmp_path) -> None:
    run = tmp_path / "run"
    final = {"steps": 3, "rescore": 0}
    first = _search(trained_cnn, digits, searcher=_FirstIsBest(), trials=2, budget=ap.Budget.params(0.99),
                    final=final, run={"dir": run})
    assert first.summary.final_settings["lr"] is None and first.summary.final_settings["steps"] == 3
    weights = run / "final" / "model" / "pruned_state_dict.pt"
    first_weights = weights.read_bytes()

    def resume(trials: int, **changed: object) -> tuple[ap.SearchResult, str]:
        events: list = []
        result = _search(trained_cnn, digits, searcher=_FirstIsBest(), trials=trials, budget=ap.Budget.params(0.99),
                         final={**final, **changed}, run={"dir": run, "resume": True, "progress": events.append})
        return result, " | ".join(e.message for e in events if e.stage == "final")

    _, said = resume(3, lr=0.5)  # the Python API may change a final setting: it is honoured
    assert "keeping" not in said
    assert json.loads((run / "summary.json").read_text())["final_settings"]["lr"] == 0.5
    assert weights.read_bytes() != first_weights  # finetuned again at the new learning rate
    weights.write_bytes(weights.read_bytes()[:500])  # a damaged stored model
    again, said = resume(4, lr=0.5)
    assert "the stored final model cannot be kept" in said and "pruned_state_dict.pt" in said
    assert ap.load_pruned_model(copy.deepcopy(trained_cnn), run / "model", digits.example_inputs()) is not None
    assert again.summary.trials == 4
    summary = (run / "summary.json").resolve()
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "baseline": 5}))  # a tampered summary
    with pytest.raises(RunDirError, match=r"summary.json' is not a summary written by this version"):
        RunRecord.read(run)
    last, said = resume(5, lr=0.5)
    assert "keeping" not in said and last.summary.baseline.accuracy == first.summary.baseline.accuracy


class _Unreachable(LocalExecutor):
    """An executor whose cluster never answers."""

    def run(self, *args: object, **kwargs: object) -> None:
        raise ConfigError("the cluster at 127.0.0.1:1 does not answer")


def test_a_resume_that_cannot_start_leaves_the_saved_settings_as_they_were(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    options = dict(searcher=_FirstIsBest(), budget=ap.Budget.params(0.99), final={"steps": 1, "rescore": 0})
    _search(trained_cnn, digits, trials=2, **options, run={"dir": run})
    saved = (run / "config.json").read_bytes()
    with pytest.raises(ConfigError, match="does not answer"):
        _search(trained_cnn, digits, trials=4, executor=_Unreachable(),
                **{**options, "searcher": _FirstIsBest()}, run={"dir": run, "resume": True})
    assert (run / "config.json").read_bytes() == saved
    resumed = _search(trained_cnn, digits, trials=3, **{**options, "searcher": _FirstIsBest()},
                      run={"dir": run, "resume": True})
    assert len(resumed.trials) == 3 and json.loads((run / "config.json").read_text())["trials"] == 3


@pytest.mark.slow  # waits out a time budget
def test_time_budget_stops_after_the_running_trial_finalizes_and_resumes(trained_cnn, digits, tmp_path) -> None:
    run, events = tmp_path / "run", []
    options = dict(budget=ap.Budget.params(0.99), final={"steps": 2, "rescore": 0})
    result = _search(trained_cnn, digits, searcher=_FirstIsBest(sleep=8.0), trials=4, **options,
                     run={"dir": run, "time_budget": "8s", "progress": events.append})
    assert len(result.trials) == 1 and result.summary.trials == 1  # trial 0 outlasted the budget; none started after
    assert (run / "best_policy.json").exists() and json.loads((run / "config.json").read_text())["trials"] == 4
    assert any(e.stage == "stopped" and "time budget of 8 s used up after 1 of 4 trials" in e.message for e in events)
    resumed = _search(trained_cnn, digits, searcher=_FirstIsBest(), trials=4, **options,
                      run={"dir": run, "resume": True})
    assert list(resumed.trials["trial_id"]) == [0, 1, 2, 3]


@pytest.mark.parametrize(("value", "seconds"), [("2h", 7200), ("1h30m", 5400), ("90s", 90), (" 1.5m ", 90), (45, 45),
                                                ("90", 90), ("1.5", 1.5)])
def test_time_budget_durations(value, seconds) -> None:
    from autoprune.composition.time_budget import parse_duration

    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["2x", "h", "0s", -1, True, "2h foo", "0", "-5", "nan"])
def test_bad_time_budgets_are_refused_before_any_work(value, trained_cnn, digits, tmp_path) -> None:
    with pytest.raises(ConfigError, match="time_budget must be"):
        _search(trained_cnn, digits, run={"time_budget": value, "dir": tmp_path / "run"})
    assert not (tmp_path / "run").exists()


def test_progress_true_shows_each_trial_in_a_log(trained_cnn, digits, capsys) -> None:
    _search(trained_cnn, digits, trials=2, run={"progress": True})
    shown = capsys.readouterr().err.splitlines()
    assert "search 1/2 · best feasible acc" in shown[0] and "search 2/2 · best feasible acc" in shown[1]


def test_a_progress_line_without_details_ends_with_its_count() -> None:
    import io

    from rich.console import Console

    from autoprune.study.progress import SearchDisplay

    log = io.StringIO()
    with SearchDisplay(Console(file=log)) as display:  # not a terminal: one line per event
        display.show("sensitivity scan", 3, 9, "")
        display.show("search", 4, 9, "best feasible acc 0.9100")
    assert log.getvalue().splitlines() == ["sensitivity scan 3/9", "search 4/9 · best feasible acc 0.9100"]


def test_progress_display_redraws_in_a_terminal_and_in_a_notebook_with_widgets() -> None:
    import importlib.util
    import io

    from rich.console import Console

    from autoprune.study.progress import SearchDisplay, live_capable

    screen = io.StringIO()
    with SearchDisplay(Console(file=screen, force_terminal=True, width=100)) as display:
        assert display.live
        display(ap.Progress("resume", 3, 10, 0.9, "resuming from 3 finished trials"))
        display(ap.Progress("trial", 4, 10, 0.91, "accuracy 0.91"))
    drawn = screen.getvalue()
    assert "resuming from 3 finished trials" in drawn and "4/10" in drawn and "best feasible acc 0.9100" in drawn
    widgets = importlib.util.find_spec("ipywidgets") is not None
    assert live_capable(Console(file=io.StringIO(), force_jupyter=True)) == widgets
