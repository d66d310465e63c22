"""The re-score told: when re-scoring exports another trial than the best by search score, the CLI summary, the
report and ``summary.json`` (which the dashboard shows) name both, with both numbers."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pytest

import autoprune as ap
from autoprune.cli.render import report_search
from autoprune.final.summary import RescoredCandidate, Summary
from autoprune.report.run_record import RunRecord, render_report


def swapped(summary: Summary) -> Summary:
    """``summary`` as if trial 98 had the best search score but lost its re-score to the exported trial."""
    exported = summary.best_trial_id
    return replace(summary, search_accuracy=0.9907, rescored=(
        RescoredCandidate(98, 0.9953, 0.9861, 0.1, 30, 1.0),
        RescoredCandidate(exported, 0.9907, 0.9884, 0.1, 30, 1.0),
        RescoredCandidate(97, 0.9815, math.nan, math.nan, 30, 1.0),
    ))


def test_rescore_facts_name_both_trials_with_both_numbers(finished_run) -> None:
    summary = RunRecord.read(finished_run).summary
    told = swapped(summary)
    exported = told.best_trial_id
    assert told.search_best.trial_id == 98 and told.exported_rescored.trial_id == exported
    assert told.rescore_facts() == (
        ("best by search score", "trial 98: 99.53% (re-scored 98.61%)"),
        ("exported after re-scoring", f"trial {exported}: search score 99.07%, re-scored 98.84%"),
    )
    assert told.rescore_story() == ("best by search score: trial 98: 99.53% (re-scored 98.61%); exported after "
                                    f"re-scoring: trial {exported}: search score 99.07%, re-scored 98.84%")
    data = json.loads(json.dumps(told.to_dict(), default=str))
    assert data["rescore_facts"] == [list(f) for f in told.rescore_facts()]  # what the dashboard shows
    assert Summary.from_dict(told.to_dict()).rescore_facts() == told.rescore_facts()
    # the same trial, or no re-score: nothing to tell
    same = replace(told, rescored=(RescoredCandidate(exported, 0.9953, 0.99, 0.1, 30, 1.0),
                                   RescoredCandidate(98, 0.9907, 0.98, 0.1, 30, 1.0)))
    assert same.rescore_facts() == () and same.rescore_story() is None
    assert replace(told, rescored=()).rescore_story() is None and told.to_dict()["rescore_facts"]


def test_the_report_tells_the_best_by_search_score_from_the_exported_trial(finished_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    told = swapped(RunRecord.read(run).summary)
    (run / "summary.json").write_text(json.dumps(told.to_dict()))
    html = render_report(RunRecord.read(run))
    assert "<dt>best by search score</dt><dd>trial 98: 99.53% (re-scored 98.61%)</dd>" in html
    assert (f"<dt>exported after re-scoring</dt><dd>trial {told.best_trial_id}: search score 99.07%, re-scored "
            "98.84%</dd>") in html
    assert "Re-scoring chose it: best by search score: trial 98" in html  # beside the baseline vs pruned table
    plain = render_report(RunRecord.read(finished_run))
    assert ("best by search score" in plain) == bool(RunRecord.read(finished_run).summary.rescore_facts())


@pytest.fixture(scope="module")
def result(trained_cnn, digits) -> ap.SearchResult:
    return ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.flops(0.6), train_data=digits.train,
                     val_data=digits.val, test_data=digits.test, searcher="uniform", trials=1,
                     evaluator={"bn_batches": 1, "finetune_steps": 0, "val_batches": 1},
                     final={"steps": 0, "measure_latency": False})


def test_the_cli_summary_tells_the_re_score(result, capsys) -> None:
    report_search(replace(result, summary=swapped(result.summary)))
    printed = capsys.readouterr().out
    assert swapped(result.summary).rescore_story() in printed
    report_search(result)  # nothing re-scored: no such line
    assert "best by search score" not in capsys.readouterr().out
