"""The queue: at most N driver processes at once, started in the order runs were queued, watched until they end.

Each run is one ``python -m autoprune.cli.driver search ...`` process (see docs/service.md for why a driver process
and not a Ray job). One thread does all starting, signalling and reaping, so the kernel ties every driver's
life to it (``autoprune.cli.driver``). A driver that crashes or runs out of memory ends its own run only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from autoprune.builtins.registry import ALLOW_IMPORTS
from autoprune.service.auth import TOKEN_ENV
from autoprune.service.store import DRIVER_LOG, RUN, SEARCH_CONFIG, RunStateError, RunStore, now

log = logging.getLogger(__name__)
PARENT_ENV = "AUTOPRUNE_SERVER_PID"  # the driver exits at once if its parent is no longer this server
INTERRUPTED = "the server stopped while this run was executing; POST /runs/{id}/resume continues it"


@dataclass
class _Driver:
    process: subprocess.Popen
    output: IO[bytes]
    signalled_at: float | None = None


@dataclass
class Supervisor:
    """Starts queued runs (at most ``max_concurrent`` at once), cancels and reaps them.

    Attributes:
        store: the runs.
        max_concurrent: runs executing at once.
        allow_imports: whether drivers may import ``package.module:factory`` strings.
        grace: seconds a cancelled driver gets after SIGINT before SIGKILL.
        poll: seconds between looks at the queue and the drivers.
    """

    store: RunStore
    max_concurrent: int = 1
    allow_imports: bool = False
    grace: float = 10.0
    poll: float = 0.2
    _drivers: dict[str, _Driver] = field(default_factory=dict)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Mark runs a previous server left executing as interrupted, then start watching the queue."""
        for job in self.store.all():
            if job["status"] == "running":
                status = "cancelled" if job["cancel_requested"] else "interrupted"
                self.store.update(job["id"], status=status, pid=None,
                                  message="" if status == "cancelled" else INTERRUPTED.format(id=job["id"]))
        self._thread = threading.Thread(target=self._loop, name="autoprune-supervisor", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now (after a submit, cancel or resume)."""
        self._wake.set()

    def stop(self) -> None:
        """Interrupt the executing runs (resumable) and stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    # -- the thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reap()
                self._cancel()
                self._start_queued()
            except Exception:  # a bad record must not stop the queue
                log.exception("supervisor step failed")
            self._wake.wait(self.poll)
            self._wake.clear()
        self._shutdown()

    def _start_queued(self) -> None:
        for job in self.store.queued()[: max(0, self.max_concurrent - len(self._drivers))]:
            try:  # claimed before the driver starts: a cancel or delete in between finds it running, or wins
                self.store.change(job["id"], _claim)
            except RunStateError:
                continue
            directory = self.store.directory(job["id"])
            resume = (directory / RUN / "config.json").is_file()
            argv = ["search", "--resume", str(directory / RUN), "--trials", str(job["trials"]), "--trust-run-dir"] \
                if resume else ["search", str(directory / SEARCH_CONFIG), "--trials", str(job["trials"])]
            output = open(directory / DRIVER_LOG, "ab")  # noqa: SIM115 (closed when the driver is reaped)
            # a session of its own: Ctrl+C or a signal to the server's process group stops the server, which
            # interrupts its drivers itself (resumable); the kernel still ends them with the server (driver.py)
            try:
                process = subprocess.Popen([sys.executable, "-m", "autoprune.cli.driver", *argv], cwd=directory,
                                           stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                           env=self._environment(), start_new_session=True)
            except OSError as exc:
                output.close()
                self.store.update(job["id"], status="failed", message=f"the driver did not start: {exc}",
                                  finished=now())
                continue
            self._drivers[job["id"]] = _Driver(process, output)
            self.store.update(job["id"], pid=process.pid)

    def _environment(self) -> dict[str, str]:
        """The driver's environment: the server's without its tokens; imports as the server allows; the same
        autoprune package as the server."""
        inherited = {name: value for name, value in os.environ.items() if name != TOKEN_ENV}  # no secret to plugins
        return {**inherited, ALLOW_IMPORTS: "1" if self.allow_imports else "0", "PYTHONPATH": package_path(),
                PARENT_ENV: str(os.getpid())}

    def _cancel(self) -> None:
        for run_id, driver in self._drivers.items():
            if not self.store.get(run_id)["cancel_requested"]:
                continue
            if driver.signalled_at is None:
                driver.process.send_signal(signal.SIGINT)  # the CLI stops cleanly: the run stays resumable
                driver.signalled_at = time.monotonic()
            elif time.monotonic() - driver.signalled_at > self.grace:
                driver.process.kill()

    def _reap(self) -> None:
        for run_id, driver in list(self._drivers.items()):
            code = driver.process.poll()
            if code is None:
                continue
            driver.output.close()
            del self._drivers[run_id]
            job = self.store.get(run_id)
            if job["cancel_requested"]:
                status, message = "cancelled", ""
            elif code == 0:
                status, message = "done", ""
            else:
                status, message = "failed", _failure(code, self.store.directory(run_id) / DRIVER_LOG)
            self.store.update(run_id, status=status, exit_code=code, pid=None, message=message,
                              finished=now())

    def _shutdown(self) -> None:
        for driver in self._drivers.values():
            driver.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.grace
        for run_id, driver in self._drivers.items():
            try:
                driver.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                driver.process.kill()
                driver.process.wait()
            driver.output.close()
            job = self.store.get(run_id)
            status = "cancelled" if job["cancel_requested"] else "interrupted"
            self.store.update(run_id, status=status, pid=None, exit_code=driver.process.returncode,
                              message="" if status == "cancelled" else INTERRUPTED.format(id=run_id))
        self._drivers.clear()


def _claim(job: dict[str, Any]) -> dict[str, Any]:
    """The changes that mark a queued run as starting; refused if it is no longer queued."""
    if job["status"] != "queued":
        raise RunStateError(f"run {job['id']!r} is {job['status']}")
    return {"status": "running", "pid": None, "exit_code": None, "message": "", "started": now()}


def package_path() -> str:
    """``PYTHONPATH`` for a child process that imports this autoprune package first."""
    package_root = str(Path(__file__).resolve().parents[2])  # autoprune/service/supervisor.py -> the checkout
    return os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)


def _failure(code: int, output: Path) -> str:
    """Why a driver failed: the CLI's error line, or the signal that killed it."""
    if code < 0:
        name = signal.Signals(-code).name
        return f"the driver was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = output.read_bytes()[-20_000:].decode(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: "):]
    tail = [line for line in lines if line.strip()][-1:]
    return f"the driver exited with code {code}" + (f": {tail[0]}" if tail else "")
