"""Latency budgets: the lookup table, its cache, the measured final check, and clear errors."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import torch
from factories import tiny_model, use_clock

import autoprune as ap
from autoprune.builtins.models import small_cnn
from autoprune.latency import table as lt
from search_spaces import SearchSpace, measure
from search_spaces.cost import CostModel
from search_spaces.ground.errors import BudgetError, ConfigError
from search_spaces.measure import count_flops


@pytest.fixture()
def _fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter layer timings and fewer calibration policies where only the table's bookkeeping is tested."""
    monkeypatch.setattr(lt, "PROBE_SECONDS", 0.01)
    monkeypatch.setattr(lt, "CALIBRATION_POLICIES", 4)


def _space(model: torch.nn.Module, inputs: torch.Tensor) -> SearchSpace:
    return SearchSpace.from_model(model, inputs)


def test_budget_latency_round_trips_and_rejects_bad_settings() -> None:
    budget = ap.Budget.latency(0.5, batch=8, threads=2)
    assert ap.Budget.from_dict(budget.to_dict()) == budget
    assert ap.Budget.from_dict({"latency": 0.5, "batch": 8, "threads": 2}) == budget
    assert ap.Budget.latency(ms=2.5).limit(ap.Cost(1, 1, 10.0)) == 2.5
    assert "batch 8" in budget.describe()
    with pytest.raises(BudgetError, match="threads must be a positive integer, got 0"):
        ap.Budget.latency(0.5, threads=0)
    with pytest.raises(BudgetError, match="device must be 'cpu' or 'cuda"):
        ap.Budget.latency(0.5, device="tpu")
    with pytest.raises(BudgetError, match="apply to latency budgets only"):
        ap.Budget.from_dict({"flops": 0.5, "batch": 4})
    with pytest.raises(BudgetError, match="latency table"):
        ap.Budget.latency(0.5).predicted(CostModel(_space(small_cnn(in_channels=1), torch.zeros(1, 1, 8, 8))).cost({}))


@pytest.mark.slow  # builds and times a latency table
@pytest.mark.usefixtures("_fast_probes")
def test_table_round_trips_and_is_rebuilt_when_model_or_device_changes(tmp_path, cnn_inputs) -> None:
    model = small_cnn(in_channels=1).eval()
    space = _space(model, cnn_inputs)
    table = lt.latency_table(model, space, cnn_inputs, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    loaded = lt.LatencyTable.load(files[0])
    assert loaded == table  # exact round trip, so predictions are identical
    ratios = {g.name: g.max_ratio / 2 for g in space}
    assert CostModel(space, loaded).cost(ratios).latency_ms == CostModel(space, table).cost(ratios).latency_ms
    assert lt.latency_table(model, space, cnn_inputs, cache_dir=tmp_path) == table  # from the cache, not rebuilt

    other = tiny_model(in_channels=1, num_classes=10).eval()
    other_space = _space(other, cnn_inputs)
    assert lt.table_key(other_space, cnn_inputs, batch=1, threads=1, device="cpu") != table.key
    lt.latency_table(other, other_space, cnn_inputs, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2  # another model: another table
    with pytest.raises(ConfigError, match="does not match the model"):
        CostModel(other_space, table)

    # a cached table whose recorded setting differs (as after a device change) is not trusted
    stale = json.loads(files[0].read_text())
    stale["key"]["device"] = "cuda:0"
    files[0].write_text(json.dumps(stale))
    rebuilt = lt.latency_table(model, space, cnn_inputs, cache_dir=tmp_path)
    assert rebuilt.key["device"] == "cpu" and json.loads(files[0].read_text())["key"]["device"] == "cpu"
    assert lt.table_key(space, cnn_inputs, batch=1, threads=1, device="cuda") != table.key


@pytest.mark.slow  # builds and times a latency table
@pytest.mark.usefixtures("_fast_probes")
def test_prediction_is_calibrated_to_the_unpruned_model(tmp_path, cnn_inputs) -> None:
    model = small_cnn(in_channels=1).eval()
    space = _space(model, cnn_inputs)
    table = lt.latency_table(model, space, cnn_inputs, cache_dir=tmp_path)
    cost_model = CostModel(space, table)
    assert cost_model.base.latency_ms == pytest.approx(table.base_ms)
    assert cost_model.cost({}).latency_ms == pytest.approx(table.base_ms)
    assert cost_model.cost(space.max_ratios).latency_ms < table.base_ms
    predicted = [cost_model.cost({g.name: f * g.max_ratio for g in space}).latency_ms for f in (0, 0.3, 0.6, 1)]
    assert predicted == sorted(predicted, reverse=True)  # monotone, so bisection onto the budget is sound


@pytest.mark.slow  # builds and times a latency table
def test_impossible_latency_budget_is_a_clear_error(trained_cnn, digits) -> None:
    with pytest.raises(BudgetError, match=r"cannot be met: pruning every group to its max_ratio still takes"):
        ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.latency(0.01), train_data=digits.train,
                  val_data=digits.val, trials=2)
    with pytest.raises(BudgetError, match=r"ms >= "):
        ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.latency(ms=1e-6),
                  train_data=digits.train, val_data=digits.val, trials=2)


@pytest.fixture()
def _flops_clock(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A deterministic clock: a forward pass "takes" 1 ms per MFLOP (plus 1 us), wherever latency is measured.

    The whole latency pipeline (table, calibration, search, the final measured check and its repairs) then
    runs exactly as with the real timer but gives the same numbers on a loaded machine. That real timings meet
    the budget is measured by ``bench/latency_search.py``, not asserted in a timed test.
    """
    def fake_ms(run, **_setting) -> float:
        return count_flops(run.model, run.inputs) / 1e6 + 1e-3

    use_clock(monkeypatch, fake_ms)
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / "clock-cache"))  # its tables must not serve real timings


@pytest.mark.slow  # builds a latency table and searches
@pytest.mark.usefixtures("_flops_clock")
def test_latency_budgeted_search_meets_the_budget_when_measured(trained_cnn, digits, tmp_path) -> None:
    budget = ap.Budget.latency(0.8)
    result = ap.search(trained_cnn, digits.example_inputs(), budget=budget, train_data=digits.train,
                       val_data=digits.val, trials=6, evaluator={"finetune_steps": 2, "bn_batches": 2},
                       run={"dir": tmp_path / "run"})
    check = result.summary.latency_check
    assert check.met and check.measured_ratio <= budget.fraction
    assert result.trials["latency_ms"].notna().all()
    exported = ap.load_pruned_model(small_cnn(in_channels=1), tmp_path / "run" / "model", digits.example_inputs())
    ratio, _, _ = measure.latency_ratio(exported, trained_cnn, digits.example_inputs())
    assert ratio <= budget.fraction, f"the exported model's latency ratio {ratio:.3f} misses the budget 0.8"


@pytest.mark.slow  # builds a latency table and searches twice
@pytest.mark.usefixtures("_flops_clock")
def test_the_summary_reports_the_latency_checks_own_timings(trained_cnn, digits, tmp_path, monkeypatch) -> None:
    calls = itertools.count()

    def drifting_ms(run, **_setting) -> float:  # no two timings agree, as on a real machine
        return count_flops(run.model, run.inputs) / 1e6 + 1e-3 + next(calls) * 1e-4

    use_clock(monkeypatch, drifting_ms)
    base_ms = count_flops(trained_cnn, digits.example_inputs()) / 1e6
    for name, budget in (("fraction", ap.Budget.latency(0.8)), ("absolute", ap.Budget.latency(ms=0.8 * base_ms))):
        result = ap.search(trained_cnn, digits.example_inputs(), budget=budget, train_data=digits.train,
                           val_data=digits.val, trials=2, evaluator={"finetune_steps": 1, "bn_batches": 1},
                           run={"dir": tmp_path / name})
        summary, check = result.summary, result.summary.latency_check
        assert check.baseline_ms is not None and check.measured_ratio is not None, name
        assert (summary.baseline.latency_ms, summary.pruned.latency_ms) == (check.baseline_ms, check.measured_ms)
        assert summary.latency_speedup == pytest.approx(1 / check.measured_ratio)


@pytest.mark.slow  # builds and times a latency table
@pytest.mark.usefixtures("_fast_probes")
def test_blocks_are_timed_together_and_depthwise_ones_over_their_channel_count(tmp_path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    ).eval()
    inputs = torch.zeros(1, 3, 16, 16)
    space = _space(model, inputs)
    table = lt.latency_table(model, space, inputs, cache_dir=tmp_path)
    # each conv is timed as a block with the BatchNorm and activation that follow it
    assert sorted(table.layers) == ["0", "3", "8"]
    assert (table.layers["0"].block, table.layers["3"].block, table.layers["8"].block) == (["1", "2"], ["4", "5"], [])
    entry = table.layers["3"]  # the depthwise block: timed over its channel count
    assert entry.diagonal and len(entry.out_grid) > 2 and len(entry.ms[0]) == len(entry.out_grid)
    assert entry.ms[0] == sorted(entry.ms[0])
    block, x = lt._block_probe(model[3], [model[4], model[5]], torch.Size([1, 16, 16, 16]), 16, 8)
    assert [type(m) for m in block] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
    assert block[1].num_features == 8 and block(x).shape == (1, 8, 16, 16)
    layer, x = lt._probe(model[3], torch.Size([1, 16, 16, 16]), 1, 8)
    assert (layer.in_channels, layer.out_channels, layer.groups, x.shape[1]) == (8, 8, 8, 8)
    with torch.no_grad():
        layer(x)  # a valid depthwise layer at the reduced width


@pytest.mark.slow  # imports autoprune in a fresh interpreter
def test_importing_and_timing_print_no_torch_warning() -> None:
    """torch.utils.benchmark's import logs "No CUDA runtime is found" on CPU machines: not in our output."""
    code = ("import torch, autoprune as ap; "
            "ap.measure_latency_ms(torch.nn.Linear(4, 4), torch.zeros(1, 4), min_run_time=0.01)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == "" and done.stdout == ""
