from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from conftest import ARCHITECTURES
from torch import nn

from autoprune import apply_policy
from search_spaces import Preset, SearchSpace, available_presets, load_preset
from search_spaces.cost import CostModel
from search_spaces.ground.errors import ConfigError, TraceError, UnknownNameError
from search_spaces.measure import count_flops, count_params


def _space(name: str, **options):
    factory, shape = ARCHITECTURES[name]
    model = factory().eval()
    inputs = torch.randn(*shape)
    return model, inputs, SearchSpace.from_model(model, inputs, **options)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_analytic_cost_equals_real_pruning(name: str) -> None:
    model, inputs, space = _space(name)
    cost_model = CostModel(space)
    assert cost_model.cost({}).flops == count_flops(model, inputs) == space.base_flops
    assert cost_model.cost({}).params == count_params(model)
    rng = random.Random(0)
    for _ in range(2):
        policy = space.policy({g.name: rng.uniform(0, g.max_ratio) for g in space})
        pruned = apply_policy(model, policy, inputs)
        predicted = cost_model.cost(policy)
        assert (predicted.flops, predicted.params) == (count_flops(pruned, inputs), count_params(pruned))
        assert predicted.flops < space.base_flops
        assert pruned(inputs).shape == model(inputs).shape


def test_residual_stages_are_one_group_each() -> None:
    _, _, space = _space("resnet20")
    # 3 stages (stem + residual adds) + 9 blocks' inner conv1 = 12 groups; the classifier is excluded
    assert len(space) == 12
    assert "fc" not in space
    stage = space["conv1"]
    assert {"layer1.0.bn2", "layer1.2.bn2", "bn1"} <= set(stage.members)
    assert space.names[0] == "conv1"  # network order


def test_depthwise_channels_are_coupled_with_their_expansion() -> None:
    _, _, space = _space("mobilenet_v2", preset="mobilenet_v2")
    depthwise = [g for g in space if g.features["op_type"] == 2.0]
    assert depthwise, "MobileNetV2 must have depthwise groups"
    for group in depthwise:
        assert len({m.rsplit(".", 2)[0] for m in group.members}) == 1  # expansion + depthwise of one block
    assert "features.0.0" in space.ignored


def test_concat_groups_are_separate_and_shares_sum_sensibly() -> None:
    _, _, space = _space("small_cnn")
    assert space.names == ("stem.0", "branch_a.0", "branch_b.0", "head.0")
    assert "classifier" not in space
    assert all(0 < g.flops_share <= 1 and 0 < g.params_share <= 1 for g in space)


def test_names_are_stable_across_instances_and_policy_transfers() -> None:
    _, inputs, space_a = _space("resnet20")
    model_b, _, space_b = _space("resnet20")
    assert space_a.names == space_b.names and space_a.fingerprint == space_b.fingerprint
    policy = space_a.policy([0.5] * len(space_a))
    policy.validate(space_b)
    assert count_params(apply_policy(model_b, policy, inputs)) < count_params(model_b)


def test_space_pickles_without_module_references() -> None:
    _, _, space = _space("resnet20")
    clone = pickle.loads(pickle.dumps(space))
    assert clone.names == space.names
    assert CostModel(clone).cost(space.max_ratios) == CostModel(space).cost(space.max_ratios)


def test_round_to_keeps_multiples() -> None:
    model, inputs, space = _space("resnet20", round_to=8)
    policy = space.policy({g.name: min(0.37, g.max_ratio) for g in space})
    pruned = apply_policy(model, policy, inputs, round_to=8)
    for module in pruned.modules():
        if isinstance(module, nn.Conv2d) and module.out_channels != 10:
            assert module.out_channels % 8 == 0, module
    assert all(g.kept_channels(g.max_ratio) >= 8 for g in space)


def test_ignore_and_option_errors_name_the_bad_value() -> None:
    factory, shape = ARCHITECTURES["resnet20"]
    model, inputs = factory(), torch.zeros(*shape)
    space = SearchSpace.from_model(model, inputs, ignore=["layer1.0.conv1"])
    assert "layer1.0.conv1" not in space and len(space) == 11
    with pytest.raises(ConfigError, match="nope"):
        SearchSpace.from_model(model, inputs, ignore=["nope"])
    with pytest.raises(ConfigError, match="round_to"):
        SearchSpace.from_model(model, inputs, round_to=0)
    with pytest.raises(ConfigError, match="max_ratio"):
        SearchSpace.from_model(model, inputs, max_ratio=1.5)
    with pytest.raises(ConfigError, match="example_inputs"):
        SearchSpace.from_model(model, "not a tensor")
    with pytest.raises(ConfigError, match="no channel group named 'x'"):
        space["x"]


def test_untraceable_models_get_a_clear_error() -> None:
    factory, _ = ARCHITECTURES["resnet20"]
    with pytest.raises(TraceError, match="cannot run .*CifarResNet"):
        SearchSpace.from_model(factory(), torch.zeros(1, 5, 16, 16))  # wrong channel count

    class NoLayers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(TraceError, match="no Conv or Linear"):
        SearchSpace.from_model(NoLayers(), torch.zeros(1, 3))


def test_presets_load_and_unknown_preset_is_rejected() -> None:
    assert {"resnet20", "resnet56", "mobilenet_v2", "small_cnn"} <= set(available_presets())
    for name in available_presets():
        assert 0 < load_preset(name).max_ratio < 1
    with pytest.raises(UnknownNameError, match="'nope'.*resnet20"):
        load_preset("nope")


@pytest.mark.parametrize(("entry", "message"), [
    ("max_ratio: high", "max_ratio must be a number in \\(0, 1\\), got 'high'"),
    ("max_ratio: 1.5", "max_ratio must be a number in \\(0, 1\\), got 1.5"),
    ("round_to: 2.7", "round_to must be an integer >= 1, got 2.7"),
    ("round_to: true", "round_to must be an integer >= 1, got True"),
    ("ignore: conv1", "ignore must be a list of module names, got 'conv1'"),
    ("ratio_bounds: {conv1: -0.2}", "ratio_bounds\\['conv1'\\] must be a number in \\[0, 1\\], got -0.2"),
    ("ratio_bounds: {conv1: lots}", "ratio_bounds\\['conv1'\\] must be a number in \\[0, 1\\], got 'lots'"),
    ("ratio_bounds: {null: 0.2}", "ratio_bounds keys are group names, got None"),
    ("ratio_bounds: [conv1]", "ratio_bounds must map group names to ratios, got \\['conv1'\\]"),
])
def test_a_preset_file_with_a_bad_value_is_refused_naming_it(tmp_path, entry: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(entry + "\n")
    with pytest.raises(ConfigError, match=f"preset 'mine': {message}"):
        load_preset(path)


def test_a_preset_bounding_a_group_the_model_lacks_is_refused_with_the_groups_it_has(tmp_path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("ratio_bounds: {layer1.0.conv2: 0.3}\n")
    with pytest.raises(ConfigError, match=r"bounds groups .* does not have: \['layer1.0.conv2'\].*layer1.0.conv1"):
        _space("resnet20", preset=path)
    path.write_text("ratio_bounds: {layer1.0.conv1: 0.3}\n")
    _, _, space = _space("resnet20", preset=path)
    assert space["layer1.0.conv1"].max_ratio == pytest.approx(0.3)
    path.write_text("ratio_bounds: {layer1.0.conv1: 0.3}\nignore: [layer1]\n")  # its whole block left out
    _, _, space = _space("resnet20", preset=path)
    assert "layer1.0.conv1" not in space


def test_presets_take_what_yaml_and_python_naturally_give(tmp_path) -> None:
    preset = Preset(name=None, ignore=["features.0"], max_ratio=np.float32(0.5), round_to=np.int64(8),
                    ratio_bounds={0: 1.0})  # a Sequential's group 0, as YAML reads it; a bound of 1 caps nothing
    assert (preset.ignore, preset.max_ratio, preset.round_to, preset.ratio_bounds) == (
        ("features.0",), 0.5, 8, {"0": 1.0})
    (tmp_path / "empty.yaml").write_text("ignore:\nratio_bounds:\n")
    assert load_preset(tmp_path / "empty.yaml").ignore == ()
