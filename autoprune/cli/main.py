"""The ``autoprune`` command line: search, sensitivity, demo, report, train, apply, sparsity; serve, submit, runs."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path

from autoprune.cli.commands import MACHINE_ERRNOS, Interrupted, MachineStopped
from autoprune.cli.parser import build_parser
from autoprune.cli.render import console, print_error, print_line
from autoprune.study.rundir import CONFIG
from autoprune.trial import EvaluationError
from search_spaces.ground.errors import AutopruneError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command; 2 on bad input, 1 on a full or read-only disk, 130 on Ctrl+C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (AutopruneError, EvaluationError) as exc:  # bad input; a finetune that diverged (e.g. --lr too high)
        print_error(str(exc))
        return 2
    except Interrupted as stop:
        print_line(f"interrupted; {_resume_hint(stop.run_dir) or 'nothing was written to resume'}")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except MachineStopped as stop:
        hint = _resume_hint(stop.run_dir)
        print_error(f"{_cannot_write(stop.error)}; {hint or 'nothing was written to resume'}")
        return 1
    except OSError as exc:  # another command on a full or read-only disk
        if exc.errno not in MACHINE_ERRNOS:
            raise
        print_error(_cannot_write(exc))
        return 1


def _resume_hint(run_dir: str) -> str | None:
    """How to go on with a stopped search, if it wrote enough to resume."""
    if not (Path(run_dir) / CONFIG).exists():
        return None
    return f"resume with: autoprune search --resume {shlex.quote(run_dir)}"


def _cannot_write(exc: OSError) -> str:
    where = f" {str(exc.filename)!r}" if exc.filename else ""
    return f"cannot write{where}: {exc.strerror or exc}"
