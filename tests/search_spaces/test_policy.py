from __future__ import annotations

import json
import logging

import pytest
import torch

from autoprune import Policy
from autoprune.builtins.models import build_model, resnet20, small_cnn
from autoprune.prune.channels import prune
from search_spaces import SearchSpace
from search_spaces.ground.errors import PolicyError


@pytest.fixture()
def space() -> SearchSpace:
    return SearchSpace.from_model(small_cnn(), torch.zeros(1, 1, 8, 8))


def test_json_round_trip_keeps_everything(space: SearchSpace, tmp_path) -> None:
    policy = space.policy([0.1, 0.2, 0.3, 0.4]).with_metadata(
        budget={"metric": "flops", "fraction": 0.5, "absolute": None}, scores={"accuracy": 0.9}
    )
    path = policy.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["fingerprint"]["groups"]["stem.0"] == 32
    loaded = Policy.load(path)
    assert loaded == policy and dict(loaded.ratios) == dict(policy.ratios)
    assert loaded.fingerprint == policy.fingerprint and loaded.scores == {"accuracy": 0.9}
    loaded.validate(space)


def test_policy_is_frozen(space: SearchSpace) -> None:
    policy = space.policy([0.1] * 4)
    with pytest.raises(TypeError):
        policy.ratios["stem.0"] = 0.5  # type: ignore[index]
    with pytest.raises(AttributeError):
        policy.ratios = {}  # type: ignore[misc]


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_out_of_range_ratios_are_rejected(value) -> None:
    with pytest.raises(PolicyError, match="stem.0"):
        Policy({"stem.0": value})


def test_unknown_and_missing_groups_are_named(space: SearchSpace) -> None:
    ratios = {n: 0.1 for n in space.names if n != "head.0"}
    ratios["bogus.conv"] = 0.2
    with pytest.raises(PolicyError, match=r"unknown groups \['bogus.conv'\].*missing groups \['head.0'\]"):
        Policy(ratios).validate(space)


def test_ratio_above_group_max_is_rejected(space: SearchSpace) -> None:
    with pytest.raises(PolicyError, match=r"branch_a.0=0.9000 \(max 0.7500\)"):
        Policy({n: 0.9 if n == "branch_a.0" else 0.0 for n in space.names}).validate(space)


def test_policy_for_another_architecture_is_rejected(space: SearchSpace) -> None:
    other = SearchSpace.from_model(resnet20(), torch.zeros(1, 3, 16, 16))
    policy = other.policy([0.2] * len(other))
    with pytest.raises(PolicyError, match="CifarResNet.*not.*SmallCNN"):
        policy.validate(space)
    wide = SearchSpace.from_model(small_cnn(in_channels=1), torch.zeros(1, 1, 8, 8))
    fingerprint = {"architecture": wide.architecture, "groups": {**wide.fingerprint["groups"], "stem.0": 16}}
    with pytest.raises(PolicyError, match="stem.0: 16 vs 32"):
        Policy(dict.fromkeys(wide.names, 0.1), fingerprint=fingerprint).validate(wide)


def test_a_policy_for_a_shallower_model_of_the_same_class_is_applied_with_a_warning(caplog) -> None:
    inputs = torch.zeros(1, 3, 16, 16)
    shallow = SearchSpace.from_model(resnet20(), inputs)
    deep_model = build_model("resnet56", in_channels=3, num_classes=10)
    policy = shallow.policy([0.2] * len(shallow))
    with caplog.at_level(logging.WARNING, logger="search_spaces.policy"):
        prune(deep_model, policy, inputs)
    deep = len(SearchSpace.from_model(deep_model, inputs, check=False, max_ratio=0.999))
    assert f"made on a space of {len(shallow)} channel groups; this autoprune.builtins.models.CifarResNet has {deep}" \
        in caplog.text and deep > len(shallow)
    assert "another depth or width of CifarResNet" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search_spaces.policy"):
        prune(resnet20(), policy, inputs)
    assert not caplog.text  # the model it was made for: nothing to say


def test_loading_bad_files_raises_policy_error(tmp_path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.load(bad)
    bad.write_text(json.dumps({"kind": "search_spaces.policy", "schema_version": 99, "ratios": {}}))
    with pytest.raises(PolicyError, match="schema_version 99"):
        Policy.load(bad)
    bad.write_text(json.dumps({"ratios": {}}))
    with pytest.raises(PolicyError, match="not an autoprune policy"):
        Policy.load(bad)
