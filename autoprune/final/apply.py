"""Apply a saved policy to a trained model: prune it, optionally recover its accuracy (BatchNorm recalibration and
a finetune), compare it with the unpruned model on the test set, and export it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autoprune.builtins.data import DataBundle
from autoprune.evaluation.evaluator import EvaluatorConfig, validate
from autoprune.final.recovery import recover
from autoprune.prune.channels import PruneResult, prune
from autoprune.prune.export import export_model
from autoprune.prune.masks import make_permanent
from search_spaces.ground.inputs import shapes
from search_spaces.ground.options import check_int, check_number
from search_spaces.measure import count_flops, count_params
from search_spaces.policy import Policy
from search_spaces.surgery import architecture_name


@dataclass(frozen=True)
class Recovery:
    """Test accuracy of the unpruned and the pruned model after ``steps`` finetune steps (BatchNorm recalibrated)."""

    steps: int
    baseline_accuracy: float
    accuracy: float


@dataclass(frozen=True)
class AppliedPolicy:
    """A policy applied to a model: the unpruned model, the pruned one and, when asked for, its recovery."""

    original: nn.Module
    pruned: PruneResult
    example_inputs: Any
    recovery: Recovery | None = None


@dataclass(frozen=True)
class ExportedModel:
    """The files written per format (with their checks) and the model's size before and after pruning."""

    written: dict[str, dict[str, Any]]
    baseline_flops: int
    flops: int
    baseline_params: int
    params: int


def apply_and_recover(
    model: nn.Module, policy: Policy, data: DataBundle, *, importance: str = "l1",
    finetune_steps: int | None = None, lr: float | None = None,
) -> AppliedPolicy:
    """Prune ``model`` (trained, left unpruned) with ``policy``; with ``finetune_steps`` (0: recalibrate only),
    recover the pruned model (``lr``: default the evaluator's) and score both on ``data.test``."""
    if finetune_steps is not None:
        check_int("finetune_steps", finetune_steps, low=0)
    if lr is not None:
        check_number("lr", lr, low=0, inclusive=False)
    inputs = data.example_inputs()
    result = prune(model, policy, inputs, importance=importance, data=data.train)
    recovery = None if finetune_steps is None else recover_and_compare(model, result, inputs, data,
                                                                       steps=finetune_steps, lr=lr)
    return AppliedPolicy(original=model, pruned=result, example_inputs=inputs, recovery=recovery)


def recover_and_compare(original: nn.Module, pruned: PruneResult, example_inputs: Any, data: DataBundle, *,
                        steps: int, lr: float | None = None) -> Recovery:
    """BatchNorm recalibration and ``steps`` of SGD for ``pruned.model`` (in place, the evaluator's recipe), then
    both models' test accuracy."""
    recipe = EvaluatorConfig()
    lr = recipe.lr if lr is None else lr
    model = recover(original, pruned, example_inputs, strategy="finetune", train_data=data.train, steps=steps, lr=lr,
                    train_lr=lr, weight_decay=recipe.weight_decay, bn_batches=recipe.bn_batches)
    (base_accuracy, _), (accuracy, _) = validate(original.eval(), data.test), validate(model.eval(), data.test)
    return Recovery(steps=steps, baseline_accuracy=base_accuracy, accuracy=accuracy)


def export_applied(applied: AppliedPolicy, directory: str | Path, formats: Sequence[str], *,
                   policy_path: str | Path) -> ExportedModel:
    """Write the pruned model in ``formats`` (masks folded into plain zeros first), each checked against eager."""
    original, pruned, inputs = applied.original, applied.pruned.model, applied.example_inputs
    make_permanent(pruned)  # an element policy's masks become plain zeros
    written = export_model(pruned, inputs, directory, formats, history=applied.pruned.history,
                           meta={"architecture": architecture_name(original), "input_shape": shapes(inputs),
                                 "policy": str(Path(policy_path).resolve())})
    return ExportedModel(written=written, baseline_flops=count_flops(original, inputs),
                         flops=count_flops(pruned, inputs), baseline_params=count_params(original),
                         params=count_params(pruned))
