"""Widths that suit the kernels: ``round_to="auto"`` from measured latency staircases.

Per group, its root layer (a convolution or linear layer) is timed at every width in a window below its full
width, in the runtime the model will run in. Kernels often run an aligned width (a multiple of 8, 16, ...) faster
than the widths just above it: latency steps down there. A group's multiple is the smallest candidate after whose
aligned widths latency steps up by :data:`STEP_GAIN` more than after the others; the model's ``round_to`` is the
largest multiple that groups holding at least half of the model's FLOPs ask for (a policy and its fingerprint
carry one ``round_to``).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from search_spaces.ground.inputs import as_tuple
from search_spaces.measure import time_runner_ms, with_batch
from search_spaces.runtimes import prepared
from search_spaces.space import SearchSpace

log = logging.getLogger(__name__)
CANDIDATES = (16, 8, 4, 2)
WINDOW = 32  # widths probed below each group's full width (at most its upper half)
STEP_GAIN = 0.05  # an aligned width must be this much faster than the widths just above it
PROBE_SECONDS = 0.03


def staircase_multiple(ms: Mapping[int, float]) -> int:
    """The smallest candidate multiple ``m`` after every aligned width ``w`` of which latency steps up: each
    ``ms[w + 1] / ms[w] - 1`` exceeds the median over the other widths by :data:`STEP_GAIN` (a step at 8 shows at
    16 too: the smallest one is the kernels'); 1 when latency has no such step."""
    growth = {w: ms[w + 1] / ms[w] - 1 for w in ms if w + 1 in ms}
    for multiple in sorted(CANDIDATES):
        aligned = [g for w, g in growth.items() if w % multiple == 0]
        others = [g for w, g in growth.items() if w % multiple != 0]
        if aligned and others and min(aligned) - statistics.median(others) >= STEP_GAIN:
            return multiple
    return 1


def _root_inputs(model: nn.Module, example_inputs: Any, names: set[str]) -> dict[str, torch.Size]:
    """The input shape of each named module in one forward pass."""
    found: dict[str, torch.Size] = {}

    def recorder(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple, _out: Any) -> None:  # returns None: the output is left as it is
            found.setdefault(name, args[0].shape)
        return hook

    hooks = [model.get_submodule(name).register_forward_hook(recorder(name)) for name in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(*as_tuple(example_inputs))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return found


def _probe(module: nn.Module, shape: torch.Size, width: int) -> tuple[nn.Module, torch.Tensor] | None:
    """``module`` with ``width`` outputs and a random input of ``shape``; None for other layer kinds."""
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return (nn.Conv2d(module.in_channels, width, module.kernel_size, module.stride, module.padding,
                          module.dilation, bias=module.bias is not None), torch.randn(shape))
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, width, bias=module.bias is not None), torch.randn(shape)
    return None


def group_multiples(model: nn.Module, example_inputs: Any, space: SearchSpace, *, runtime: str = "eager",
                    threads: int = 1, device: str = "cpu", batch: int = 1) -> dict[str, int]:
    """Each group's measured multiple (groups whose root layer cannot be probed are left out)."""
    shapes = _root_inputs(model, with_batch(example_inputs, batch), {g.name for g in space})
    multiples = {}
    for group in space:
        module = model.get_submodule(group.name)
        if group.name not in shapes or _probe(module, shapes[group.name], 1) is None:
            continue
        ms = {}
        for width in range(max(1, group.channels // 2, group.channels - WINDOW + 1), group.channels + 1):
            layer, x = _probe(module, shapes[group.name], width)
            with prepared(layer.eval(), (x,), runtime=runtime, threads=threads, device=device, quick=True) as run:
                ms[width] = time_runner_ms(run, threads=threads, device=device, min_run_time=PROBE_SECONDS)
        multiples[group.name] = staircase_multiple(ms)
    return multiples


def model_round_to(space: SearchSpace, multiples: Mapping[str, int]) -> int:
    """The largest multiple asked for by groups holding at least half of the probed groups' FLOPs share."""
    total = sum(g.flops_share for g in space if g.name in multiples)
    for multiple in CANDIDATES:
        share = sum(g.flops_share for g in space if multiples.get(g.name, 1) >= multiple)
        if total and share >= total / 2:
            return multiple
    return 1


def measured_round_to(model: nn.Module, example_inputs: Any, space: SearchSpace, *, runtimes: tuple[str, ...],
                      threads: int = 1, device: str = "cpu", batch: int = 1) -> int:
    """``round_to="auto"``: the model's multiple in each runtime it will run in, the largest of them.

    Compiling runtimes (``compiled``, ``aoti``) are probed eagerly, as their latency tables are."""
    probed = {"onnxruntime" if r == "onnxruntime" else "eager" for r in runtimes}
    chosen = {}
    for runtime in sorted(probed):
        multiples = group_multiples(model, example_inputs, space, runtime=runtime, threads=threads, device=device,
                                    batch=batch)
        chosen[runtime] = model_round_to(space, multiples)
        log.info("round_to auto in %s: %d (per group: %s)", runtime, chosen[runtime], multiples)
    return max(chosen.values(), default=1)
