"""The sparse export: a state dict whose weight tensors with zeros are stored as a bitmask plus non-zero values.

Zeros from element-wise pruning do not make dense kernels faster, but they make the model smaller on disk: this
format stores every tensor with two or more dimensions that is smaller that way as ``{"shape", "bitmask",
"values"}`` (one bit per element, packed; the non-zero values in row-major order) and everything else as it is.
It is written with ``torch.save`` and read with ``torch.load(weights_only=True)``: tensors only, no code.
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.ground.errors import RunDirError
from search_spaces.ground.io import MAX_CHECKPOINT_BYTES, atomic_write, check_size
from search_spaces.measure import stored_bytes

FORMAT = "autoprune.sparse_state_dict.v1"
SPARSE_FILE = "sparse_state_dict.pt"
DENSE_FILE = "pruned_state_dict.pt"


def _smaller_sparse(tensor: torch.Tensor) -> bool:
    return stored_bytes(tensor) < tensor.numel() * tensor.element_size()


def encode(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The sparse form of a state dict (see the module docstring)."""
    dense: dict[str, torch.Tensor] = {}
    sparse: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if not _smaller_sparse(tensor):
            dense[name] = tensor.clone()
            continue
        flat = tensor.flatten()
        mask = flat != 0
        sparse[name] = {
            "shape": torch.tensor(tensor.shape, dtype=torch.int64),
            "bitmask": torch.from_numpy(np.packbits(mask.numpy())),
            "values": flat[mask].clone(),
        }
    return {"format": FORMAT, "dense": dense, "sparse": sparse}


def decode(payload: Any, *, source: str = "sparse state dict") -> dict[str, torch.Tensor]:
    """The state dict :func:`encode` was given, bit for bit; raises :class:`RunDirError` on a malformed payload.

    A tensor's size is checked against its bitmask (one bit per element), so a decoded tensor is never larger
    than eight elements per stored byte.
    """
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunDirError(f"{source} is not an autoprune sparse state dict (expected format {FORMAT!r})")
    dense, sparse = payload.get("dense"), payload.get("sparse")
    if not isinstance(dense, dict) or not isinstance(sparse, dict) \
            or not all(isinstance(t, torch.Tensor) for t in dense.values()):
        raise RunDirError(f"{source} must hold 'dense' (names -> tensors) and 'sparse' (names -> entries)")
    state = dict(dense)
    for name, entry in sparse.items():
        shape, bitmask, values = _entry(entry, f"{source}: {name}")
        numel = int(np.prod(shape)) if shape else 1
        mask = torch.from_numpy(np.unpackbits(bitmask.numpy(), count=numel).astype(bool))
        if int(mask.sum()) != values.numel():
            raise RunDirError(f"{source}: {name} has {int(mask.sum())} bits set but {values.numel()} values")
        flat = torch.zeros(numel, dtype=values.dtype)
        flat[mask] = values
        state[name] = flat.reshape(shape)
    return state


def _entry(entry: Any, where: str) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """A sparse entry's shape, bitmask and values, checked against each other."""
    parts = [entry.get(key) for key in ("shape", "bitmask", "values")] if isinstance(entry, dict) else []
    if len(parts) != 3 or not all(isinstance(part, torch.Tensor) for part in parts):
        raise RunDirError(f"{where} must be a mapping of tensors 'shape', 'bitmask' and 'values'")
    shape, bitmask, values = parts
    if shape.dim() != 1 or shape.dtype != torch.int64 or bool((shape < 0).any()) \
            or bitmask.dim() != 1 or bitmask.dtype != torch.uint8 or values.dim() != 1:
        raise RunDirError(f"{where}: 'shape' must be non-negative int64 sizes, 'bitmask' and 'values' 1-d "
                          "(bitmask uint8)")
    sizes = [int(d) for d in shape]
    numel = int(np.prod(sizes, dtype=object)) if sizes else 1
    if bitmask.numel() != -(-numel // 8):
        raise RunDirError(f"{where}: shape {sizes} needs a bitmask of {-(-numel // 8):,} bytes, got "
                          f"{bitmask.numel():,}")
    return sizes, bitmask, values


def save_sparse(path: str | Path, model: nn.Module) -> Path:
    """Write ``model``'s state dict in the sparse form to ``path``, atomically."""
    path = Path(path)
    payload = encode(model.state_dict())
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def read_tensors(path: str | Path, *, what: str) -> Any:
    """A tensor file's contents (``torch.load(weights_only=True)``, at most ``MAX_CHECKPOINT_BYTES``); a
    :class:`RunDirError` naming the file when it is corrupt or foreign."""
    path = Path(path)
    check_size(path, what=what, limit=MAX_CHECKPOINT_BYTES)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a corrupt or foreign file: say which
        raise RunDirError(f"{str(path)!r} is not a readable {what} file ({type(exc).__name__}: {exc})") from exc


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file :func:`save_sparse` wrote: the dense state dict (``torch.load(weights_only=True)``)."""
    return decode(read_tensors(path, what="sparse weights"), source=repr(str(path)))


def file_sizes(dense: Path, sparse: Path) -> dict[str, int]:
    """Bytes of a dense and a sparse state dict file, raw and gzip-compressed (measured on the files)."""
    sizes = {}
    for key, path in (("dense", dense), ("sparse", sparse)):
        data = Path(path).read_bytes()
        sizes[f"{key}_bytes"], sizes[f"{key}_gzip_bytes"] = len(data), len(gzip.compress(data))
    return sizes


def export_sizes(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Bytes on disk of a state dict written densely and in the sparse form, raw and gzip-compressed (both written
    to a temporary directory and measured, not estimated)."""
    with tempfile.TemporaryDirectory() as directory:
        dense, sparse = Path(directory) / DENSE_FILE, Path(directory) / SPARSE_FILE
        torch.save(dict(state), dense)
        torch.save(encode(state), sparse)
        return file_sizes(dense, sparse)
