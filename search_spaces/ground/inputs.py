"""Example inputs: a tensor or a tuple of tensors, always handled as a tuple."""

from __future__ import annotations

from typing import Any

import torch

from search_spaces.ground.errors import ConfigError


def as_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple of tensors, each with a batch of at least one example; a clear error for
    anything else (a batch of 0 examples would make every cost 0, and every cost ratio a division by 0)."""
    if isinstance(example_inputs, torch.Tensor):
        inputs: tuple[torch.Tensor, ...] = (example_inputs,)
    elif isinstance(example_inputs, (tuple, list)) and example_inputs and all(
        isinstance(x, torch.Tensor) for x in example_inputs
    ):
        inputs = tuple(example_inputs)
    else:
        raise ConfigError(
            f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}"
        )
    for tensor in inputs:
        if tensor.dim() == 0 or tensor.numel() == 0:
            raise ConfigError(f"example_inputs must hold at least one example (a batch dimension first, no "
                              f"dimension of size 0), got a tensor of shape {list(tensor.shape)}")
    return inputs


def shapes(example_inputs: Any) -> list[list[int]]:
    """The shape of each input tensor."""
    return [list(x.shape) for x in as_tuple(example_inputs)]


def batch_size(example_inputs: Any) -> int:
    """The batch dimension of the first input."""
    return int(as_tuple(example_inputs)[0].shape[0])
