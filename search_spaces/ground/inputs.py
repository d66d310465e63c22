"""Example inputs: a tensor or a tuple of tensors, always handled as a tuple."""

from __future__ import annotations

from typing import Any

import torch

from search_spaces.ground.errors import ConfigError


def as_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple of tensors; a clear error for anything else."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and all(
        isinstance(x, torch.Tensor) for x in example_inputs
    ):
        return tuple(example_inputs)
    raise ConfigError(
        f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}"
    )


def shapes(example_inputs: Any) -> list[list[int]]:
    """The shape of each input tensor."""
    return [list(x.shape) for x in as_tuple(example_inputs)]


def batch_size(example_inputs: Any) -> int:
    """The batch dimension of the first input."""
    return int(as_tuple(example_inputs)[0].shape[0])
