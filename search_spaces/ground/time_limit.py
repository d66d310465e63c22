"""A limit on CPU time that interrupts long-running Python code (Torch-Pruning's dependency walks) in the main thread.

CPU time, not wall-clock time: on a loaded machine the same work takes longer, and it is the work that is limited."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TimeUp(BaseException):
    """Raised where the code is when the limit passes. A BaseException, so that the ``except Exception`` around
    Torch-Pruning's calls (ours and its own) cannot swallow it; ``where`` says what was running."""

    def __init__(self, where: str = "") -> None:
        super().__init__(where)
        self.where = where


@contextmanager
def interrupt_after(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TimeUp` in the block once the process has used ``seconds`` of CPU time in it.

    Off (the block runs to its end) when ``seconds`` is None, outside the main thread (signals reach only the
    main thread), on platforms without ``SIGPROF``, and when a profiling timer of the caller's is already
    running (it is left alone).
    """
    main = threading.current_thread() is threading.main_thread()
    idle = hasattr(signal, "SIGPROF") and signal.getitimer(signal.ITIMER_PROF)[0] == 0
    usable = seconds is not None and main and idle
    if not usable:
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise TimeUp()

    previous = signal.signal(signal.SIGPROF, interrupt)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
