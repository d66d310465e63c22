"""Measured CPU/GPU latency with ``torch.utils.benchmark`` (warm-up, fixed threads, median)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

from autoprune.inputs import as_tuple


def measure_latency_ms(
    model: nn.Module, example_inputs: Any, *, threads: int = 1, min_run_time: float = 0.3
) -> float:
    """Median wall time of one forward pass in milliseconds, in eval mode without gradients."""
    inputs = as_tuple(example_inputs)
    was_training = model.training
    model.eval()
    timer = benchmark.Timer(
        stmt="with torch.no_grad(): model(*inputs)",
        globals={"model": model, "inputs": inputs, "torch": torch},
        num_threads=threads,
    )
    with torch.no_grad():
        model(*inputs)  # warm-up
    median = timer.blocked_autorange(min_run_time=min_run_time).median
    model.train(was_training)
    return median * 1e3
