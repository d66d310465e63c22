"""NetAdapt-style latency lookup table: each block's latency on a grid of kept channel counts, measured once.

A block is a Conv/Linear layer with the BatchNorm that takes its output and the activation module after
that, timed together as they run in the network (a layer with neither is timed alone; a BatchNorm after
something else is its own entry). A policy's latency is predicted as
``residual + scale * sum(block latency at its kept in/out sizes)`` (bilinear interpolation between grid
points). ``residual`` and ``scale`` are fitted (least squares) to the measured latency of whole models: the
unpruned one, the one with every group at its max ratio and ``CALIBRATION_POLICIES`` random policies. They
absorb the work outside blocks (additions, pooling, activations after a sum), framework overhead, and the
difference between a block timed alone and inside the network.
Tables are cached on disk per (model fingerprint, input shapes, device, batch, threads, runtime, torch, CPU).

Per runtime: ``eager`` and ``onnxruntime`` time every block in that runtime (an ONNX Runtime probe is the block
exported by the TorchScript exporter, about 40 ms a probe). ``compiled`` and ``aoti`` compile whole graphs for
seconds each, too slow for hundreds of probes: their blocks are timed eagerly, and the calibration, on
``COMPILED_CALIBRATION_POLICIES`` whole models compiled in the runtime, maps that shape to the runtime's latency.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import logging
import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.builtins.cache import cache_dir as default_cache
from autoprune.prune.channels import prune
from search_spaces.cost import CostModel
from search_spaces.ground.errors import ConfigError
from search_spaces.ground.inputs import as_tuple, shapes
from search_spaces.ground.io import atomic_write_json, read_json_file
from search_spaces.measure import check_device, latency_ratio, time_runner_ms, with_batch
from search_spaces.runtimes import COMPILING, check_runtime, prepared
from search_spaces.space import SearchSpace

log = logging.getLogger(__name__)
GRID_POINTS = 6
PROBE_SECONDS = 0.05
CALIBRATION_POLICIES = 32  # one ratio measured on this host scatters ~10%: the fit averages over many
CALIBRATION_ROUNDS = 5  # rounds per calibration ratio (at 3, one ratio measured twice differed ~20% when busy)
COMPILED_CALIBRATION_POLICIES = 6  # whole models compiled per calibration in compiled/aoti (10-20 s each here)
SCHEMA = 2
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.Mish,
               nn.ELU, nn.Sigmoid, nn.Tanh)


@dataclass
class LayerEntry:
    """Measured latency (ms) of one layer at ``ms[i][j]`` = (in_grid[i], out_grid[j]). ``diagonal`` layers
    (depthwise convolutions, BatchNorm) have one input size per channel, so they depend on the output size
    only: ``in_grid`` is that single size and ``ms[0][j]`` is the latency at out_grid[j]."""

    in_grid: list[int]
    out_grid: list[int]
    ms: list[list[float]]
    diagonal: bool = False
    block: list[str] = field(default_factory=list)  # the modules timed with this layer (BatchNorm, activation)

    def at(self, in_dim: int, out_dim: int) -> float:
        if self.diagonal:
            return float(np.interp(out_dim, self.out_grid, self.ms[0]))
        i, a = _bracket(self.in_grid, in_dim)
        j, b = _bracket(self.out_grid, out_dim)
        ms = self.ms
        i2, j2 = min(i + 1, len(self.in_grid) - 1), min(j + 1, len(self.out_grid) - 1)
        low = ms[i][j] * (1 - b) + ms[i][j2] * b
        high = ms[i2][j] * (1 - b) + ms[i2][j2] * b
        return low * (1 - a) + high * a


def _bracket(grid: list[int], value: int) -> tuple[int, float]:
    """Index of the grid point at or below ``value`` and the interpolation weight toward the next one."""
    if value <= grid[0] or len(grid) == 1:
        return 0, 0.0
    if value >= grid[-1]:
        return len(grid) - 1, 0.0
    i = bisect.bisect_right(grid, value) - 1
    return i, (value - grid[i]) / (grid[i + 1] - grid[i])


@dataclass
class LatencyTable:
    """Per-layer latency tables plus a constant residual; predicts a pruned model's latency in ms."""

    key: dict[str, Any]
    base_ms: float
    residual_ms: float
    scale: float = 1.0
    layers: dict[str, LayerEntry] = field(default_factory=dict)

    def layer_sum(self, dims: Mapping[str, tuple[int, int]]) -> float:
        """Sum of the tabled layers' latencies at kept (in, out) sizes."""
        return sum(entry.at(*dims[name]) for name, entry in self.layers.items())

    def predict(self, dims: Mapping[str, tuple[int, int]]) -> float:
        """Latency for kept (in, out) sizes per layer (``CostModel.layer_dims``)."""
        return self.residual_ms + self.scale * self.layer_sum(dims)

    def check_layers(self, full_dims: Mapping[str, tuple[int, int]]) -> None:
        """Raise :class:`ConfigError` if the table was built for layers other than these."""
        for name, entry in self.layers.items():
            if name not in full_dims or full_dims[name] != (entry.in_grid[-1], entry.out_grid[-1]):
                raise ConfigError(
                    f"latency table layer {name!r} does not match the model (built for another model); rebuild it"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "key": self.key, "base_ms": self.base_ms, "residual_ms": self.residual_ms,
                "scale": self.scale, "layers": {n: asdict(e) for n, e in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        if data.get("schema") != SCHEMA:
            raise ConfigError(f"latency table schema {data.get('schema')!r} is not supported (expected {SCHEMA})")
        layers = {n: LayerEntry(**e) for n, e in data["layers"].items()}
        return cls(dict(data["key"]), float(data["base_ms"]), float(data["residual_ms"]), float(data["scale"]), layers)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            return cls.from_dict(read_json_file(path, what="latency table"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"latency table {str(path)!r} is not readable ({type(exc).__name__}: {exc})") from exc


def table_key(space: SearchSpace, example_inputs: Any, *, batch: int, threads: int, device: str,
              runtime: str = "eager") -> dict[str, Any]:
    """What a table is valid for: the model, input shapes and the measurement setting."""
    return {"fingerprint": space.fingerprint, "max_ratios": space.max_ratios,
            "input_shapes": shapes(with_batch(example_inputs, batch)), "device": device, "batch": batch,
            "threads": threads, "runtime": runtime, "torch": torch.__version__, "cpu": cpu_model(),
            "grid_points": GRID_POINTS, "calibration": [_calibration_policies(runtime), CALIBRATION_ROUNDS]}


def _calibration_policies(runtime: str) -> int:
    return COMPILED_CALIBRATION_POLICIES if runtime in COMPILING else CALIBRATION_POLICIES


def _probe_ms(layer: nn.Module, x: torch.Tensor, *, runtime: str, threads: int, device: str) -> float:
    """One block's latency: in ONNX Runtime for an ``onnxruntime`` table, eagerly otherwise (see the module's
    docstring)."""
    probe_runtime = "onnxruntime" if runtime == "onnxruntime" else "eager"
    with prepared(layer, (x,), runtime=probe_runtime, threads=threads, device=device, quick=True) as run:
        return time_runner_ms(run, threads=threads, device=device, min_run_time=PROBE_SECONDS)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor or machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class _Call:
    name: str
    module: nn.Module
    input: Any
    output: Any


def _calls(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[_Call]:
    """Every leaf module call of one eval-mode forward pass, in order, with its first input and its output
    (the tensors are kept alive, so identity links a module to the one that consumed its output)."""
    calls: list[_Call] = []

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            calls.append(_Call(name, module, args[0] if args else None, out))
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(record(n)) for n, m in leaves]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return calls


def _consumer(calls: list[_Call], tensor: Any, kinds: tuple[type, ...]) -> _Call | None:
    """The call of a module of ``kinds`` that takes ``tensor`` as its input, if exactly one does."""
    found = [c for c in calls if c.input is tensor and isinstance(c.module, kinds)]
    return found[0] if len(found) == 1 else None


def _blocks(calls: list[_Call], names: set[str]) -> dict[str, list[_Call]]:
    """Per tabled Conv/Linear layer, the BatchNorm taking its output and the activation taking that."""
    blocks: dict[str, list[_Call]] = {}
    for call in calls:
        if call.name not in names or not isinstance(call.module, (nn.Conv2d, nn.Linear)) or call.name in blocks:
            continue
        chain = []
        norm = _consumer(calls, call.output, (nn.BatchNorm1d, nn.BatchNorm2d))
        if norm is not None:
            chain.append(norm)
        activation = _consumer(calls, (norm or call).output, ACTIVATIONS)
        if activation is not None:
            chain.append(activation)
        blocks[call.name] = chain
    return blocks


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def _probe(module: nn.Module, shape: torch.Size, in_dim: int, out_dim: int) -> tuple[nn.Module, torch.Tensor] | None:
    """A fresh layer like ``module`` with ``out_dim`` outputs (and ``in_dim`` inputs per group), and an input
    for it; None for layers without a probe (grouped but not depthwise convolutions, other kinds)."""
    if _depthwise(module):
        channels = out_dim // (module.out_channels // module.in_channels)
        layer = nn.Conv2d(channels, out_dim, module.kernel_size, module.stride, module.padding, module.dilation,
                          groups=channels, bias=module.bias is not None, padding_mode=module.padding_mode)
        return layer, torch.randn(shape[0], channels, *shape[2:])
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        layer = nn.Conv2d(in_dim, out_dim, module.kernel_size, module.stride, module.padding, module.dilation,
                          bias=module.bias is not None, padding_mode=module.padding_mode)
        return layer, torch.randn(shape[0], in_dim, *shape[2:])
    if isinstance(module, nn.Linear):
        return nn.Linear(in_dim, out_dim, bias=module.bias is not None), torch.randn(*shape[:-1], in_dim)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(module)(out_dim).eval(), torch.randn(shape[0], out_dim, *shape[2:])
    return None


def _is_diagonal(module: nn.Module) -> bool:
    return _depthwise(module) or isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))


def _grids(space: SearchSpace) -> dict[str, tuple[list[int], list[int]]]:
    """Kept (in, out) sizes per layer when every group is pruned by the same fraction of its max ratio."""
    cost_model = CostModel(space)
    ins: dict[str, set[int]] = {layer.name: set() for layer in space.layers}
    outs: dict[str, set[int]] = {layer.name: set() for layer in space.layers}
    for fraction in np.linspace(0.0, 1.0, GRID_POINTS):
        ratios = {g.name: float(fraction) * g.max_ratio for g in space}
        for name, (in_dim, out_dim) in cost_model.layer_dims(ratios).items():
            ins[name].add(in_dim)
            outs[name].add(out_dim)
    return {name: (sorted(ins[name]), sorted(outs[name])) for name in ins}


def _block_probe(module: nn.Module, chain: list[nn.Module], shape: torch.Size, in_dim: int, out_dim: int
                 ) -> tuple[nn.Module, torch.Tensor] | None:
    """``_probe`` of the layer followed by fresh copies of its block's BatchNorm (at ``out_dim``) and activation."""
    probe = _probe(module, shape, in_dim, out_dim)
    if probe is None or not chain:
        return probe
    layer, x = probe
    followers = [type(m)(out_dim).eval() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) else copy.deepcopy(m)
                 for m in chain]
    return nn.Sequential(layer, *followers).eval(), x


def build_latency_table(
    model: nn.Module, space: SearchSpace, example_inputs: Any, *, batch: int = 1, threads: int = 1,
    device: str = "cpu", runtime: str = "eager", progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Measure every tabled block of ``model`` on its grid, and calibrate on whole models, on ``device`` in
    ``runtime``."""
    check_device(device)
    check_runtime(runtime)
    inputs = with_batch(example_inputs, batch)
    grids = _grids(space)
    calls = _calls(model, as_tuple(inputs))
    input_shapes: dict[str, torch.Size] = {}
    for call in calls:
        if call.name in grids and isinstance(call.input, torch.Tensor):
            input_shapes.setdefault(call.name, call.input.shape)
    blocks = _blocks(calls, set(grids))
    in_blocks = {c.name for chain in blocks.values() for c in chain}
    plan = []
    for name, (in_grid, out_grid) in grids.items():
        module = model.get_submodule(name)
        chain = [c.module for c in blocks.get(name, [])]
        if (name in in_blocks or name not in input_shapes
                or _probe(module, input_shapes[name], in_grid[-1], out_grid[-1]) is None):
            continue  # timed in a block, not run, or a layer kind without a probe (its time is in the residual)
        diagonal = _is_diagonal(module)
        if diagonal:
            in_grid = in_grid[-1:]
        points = [(i, j) for i in range(len(in_grid)) for j in range(len(out_grid))]
        plan.append((name, module, chain, diagonal, in_grid, out_grid, points))
    total, done = sum(len(p[-1]) for p in plan), 0
    memo: dict[tuple, float] = {}
    layers: dict[str, LayerEntry] = {}
    with torch.no_grad():
        for name, module, chain, diagonal, in_grid, out_grid, points in plan:
            ms = [[0.0] * len(out_grid) for _ in in_grid]
            for i, j in points:
                layer, x = _block_probe(module, chain, input_shapes[name], in_grid[i], out_grid[j])
                signature = (repr(layer), tuple(x.shape))
                if signature not in memo:
                    memo[signature] = _probe_ms(layer, x, runtime=runtime, threads=threads, device=device)
                ms[i][j] = memo[signature]
                done += 1
                if progress is not None:
                    progress(done, total)
            # more channels are never faster: timing noise must not make the prediction non-monotone
            monotone = np.maximum.accumulate(np.maximum.accumulate(np.array(ms), axis=0), axis=1)
            layers[name] = LayerEntry(in_grid, out_grid, monotone.tolist(), diagonal,
                                      [c.name for c in blocks.get(name, [])])
    if not layers:
        raise ConfigError(
            f"{space.architecture} has no layer the latency table can time (Conv2d, Linear, BatchNorm1d/2d); "
            "use a flops or params budget"
        )
    table = LatencyTable(table_key(space, example_inputs, batch=batch, threads=threads, device=device,
                                   runtime=runtime), 0.0, 0.0, layers=layers)
    _calibrate(table, model, space, example_inputs, inputs)
    log.info("latency table: %d blocks, %d probes, unpruned %.3f ms", len(layers), len(memo), table.base_ms)
    return table


def _calibrate(table: LatencyTable, model: nn.Module, space: SearchSpace, example_inputs: Any,
               inputs: tuple[torch.Tensor, ...]) -> None:
    """Fit ``residual`` and ``scale`` (least squares) to measured whole models: unpruned, most pruned and
    ``CALIBRATION_POLICIES`` random policies in between."""
    runtime = table.key.get("runtime", "eager")
    setting = {"threads": table.key["threads"], "device": table.key["device"], "runtime": runtime}
    cost_model = CostModel(space)
    rng = np.random.default_rng(0)
    policies = [{}, space.max_ratios] + [
        {g.name: float(rng.uniform(0, g.max_ratio)) for g in space} for _ in range(_calibration_policies(runtime))
    ]
    sums, ratios_measured, base_measured = [], [], []
    for ratios in policies:  # each timed side by side with the unpruned model: steady under a changing load
        pruned = model if not ratios else prune(model, space.policy(ratios), example_inputs, space=space).model
        ratio, _, base_ms = latency_ratio(pruned, model, inputs, rounds=CALIBRATION_ROUNDS, **setting)
        ratios_measured.append(1.0 if not ratios else ratio)
        base_measured.append(base_ms)
        sums.append(table.layer_sum(cost_model.layer_dims(ratios)))
    base = float(np.median(base_measured))
    measured = [r * base for r in ratios_measured]
    scale, residual = np.polyfit(sums, measured, 1)
    if not scale > 0:  # noise swamped the fit: fall back to the table as measured, anchored at the unpruned model
        scale, residual = 1.0, measured[0] - sums[0]
    table.scale, table.residual_ms = float(scale), float(residual)
    table.base_ms = table.residual_ms + table.scale * sums[0]  # the fitted unpruned latency: ratios stay consistent


def table_path(key: Mapping[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the table for ``key`` is cached (default ``<autoprune cache>/latency/``)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache() / "latency") / f"{digest}.json"


def latency_table(
    model: nn.Module, space: SearchSpace, example_inputs: Any, *, batch: int = 1, threads: int = 1,
    device: str = "cpu", runtime: str = "eager", cache_dir: str | Path | None = None, rebuild: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """The cached table for this model and setting, built (and cached) when missing, stale or ``rebuild``."""
    key = table_key(space, example_inputs, batch=batch, threads=threads, device=device, runtime=runtime)
    path = table_path(key, cache_dir)
    if path.exists() and not rebuild:
        try:
            table = LatencyTable.load(path)
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            log.warning("ignoring unreadable latency table %s (%s)", path, exc)
        else:
            if table.key == key:
                return table
            log.info("latency table %s was built for another model or setting; rebuilding", path)
    table = build_latency_table(model, space, example_inputs, batch=batch, threads=threads, device=device,
                                runtime=runtime, progress=progress)
    table.save(path)
    return table
