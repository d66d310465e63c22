"""Why a search stopped before its end: Ctrl+C or the machine (light: the entry point catches them)."""

from __future__ import annotations

import errno
import shlex

#: Errors of the machine rather than of the input: the disk is full or read-only, a file may not be touched.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class Stopped(Exception):
    """A search stopped early; ``resumable``: its run directory holds enough to resume."""

    def __init__(self, run_dir: str, *, resumable: bool) -> None:
        super().__init__(run_dir)
        self.run_dir, self.resumable = run_dir, resumable

    @property
    def hint(self) -> str:
        """How to go on."""
        if not self.resumable:
            return "nothing was written to resume"
        return f"resume with: autoprune search --resume {shlex.quote(self.run_dir)}"


class Interrupted(Stopped):
    """Ctrl+C during a search."""


class MachineStopped(Stopped):
    """A search stopped by the machine (``error`` has one of :data:`MACHINE_ERRNOS`); finished trials are kept."""

    def __init__(self, run_dir: str, error: OSError, *, resumable: bool) -> None:
        super().__init__(run_dir, resumable=resumable)
        self.error = error


def cannot_write(exc: OSError) -> str:
    """``exc`` as one line: what could not be written (a full or read-only disk) or accessed (permissions), and
    why."""
    verb = "cannot access" if exc.errno in (errno.EACCES, errno.EPERM) else "cannot write"
    where = f" {str(exc.filename)!r}" if exc.filename else ""
    return f"{verb}{where}: {exc.strerror or exc}"
