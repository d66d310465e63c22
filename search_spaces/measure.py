"""Measured costs of a real model: FLOPs (flop_counter), parameters, latency (``torch.utils.benchmark``)."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.ground.errors import ConfigError
from search_spaces.ground.inputs import as_tuple
from search_spaces.runtimes import Prepared, prepared


def _cpu_attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *_args: Any, **_kwargs: Any) -> int:
    """FLOPs of ``scaled_dot_product_attention``'s CPU kernel: its two matmuls, as flop_counter counts the CUDA ones."""
    return int(flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape))


def flop_counting() -> FlopCounterMode:
    """``torch.utils.flop_counter``'s counter, also counting attention's CPU kernel (which it leaves at zero: a
    transformer's attention matmuls would count on a GPU and not on a CPU)."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops})


def count_flops(model: nn.Module, example_inputs: Any) -> int:
    """FLOPs of one forward pass on ``example_inputs``, counted by ``torch.utils.flop_counter``."""
    return run_counting_flops(model, example_inputs)[0]


def run_counting_flops(model: nn.Module, example_inputs: Any) -> tuple[int, Any]:
    """One forward pass in eval mode without gradients: its FLOPs (``torch.utils.flop_counter``) and outputs."""
    inputs = as_tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counting() as counter:
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


#: Untimed runs before a CUDA measurement (kernel selection, caching allocator, clocks ramping up).
CUDA_WARMUP = 10


def time_runner_ms(run: Prepared, *, threads: int = 1, device: str = "cpu", min_run_time: float = 0.3) -> float:
    """Median wall time in milliseconds of ``run()`` (one forward pass): ``torch.utils.benchmark`` on the CPU;
    CUDA events around blocks of runs after :data:`CUDA_WARMUP` untimed ones, synchronized, on CUDA."""
    if device.startswith("cuda"):
        with torch.cuda.device(device):  # events and synchronize on the device the model runs on (cuda:N)
            return _cuda_ms(run, min_run_time)
    timer = _benchmark().Timer(stmt="run()", globals={"run": run}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _cuda_ms(run: Prepared, min_run_time: float) -> float:
    """Median ms per run over blocks timed with CUDA events (the GPU's own clock, not the host's)."""
    for _ in range(CUDA_WARMUP):
        run()
    torch.cuda.synchronize()
    samples: list[float] = []
    while 10 * sum(samples) < min_run_time * 1e3 or len(samples) < 5:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 10)
    return statistics.median(samples)


def measure_latency_ms(
    model: nn.Module, example_inputs: Any, *, threads: int = 1, device: str = "cpu", min_run_time: float = 0.3,
    runtime: str = "eager",
) -> float:
    """Median wall time of one forward pass in milliseconds, in eval mode without gradients, in ``runtime``
    (``eager``, ``compiled``, ``aoti``, ``onnxruntime``; see :mod:`search_spaces.runtimes`).

    The model is timed on ``device`` (CUDA is synchronized) and left where it was.
    """
    check_device(device)
    with prepared(model, as_tuple(example_inputs), runtime=runtime, threads=threads, device=device) as run:
        return time_runner_ms(run, threads=threads, device=device, min_run_time=min_run_time)


def latency_ratio(
    candidate: nn.Module, reference: nn.Module, example_inputs: Any, *, threads: int = 1, device: str = "cpu",
    rounds: int = 5, min_run_time: float = 0.1, runtime: str = "eager",
) -> tuple[float, float, float]:
    """Median over ``rounds`` of candidate/reference latency in ``runtime``, timed alternately in this process.

    Alternating the two models puts them under the same machine load, so the ratio is steadier than two
    separate measurements. Returns ``(ratio, candidate_ms, reference_ms)`` (see :func:`alternating_ratio`).
    """
    check_device(device)
    setting = {"threads": threads, "device": device, "min_run_time": min_run_time}
    inputs = as_tuple(example_inputs)
    with (prepared(candidate, inputs, runtime=runtime, threads=threads, device=device) as run_candidate,
          prepared(reference, inputs, runtime=runtime, threads=threads, device=device) as run_reference):
        return alternating_ratio(lambda: time_runner_ms(run_candidate, **setting),
                                 lambda: time_runner_ms(run_reference, **setting), rounds=rounds)


def alternating_ratio(
    candidate: Callable[[], float], reference: Callable[[], float], *, rounds: int = 5
) -> tuple[float, float, float]:
    """Call two timing functions alternately ``rounds`` times: ``(ratio, candidate_ms, reference_ms)``.

    One statistic: ``ratio`` is the median of the paired ratios, ``reference_ms`` the reference's median and
    ``candidate_ms = ratio * reference_ms``, so the two latencies, their ratio and the speed-up
    (``reference_ms / candidate_ms``) always agree arithmetically.
    """
    pairs = [(candidate(), reference()) for _ in range(rounds)]
    ratio, reference_ms = statistics.median(c / r for c, r in pairs), statistics.median(r for _, r in pairs)
    return ratio, ratio * reference_ms, reference_ms
