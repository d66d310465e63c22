"""Building frozen option dataclasses from mappings (config files, keyword dicts) with clear errors."""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from search_spaces.ground.documents import INT_HIGH, describe_number
from search_spaces.ground.errors import ConfigError, DataError

T = TypeVar("T")

#: The largest seed: every generator a seed reaches (torch, numpy's legacy RandomState, Ray Tune's) takes it.
MAX_SEED = 2**32 - 1


def check_int(name: str, value: object, *, low: int, high: int = INT_HIGH) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer (Python's or numpy's; not a bool) from ``low``
    to ``high`` (by default the largest a document may hold: 64 bits)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {describe_number(value)}")
    if value > high:
        raise ConfigError(f"{name} must be an integer from {low} to {high:,}, got {describe_number(value)}")


def check_seed(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a seed every generator takes: 0 to :data:`MAX_SEED`."""
    check_int(name, value, low=0, high=MAX_SEED)


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) with a finite float value (a huge integer has none)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond the floats
        return False


def check_number(name: str, value: object, *, low: float, inclusive: bool = True) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite real number >= ``low`` (> with ``inclusive=False``)."""
    if not is_finite_number(value) or value < low or (not inclusive and value == low):  # type: ignore[operator]
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{name} must be a number {relation} {low}, got {describe_number(value)}")


def check_fraction(name: str, value: object, *, low_inclusive: bool, high_inclusive: bool) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a real number between 0 and 1 (each end included as given)."""
    if (not is_finite_number(value) or not 0 <= value <= 1 or (value == 0 and not low_inclusive)  # type: ignore[operator]
            or (value == 1 and not high_inclusive)):
        interval = f"{'[' if low_inclusive else '('}0, 1{']' if high_inclusive else ')'}"
        raise ConfigError(f"{name} must be a number in {interval}, got {describe_number(value)}")


def check_str(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def check_module(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        hint = ("; this looks like a state dict: build the model and call load_state_dict on it"
                if isinstance(value, Mapping) and any(torch.is_tensor(v) for v in value.values()) else "")
        raise ConfigError(f"{name} must be a torch.nn.Module, got {type(value).__name__} {reprlib.repr(value)}{hint}")


def check_batches(name: str, value: object) -> None:
    """Raise :class:`DataError` unless ``value`` can be iterated for batches (a DataLoader, a list of
    ``(inputs, targets)``, ...)."""
    iterable = isinstance(value, Iterable) or hasattr(type(value), "__getitem__")
    if value is None or isinstance(value, (str, bytes)) or not iterable:
        raise DataError(f"{name} must be an iterable of (inputs, targets) batches, such as a DataLoader; got "
                        f"{type(value).__name__} {reprlib.repr(value)}")


def from_mapping(cls: type[T], data: Mapping[str, Any] | T | None, *, what: str) -> T:
    """``cls(**data)``, rejecting non-mappings and unknown keys with a :class:`ConfigError`."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {type(data).__name__}: {data!r}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; accepted: {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"bad {what}: {exc}") from exc
