"""Never slower: the final model is timed against the unpruned one in every runtime it is exported for, on a
deterministic clock. A slower one is named (CLI, summary.json, report.html), repaired under a latency budget, or
refused; it is never exported silently."""

from __future__ import annotations

import json
import re

import pytest
from factories import use_clock

import autoprune as ap
from autoprune.cli.main import main
from search_spaces.measure import count_flops

FAST = {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}


def _clock(base_flops: int, onnx_slower_above: float):
    """1 ms per MFLOP; in onnxruntime, a pruned model keeping more than ``onnx_slower_above`` of the FLOPs takes
    twice the unpruned model's time (a channel count its kernels handle badly)."""

    def clock(run, **_setting) -> float:
        flops = count_flops(run.model, run.inputs)
        ms = flops / 1e6 + 1e-3
        if run.runtime == "onnxruntime" and onnx_slower_above < flops / base_flops < 1:
            return 2 * base_flops / 1e6
        return ms

    return clock


@pytest.fixture()
def base_flops(trained_cnn, digits) -> int:
    return count_flops(trained_cnn, digits.example_inputs())


def _search(model, digits, budget, run_dir, **final):
    return ap.search(model, digits.example_inputs(), budget=budget, train_data=digits.train, val_data=digits.val,
                     searcher="uniform", trials=1, evaluator=FAST, space={"max_ratio": 0.9},
                     final={"export": ("eager", "onnx"), **final}, run={"dir": run_dir})


@pytest.mark.slow  # exports ONNX
def test_a_model_slower_in_an_export_runtime_is_named_with_its_fix(trained_cnn, digits, base_flops, tmp_path,
                                                                     monkeypatch) -> None:
    use_clock(monkeypatch, _clock(base_flops, onnx_slower_above=0.0))
    run = tmp_path / "run"
    result = _search(trained_cnn, digits, ap.Budget.flops(0.6), run)
    summary = result.summary
    assert [c.runtime for c in summary.speed] == ["eager", "onnxruntime"]
    assert summary.slower_in == ("onnxruntime",)
    saved = json.loads((run / "summary.json").read_text())
    assert saved["slower_in"] == ["onnxruntime"] and "round_to" in saved["slower_advice"]
    html = (run / "report.html").read_text()
    assert 'id="section-speed"' in html and "SLOWER than the unpruned model in onnxruntime" in html
    assert (run / "model" / "model.onnx").exists()  # a FLOPs budget names it; the export is what was asked for
    for check in saved["speed"]:  # one statistic: the speed-up is the two latencies' ratio, in the summary ...
        assert check["speedup"] == pytest.approx(check["baseline_ms"] / check["pruned_ms"], rel=1e-12)
    assert saved["latency_speedup"] == pytest.approx(saved["baseline"]["latency_ms"] / saved["pruned"]["latency_ms"])
    cell = r"</t[hd]><td>([\d.]+)"
    rows = re.findall(rf'<tr><th scope="row">(eager|onnxruntime){cell}{cell}</td><td>([\d.]+)x</td>', html)
    assert [r[0] for r in rows] == ["eager", "onnxruntime"]
    for _, base_ms, pruned_ms, speedup in rows:  # ... and as the report prints them (the dashboard draws the same)
        assert float(speedup) == pytest.approx(float(base_ms) / float(pruned_ms), abs=0.006)


@pytest.mark.slow  # exports ONNX, searches twice
def test_under_a_latency_budget_a_slower_export_is_repaired_or_refused(trained_cnn, digits, base_flops, tmp_path,
                                                                       monkeypatch) -> None:
    use_clock(monkeypatch, _clock(base_flops, onnx_slower_above=0.45))
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / "cache"))
    repaired = _search(trained_cnn, digits, ap.Budget.latency(0.8), tmp_path / "repaired").summary
    assert not repaired.slower_in and repaired.flops_ratio <= 0.45  # pruned further until faster in onnxruntime
    assert repaired.latency_check.met and repaired.latency_check.repairs >= 1
    use_clock(monkeypatch, _clock(base_flops, onnx_slower_above=0.0))  # slower however far it is pruned
    with pytest.raises(ap.BudgetError, match="slower than the unpruned one in onnxruntime.*round_to.*nothing was "
                                             "exported"):
        _search(trained_cnn, digits, ap.Budget.latency(0.8), tmp_path / "refused")
    assert not (tmp_path / "refused" / "model").exists() and not (tmp_path / "refused" / "summary.json").exists()


@pytest.mark.slow  # a CLI search that exports ONNX
def test_the_cli_names_the_slower_runtime_and_prints_one_speed_figure(trained_cnn, digits, base_flops, tmp_path,
                                                                       monkeypatch, capsys) -> None:
    use_clock(monkeypatch, _clock(base_flops, onnx_slower_above=0.0))
    code = main(["search", "--budget-flops", "0.6", "--searcher", "uniform", "--trials", "1", "--finetune-steps",
                 "0", "--bn-batches", "1", "--final-finetune-steps", "0", "--format", "eager,onnx", "--run-dir",
                 str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert code == 0 and "slower than the unpruned model in onnxruntime" in printed and "round_to 8" in printed
    table = re.search(r"baseline\s*│[^\n]*│\s*([\d.]+)\s*│\s*\n.*?pruned\s*│[^\n]*│\s*([\d.]+)\s*│", printed, re.S)
    speedup = float(re.search(r"latency speedup: ([\d.]+)x", printed).group(1))
    base_ms, pruned_ms = float(table.group(1)), float(table.group(2))
    assert speedup == pytest.approx(base_ms / pruned_ms, abs=0.006)  # one statistic, as printed
