"""How a pruned model regains accuracy: finetuning, learning-rate rewinding, weight rewinding, or training the
pruned architecture from scratch (the comparisons of Renda et al. 2020 and Liu et al. 2019).

- ``finetune``: SGD at the small finetuning learning rate, cosine-decayed over the steps (the default).
- ``lr_rewind``: the same steps at the baseline training's peak learning rate, cosine-decayed (the training
  schedule, rewound and compressed to the steps given).
- ``weight_rewind``: the surviving weights reset to an early checkpoint of the unpruned model (the same channels or
  the same masks), then trained as ``lr_rewind`` (lottery-ticket rewinding).
- ``scratch``: the pruned architecture (and masks) re-initialized at random, then trained as ``lr_rewind``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from autoprune.evaluation.evaluator import finetune, recalibrate_batchnorm
from autoprune.prune.channels import PruneResult, replay_history
from autoprune.prune.masks import make_permanent
from search_spaces.ground.errors import ConfigError

RECOVERIES = ("finetune", "lr_rewind", "weight_rewind", "scratch")


def recover(
    original: nn.Module, pruned: PruneResult, example_inputs: Any, *, strategy: str, train_data: Iterable,
    steps: int, lr: float, train_lr: float, weight_decay: float = 5e-4, bn_batches: int = 5,
    rewind_state: Mapping[str, torch.Tensor] | None = None, device: str = "cpu", teacher: nn.Module | None = None,
) -> nn.Module:
    """The pruned model recovered by ``strategy`` (see the module docstring), BatchNorm recalibrated first.

    Args:
        original: the unpruned model ``pruned`` was made from (its architecture, for rewinding).
        pruned: the pruned model and its Torch-Pruning history (element masks are read from the model).
        strategy: one of ``finetune``, ``lr_rewind``, ``weight_rewind``, ``scratch``.
        lr: the finetuning learning rate; ``train_lr``: the baseline training's peak learning rate.
        rewind_state: the unpruned model's state dict at an early training step (``weight_rewind`` only).
        device: where to train; the model returned is there.
        teacher: a model on ``device`` to distill from while training (None: plain cross-entropy).
    """
    if strategy not in RECOVERIES:
        raise ConfigError(f"recovery {strategy!r} is not accepted; accepted: {', '.join(RECOVERIES)}")
    if (strategy == "weight_rewind") != (rewind_state is not None):
        raise ConfigError("weight_rewind needs rewind_state= (an early checkpoint's state dict), and only it takes one")
    model = pruned.model
    if strategy == "weight_rewind":
        model = _rewound(original, pruned, example_inputs, rewind_state)
    elif strategy == "scratch":
        model = _reinitialized(pruned.model)
    model.to(device)
    recalibrate_batchnorm(model, train_data, bn_batches, device=device)
    finetune(model, train_data, steps=steps, lr=lr if strategy == "finetune" else train_lr, weight_decay=weight_decay,
             device=device, teacher=teacher)
    return model


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name.removesuffix(".weight_mask"): mask.clone() for name, mask in model.named_buffers()
            if name.endswith("weight_mask")}


def _masked(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        torch_prune.custom_from_mask(modules[name], "weight", mask)
    return model


def _rewound(original: nn.Module, pruned: PruneResult, example_inputs: Any,
             state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The early weights, pruned the same way (the same channels removed, the same masks)."""
    early = copy.deepcopy(original)
    try:
        early.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"rewind_state does not fit {type(original).__name__}: {exc}") from None
    replay_history(early, pruned.history, example_inputs)
    return _masked(early, _masks(pruned.model))


def _reinitialized(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every layer's parameters drawn afresh (masks kept)."""
    masks = _masks(model)
    fresh = copy.deepcopy(make_permanent(model))  # a masked weight is computed, and cannot be deep-copied
    _masked(model, masks)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return _masked(fresh, masks)
