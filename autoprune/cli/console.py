"""The CLI's two consoles and its one-line messages (light: the entry point prints errors with it).

Values (paths, names, run ids, messages) are printed as :class:`rich.text.Text`, never read as markup."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.text import Text

LOG_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    """A rich console whose lines are never hard-wrapped when it does not write to a terminal (a log file, a
    pipe, a notebook's captured output): tables get a wide page instead of 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or "COLUMNS" in os.environ else LOG_WIDTH
    return Console(stderr=stderr, soft_wrap=wide is not None, width=wide)


console = make_console(stderr=True)
out = make_console()


def print_line(text: str, *, to: Console | None = None) -> None:
    """``text`` literally (never read as markup), on one line (no hard breaks); on ``to`` (default: stderr)."""
    (to or console).print(Text(text), highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: message`` on stderr, the message literally and on one line."""
    console.print(Text("error: ", style="red") + Text(message), highlight=False, soft_wrap=True)
