"""Element-wise (unstructured) pruning with ``torch.nn.utils.prune``: one mask per weight tensor.

A masked model keeps PyTorch's reparametrization (``weight_orig`` and ``weight_mask``) while it is finetuned,
so pruned weights stay zero; :func:`make_permanent` folds the masks into plain weights for export.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from search_spaces.ground.errors import ConfigError

# Element criteria: the weight's magnitude (L1 and L2 rank single weights alike) or chance.
ELEMENT_IMPORTANCES = {"l1": torch_prune.l1_unstructured, "l2": torch_prune.l1_unstructured,
                       "random": torch_prune.random_unstructured}


def apply_masks(model: nn.Module, kept: Mapping[str, int], *, importance: str = "l1") -> nn.Module:
    """Mask ``model`` in place so the ``weight`` of each named module keeps exactly ``kept[name]`` elements.

    An existing mask is folded in first, so its zeros (the smallest magnitudes) stay pruned: applying a larger
    sparsity to a masked model prunes further, as gradual schedules need.
    """
    if importance not in ELEMENT_IMPORTANCES:
        raise ConfigError(f"importance {importance!r} does not rank single weights; accepted for element pruning: "
                          f"{', '.join(ELEMENT_IMPORTANCES)}")
    method = ELEMENT_IMPORTANCES[importance]
    modules = dict(model.named_modules())
    unknown = sorted(set(kept) - set(modules))
    if unknown:
        raise ConfigError(f"no modules named {unknown} in {type(model).__name__}")
    for name, count in kept.items():
        module = modules[name]
        if torch_prune.is_pruned(module):
            _fold(module)
        removed = module.weight.numel() - int(count)
        if not 0 <= removed <= module.weight.numel():
            raise ConfigError(f"{name} has {module.weight.numel()} weights; cannot keep {count}")
        method(module, "weight", amount=removed)
    return model


def weight_magnitudes(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``|weight|`` of each named module, flattened (the scores a global magnitude threshold compares)."""
    modules = dict(model.named_modules())
    return {name: modules[name].weight.detach().abs().flatten().cpu() for name in names}


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` mask of ``model`` into its weights (in place): plain, dense-with-zeros
    parameters that save and load as an ordinary state dict."""
    for module in model.modules():
        _fold(module)
    return model


def _fold(module: nn.Module) -> None:
    for name, _ in list(module.named_parameters(recurse=False)):
        if name.endswith("_orig") and hasattr(module, name.removesuffix("_orig") + "_mask"):
            torch_prune.remove(module, name.removesuffix("_orig"))
