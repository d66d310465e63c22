"""The process of one served search: ``autoprune search`` that dies with the server that started it.

``autoprune serve`` starts ``python -m autoprune.cli.driver search ...`` per run. On Linux the kernel kills the
driver when the server's supervisor thread ends (``PR_SET_PDEATHSIG``), even on a SIGKILL of the server, so a
restarted server never finds an orphan writing to a run: the run is interrupted and resumes from its trial log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

from autoprune.cli.main import main as cli_main
from autoprune.service.supervisor import PARENT_ENV

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent goes; exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = os.environ.get(PARENT_ENV)
    if expected is not None and os.getppid() != int(expected):  # the server died before prctl
        os._exit(137)


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()
    # a server started in the background (``nohup ... &``) passes SIGINT on as ignored: cancelling sends SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
