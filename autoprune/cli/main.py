"""The ``autoprune`` command line: search, sensitivity, demo, report, train, apply, sparsity; serve, submit, runs."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path

from autoprune.cli.commands import Interrupted
from autoprune.cli.parser import build_parser
from autoprune.cli.render import console, print_error, print_line
from autoprune.study.rundir import CONFIG
from autoprune.trial import EvaluationError
from search_spaces.ground.errors import AutopruneError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command; 2 on bad input, 130 on Ctrl+C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except (AutopruneError, EvaluationError) as exc:  # bad input; a finetune that diverged (e.g. --lr too high)
        print_error(str(exc))
        return 2
    except Interrupted as stop:
        written = (Path(stop.run_dir) / CONFIG).exists()
        hint = f"resume with: autoprune search --resume {shlex.quote(stop.run_dir)}" if written else \
            "nothing was written to resume"
        print_line(f"interrupted; {hint}")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
