"""The ``autoprune`` command line: search, sensitivity, demo, report, train, apply, sparsity; serve, submit, runs."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

from autoprune.cli.console import console, print_error, print_line
from autoprune.cli.parser import build_parser
from autoprune.cli.stops import MACHINE_ERRNOS, Interrupted, MachineStopped, cannot_write
from autoprune.trial import EvaluationError
from search_spaces.ground.errors import AutopruneError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command; 2 on bad input, 1 on a full or read-only disk, 130 on Ctrl+C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    module, _, function = args.func.partition(":")  # imported now: --help never loads torch
    command = getattr(importlib.import_module(module), function)
    try:
        return command(args)
    except (AutopruneError, EvaluationError) as exc:  # bad input; a finetune that diverged (e.g. --lr too high)
        print_error(str(exc))
        return 2
    except Interrupted as stop:
        print_line(f"interrupted; {stop.hint}")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except MachineStopped as stop:
        print_error(f"{cannot_write(stop.error)}; {stop.hint}")
        return 1
    except OSError as exc:  # another command on a full or read-only disk
        if exc.errno not in MACHINE_ERRNOS:
            raise
        print_error(cannot_write(exc))
        return 1
