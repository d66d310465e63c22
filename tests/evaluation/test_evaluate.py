from __future__ import annotations

import math

import pytest
import torch

from autoprune import Budget, CostModel
from autoprune.evaluation.evaluator import Evaluator, EvaluatorConfig, recalibrate_batchnorm
from search_spaces import SearchSpace
from search_spaces.ground.errors import ConfigError, DataError, UnknownNameError


def _evaluator(model, digits, **config) -> tuple[Evaluator, SearchSpace]:
    inputs = digits.example_inputs()
    space = SearchSpace.from_model(model, inputs)
    evaluator = Evaluator(
        model, inputs, train_data=digits.train, val_data=digits.val, budget=Budget.flops(0.5),
        cost_model=CostModel(space), config=EvaluatorConfig(**config),
    )
    return evaluator, space


def test_score_is_deterministic_for_a_seed(trained_cnn, digits) -> None:
    evaluator, space = _evaluator(trained_cnn, digits, bn_batches=3, finetune_steps=5, val_batches=2)
    policy = space.policy([0.3, 0.5, 0.5, 0.3])
    first, second = evaluator.evaluate(policy), evaluator.evaluate(policy)
    assert first.ok and first.fidelity == 5
    assert (first.accuracy, first.loss) == (second.accuracy, second.loss)
    assert first.flops == CostModel(space).cost(policy).flops
    assert first.feasible == (first.flops <= space.base_flops * 0.5)
    assert evaluator.evaluate(policy, fidelity=0).fidelity == 0


def test_score_says_where_the_time_went(trained_cnn, digits) -> None:
    evaluator, space = _evaluator(trained_cnn, digits, bn_batches=3, finetune_steps=5, val_batches=2)
    rungs = list(evaluator.evaluate_rungs(space.policy([0.3] * 4), rungs=(2,)))
    phases = ("prune_seconds", "recalibrate_seconds", "finetune_seconds", "validate_seconds")
    for score in rungs:
        assert all(getattr(score, p) > 0 for p in phases)
        assert sum(getattr(score, p) for p in phases) <= score.seconds
    first, last = rungs
    assert last.finetune_seconds > first.finetune_seconds and last.validate_seconds > first.validate_seconds
    assert last.prune_seconds == first.prune_seconds


def test_recovery_helps_a_pruned_model(trained_cnn, digits) -> None:
    plain, space = _evaluator(trained_cnn, digits, bn_batches=0, finetune_steps=0)
    recovered, _ = _evaluator(trained_cnn, digits, bn_batches=5, finetune_steps=30)
    policy = space.policy([0.6] * 4)
    assert recovered.evaluate(policy).accuracy > plain.evaluate(policy).accuracy


def test_divergence_and_exceptions_become_failed_scores(trained_cnn, digits) -> None:
    evaluator, space = _evaluator(trained_cnn, digits, finetune_steps=20, lr=1e30)
    score = evaluator.evaluate_safely(space.policy([0.2] * 4))
    assert score.status == "failed" and math.isnan(score.accuracy) and "diverged" in score.error

    broken = Evaluator(trained_cnn, digits.example_inputs(), train_data=digits.train, val_data=[],
                       budget=Budget.flops(0.5), cost_model=evaluator.cost_model)
    with pytest.raises(DataError, match="no samples"):  # bad input is not a failed trial: every trial would fail
        broken.evaluate_safely(space.policy([0.2] * 4))


def test_bn_recalibration_resets_statistics(trained_cnn, digits) -> None:
    import copy

    model = copy.deepcopy(trained_cnn)
    model.stem[1].running_mean.fill_(100.0)
    recalibrate_batchnorm(model, digits.train, 2)
    assert model.stem[1].running_mean.abs().max() < 100
    assert model.stem[1].momentum == trained_cnn.stem[1].momentum and not model.training


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"bn_batches": -1}, ConfigError, "bn_batches"),
        ({"finetune_steps": 1.5}, ConfigError, "finetune_steps"),
        ({"val_batches": 0}, ConfigError, "val_batches"),
        ({"lr": -1}, ConfigError, "lr"),
        ({"importance": "l3"}, UnknownNameError, "'l3'"),
        ({"distill": "yes"}, ConfigError, "distill must be true or false, got 'yes'"),
    ],
)
def test_bad_evaluator_options(options, error, match) -> None:
    with pytest.raises(error, match=match):
        EvaluatorConfig(**options)
    with pytest.raises(ConfigError, match="unknown evaluator options"):
        EvaluatorConfig.from_dict({"steps": 3})



def test_rungs_score_the_same_run_at_several_fidelities(trained_cnn, digits) -> None:
    evaluator, space = _evaluator(trained_cnn, digits, bn_batches=2, finetune_steps=6, val_batches=2)
    policy = space.policy([0.5] * 4)
    scores = list(evaluator.evaluate_rungs(policy, rungs=[2, 4]))
    assert [s.fidelity for s in scores] == [2, 4, 6]
    full = evaluator.evaluate(policy)
    assert (scores[-1].accuracy, scores[-1].loss) == (full.accuracy, full.loss)


def test_recovery_loss_distills_from_a_teacher() -> None:
    from autoprune.evaluation.evaluator import KD_ALPHA, recovery_loss

    logits, targets = torch.randn(8, 10), torch.randint(0, 10, (8,))
    plain = torch.nn.functional.cross_entropy(logits, targets)
    assert torch.equal(recovery_loss(logits, targets), plain)
    assert torch.allclose(recovery_loss(logits, targets, logits), KD_ALPHA * plain)  # no KL to itself
    assert recovery_loss(logits, targets, -logits) > KD_ALPHA * plain


def test_distilled_recovery_learns_from_the_unpruned_model(trained_cnn, digits) -> None:
    plain, space = _evaluator(trained_cnn, digits, bn_batches=3, finetune_steps=5, val_batches=2)
    distilled = plain.with_config(EvaluatorConfig(bn_batches=3, finetune_steps=5, val_batches=2, distill=True))
    policy = space.policy([0.3, 0.5, 0.5, 0.3])
    weights = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    first, second = distilled.evaluate(policy), distilled.evaluate(policy)
    assert first.ok and (first.accuracy, first.loss) == (second.accuracy, second.loss)
    assert first.loss != plain.evaluate(policy).loss  # another training signal, another model
    assert distilled.teacher() is distilled.teacher() and not distilled.teacher().training
    assert all(torch.equal(weights[k], v) for k, v in trained_cnn.state_dict().items())
