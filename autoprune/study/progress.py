"""What a running search shows: rich progress bars in a terminal or a notebook, one line per event elsewhere.

``search(..., progress=True)`` and ``autoprune search`` use :class:`SearchDisplay`. In a terminal, and in a
notebook with ipywidgets, the bars update in place (baseline training, trials done of the total with the best
feasible accuracy so far); when the output is a file or a pipe (a script's log, a notebook without
ipywidgets) every event is one line, printed when it happens.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from autoprune.study.study import Progress as SearchProgress


def live_capable(console: Console) -> bool:
    """Whether ``console`` can redraw a bar in place (a terminal, or Jupyter with ipywidgets installed)."""
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    return console.is_terminal and not console.is_dumb_terminal


class SearchDisplay:
    """A search's progress callback that draws it. Use it as a context manager (or call :meth:`close`)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.live = live_capable(self.console)
        self.bars = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, disable=not self.live,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> SearchDisplay:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop redrawing (the bars stay on screen as they last were)."""
        self.bars.stop()

    def __call__(self, event: SearchProgress) -> None:
        if event.stage == "trial":
            best = "-" if event.best_accuracy is None else f"{event.best_accuracy:.4f}"
            self.show("search", event.completed, event.total, f"best feasible acc {best}")
        elif event.stage != "done":
            self.say(event.message)

    def training(self, epochs: int) -> Callable[[int, float], None]:
        """An ``on_epoch`` callback that shows baseline training (only if training actually happens)."""
        return lambda epoch, accuracy: self.show("train baseline", epoch, epochs, f"val acc {accuracy:.4f}")

    def batches(self, epochs: int) -> Callable[[int, int, int], None]:
        """An ``on_batch`` callback that shows the batches trained of the current epoch (redrawn in place; in a log,
        a line at every tenth of the epoch)."""
        def shown(epoch: int, done: int, total: int) -> None:
            if self.live or done == total or done % -(-total // 10) == 0:  # ceil: at most ten lines
                self.show("train epoch", done, total, f"epoch {epoch} of {epochs}")
        return shown

    def show(self, name: str, completed: int, total: int, info: str) -> None:
        """Move the bar ``name`` to ``completed`` of ``total`` (a line of text when nothing can be redrawn)."""
        if not self.live:
            self.say(f"{name} {completed}/{total}" + (f" · {info}" if info else ""))
            return
        if name not in self._tasks:
            self.bars.start()
            self._tasks[name] = self.bars.add_task(name, total=total, info="")
        self.bars.update(self._tasks[name], completed=completed, total=total, info=info)

    def say(self, message: str) -> None:
        """One line (above the bars while they are drawn)."""
        self.console.print(Text(message), highlight=False, soft_wrap=True)
