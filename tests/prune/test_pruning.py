from __future__ import annotations

import pytest
import torch

from autoprune import Policy, apply_policy, load_pruned_model
from autoprune.builtins.models import resnet20, small_cnn
from autoprune.prune.channels import IMPORTANCES, prune
from autoprune.prune.export import save_pruned_model
from search_spaces import SearchSpace
from search_spaces.ground.errors import ConfigError, DataError, PolicyError, UnknownNameError
from search_spaces.measure import count_params


@pytest.fixture()
def setup():
    model = resnet20().eval()
    inputs = torch.randn(2, 3, 16, 16)
    space = SearchSpace.from_model(model, inputs)
    return model, inputs, space


def test_apply_returns_new_smaller_model_and_leaves_original(setup) -> None:
    model, inputs, space = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    policy = space.policy([0.5] * len(space))
    pruned = apply_policy(model, policy, inputs)
    assert pruned is not model
    assert count_params(pruned) < 0.5 * count_params(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned.layer1[0].conv1.out_channels == 8  # int(16 * 0.5)
    assert pruned(inputs).shape == (2, 10)


@pytest.mark.parametrize("importance", sorted(IMPORTANCES))
def test_every_importance_criterion_prunes(setup, importance: str) -> None:
    model, inputs, space = setup
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))]
    pruned = apply_policy(model, space.policy([0.3] * len(space)), inputs, importance=importance, data=batches)
    assert count_params(pruned) < count_params(model)


def test_l1_keeps_the_largest_filters() -> None:
    model = small_cnn().eval()
    inputs = torch.zeros(1, 1, 8, 8)
    space = SearchSpace.from_model(model, inputs)
    with torch.no_grad():
        model.branch_b[0].weight.mul_(0.01)
        model.branch_b[0].weight[:8] *= 1000  # the 8 largest filters
    ratios = dict.fromkeys(space.names, 0.0) | {"branch_b.0": 0.75}
    result = prune(model, space.policy(ratios), inputs)
    assert result.model.branch_b[0].out_channels == 8
    assert torch.allclose(result.model.branch_b[0].weight, model.branch_b[0].weight[:8])


def test_bad_importance_and_missing_gradient_data(setup) -> None:
    model, inputs, space = setup
    policy = space.policy([0.3] * len(space))
    with pytest.raises(UnknownNameError, match="'l7'.*l1"):
        apply_policy(model, policy, inputs, importance="l7")
    with pytest.raises(DataError, match="taylor"):
        apply_policy(model, policy, inputs, importance="taylor")


def test_policy_for_other_model_non_root_or_output_layer_is_rejected(setup) -> None:
    model, inputs, space = setup
    other = SearchSpace.from_model(small_cnn(), torch.zeros(1, 1, 8, 8))
    with pytest.raises(PolicyError, match="made for architecture .*SmallCNN"):
        apply_policy(model, other.policy([0.2] * 4), inputs)
    with pytest.raises(PolicyError, match=r"unknown groups \['layer1.0.conv2'\]"):
        apply_policy(model, Policy({"layer1.0.conv2": 0.5}), inputs)
    with pytest.raises(PolicyError, match=r"unknown groups \['fc'\]"):  # the classifier output is never pruned
        apply_policy(model, Policy({"fc": 0.5}), inputs)
    wrong = Policy(dict.fromkeys(space.names, 0.2), fingerprint={**space.fingerprint, "groups": {"conv1": 32}})
    with pytest.raises(PolicyError, match="conv1: 32 vs 16"):
        apply_policy(model, wrong, inputs)


def test_policy_remembers_round_to(setup) -> None:
    model, inputs, _ = setup
    space8 = SearchSpace.from_model(model, inputs, round_to=8)
    policy = space8.policy({g.name: min(0.3, g.max_ratio) for g in space8})
    pruned = apply_policy(model, policy, inputs)  # no round_to given: the policy's is used
    assert pruned.layer1[0].conv1.out_channels == 8  # int(16 * 0.7) = 11 -> rounded down to 8
    with pytest.raises(PolicyError, match="round_to=8.*round_to=1"):
        policy.validate(SearchSpace.from_model(model, inputs, round_to=1))


def test_saved_pruned_model_reloads_into_fresh_instance(setup, tmp_path) -> None:
    model, inputs, space = setup
    result = prune(model, space.policy([0.4] * len(space)), inputs)
    save_pruned_model(tmp_path / "m", result.model, result.history)
    fresh = load_pruned_model(resnet20(), tmp_path / "m", inputs).eval()
    result.model.eval()
    assert count_params(fresh) == count_params(result.model)
    assert torch.allclose(fresh(inputs), result.model(inputs))


def test_a_plain_mapping_is_a_policy_and_anything_else_is_refused_by_name(setup) -> None:
    model, inputs, space = setup
    ratios = {name: 0.5 for name in space.names}
    from_mapping = apply_policy(model, ratios, inputs)
    from_policy = apply_policy(model, Policy(ratios), inputs)
    assert count_params(from_mapping) == count_params(from_policy) < count_params(model)
    with pytest.raises(ConfigError, match="a policy is an autoprune Policy or a mapping group name -> ratio, got list"):
        apply_policy(model, [0.5] * len(space), inputs)
