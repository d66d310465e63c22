"""Saved state without pickle: plain values as JSON, arrays as tensors loaded with ``weights_only=True``.

A searcher's or scheduler's state dict may hold ``None``, booleans, numbers, strings, lists, tuples, dicts,
numpy scalars and arrays, and torch tensors. Nothing else is accepted, so nothing read back can run code.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from search_spaces.ground.errors import RunDirError

_TENSOR, _ARRAY, _TUPLE, _ITEMS, _SCALAR = "__tensor__", "__ndarray__", "__tuple__", "__items__", "__numpy__"
_MARKERS = (_TENSOR, _ARRAY, _TUPLE, _ITEMS, _SCALAR)


class StateError(RunDirError, TypeError):
    """A state holds a value that cannot be saved without pickle, or a saved state is malformed."""


def encode(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(JSON document, tensors)`` for ``state``; raises :class:`StateError` naming an unsupported value."""
    tensors: dict[str, torch.Tensor] = {}
    return _encode(state, tensors, "state"), tensors


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return {_SCALAR: [value.dtype.str, value.item()]}
    if isinstance(value, torch.Tensor):
        tensors[str(len(tensors))] = value.detach().cpu().clone()
        return {_TENSOR: str(len(tensors) - 1)}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise StateError(f"{where} is a numpy array of Python objects; only numeric arrays are saved")
        tensors[str(len(tensors))] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {_ARRAY: str(len(tensors) - 1)}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and k not in _MARKERS for k in value):
            return {k: _encode(v, tensors, f"{where}[{k!r}]") for k, v in value.items()}
        return {_ITEMS: [[_encode(k, tensors, f"{where} key"), _encode(v, tensors, f"{where}[{k!r}]")]
                         for k, v in value.items()]}
    raise StateError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a saved state may hold "
                     "only JSON values, numpy arrays and torch tensors")


def decode(document: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The state :func:`encode` was given."""
    if isinstance(document, list):
        return [decode(v, tensors) for v in document]
    if not isinstance(document, dict):
        return document
    if _TENSOR in document:
        return _tensor(document[_TENSOR], tensors)
    if _ARRAY in document:
        return _tensor(document[_ARRAY], tensors).numpy()
    if _TUPLE in document:
        return tuple(decode(v, tensors) for v in document[_TUPLE])
    if _ITEMS in document:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in document[_ITEMS]}
    if _SCALAR in document:
        dtype, value = document[_SCALAR]
        return np.dtype(dtype).type(value)
    return {k: decode(v, tensors) for k, v in document.items()}


def _tensor(key: str, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if key not in tensors:
        raise StateError(f"the saved state names tensor {key!r}, which its tensor file does not hold")
    return tensors[key]


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def to_bytes(state: Any) -> tuple[bytes, bytes]:
    """``(JSON bytes, tensor file bytes)`` of a state."""
    document, tensors = encode(state)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return json.dumps(document, allow_nan=True).encode(), buffer.getvalue()


def from_bytes(document: bytes, tensors: bytes, *, source: str, tensor_source: str | None = None) -> Any:
    """The state saved by :func:`to_bytes`; a malformed file is a :class:`StateError` naming it: ``source`` (the
    JSON document) or ``tensor_source`` (the tensor file; default ``source``)."""
    try:
        loaded = torch.load(io.BytesIO(tensors), weights_only=True, map_location="cpu")
    except Exception as exc:  # whatever a damaged or crafted file raises, it is refused (and named)
        raise StateError(f"{tensor_source or source} is not a readable autoprune state ({type(exc).__name__}: "
                         f"{exc})") from exc
    if not isinstance(loaded, dict) or not all(isinstance(t, torch.Tensor) for t in loaded.values()):
        raise StateError(f"{tensor_source or source} holds something other than named tensors")
    try:
        return decode(json.loads(document), loaded)
    except StateError as exc:
        raise StateError(f"{source}: {exc}") from exc
    except Exception as exc:  # whatever a damaged or crafted file raises, it is refused (and named)
        raise StateError(f"{source} is not a readable autoprune state ({type(exc).__name__}: {exc})") from exc


def unreadable_part(document: bytes, tensors: bytes) -> str | None:
    """Which part of a saved state cannot be read: ``"tensors"``, ``"document"``, or None when both can."""
    try:
        from_bytes(document, tensors, source="document", tensor_source="tensors")
    except StateError as exc:
        return "tensors" if str(exc).startswith("tensors ") else "document"
    return None


def digest(*parts: bytes) -> str:
    """sha256 over the parts, as hex."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little"))
        hasher.update(part)
    return hasher.hexdigest()
