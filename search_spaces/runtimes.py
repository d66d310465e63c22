"""Where a model runs when it is timed: eager PyTorch, ``torch.compile``, AOTInductor or ONNX Runtime.

:func:`prepare` builds a model in a runtime the way the export builds it (``torch.export`` with a dynamic batch
dimension, then an AOTInductor package or the ONNX file in an ``InferenceSession`` with the given threads; the
compiled module after its warm-up) and returns a function that runs one forward pass. Small probes (the latency
table's blocks) may ask for ``quick`` builds: a static-shape ONNX graph from the TorchScript exporter (40 ms
instead of 3 s a block; the same operators). Heavy dependencies (onnxruntime, inductor) load on first use.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.ground.errors import ConfigError, did_you_mean
from search_spaces.runtime_names import RUNTIMES

#: Runtimes that compile a whole model (seconds each): their latency table is calibrated on few whole models.
COMPILING = ("compiled", "aoti")
#: The runtime each export format (``autoprune.export_model``) runs in.
FORMAT_RUNTIMES = {"eager": "eager", "sparse": "eager", "export": "eager", "compile": "aoti", "onnx": "onnxruntime"}

Runner = Callable[[], Any]


@dataclass(frozen=True)
class Prepared:
    """A model built in a runtime: calling it runs one forward pass on ``inputs`` without gradients."""

    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    runtime: str
    run: Runner

    def __call__(self) -> Any:
        with torch.no_grad():
            return self.run()


def check_runtime(runtime: object) -> str:
    """``runtime`` when it is one of :data:`RUNTIMES`, else a :class:`ConfigError` naming them."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"latency runtime {runtime!r} is not supported; accepted: {', '.join(RUNTIMES)}"
                          f"{did_you_mean(runtime, RUNTIMES)}")
    return runtime  # type: ignore[return-value]


def _dynamic_batch_program(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` with a dynamic batch dimension, as ``autoprune.export_model`` traces it."""
    sample = tuple(x[:1].expand(2, *x.shape[1:]).contiguous() for x in inputs)
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(model, sample, dynamic_shapes=tuple({0: batch} for _ in inputs))


def onnx_session(path: str | Path, *, threads: int, device: str = "cpu") -> Any:
    """An ONNX Runtime session for ``path`` with ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def _onnx_file(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, *, quick: bool) -> None:
    if quick:
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and fast for small blocks
            warnings.simplefilter("ignore")
            torch.onnx.export(model, inputs, str(path), dynamo=False)
        return
    program = torch.onnx.export(_dynamic_batch_program(model, inputs), (), dynamo=True, verbose=False)
    program.save(str(path), external_data=False)


def _onnx_runner(model: nn.Module, inputs: tuple[torch.Tensor, ...], workdir: Path, *, threads: int,
                 device: str, quick: bool) -> Runner:
    path = workdir / "model.onnx"
    _onnx_file(model, inputs, path, quick=quick)
    session = onnx_session(path, threads=threads, device=device)
    feed = {i.name: x.cpu().numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
    return lambda: session.run(None, feed)


def _aoti_runner(model: nn.Module, inputs: tuple[torch.Tensor, ...], workdir: Path) -> Runner:
    package = torch._inductor.aoti_compile_and_package(_dynamic_batch_program(model, inputs),
                                                       package_path=str(workdir / "model.pt2"))
    compiled = torch._inductor.aoti_load_package(package)
    return lambda: compiled(*inputs)


@contextlib.contextmanager
def prepared(model: nn.Module, inputs: tuple[torch.Tensor, ...], *, runtime: str = "eager", threads: int = 1,
             device: str = "cpu", quick: bool = False) -> Iterator[Prepared]:
    """A function running one forward pass of ``model`` (eval mode, no gradients) on ``inputs`` in ``runtime``,
    warmed up; the model goes back to its device and mode when the block ends."""
    check_runtime(runtime)
    was_training = model.training
    home = next(model.parameters(), torch.empty(0)).device
    model.eval().to(device)
    inputs = tuple(x.to(device) for x in inputs)
    try:
        with tempfile.TemporaryDirectory(prefix="autoprune-runtime-") as tmp:
            with torch.no_grad():
                run = Prepared(model, inputs, runtime,
                               _runner(model, inputs, runtime, Path(tmp), threads=threads, device=device, quick=quick))
            run()  # warm-up (a compiled module compiles here)
            yield run
    finally:
        model.to(home).train(was_training)


def _runner(model: nn.Module, inputs: tuple[torch.Tensor, ...], runtime: str, workdir: Path, *, threads: int,
            device: str, quick: bool) -> Runner:
    if runtime == "eager":
        return lambda: model(*inputs)
    if runtime == "compiled":
        torch._dynamo.reset()  # each width is a new graph of the same code: past the recompile limit it runs eagerly
        compiled = torch.compile(model, dynamic=False)
        return lambda: compiled(*inputs)
    if runtime == "aoti":
        return _aoti_runner(model, inputs, workdir)
    return _onnx_runner(model, inputs, workdir, threads=threads, device=device, quick=quick)
