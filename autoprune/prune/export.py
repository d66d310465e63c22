"""Saving and loading pruned models without unpickling code: a state dict plus the pruning history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.prune.channels import PruningHistory, replay_history
from autoprune.prune.sparse_format import (
    DENSE_FILE,
    SPARSE_FILE,
    export_sizes,
    file_sizes,
    load_sparse,
    read_tensors,
    save_sparse,
)
from search_spaces.ground.errors import AutopruneError, ConfigError, RunDirError, unknown_name
from search_spaces.ground.inputs import as_tuple
from search_spaces.ground.io import atomic_write, atomic_write_json, read_json_file
from search_spaces.ground.options import check_module

STATE_FILE = DENSE_FILE
HISTORY_FILE = "pruning_history.json"
META_FILE = "meta.json"


class ExportError(AutopruneError):
    """An exported model could not be written or does not reproduce the eager model's outputs."""


def save_pruned_model(
    directory: str | Path, model: nn.Module, history: PruningHistory, *, meta: dict[str, Any] | None = None,
    sparse: bool = False,
) -> Path:
    """Write ``directory/{pruned_state_dict.pt, pruning_history.json, meta.json}`` atomically, file by file.

    With ``sparse`` (element-wise pruned models), also ``sparse_state_dict.pt`` (:mod:`autoprune.prune.sparse_format`),
    and the measured sizes of both forms, raw and gzip-compressed, in ``meta.json``'s ``sizes``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / STATE_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    atomic_write_json(directory / HISTORY_FILE, [[n, o, i] for n, o, i in history])
    meta = dict(meta or {})
    if sparse:
        save_sparse(directory / SPARSE_FILE, model)
        meta["sizes"] = file_sizes(directory / STATE_FILE, directory / SPARSE_FILE)
    atomic_write_json(directory / META_FILE, meta)
    return directory


def load_pruned_model(fresh_model: nn.Module, directory: str | Path, example_inputs: Any) -> nn.Module:
    """Turn a fresh, unpruned instance of the architecture into the saved pruned model (in place).

    The pruning history is replayed with Torch-Pruning, then the weights are loaded with
    ``torch.load(weights_only=True)``: no code is unpickled. A directory holding only the sparse form
    (``sparse_state_dict.pt``) loads from it.
    """
    check_module("fresh_model", fresh_model)
    directory = Path(directory)
    weights = STATE_FILE if (directory / STATE_FILE).exists() else SPARSE_FILE
    for name in (weights, HISTORY_FILE):
        if not (directory / name).exists():
            raise RunDirError(f"{str(directory)!r} has no {name}; expected a directory written by save_pruned_model")
    try:
        history = read_json_file(directory / HISTORY_FILE, what="pruning history")
    except ConfigError as exc:  # too large, not text, not JSON
        raise RunDirError(str(exc)) from None
    replay_history(fresh_model, history, example_inputs)
    if weights == SPARSE_FILE:
        state = load_sparse(directory / SPARSE_FILE)
    else:
        state = read_tensors(directory / STATE_FILE, what="pruned weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{str(directory / weights)!r} must hold a state dict (names -> tensors), got "
                          f"{type(state).__name__}")
    try:
        fresh_model.load_state_dict(state)
    except RuntimeError as exc:
        mismatch = " ".join(str(exc).split())
        raise ConfigError(f"the weights in {str(directory)!r} do not fit the model given ({mismatch}): it must be a "
                          "fresh instance of the architecture that was pruned, built with the same options") from exc
    return fresh_model


FORMATS = ("eager", "sparse", "compile", "export", "onnx")
FORMAT_FILES = {"export": "model.pt2", "compile": "model_compiled.pt2", "onnx": "model.onnx"}
CHECK_TOLERANCE = 1e-4


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Export formats as a tuple, each one of :data:`FORMATS` (a :class:`UnknownNameError` names a bad one)."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise unknown_name("export format", unknown[0] if unknown else "(none)", list(FORMATS))
    return tuple(dict.fromkeys(formats))


def _traced(model: nn.Module, example_inputs: Any) -> torch.export.ExportedProgram:
    """``torch.export`` of the model in eval mode with a dynamic batch dimension on every input."""
    inputs = tuple(x[:1].expand(2, *x.shape[1:]).contiguous() for x in as_tuple(example_inputs))
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(model.eval(), inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))


def _check_outputs(name: str, run: Any, model: nn.Module, example_inputs: Any) -> float:
    """Max absolute difference between ``run(inputs)`` and the eager model on a batch of 3 random inputs."""
    inputs = tuple(torch.randn(3, *x.shape[1:]) for x in as_tuple(example_inputs))
    with torch.no_grad():
        expected = model.eval()(*inputs)
        got = torch.as_tensor(run(inputs))
    difference = float((got - expected).abs().max())
    if not difference <= CHECK_TOLERANCE * max(1.0, float(expected.abs().max())):
        raise ExportError(f"{name} export gives different outputs than the eager model (max |diff| {difference:.3g})")
    return difference


def _onnx_runner(path: Path) -> Any:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})[0]


def _write_format(name: str, traced: torch.export.ExportedProgram, path: Path) -> Any:
    """Write ``traced`` as ``name`` to ``path`` (atomically); return a function running the written file."""
    if name == "export":
        atomic_write(path, lambda tmp: torch.export.save(traced, tmp))
        program = torch.export.load(path).module()
        return lambda inputs: program(*inputs)
    if name == "compile":
        atomic_write(path, lambda tmp: torch._inductor.aoti_compile_and_package(traced, package_path=str(tmp)))
        compiled = torch._inductor.aoti_load_package(str(path))
        return lambda inputs: compiled(*inputs)
    onnx_program = torch.onnx.export(traced, (), dynamo=True, verbose=False)
    atomic_write(path, lambda tmp: onnx_program.save(str(tmp), external_data=False))  # one self-contained file
    return _onnx_runner(path)


def _write_sparse(directory: Path, model: nn.Module, history: PruningHistory | None) -> dict[str, Any]:
    """The sparse form and the pruning history, reloaded and compared tensor by tensor."""
    if history is None:
        raise ExportError("the sparse format needs the pruning history (PruneResult.history)")
    path = save_sparse(directory / SPARSE_FILE, model)
    atomic_write_json(directory / HISTORY_FILE, [[n, o, i] for n, o, i in history])
    state, again = model.state_dict(), load_sparse(path)
    if state.keys() != again.keys() or not all(torch.equal(state[k], again[k]) for k in state):
        raise ExportError(f"{path} does not reload to the model's weights")
    return {"path": str(path), "sizes": export_sizes(state)}


def export_model(
    model: nn.Module, example_inputs: Any, directory: str | Path, formats: Sequence[str] = ("eager",), *,
    history: PruningHistory | None = None, meta: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write the (pruned) model in each of ``formats`` to ``directory``, each checked against eager outputs.

    ``eager``: state dict + pruning history (needs ``history``; :func:`load_pruned_model`); ``sparse``: the state
    dict in the sparse form (:mod:`autoprune.prune.sparse_format`) + pruning history, checked to reload bit for bit,
    with the measured sizes of both forms; ``export``:
    ``torch.export`` program ``model.pt2`` (``torch.export.load``); ``compile``: the same program compiled
    ahead of time by TorchInductor, ``model_compiled.pt2`` (``torch._inductor.aoti_load_package``); ``onnx``:
    ``model.onnx``, run in onnxruntime for the check. Batch size is dynamic in the traced formats.
    Returns, per format, the file written and the max output difference found.
    """
    check_module("model", model)
    formats = list(check_formats(formats))
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"export directory {str(directory)!r} is an existing file; name a directory")
    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    written: dict[str, dict[str, Any]] = {}
    if "eager" in formats:
        if history is None:
            raise ExportError("the eager format needs the pruning history (PruneResult.history)")
        written["eager"] = {"path": str(save_pruned_model(directory, model, history, meta=meta))}
    if "sparse" in formats:
        written["sparse"] = _write_sparse(directory, model, history)
    traced = _traced(model, example_inputs) if set(formats) & set(FORMAT_FILES) else None
    for name in (f for f in FORMATS if f in formats and f in FORMAT_FILES):
        path = directory / FORMAT_FILES[name]
        runner = _write_format(name, traced, path)
        written[name] = {"path": str(path), "max_abs_diff": _check_outputs(name, runner, model, example_inputs)}
    return written
