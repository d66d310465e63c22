"""Building frozen option dataclasses from mappings (config files, keyword dicts) with clear errors."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
from torch import nn

from search_spaces.errors import ConfigError, DataError

T = TypeVar("T")


def check_int(name: str, value: object, *, low: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer (Python's or numpy's; not a bool) >= ``low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def check_number(name: str, value: object, *, low: float, inclusive: bool = True) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a real number >= ``low`` (> with ``inclusive=False``)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or value < low or (not inclusive and value == low):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{name} must be a number {relation} {low}, got {value!r}")


def check_str(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def check_module(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise ConfigError(f"{name} must be a torch.nn.Module, got {type(value).__name__} {_short(value)}")


def check_batches(name: str, value: object) -> None:
    """Raise :class:`DataError` unless ``value`` can be iterated for batches (a DataLoader, a list of
    ``(inputs, targets)``, ...)."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise DataError(f"{name} must be an iterable of (inputs, targets) batches, such as a DataLoader; got "
                        f"{type(value).__name__} {_short(value)}")


def _short(value: object) -> str:
    """``repr(value)`` cut to 60 characters, for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
