"""Pruning schedules (one-shot, iterative, AGP, constant) and recovery (finetune, rewinding, from scratch)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import autoprune as ap
from autoprune.builtins.data import DataBundle
from autoprune.builtins.models import small_cnn
from autoprune.composition.config import SearchConfig
from autoprune.prune.channels import prune
from autoprune.prune.masks import apply_masks
from search_spaces.cost import CostModel
from search_spaces.ground.errors import ConfigError
from search_spaces.measure import count_flops, count_nonzeros


def _agp(t: int, final: float, begin: int, end: int, start: float = 0.0) -> float:
    """Zhu & Gupta's formula, written out."""
    return final + (start - final) * (1 - (t - begin) / (end - begin)) ** 3


def test_agp_ratios_follow_zhu_and_gupta_at_every_step() -> None:
    schedule = ap.PruningSchedule("agp", steps=40, begin_step=4, end_step=24, frequency=5, initial_sparsity=0.1)
    assert schedule.events() == [4, 9, 14, 19, 24]
    for step in range(41):
        last_event = max((t for t in schedule.events() if t <= step), default=None)
        expected = 0.0 if last_event is None else _agp(last_event, 0.9, 4, 24, 0.1)
        assert schedule.ratio_at(step, 0.9) == pytest.approx(expected)
    assert schedule.ratio_at(24, 0.9) == 0.9 and schedule.ratio_at(40, 0.9) == 0.9


def test_iterative_removes_the_same_fraction_of_what_is_left_at_each_stage() -> None:
    schedule = ap.PruningSchedule("iterative", steps=30, stages=3, end_step=15)
    assert schedule.events() == [5, 10, 15]
    kept = [1 - schedule.ratio_at(t, 0.875) for t in schedule.events()]
    assert kept == pytest.approx([0.5, 0.25, 0.125])  # halves what is left each time: (1 - 0.875) ** (j / 3)
    assert schedule.ratio_at(4, 0.875) == 0.0


def test_one_shot_and_constant_prune_once() -> None:
    assert ap.PruningSchedule("one_shot", steps=10).events() == [0]
    constant = ap.PruningSchedule("constant", steps=10, begin_step=3)
    assert constant.events() == [3] and constant.ratio_at(2, 0.5) == 0.0 and constant.ratio_at(3, 0.5) == 0.5


@pytest.mark.parametrize(("value", "match"), [
    ("cubic", "'cubic'"), ({"kind": "agp", "frequnecy": 3}, "frequnecy"), ({"kind": "agp", "steps": -1}, "-1"),
    ({"kind": "agp", "steps": 10, "end_step": 20}, "end_step=20"), ({"initial_sparsity": 1.0}, "1.0"), (3, "3"),
])
def test_bad_schedules_are_refused_by_name(value, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ap.PruningSchedule.from_value(value)


def test_a_final_schedule_without_steps_takes_the_final_steps_and_is_checked_against_them_at_once(
    trained_cnn, digits: DataBundle
) -> None:
    early = ap.FinalConfig(steps=300, schedule={"kind": "agp", "end_step": 100})
    assert (early.schedule.steps, early.schedule.last_step, early.schedule.events()[-1]) == (300, 100, 100)
    with pytest.raises(ConfigError, match="end_step=400"):
        ap.FinalConfig(steps=300, schedule={"kind": "agp", "end_step": 400})
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs, granularity="element")
    with pytest.raises(ConfigError, match=r"step 7\) lies past its steps=0"):
        ap.prune_gradually(trained_cnn, space.policy({g.name: 0.5 for g in space}), inputs, train_data=digits.train,
                           schedule=ap.PruningSchedule("agp", end_step=7), space=space)


def test_gradual_element_pruning_reaches_the_exact_one_shot_count(trained_cnn, digits: DataBundle) -> None:
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs, granularity="element")
    policy = space.policy({g.name: min(0.9, g.max_ratio) for g in space})
    schedule = ap.PruningSchedule("agp", steps=12, end_step=8, frequency=2)
    result = ap.prune_gradually(trained_cnn, policy, inputs, train_data=digits.train, schedule=schedule, space=space)
    assert count_nonzeros(result.model) <= CostModel(space).cost(policy).nonzeros
    masks = {n: m for n, m in result.model.named_buffers() if n.endswith("weight_mask")}
    assert {n.removesuffix(".weight_mask"): int(m.sum()) for n, m in masks.items()} == {
        g.name: g.kept_channels(policy[g.name]) for g in space}


def test_the_sparsity_after_each_event_is_the_schedules(trained_cnn) -> None:
    """What prune_gradually applies at each event, step by step: masks grow and never revive a pruned weight."""
    model = copy.deepcopy(trained_cnn)
    name, module = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    schedule = ap.PruningSchedule("agp", steps=10, end_step=9, frequency=3)
    numel, previous = module.weight.numel(), None
    for event in schedule.events():
        ratio = schedule.ratio_at(event, 0.8)
        apply_masks(model, {name: int(numel * (1 - ratio))})
        mask = module.weight_mask.bool()
        assert int(mask.sum()) == int(numel * (1 - ratio))
        if previous is not None:
            assert not (mask & ~previous).any()
        previous = mask


def test_channels_removed_in_stages_give_the_one_shot_architecture_and_reload(
    trained_cnn, digits: DataBundle, tmp_path: Path
) -> None:
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs)
    policy = space.policy({g.name: min(0.5, g.max_ratio) for g in space})
    staged = ap.prune_gradually(trained_cnn, policy, inputs, train_data=digits.train,
                                schedule=ap.PruningSchedule("iterative", steps=6, stages=3, end_step=6), space=space)
    one_shot = prune(trained_cnn, policy, inputs, space=space).model
    assert count_flops(staged.model, inputs) == count_flops(one_shot, inputs) == CostModel(space).cost(policy).flops
    ap.export_model(staged.model, inputs, tmp_path, ["eager"], history=staged.history)
    fresh = small_cnn(in_channels=1)
    ap.load_pruned_model(fresh, tmp_path, inputs)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(inputs), staged.model.eval()(inputs))


def test_weight_rewinding_restarts_the_surviving_weights_from_the_early_checkpoint(trained_cnn, digits) -> None:
    inputs = digits.example_inputs()
    early = {k: v.clone() * 0.5 for k, v in trained_cnn.state_dict().items()}
    for space in (ap.SearchSpace.from_model(trained_cnn, inputs),
                  ap.SearchSpace.from_model(trained_cnn, inputs, granularity="element")):
        policy = space.policy({g.name: min(0.5, g.max_ratio) for g in space})
        pruned = prune(trained_cnn, policy, inputs, space=space)
        rewound = ap.recover(trained_cnn, pruned, inputs, strategy="weight_rewind", train_data=digits.train,
                             steps=0, lr=0.01, train_lr=0.05, bn_batches=0, rewind_state=early)
        got, want = ap.make_permanent(rewound).state_dict(), ap.make_permanent(pruned.model).state_dict()
        conv = next(k for k in want if k.endswith("weight") and want[k].dim() == 4)
        assert got[conv].shape == want[conv].shape
        assert torch.equal(got[conv] != 0, want[conv] != 0)  # the same survivors
        assert torch.allclose(got[conv], want[conv] * 0.5)  # at their early values


def test_scratch_keeps_the_architecture_and_masks_but_not_the_weights(trained_cnn, digits) -> None:
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs, granularity="element")
    pruned = prune(trained_cnn, space.policy({g.name: 0.7 for g in space}), inputs, space=space)
    fresh = ap.recover(trained_cnn, pruned, inputs, strategy="scratch", train_data=digits.train, steps=0, lr=0.01,
                       train_lr=0.05, bn_batches=0)
    for name in space.names:
        old, new = dict(pruned.model.named_modules())[name].weight, dict(fresh.named_modules())[name].weight
        assert torch.equal(old != 0, new != 0) and not torch.allclose(old, new)


def test_recovery_options_are_checked(trained_cnn, digits) -> None:
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs)
    pruned = prune(trained_cnn, space.policy({g.name: 0.3 for g in space}), inputs, space=space)
    with pytest.raises(ConfigError, match="'retrain'"):
        ap.recover(trained_cnn, pruned, inputs, strategy="retrain", train_data=digits.train, steps=1, lr=0.01,
                   train_lr=0.05)
    with pytest.raises(ConfigError, match="rewind_state"):
        ap.recover(trained_cnn, pruned, inputs, strategy="weight_rewind", train_data=digits.train, steps=1,
                   lr=0.01, train_lr=0.05)
    with pytest.raises(ConfigError, match="one-shot"):
        ap.FinalConfig(schedule="agp", recovery="scratch")


def test_a_search_with_an_agp_final_schedule_and_lr_rewinding(trained_cnn, digits, tmp_path: Path) -> None:
    common = {"budget": ap.Budget.nonzeros(0.3), "space": {"granularity": "element"}, "train_data": digits.train,
              "val_data": digits.val, "searcher": "uniform", "trials": 1,
              "evaluator": {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}}
    final = {"steps": 6, "measure_latency": False}
    gradual = ap.search(trained_cnn, digits.example_inputs(), **common,
                        final={**final, "schedule": {"kind": "agp", "frequency": 1}}, run={"dir": tmp_path / "agp"})
    rewound = ap.search(trained_cnn, digits.example_inputs(), **common, final={**final, "recovery": "lr_rewind"})
    for result in (gradual, rewound):
        assert result.summary.nonzeros_ratio is not None and result.summary.pruned.nonzeros <= 0.3 * sum(
            p.numel() for p in trained_cnn.parameters())
    assert gradual.config["final_schedule"]["kind"] == "agp"


@pytest.mark.parametrize("schedule", ["one_shot", "agp"])
def test_the_final_training_distills_from_the_unpruned_model_when_asked(trained_cnn, digits, monkeypatch,
                                                                         schedule) -> None:
    """Every final step (one-shot recovery or a gradual schedule) trains against the unpruned model's outputs."""
    from autoprune.evaluation import evaluator as evaluation

    taught = []
    plain_loss = evaluation.recovery_loss

    def spy(logits, targets, teacher_logits=None, **kwargs):
        taught.append(teacher_logits is not None)
        return plain_loss(logits, targets, teacher_logits, **kwargs)

    monkeypatch.setattr(evaluation, "recovery_loss", spy)
    common = {"budget": ap.Budget.flops(0.6), "train_data": digits.train, "val_data": digits.val,
              "searcher": "uniform", "trials": 1, "evaluator": {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}}
    final = {"steps": 4, "measure_latency": False, "schedule": {"kind": schedule, "frequency": 1}}
    weights = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    distilled = ap.search(trained_cnn, digits.example_inputs(), **common, final=final)  # distilling is the default
    assert taught == [True] * 4 and distilled.summary.final_settings["distill"] is True
    taught.clear()
    plain = ap.search(trained_cnn, digits.example_inputs(), **common, final={**final, "distill": False})
    assert taught == [False] * 4 and "distill" not in plain.summary.final_settings
    assert all(torch.equal(weights[k], v) for k, v in trained_cnn.state_dict().items())  # the teacher is a copy
    with pytest.raises(ConfigError, match="final distill must be true or false, got 'yes'"):
        ap.FinalConfig(distill="yes")
    with pytest.raises(ConfigError, match="'final_distill' must be true or false, got 1"):
        SearchConfig(final_distill=1)
