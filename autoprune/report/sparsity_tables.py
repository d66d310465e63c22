"""Per-tensor sparsity of a model or a saved state dict: shape, non-zeros, density, share of the model, and the
size on disk of its dense and sparse forms."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from autoprune.prune.export import SPARSE_FILE, STATE_FILE
from autoprune.prune.sparse_format import load_sparse, read_tensors
from search_spaces.ground.errors import RunDirError
from search_spaces.measure import effective_parameters

COLUMNS = ("tensor", "shape", "numel", "nonzeros", "density", "sparsity", "share")
# Buffers a state dict holds besides parameters (BatchNorm's statistics): not weights, left out of the report.
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
OTHER = "(other parameters)"
TOTAL = "total"
STATE_FILES = (STATE_FILE, SPARSE_FILE)


def sparsity_report(source: nn.Module | Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """One row per weight tensor (two or more dimensions), one for the other parameters together (biases,
    normalization), and a total row: shape, element count, non-zeros, density, sparsity and share of the model's
    elements. ``source`` is a model (``torch.nn.utils.prune`` masks applied) or a state dict (BatchNorm's
    running statistics left out)."""
    tensors = effective_parameters(source) if isinstance(source, nn.Module) else {
        name: t for name, t in source.items() if t.is_floating_point() and not name.endswith(BUFFER_SUFFIXES)}
    if not tensors:
        raise RunDirError("no floating-point parameters to report on")
    total = sum(t.numel() for t in tensors.values())
    rows = [_row(name, tuple(t.shape), t.numel(), int(torch.count_nonzero(t)), total)
            for name, t in tensors.items() if t.dim() >= 2]
    others = [t for t in tensors.values() if t.dim() < 2]
    if others:
        rows.append(_row(OTHER, (), sum(t.numel() for t in others),
                         sum(int(torch.count_nonzero(t)) for t in others), total))
    rows.append(_row(TOTAL, (), total, sum(r["nonzeros"] for r in rows), total))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(name: str, shape: tuple[int, ...], numel: int, nonzeros: int, total: int) -> dict[str, object]:
    density = nonzeros / numel if numel else 0.0
    return {"tensor": name, "shape": "x".join(map(str, shape)), "numel": numel, "nonzeros": nonzeros,
            "density": density, "sparsity": 1 - density, "share": numel / total}


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict behind ``path``: a ``.pt`` state dict, an exported model directory (dense or sparse form), or
    a run directory (its ``model/``); read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.is_dir():
        directory = path / "model" if (path / "model").is_dir() else path
        found = [directory / name for name in STATE_FILES if (directory / name).is_file()]
        if not found:
            raise RunDirError(f"{str(path)!r} has no {' or '.join(STATE_FILES)} (nor a model/ holding one); expected "
                              "a run directory, an exported model directory or a .pt state dict")
        path = found[0]
    if path.name == SPARSE_FILE:
        return load_sparse(path)
    state = read_tensors(path, what="checkpoint")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint wrapping its weights
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)

