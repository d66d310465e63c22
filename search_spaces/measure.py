"""Measured costs of a real model: FLOPs (flop_counter), parameters, latency (``torch.utils.benchmark``)."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.ground.errors import ConfigError
from search_spaces.ground.inputs import as_tuple


def count_flops(model: nn.Module, example_inputs: Any) -> int:
    """FLOPs of one forward pass on ``example_inputs``, counted by ``torch.utils.flop_counter``."""
    return run_counting_flops(model, example_inputs)[0]


def run_counting_flops(model: nn.Module, example_inputs: Any) -> tuple[int, Any]:
    """One forward pass in eval mode without gradients: its FLOPs (``torch.utils.flop_counter``) and outputs."""
    inputs = as_tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            outputs = model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()), outputs


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the forward pass sees it: a ``torch.nn.utils.prune`` mask applied (``weight_orig *
    weight_mask``, named ``weight``), others as they are."""
    values: dict[str, torch.Tensor] = {}
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            base = name.removesuffix("_orig")
            mask = getattr(module, base + "_mask", None) if name.endswith("_orig") else None
            value = param.detach() if mask is None else param.detach() * mask
            values[f"{prefix}.{base}" if prefix else base] = value
    return values


def count_nonzeros(model: nn.Module) -> int:
    """Non-zero parameters of ``model``, masks applied."""
    return sum(int(torch.count_nonzero(p)) for p in effective_parameters(model).values())


def sparse_tensor_bytes(numel: int, nonzeros: int, value_bytes: int = 4) -> int:
    """Stored bytes of a tensor of ``numel`` elements with ``nonzeros`` non-zeros in the sparse format: dense, or a
    bitmask (one bit per element) plus the non-zero values, whichever is smaller."""
    return min(value_bytes * numel, -(-numel // 8) + value_bytes * nonzeros)


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` in the sparse format: floating tensors of two or more dimensions (Conv/Linear-style
    weights) may be stored sparsely (:func:`sparse_tensor_bytes`), everything else densely."""
    size = tensor.element_size()
    if tensor.dim() < 2 or not tensor.is_floating_point():
        return tensor.numel() * size
    return sparse_tensor_bytes(tensor.numel(), int(torch.count_nonzero(tensor)), size)


def count_sparse_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters (masks applied) in the sparse format (see :func:`stored_bytes`)."""
    return sum(stored_bytes(t) for t in effective_parameters(model).values())


def with_batch(example_inputs: Any, batch: int) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` resized to ``batch`` along the first dimension (repeating the first sample)."""
    return tuple(x[:1].expand(batch, *x.shape[1:]).contiguous() for x in as_tuple(example_inputs))


def check_device(device: str) -> None:
    """Raise :class:`ConfigError` for a device that is not usable here."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"latency device {device!r} was asked for but CUDA is not available here")


def _benchmark() -> ModuleType:
    """``torch.utils.benchmark``, imported on first use: its import pulls in ``cpp_extension``, which logs a
    misleading "No CUDA runtime is found" warning on CPU-only machines (silenced here)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def measure_latency_ms(
    model: nn.Module, example_inputs: Any, *, threads: int = 1, device: str = "cpu", min_run_time: float = 0.3
) -> float:
    """Median wall time of one forward pass in milliseconds, in eval mode without gradients.

    The model is timed on ``device`` (CUDA is synchronized by the timer) and left where it was.
    """
    check_device(device)
    inputs = tuple(x.to(device) for x in as_tuple(example_inputs))
    was_training = model.training
    home = next(model.parameters(), torch.empty(0)).device
    model.eval().to(device)
    timer = _benchmark().Timer(
        stmt="with torch.no_grad(): model(*inputs)",
        globals={"model": model, "inputs": inputs, "torch": torch},
        num_threads=threads,
    )
    try:
        with torch.no_grad():
            model(*inputs)  # warm-up
        median = timer.blocked_autorange(min_run_time=min_run_time).median
    finally:
        model.to(home).train(was_training)
    return median * 1e3


def latency_ratio(
    candidate: nn.Module, reference: nn.Module, example_inputs: Any, *, threads: int = 1, device: str = "cpu",
    rounds: int = 5, min_run_time: float = 0.1,
) -> tuple[float, float, float]:
    """Median over ``rounds`` of candidate/reference latency, timed alternately in this process.

    Alternating the two models puts them under the same machine load, so the ratio is steadier than two
    separate measurements. Returns ``(ratio, candidate_ms, reference_ms)`` (medians).
    """
    setting = {"threads": threads, "device": device, "min_run_time": min_run_time}
    return alternating_ratio(lambda: measure_latency_ms(candidate, example_inputs, **setting),
                             lambda: measure_latency_ms(reference, example_inputs, **setting), rounds=rounds)


def alternating_ratio(
    candidate: Callable[[], float], reference: Callable[[], float], *, rounds: int = 5
) -> tuple[float, float, float]:
    """Call two timing functions alternately ``rounds`` times: (median ratio, median of each)."""
    pairs = [(candidate(), reference()) for _ in range(rounds)]
    return (statistics.median(c / r for c, r in pairs), statistics.median(c for c, _ in pairs),
            statistics.median(r for _, r in pairs))
