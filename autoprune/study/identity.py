"""What a resumed search must be given again: the same weights and the same data, checked cheaply."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def model_digest(model: nn.Module | None) -> str | None:
    """sha256 of the model's state dict (names, shapes, dtypes and values)."""
    return None if model is None else state_digest(model.state_dict())


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict (names, shapes, dtypes and values)."""
    hasher = hashlib.sha256()
    for name, tensor in state.items():
        hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        hasher.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def data_identity(train_data: Iterable, val_data: Iterable) -> dict[str, Any]:
    """Sizes of the training and validation data (when they have one) and a digest of the first validation batch."""
    identity: dict[str, Any] = {}
    for name, data in (("train", train_data), ("val", val_data)):
        sized = getattr(data, "dataset", data)
        identity[f"{name}_size"] = len(sized) if hasattr(sized, "__len__") else None
    hasher = hashlib.sha256()
    for batch in itertools.islice(val_data, 1):
        for tensor in batch if isinstance(batch, (list, tuple)) else (batch,):
            if isinstance(tensor, torch.Tensor):
                hasher.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    identity["val_sample_sha256"] = hasher.hexdigest()
    return identity
