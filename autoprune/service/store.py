"""The runs under the runs root: one directory per run, its ``job.json`` and the autoprune run directory in it.

Layout of ``<runs root>/<id>/``:

- ``job.json``: id, owner, created, the config as run, the trial target, status (queued, running, done, failed,
  cancelled, interrupted), the driver's pid and exit code; rewritten atomically on every change;
- ``search.json``: the config file the driver process reads (``autoprune search search.json``);
- ``driver.log``: the driver's output;
- ``run/``: the run directory (trial log, state, final outputs): the search's own source of truth.

One server owns a runs root at a time (``.server.lock``); it keeps the records in memory and writes them
through, so a restarted server finds every run again. Every record is read defensively: a run whose
``job.json``, trial log or summary cannot be read is *damaged* (listed with its id and why, refused with 409 by
the requests that need the damaged file, removable with ``DELETE``), and never takes another run or the server
down.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoprune.composition.config import SearchConfig
from search_spaces.ground.documents import loads_json
from search_spaces.ground.errors import ConfigError, RunDirError
from search_spaces.ground.io import atomic_write_json

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")
JOB, SEARCH_CONFIG, DRIVER_LOG, RUN = "job.json", "search.json", "driver.log", "run"
CHECKPOINTS = "checkpoints"
SERVER_LOCK = ".server.lock"
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
MAX_JOB_BYTES = 8 << 20
SKIPPED = ("ray", "state")  # top-level directories no client needs
log = logging.getLogger(__name__)


class NoSuchRunError(LookupError):
    """No run of that id under the runs root."""


class RunStateError(Exception):
    """The run is not in a state that allows the request (e.g. deleting a running search)."""


class DamagedRunError(RunDirError):
    """A file of the run (its job record, trial log or summary) cannot be read; the message says which and why."""


class JobRecord(BaseModel):
    """What a run's ``job.json`` must hold to be served (entries besides these are kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str
    owner: str
    created: str
    config: dict[str, Any]
    trials: int = Field(ge=1)
    status: Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
    pid: int | None
    exit_code: int | None
    message: str
    cancel_requested: bool
    queued_at: int = 0  # not written by the first servers
    resume: bool = False


class RunStore:
    """Runs by id; every change is written to the run's ``job.json`` before it is visible."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()  # drivers run in their run's directory: a relative path breaks there
        self.root.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.root / CHECKPOINTS
        self._owner_lock = _lock_root(self.root)
        self._lock = threading.RLock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._damaged: dict[str, tuple[str | None, str]] = {}  # run id -> (owner if readable, why)
        self._progress: dict[str, tuple[tuple[int, int] | None, int, float | None]] = {}  # by trial log version
        for path in sorted(self.root.glob(f"*/{JOB}")):
            if RUN_ID.match(path.parent.name):
                try:
                    self._jobs[path.parent.name] = _read_job(path)
                except DamagedRunError as exc:  # one bad record must not hide the others
                    log.warning("not serving run %s: %s", path.parent.name, exc)
                    self._damaged[path.parent.name] = (_readable_owner(path), str(exc))

    def close(self) -> None:
        """Release the runs root for another server."""
        os.close(self._owner_lock)

    # -- records -----------------------------------------------------------------------------------
    def create(self, config: SearchConfig, *, owner: str) -> dict[str, Any]:
        """A new queued run of ``config`` submitted by ``owner``."""
        with self._lock:
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            directory = self.root / run_id
            directory.mkdir()
            document = {**config.to_dict(), "run_dir": str(directory / RUN)}
            atomic_write_json(directory / SEARCH_CONFIG, document)
            job = {"id": run_id, "owner": owner, "created": now(),
                   "config": document, "trials": config.trials, "status": "queued", "queued_at": time.time_ns(),
                   "pid": None, "exit_code": None, "message": "", "cancel_requested": False, "resume": False}
            return self._write(job)

    def get(self, run_id: str) -> dict[str, Any]:
        """The run's record.

        Raises:
            NoSuchRunError: no such run.
            DamagedRunError: its ``job.json`` could not be read when the server started.
        """
        with self._lock:
            if run_id in self._damaged:
                raise DamagedRunError(f"run {run_id!r} is damaged: {self._damaged[run_id][1]}; DELETE /runs/{run_id} "
                                      "removes it")
            if run_id not in self._jobs:
                raise NoSuchRunError(f"no run {run_id!r} on this server")
            return dict(self._jobs[run_id])

    def owner(self, run_id: str) -> str | None:
        """Who submitted the run (None: a damaged record names no one).

        Raises:
            NoSuchRunError: no such run, damaged or not.
        """
        with self._lock:
            if run_id in self._damaged:
                return self._damaged[run_id][0]
            return self.get(run_id)["owner"]

    def damaged(self) -> list[dict[str, Any]]:
        """The runs whose ``job.json`` could not be read: id, owner (None when unreadable) and why."""
        with self._lock:
            return [{"id": run_id, "owner": owner, "why": why}
                    for run_id, (owner, why) in sorted(self._damaged.items())]

    def all(self) -> list[dict[str, Any]]:
        """Every run, oldest first."""
        with self._lock:
            return [dict(job) for _, job in sorted(self._jobs.items())]

    def queued(self) -> list[dict[str, Any]]:
        """Runs waiting to start, in the order they were queued."""
        with self._lock:
            return sorted((dict(j) for j in self._jobs.values() if j["status"] == "queued"),
                          key=lambda j: (j["queued_at"], j["id"]))

    def update(self, run_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            return self._write({**self.get(run_id), **changes})

    def change(self, run_id: str, decide: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Apply the changes ``decide`` returns for the run's current record, in one step no other change can
        enter (``decide`` raises :class:`RunStateError` to refuse)."""
        with self._lock:
            job = self.get(run_id)
            return self._write({**job, **decide(job)})

    def delete(self, run_id: str) -> None:
        """Remove a run that is not running (its directory and outputs)."""
        with self._lock:
            if self._damaged.pop(run_id, None) is not None:
                shutil.rmtree(self.root / run_id, ignore_errors=True)
                return
            if self.get(run_id)["status"] == "running":
                raise RunStateError(f"run {run_id!r} is running; cancel it first (POST /runs/{run_id}/cancel)")
            del self._jobs[run_id]
            self._progress.pop(run_id, None)
            shutil.rmtree(self.root / run_id, ignore_errors=True)

    def _write(self, job: dict[str, Any]) -> dict[str, Any]:
        atomic_write_json(self.root / job["id"] / JOB, job)
        self._jobs[job["id"]] = job
        return dict(job)

    # -- the run's files ---------------------------------------------------------------------------
    def directory(self, run_id: str) -> Path:
        self.get(run_id)
        return self.root / run_id

    def run_dir(self, run_id: str) -> Path:
        return self.directory(run_id) / RUN

    def trial_rows(self, run_id: str) -> list[dict[str, Any]]:
        """Finished trials from the run's trial log, read only (a line being appended is skipped); a NaN or
        infinite number (no JSON has one) is None.

        Raises:
            DamagedRunError: a line is not a trial record (the message names the file and the line).
        """
        path = self.run_dir(run_id) / "trials.jsonl"
        if not path.is_file():
            return []
        raw = path.read_bytes()
        rows = []
        for number, line in enumerate(raw[: raw.rfind(b"\n") + 1].splitlines(), 1):
            where = f"line {number} of its trial log {str(path.relative_to(self.root))!r}"
            try:
                entry = loads_json(line, what=where)
            except ConfigError as exc:
                raise DamagedRunError(str(exc)) from None
            row = entry.get("trial") if isinstance(entry, dict) else None
            if not isinstance(row, dict):
                raise DamagedRunError(f"{where} is not a trial record")
            accuracy = row.get("accuracy")
            if row.get("status") == "ok" and (isinstance(accuracy, bool) or not isinstance(accuracy, int | float)):
                raise DamagedRunError(f"{where} is a finished trial without a numeric accuracy (got {accuracy!r})")
            rows.append({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()})
        return rows

    def progress(self, run_id: str) -> dict[str, Any]:
        """Trials finished, the target, and the best accuracy of a feasible finished trial so far.

        The trial log is read again only when its size or modification time changed, so clients polling
        every run's status cost the server next to nothing while the searches run.
        """
        path = self.run_dir(run_id) / "trials.jsonl"
        try:
            stat = path.stat()
            version: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            version = None
        cached = self._progress.get(run_id)
        if cached is None or cached[0] != version:
            rows = self.trial_rows(run_id) if version else []
            full = _full_fidelity(self.get(run_id))
            good = [r["accuracy"] for r in rows if r.get("status") == "ok" and r.get("feasible")
                    and r["accuracy"] is not None and (r.get("fidelity") or 0) >= full]  # NaN is read as None
            cached = self._progress[run_id] = (version, len(rows), max(good) if good else None)
        return {"completed": cached[1], "total": self.get(run_id)["trials"], "best_accuracy": cached[2]}

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The run's ``summary.json`` once written.

        Raises:
            DamagedRunError: it is not a JSON mapping (or holds a number out of range).
        """
        path = self.run_dir(run_id) / "summary.json"
        if not path.is_file():
            return None
        where = f"its summary {str(path.relative_to(self.root))!r}"
        try:
            summary = loads_json(path.read_bytes(), what=where)
        except ConfigError as exc:
            raise DamagedRunError(str(exc)) from None
        if not isinstance(summary, dict):
            raise DamagedRunError(f"{where} is not a JSON mapping")
        return summary

    def file(self, run_id: str, name: str) -> Path:
        """A file of the run directory by its relative name; nothing outside it (or hidden) can be named."""
        root = self.run_dir(run_id)
        parts = Path(name).parts
        if (not name or "\x00" in name or Path(name).is_absolute()
                or any(p in ("..", ".") or p.startswith(".") for p in parts)):
            raise ConfigError(f"file name {name!r} is not a plain name inside the run directory")
        path = (root / name).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise NoSuchRunError(f"run {run_id!r} has no file {name!r}")
        return path

    def files(self, run_id: str) -> list[str]:
        """The run directory's files by relative name: the top-level outputs (``best_policy.json``, ``model/``,
        ``summary.json`` lead into ``final/``), tables and plots; hidden entries, state and Ray's scratch left out."""
        root = self.run_dir(run_id)
        names = []
        for top, dirs, files in os.walk(root, followlinks=True):
            relative = Path(top).relative_to(root)
            if relative == Path("."):
                dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(("final", "."))]
            names += [(relative / f).as_posix() for f in files if not f.startswith(".")]
        return sorted(names)


def now() -> str:
    """The local time in ISO 8601 with milliseconds (strings of one server compare in time order)."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _lock_root(root: Path) -> int:
    fd = os.open(root / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"runs root {str(root)!r} is served by another autoprune server; stop it or choose "
                          "another --runs-root") from None
    return fd


def _read_job(path: Path) -> dict[str, Any]:
    """The job record in ``path``, checked against :class:`JobRecord`.

    Raises:
        DamagedRunError: unreadable, too large, not JSON, or not a job record (the message says what is wrong).
    """
    try:
        size = path.stat().st_size
        if size > MAX_JOB_BYTES:
            raise DamagedRunError(f"{str(path)!r} is {size:,} bytes; more than the {MAX_JOB_BYTES:,} a job file "
                                  "may have")
        job = loads_json(path.read_bytes(), what=f"{str(path)!r}")
        record = JobRecord.model_validate(job).model_dump()
    except OSError as exc:
        raise DamagedRunError(f"{str(path)!r} cannot be read ({exc.strerror or exc})") from None
    except ConfigError as exc:
        raise DamagedRunError(str(exc)) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the record'}: {e['msg']}" for e in exc.errors()[:3])
        raise DamagedRunError(f"{str(path)!r} is not a job record of this autoprune ({problems})") from None
    if record["id"] != path.parent.name:
        raise DamagedRunError(f"{str(path)!r} is the record of run {record['id']!r}, not of {path.parent.name!r}")
    return record


def _readable_owner(path: Path) -> str | None:
    """The owner a damaged job record still names, if it can be read at all (None otherwise)."""
    try:
        job = loads_json(path.read_bytes(), what=str(path)) if path.stat().st_size <= MAX_JOB_BYTES else None
    except (OSError, ConfigError):
        return None
    owner = job.get("owner") if isinstance(job, dict) else None
    return owner if isinstance(owner, str) else None


def _full_fidelity(job: dict[str, Any]) -> int:
    """The finetune steps of a full score in the job's search (a screen's or an early rung's is no best)."""
    evaluator = job.get("config", {}).get("evaluator")
    steps = evaluator.get("finetune_steps") if isinstance(evaluator, dict) else None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else 0
