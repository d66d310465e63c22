"""A wall-clock limit on a search: no trial starts after it, the running ones finish, the best so far is kept.

``time_budget`` is seconds or a duration such as ``"2h"``, ``"90m"``, ``"1h30m"`` or ``"45s"``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from autoprune.searcher import Searcher
from autoprune.trial import Score, Trial
from search_spaces.ground.documents import describe_number
from search_spaces.ground.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)\s*([smhd])")
_SECONDS = re.compile(r"\s*[-+]?\d+(?:\.\d*)?\s*")  # a plain number, as the CLI passes it


def parse_duration(value: float | str, *, name: str = "time_budget") -> float:
    """Seconds from a number (seconds, also as a string) or a string like ``2h``, ``1h30m``, ``90s`` (units s, m,
    h, d)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number or (isinstance(value, str) and _SECONDS.fullmatch(value)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond the floats
            seconds = math.inf
    elif isinstance(value, str) and re.fullmatch(rf"\s*(?:{_DURATION.pattern}\s*)+", value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(value))
    else:
        raise ConfigError(f"{name} must be seconds or a duration like 2h, 90m, 1h30m or 45s, got "
                          f"{describe_number(value)}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name} must be a positive duration, got {describe_number(value)}")
    return seconds


class TimeLimited:
    """Stands in for a searcher in ``Executor.run``: once ``seconds`` have passed since ``start``, ``ask()``
    proposes nothing, so the executors finish the trials already running and stop."""

    def __init__(self, searcher: Searcher, seconds: float, *, start: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.searcher, self.seconds, self.start, self.clock = searcher, seconds, start, clock

    @property
    def expired(self) -> bool:
        return self.clock() - self.start >= self.seconds

    def ask(self) -> Trial | None:
        return None if self.expired else self.searcher.ask()

    def tell(self, trial: Trial, score: Score) -> None:
        self.searcher.tell(trial, score)

    @property
    def pending(self) -> tuple[int, ...]:
        return self.searcher.pending
