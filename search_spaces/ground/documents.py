"""JSON and YAML documents (configs, request bodies, run files, CLI options, policies) read with their numbers
held to range: the one place where an integer or a float from outside is checked before anything uses it. (A
saved searcher state is read with plain JSON: its random generators' states hold 128-bit integers, and the trial
log names each state file by its SHA-256, so it is checked before it is read.)

Integers must fit in 64 bits (from ``-2**63`` to ``2**64 - 1``): a longer one would overflow torch, numpy or a
seed anyway, and one of more than 4,300 digits cannot even be converted or shown by Python. A float written
with a finite value must stay finite (``1e400`` would silently become infinity); ``NaN`` and ``Infinity`` as
written (which Python's own JSON writes for such floats) are kept in JSON, and YAML's ``.inf`` and ``.nan``.
Every refusal is a :class:`~search_spaces.ground.errors.ConfigError` naming the document and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import yaml

from search_spaces.ground.errors import ConfigError

#: The integers a document may hold.
INT_LOW, INT_HIGH = -(2**63), 2**64 - 1
#: Digits (or characters of a YAML integer, prefix and separators included) read before a value is refused.
_MAX_INT_TEXT = 40
_RANGE = "integers must be from -2**63 to 2**64 - 1"


class NumberRangeError(ConfigError):
    """A number in a document is outside the range autoprune reads."""


class NestingError(ConfigError):
    """A document is nested deeper than Python's parsers recurse."""


def describe_number(value: object) -> str:
    """``value`` as a message shows it: in full unless it is an integer too long to show (Python cannot
    ``str()`` one of more than 4,300 digits), which is described by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    return repr(value)


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...{text[-4:]} ({len(text):,} characters)"


def _held_int(text: str, convert: Callable[[], int], where: str = "") -> int:
    """``convert()`` (the integer written as ``text``), refused when out of range; a long decimal is refused before
    it is converted (Python's decimal conversion is quadratic; binary, octal and hex ones are not)."""
    digits = text.lstrip("+-").replace("_", "")
    if len(digits) > _MAX_INT_TEXT and digits[:2].lower() not in ("0b", "0o", "0x"):
        raise NumberRangeError(f"the integer {_short(text)}{where} is out of range: {_RANGE}")
    value = convert()
    if not INT_LOW <= value <= INT_HIGH:
        raise NumberRangeError(f"the integer {_short(text)}{where} is out of range: {_RANGE}")
    return value


def _int_from_text(text: str) -> int:
    """A JSON integer literal as an int, refused when out of range."""
    return _held_int(text, lambda: int(text))


def _float_from_text(text: str) -> float:
    """A JSON number with a fraction or exponent as a float, refused when it overflows to infinity."""
    value = float(text)
    if math.isinf(value):
        raise NumberRangeError(f"the number {_short(text)} is too large for a float (at most about 1.8e308)")
    return value


def loads_json(text: str | bytes, *, what: str) -> Any:
    """The JSON value of ``text`` with its numbers held to range.

    Raises:
        ConfigError: the text is not UTF-8 or not JSON, is nested too deeply, or holds a number out of range;
            the message starts with ``what`` (e.g. ``"config file 'a.json'"``).
    """
    try:
        return json.loads(text, parse_int=_int_from_text, parse_float=_float_from_text)
    except NumberRangeError as exc:
        raise NumberRangeError(f"{what}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise NestingError(f"{what} is nested too deeply") from None


class CheckedLoader(yaml.SafeLoader):
    """Safe YAML whose integers and floats are held to range as they are constructed."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        return _held_int(text, lambda: super(CheckedLoader, self).construct_yaml_int(node),
                         f" (line {node.start_mark.line + 1})")

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)
        if math.isinf(value) and "inf" not in str(self.construct_scalar(node)).lower():
            raise NumberRangeError(f"the number {_short(str(self.construct_scalar(node)))} (line "
                                   f"{node.start_mark.line + 1}) is too large for a float (at most about 1.8e308)")
        return value


CheckedLoader.add_constructor("tag:yaml.org,2002:int", CheckedLoader.construct_yaml_int)
CheckedLoader.add_constructor("tag:yaml.org,2002:float", CheckedLoader.construct_yaml_float)


class PlainLoader(CheckedLoader):
    """:class:`CheckedLoader` without aliases: a few bytes of anchors and aliases can stand for gigabytes once
    written out (for text from untrusted senders)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"YAML aliases (*name) are not accepted here; write the value out (line "
                              f"{mark.line + 1}, column {mark.column + 1})")
        return super().compose_node(parent, index)


def loads_yaml(text: str, *, what: str, aliases: bool = True) -> Any:
    """The value of the YAML ``text`` (safe: plain data only) with its numbers held to range; ``aliases=False``
    refuses aliases (:class:`PlainLoader`).

    Raises:
        ConfigError: the text is not YAML (or holds a tag safe YAML refuses), is nested too deeply, holds a
            number out of range or (``aliases=False``) an alias; the message starts with ``what``.
    """
    try:
        return yaml.load(text, Loader=CheckedLoader) if aliases else yaml.load(text, Loader=PlainLoader)
    except ConfigError as exc:
        raise type(exc)(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {exc}") from None
    except RecursionError:
        raise NestingError(f"{what} is nested too deeply") from None
