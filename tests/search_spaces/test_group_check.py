"""The trace-time group check: grouped convs prune in whole parts, groups that break are excluded (with a
reason), loose parameters are costed, and nothing prunable is a TraceError."""

from __future__ import annotations

import logging
import pickle
import random
import signal
import time
import warnings

import pytest
import torch
from factories import FixedSplit
from torch import nn

from autoprune import apply_policy
from autoprune.prune.channels import prune
from search_spaces import SearchSpace, group_check, surgery
from search_spaces.cost import CostModel
from search_spaces.ground.errors import ConfigError, PolicyError, TraceError
from search_spaces.measure import count_flops, count_params


class GroupedBlock(nn.Module):
    """A ResNeXt-style bottleneck: 1x1 -> grouped 3x3 (4 groups) -> 1x1, with GroupNorm in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.reduce = nn.Conv2d(16, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(4, 32)
        self.expand = nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.expand(torch.relu(self.norm(self.grouped(torch.relu(self.reduce(x))))))
        return self.head(x.mean((2, 3)))


class OnlySplit(nn.Module):
    """Its one prunable group feeds a fixed-size split: nothing can be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.body(x), [8, 8], dim=1)
        return self.head((a * b).mean((2, 3)))


class LayerScale(nn.Module):
    """A conv block whose output is scaled by a per-channel parameter outside any Conv/Linear/Norm layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv2d(16, 16, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(16, 1, 1))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.gamma * self.mix(x)
        return self.head(x.mean((2, 3)))


class Shuffle(nn.Module):
    """A channel shuffle (ShuffleNet): a reshape that splits the channel dimension, then a transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv2d(16, 16, 1)
        self.body = nn.Conv2d(16, 24, 3, padding=1)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.head(torch.relu(self.body(self.mix(x))).mean((2, 3)))


INPUTS = torch.randn(1, 3, 8, 8)


def test_grouped_convs_prune_in_whole_parts_and_the_cost_model_stays_exact() -> None:
    model = GroupedBlock().eval()
    space = SearchSpace.from_model(model, INPUTS, round_to=1)  # the parts alone set the multiple
    assert space.excluded == {}
    grouped = space["reduce"]  # reduce's outputs are the grouped conv's inputs; grouped's outputs its own group
    assert grouped.channel_groups == 4 and grouped.round_to == 4 and space["grouped"].channel_groups == 4
    assert grouped.kept_channels(0.3) % 4 == 0 and grouped.kept_channels(grouped.max_ratio) == 4
    cost_model = CostModel(space)
    rng = random.Random(0)
    for _ in range(3):
        policy = space.policy({g.name: rng.uniform(0, g.max_ratio) for g in space})
        pruned = apply_policy(model, policy, INPUTS)
        assert pruned.grouped.groups == 4 and pruned.grouped.out_channels == space["grouped"].kept_channels(
            policy["grouped"])
        assert (count_flops(pruned, INPUTS), count_params(pruned)) == (cost_model.cost(policy).flops,
                                                                       cost_model.cost(policy).params)


def test_a_group_that_breaks_when_pruned_is_excluded_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    model = FixedSplit().eval()
    with caplog.at_level(logging.WARNING, logger="search_spaces.space"):
        space = SearchSpace.from_model(model, INPUTS)
    assert set(space.excluded) == {"body"} and "split" in space.excluded["body"]
    assert "body" not in space and {"stem", "left"} <= set(space.names)
    assert "1 of" in caplog.text and "body" in caplog.text
    unchecked = SearchSpace.from_model(model, INPUTS, check=False)
    assert "body" in unchecked and unchecked.excluded == {}
    # what is left prunes, and the cost model counts the excluded group's channels as kept
    policy = space.policy({g.name: g.max_ratio for g in space})
    pruned = prune(model, policy, INPUTS, space=space).model
    assert pruned(INPUTS).shape == (1, 5) and pruned.body.out_channels == 16
    assert count_flops(pruned, INPUTS) == CostModel(space).cost(policy).flops
    with pytest.raises(PolicyError, match="body"):
        space.policy({"body": 0.5})


@pytest.mark.parametrize("broken", [set(), {"g3"}, {"g0", "g7"}, {"g1", "g2", "g5", "g6"}, {f"g{i}" for i in range(8)}])
def test_halving_finds_exactly_the_broken_groups_and_skips_checks_it_can_infer(broken: set[str]) -> None:
    names = [f"g{i}" for i in range(8)]
    checked: list[list[str]] = []

    def check(subset: list[str]) -> str | None:
        checked.append(subset)
        bad = sorted(broken & set(subset))
        return f"{bad} break" if bad else None

    found = group_check.broken_groups(names, check)
    assert found == {name: f"[{name!r}] break" for name in sorted(broken)}
    if len(broken) == 1:  # the half beside a passing half fails for sure: it is split unchecked
        assert len(checked) == 6 and ["g2", "g3"] not in checked  # 7 without the inference


def test_nothing_prunable_is_a_trace_error_that_says_why() -> None:
    with pytest.raises(TraceError, match=r"no channel group of .*OnlySplit can be pruned safely.*body.*split"):
        SearchSpace.from_model(OnlySplit().eval(), INPUTS)


def test_parameters_outside_layers_are_pruned_and_costed(caplog: pytest.LogCaptureFixture) -> None:
    model = LayerScale().eval()
    with warnings.catch_warnings(record=True) as raised, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        space = SearchSpace.from_model(model, INPUTS)
    assert not [w for w in raised if "torch_pruning" in w.filename or "Unwrapped" in str(w.message)]
    assert [r.getMessage() for r in caplog.records if "gamma" in r.getMessage()] == [
        f"{type(model).__module__}.LayerScale: 1 parameters outside Conv/Linear/Norm layers (gamma) are pruned along "
        "their channel dimension; the group check excludes groups this breaks"]
    assert space.excluded == {} and "gamma" in {layer.name for layer in space.layers}
    (group,) = space  # stem, mix and gamma are one group (the residual add)
    policy = space.policy({group.name: group.max_ratio})
    pruned = apply_policy(model, policy, INPUTS)
    assert pruned.gamma.shape[0] == group.kept_channels(group.max_ratio) < 16
    assert count_params(pruned) == CostModel(space).cost(policy).params


class DeepConcat(nn.Module):
    """Nine nested concatenations of activations: more than Torch-Pruning's recursion limit can count through."""

    def __init__(self, depth: int = 9) -> None:
        super().__init__()
        self.depth = depth
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4 * 2**depth, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(self.depth):
            x = torch.cat([torch.relu(x), torch.sigmoid(x)], 1)
        return self.fc(self.head(x).mean((2, 3)))


def test_torch_prunings_recursion_warning_is_one_line_of_ours_and_what_it_breaks_is_excluded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    SearchSpace.from_model(GroupedBlock().eval(), INPUTS)  # installs the index-mapping stand-in
    monkeypatch.setattr(surgery.tp.dependency.graph.index_mapping, "reported", set())  # once per process
    model = DeepConcat().eval()
    inputs = torch.zeros(1, 3, 8, 8)
    with warnings.catch_warnings(record=True) as raised, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        space = SearchSpace.from_model(model, inputs)
        SearchSpace.from_model(model, inputs)
    assert not [w for w in raised if "recursive" in str(w.message)]
    ours = [r.getMessage() for r in caplog.records if r.name == "search_spaces.surgery"]
    assert ours == ["Torch-Pruning cannot follow every concatenation's channels ('Maximum recursive depth reached!'); "
                    "the group check (check=True, the default) excludes the groups this breaks"]
    assert set(space.excluded) == {"stem"} and space.names == ("head",)
    policy = space.policy({"head": space["head"].max_ratio})
    assert prune(model, policy, inputs, space=space).model(inputs).shape == (1, 3)


def test_excluded_groups_survive_pickling_and_without_keeps_the_rest() -> None:
    space = SearchSpace.from_model(FixedSplit().eval(), INPUTS)
    clone = pickle.loads(pickle.dumps(space))
    assert clone.excluded == space.excluded and clone.names == space.names
    smaller = space.without({"left": "by hand"})
    assert smaller.names == tuple(n for n in space.names if n != "left")
    assert [g.index for g in smaller] == list(range(len(smaller)))
    assert smaller.excluded == {**space.excluded, "left": "by hand"}
    assert CostModel(smaller).cost({}).flops == space.base_flops


def test_a_channel_shuffle_is_cut_out_and_what_breaks_there_is_excluded() -> None:
    model = Shuffle().eval()
    space = SearchSpace.from_model(model, INPUTS)
    assert set(space.excluded) == {"stem"} and "stem" not in space and {"mix", "body"} <= set(space.names)
    policy = space.policy({g.name: g.max_ratio for g in space})
    pruned = prune(model, policy, INPUTS, space=space).model
    assert pruned(INPUTS).shape == (1, 5) and count_flops(pruned, INPUTS) == CostModel(space).cost(policy).flops


def test_tracing_past_its_time_limit_is_a_trace_error_naming_the_group_torch_pruning_was_building(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def endless(graph, root):  # Torch-Pruning's walk stuck on one block, as it was for minutes on some models
        while True:
            pass

    model, x = GroupedBlock().eval(), torch.randn(1, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handler = signal.getsignal(signal.SIGPROF)
    monkeypatch.setattr(surgery, "root_group", endless)
    start = time.process_time()
    with pytest.raises(TraceError, match=r"GroupedBlock .*more than 1 s of CPU time \(Torch-Pruning building the "
                                         r"channel group of (stem|reduce|grouped|expand)\): .*ignore=.*time_limit"):
        SearchSpace.from_model(model, x, time_limit=1)
    assert time.process_time() - start < 10
    assert signal.getsignal(signal.SIGPROF) is handler and signal.getitimer(signal.ITIMER_PROF)[0] == 0
    monkeypatch.undo()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len(SearchSpace.from_model(model, x, time_limit=None)) > 0


def test_a_time_limit_during_the_group_check_leaves_the_model_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_count(model, inputs):
        while True:
            pass

    model, x = GroupedBlock().eval(), torch.randn(1, 3, 8, 8)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    monkeypatch.setattr(group_check, "run_counting_flops", slow_count)
    with pytest.raises(TraceError, match=r"more than 1 s of CPU time \(pruning and running the groups of .* to check"):
        SearchSpace.from_model(model, x, time_limit=1)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes  # put back although interrupted


@pytest.mark.parametrize("bad", [0, -1.0, "10"])
def test_time_limit_must_be_positive_seconds(bad) -> None:
    with pytest.raises(ConfigError, match=f"time_limit must be a positive number of seconds or None, got {bad!r}"):
        SearchSpace.from_model(GroupedBlock().eval(), torch.randn(1, 3, 8, 8), time_limit=bad)


def test_checking_a_model_in_training_mode_leaves_its_batchnorm_statistics_and_mode_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SearchSpace.from_model(model, INPUTS)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
