"""round_to="auto": the channel multiple read off measured latency staircases (a deterministic clock here)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from factories import use_clock

import autoprune as ap
from autoprune.builtins.models import resnet20, small_cnn
from search_spaces import SearchSpace
from search_spaces.groups import WIDE_ROUND_TO, default_round_to
from search_spaces.presets import Preset
from search_spaces.widths import STEP_GAIN, staircase_multiple


def _width(run) -> int:
    layer = run.model
    return layer.out_channels if isinstance(layer, torch.nn.Conv2d) else layer.out_features


def test_the_multiple_is_where_latency_steps_down() -> None:
    steps_of_8 = {w: float(math.ceil(w / 8)) for w in range(33, 65)}
    assert staircase_multiple(steps_of_8) == 8
    linear = {w: float(w) for w in range(33, 65)}
    assert staircase_multiple(linear) == 1  # every channel costs the same: no width is worth rounding to
    assert staircase_multiple({w: float(math.ceil(w / 16)) for w in range(33, 65)}) == 16
    small_steps = {w: 10 + (1 + STEP_GAIN / 4) ** math.ceil(w / 16) for w in range(33, 65)}
    assert staircase_multiple(small_steps) == 1  # a step smaller than STEP_GAIN buys nothing


def test_without_a_preset_wide_models_round_to_8_and_narrow_ones_keep_every_width() -> None:
    assert default_round_to([16, 32, 64]) == WIDE_ROUND_TO == 8  # the median group is wide enough
    assert default_round_to([8, 16, 16, 64]) == default_round_to([]) == 1
    assert Preset(name=None).round_to is None  # no preset: the widths decide
    wide = SearchSpace.from_model(resnet20(), torch.zeros(1, 3, 16, 16))
    assert wide.round_to == 8 and wide.fingerprint["round_to"] == 8
    assert wide["layer1.0.conv1"].kept_channels(0.3) == 8  # int(16 * 0.7) = 11, rounded down to 8
    assert SearchSpace.from_model(resnet20(), torch.zeros(1, 3, 16, 16), round_to=1).round_to == 1  # as asked
    narrow = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),
                                 torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10))
    assert SearchSpace.from_model(narrow, torch.zeros(1, 1, 8, 8)).round_to == 1
    assert SearchSpace.from_model(small_cnn(), torch.zeros(1, 1, 8, 8), preset="small_cnn").round_to == 8


@pytest.mark.parametrize(("onnx_step", "expected"), [(1, 1), (16, 16)])
def test_auto_measures_in_each_runtime_the_model_runs_in_and_a_resume_keeps_it(trained_cnn, digits, tmp_path,
                                                                              monkeypatch, onnx_step,
                                                                              expected) -> None:
    """Eager latency grows with every channel; ONNX Runtime's steps down at multiples of ``onnx_step``. An
    export to ONNX makes the search round to what ONNX Runtime's kernels want; eager alone would not."""

    def clock(run, **_setting) -> float:
        if isinstance(run.model, (torch.nn.Conv2d, torch.nn.Linear)):  # a width probe
            width = _width(run)
            return float(math.ceil(width / onnx_step) * onnx_step if run.runtime == "onnxruntime" else width)
        return 1.0

    use_clock(monkeypatch, clock)
    run = tmp_path / "run"
    options = dict(budget=ap.Budget.flops(0.6), train_data=digits.train, val_data=digits.val, searcher="uniform",
                   trials=1, evaluator={"bn_batches": 1, "finetune_steps": 0, "val_batches": 1},
                   space={"round_to": "auto"}, final={"export": ["eager", "onnx"], "measure_latency": False})
    result = ap.search(trained_cnn, digits.example_inputs(), **options, run={"dir": run})
    assert result.space.round_to == expected
    assert json.loads((run / "config.json").read_text())["space"]["round_to"] == expected
    monkeypatch.setattr("search_spaces.widths.measured_round_to", lambda *a, **k: pytest.fail("measured again"))
    resumed = ap.search(trained_cnn, digits.example_inputs(), **{**options, "trials": 2},
                        run={"dir": run, "resume": True})
    assert resumed.space.round_to == expected


def test_round_to_accepts_a_number_or_auto_only() -> None:
    with pytest.raises(ap.ConfigError, match="round_to must be a positive integer or 'auto', got 'fast'"):
        ap.SpaceOptions(round_to="fast")
