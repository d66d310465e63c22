"""The run directory: one writer at a time, an append-only trial log, pickle-free state, final outputs as a unit.

Layout (format version 3):

- ``config.json``: the search settings (checked on resume);
- ``trials.jsonl``: the source of truth, one fsynced line per finished trial: its row and the digest of the
  state saved with it; ``trials.parquet`` / ``trials.csv`` are derived from it (rebuilt when missing);
- ``state/NNNNNN.json`` + ``.pt``: the searcher's and scheduler's state after N trials (JSON and tensors,
  see :mod:`autoprune.study.state`; no pickle);
- ``final`` → ``final-K/``: ``best_policy.json``, ``model/``, ``summary.json`` written into a new directory and
  switched to by one atomic symlink replace, so they always belong together; the same names at the top level
  link into ``final/``;
- ``sensitivity.csv``: the sensitivity scan, when the run made one; ``report.html``: the report drawn from these
  files (:mod:`autoprune.report.run_record`);
- ``.lock``: held (``flock``) by the process writing the run; the OS releases it when the process dies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune.study.state import StateError, digest, from_bytes, to_bytes, unreadable_part
from search_spaces.ground.documents import loads_json
from search_spaces.ground.errors import ConfigError, RunDirError
from search_spaces.ground.io import MAX_CHECKPOINT_BYTES, atomic_write, atomic_write_json, check_size, read_json_file

log = logging.getLogger(__name__)

CONFIG = "config.json"
TRIAL_LOG = "trials.jsonl"
TRIALS_CSV = "trials.csv"
TRIALS_PARQUET = "trials.parquet"
STATE_DIR = "state"
LEGACY_STATE = "searcher_state.pt"
FINAL = "final"
BEST_POLICY = "best_policy.json"
MODEL_DIR = "model"
SUMMARY = "summary.json"
LATENCY_TABLE = "latency_table.json"
SENSITIVITY_TABLE = "sensitivity.csv"
REPORT = "report.html"
LOCK = ".lock"
FORMAT_VERSION = 3
MAX_CONFIG_BYTES = 4 << 20
MAX_LOG_BYTES = 1 << 30
# trials.csv: 12 significant digits drop binary noise (0.6000000000000001 -> 0.6) and keep ``finished_at`` to
# 10 ms; trials.jsonl and trials.parquet keep the exact values.
CSV_FLOAT_FORMAT = "%.12g"
# Trial record fields that hold a number when set (a trials.jsonl row is checked against them).
NUMERIC_TRIAL_FIELDS = ("loss", "flops", "params", "fidelity", "seconds", "rung", "first_accuracy", "latency_ms")
# Settings that must match when a search is resumed (trials may grow).
RESUME_KEYS = ("fingerprint", "space", "budget", "searcher", "searcher_options", "seed", "evaluator", "scheduler")
# Inputs a resumed search must be given again unchanged: (config key, what it is).
IDENTITY_KEYS = (("model_sha256", "the model's weights"), ("data", "the data (sizes and a sample)"))


RESUME_HINT = "pass RunOptions(resume=True) (CLI: --resume) to continue that search, or choose a new run dir"
NEW_DIR_HINT = "a sensitivity scan writes to a new or empty directory; choose another (--run-dir, run_dir=)"


def _has_files(path: Path) -> bool:
    """Whether directory ``path`` holds anything but hidden files (such as the lock)."""
    return path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir())


def check_can_start(path: str | Path, *, resume: bool, hint: str = RESUME_HINT) -> None:
    """Fail early (before any expensive work) when a search could not start in ``path``; ``hint`` ends the
    message for a directory that is not empty."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {str(path)!r} exists and is not a directory")
    if not resume and _has_files(path):
        raise RunDirError(f"run_dir {str(path)!r} is not empty; {hint}")


class RunDir:
    """One search's output directory. Open it with :meth:`prepare`; :meth:`close` releases the lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        self._pending_config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- opening -----------------------------------------------------------------------------------
    def prepare(self, config: Mapping[str, Any], *, resume: bool) -> bool:
        """Lock the directory, then create it or check it can be resumed; True when resuming earlier work.

        Raises:
            RunDirError: another process holds the run; the directory holds files and ``resume`` is False; it
                holds a different search, another format, or was started from other weights or data.
        """
        check_can_start(self.path, resume=resume)
        # hidden entries (the lock, temporary files a killed writer left) do not make a run
        has_files = self.path.exists() and any(not p.name.startswith(".") for p in self.path.iterdir())
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            if has_files:
                self._check_resumable(config)
                self._pending_config = dict(config)  # written once the resume is under way: see confirm_config
            else:
                atomic_write_json(self.file(CONFIG), dict(config))
        except BaseException:
            self.close()
            raise
        return has_files

    def confirm_config(self) -> None:
        """Write a resumed run's new ``config.json`` (its trials, executor) once the resume is under way: at its
        first new trial or its final step. A resume that never gets there (an executor that cannot start, a kill)
        leaves the saved settings as they were."""
        if self._pending_config is not None:
            atomic_write_json(self.file(CONFIG), self._pending_config)
            self._pending_config = None

    def _acquire(self) -> None:
        fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(f"run_dir {str(self.path)!r} is in use by {holder}; wait for it to finish or stop "
                              "it (a killed process releases the directory)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._lock = fd

    def close(self) -> None:
        """Release the directory for other processes."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def _check_resumable(self, config: Mapping[str, Any]) -> None:
        saved = self.read_config()
        version = saved.get("format_version", 1)
        if version != FORMAT_VERSION:
            raise RunDirError(
                f"{str(self.path)!r} holds run directory format version {version!r}; this autoprune reads version "
                f"{FORMAT_VERSION} only (earlier versions pickled the searcher state, which is never loaded since "
                "it could run code): start a new run directory, or finish it with the autoprune that wrote it"
            )
        fresh = json.loads(json.dumps(dict(config), default=str))
        for key, what in IDENTITY_KEYS:
            if key in saved and saved.get(key) != fresh.get(key):
                raise RunDirError(f"cannot resume {str(self.path)!r}: {what} differ from the ones it was started "
                                  f"with ({key}: saved {saved.get(key)!r} vs now {fresh.get(key)!r}); resume with the "
                                  "same checkpoint and data, or start a new run directory")
        differ = [k for k in RESUME_KEYS if saved.get(k) != fresh.get(k)]
        if differ:
            detail = "; ".join(f"{k}: saved {saved.get(k)!r} vs now {fresh.get(k)!r}" for k in differ)
            raise RunDirError(f"cannot resume {str(self.path)!r}: the search settings changed ({detail})")
        done = len(self.read_rows())
        if isinstance(fresh.get("trials"), int) and fresh["trials"] < done:
            raise RunDirError(f"cannot resume {str(self.path)!r} with trials={fresh['trials']}: {done} trials have "
                              f"finished already; give trials >= {done} (the total to reach), or leave it out to "
                              f"keep the saved {saved.get('trials')!r}")

    def read_config(self) -> dict[str, Any]:
        path = self.file(CONFIG)
        if not path.exists():
            legacy = " (it has a pickled searcher_state.pt: written by an older autoprune)" \
                if self.file(LEGACY_STATE).exists() else ""
            if not _has_files(self.path):
                raise RunDirError(f"run_dir {str(self.path)!r} is empty (no {CONFIG}): nothing to resume; start a "
                                  "search there without resume")
            raise RunDirError(f"run_dir {str(self.path)!r} has files but no {CONFIG}: not an autoprune run{legacy}")
        return read_json(path, MAX_CONFIG_BYTES)

    def discard(self) -> None:
        """Remove a run directory that was just created and holds no finished trial."""
        self.close()
        for name in (CONFIG, LATENCY_TABLE, LOCK):
            self.file(name).unlink(missing_ok=True)
        if self.file(STATE_DIR).is_dir() and not any(self.file(STATE_DIR).iterdir()):
            self.file(STATE_DIR).rmdir()
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    # -- trials and state --------------------------------------------------------------------------
    def record(self, row: Mapping[str, Any], count: int, state: Mapping[str, Any]) -> None:
        """Save the state after ``count`` finished trials, then append ``row`` to the log naming that state.

        A process killed anywhere in between leaves either the previous log (the trial re-runs from the
        previous state) or the new one: a finished trial is never lost or repeated.
        """
        document, tensors = to_bytes(dict(state))
        stem = self.file(STATE_DIR) / f"{count:06d}"
        atomic_write(stem.with_suffix(".pt"), lambda tmp: tmp.write_bytes(tensors))
        atomic_write(stem.with_suffix(".json"), lambda tmp: tmp.write_bytes(document))
        line = json.dumps({"trial": dict(row), "state": count, "state_sha256": digest(document, tensors)},
                          default=_json_default) + "\n"
        with open(self.file(TRIAL_LOG), "a", encoding="utf-8") as log:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())
        for old in self.file(STATE_DIR).glob("*"):  # keep this state and the one before it
            if old.stem.isdigit() and int(old.stem) < count - 1:
                old.unlink(missing_ok=True)

    def read_log(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Finished trial rows and the state saved with the last one (None: no trial finished yet).

        A line cut short by a kill is dropped (and removed, so the log stays appendable).
        """
        entries = self._log_entries(repair=True)
        if not entries:
            return [], None
        last = entries[-1]
        return [e["trial"] for e in entries], self._read_state(int(last["state"]), str(last["state_sha256"]))

    def read_rows(self) -> list[dict[str, Any]]:
        """Finished trial rows, read only: safe while a search writes the log (a line being written is left out)."""
        return [e["trial"] for e in self._log_entries(repair=False)]

    def _log_entries(self, *, repair: bool) -> list[dict[str, Any]]:
        """The log's complete records; ``repair`` cuts off a line a kill left unfinished."""
        path = self.file(TRIAL_LOG)
        if not path.exists():
            return []
        check_size(path, what="trial log", limit=MAX_LOG_BYTES)
        raw = path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if repair and len(complete) != len(raw):
            with open(path, "r+b") as log:
                log.truncate(len(complete))
        entries: list[dict[str, Any]] = []
        seen: dict[int, tuple[int, bytes]] = {}  # trial id -> (line number, line)
        for number, line in enumerate(complete.splitlines(), 1):
            try:
                entry = loads_json(line, what="the line")
                valid = (isinstance(entry, dict) and _is_trial_row(entry.get("trial"))
                         and isinstance(entry.get("state"), int) and isinstance(entry.get("state_sha256"), str))
            except ConfigError as exc:  # not UTF-8, not JSON, nested too deeply, a number out of range
                valid, entry = False, exc
            if not valid:
                raise RunDirError(f"{str(path)!r} line {number} is not a trial record ({str(entry)[:200]}); the run "
                                  "directory was changed by hand: start a new one")
            trial_id = entry["trial"]["trial_id"]
            if trial_id in seen:
                _repeated(path, number, seen[trial_id], line, trial_id)
                continue
            seen[trial_id] = (number, line)
            entries.append(entry)
        return entries

    def _read_state(self, count: int, expected: str) -> dict[str, Any]:
        stem = self.file(STATE_DIR) / f"{count:06d}"
        json_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".pt")
        if not json_path.exists() or not tensor_path.exists():
            raise RunDirError(f"the state saved with trial record {count} ({str(json_path)!r}) is missing; the run "
                              "cannot continue where it stopped: start a new run directory")
        for file in (json_path, tensor_path):
            check_size(file, what="saved state", limit=MAX_CHECKPOINT_BYTES)
        document, tensors = json_path.read_bytes(), tensor_path.read_bytes()
        if digest(document, tensors) != expected:
            part = unreadable_part(document, tensors)  # the file that is damaged, if only one cannot be read
            files = {"document": repr(str(json_path)), "tensors": repr(str(tensor_path))}.get(
                part or "", f"{str(json_path)!r} or {str(tensor_path)!r}")
            raise RunDirError(f"the state {files} does not match the digest in {TRIAL_LOG} (changed or damaged); "
                              "start a new run directory")
        state = from_bytes(document, tensors, source=str(json_path), tensor_source=str(tensor_path))
        if not isinstance(state, dict):
            raise StateError(f"{str(json_path)!r} does not hold a state dict")
        return state

    def write_trials(self, trials: pd.DataFrame) -> None:
        """The derived tables (Parquet and CSV), rebuilt from the log whenever it grows."""
        atomic_write(self.file(TRIALS_PARQUET), lambda tmp: trials.to_parquet(tmp, index=False))
        atomic_write(self.file(TRIALS_CSV), lambda tmp: trials.to_csv(tmp, index=False,
                                                                          float_format=CSV_FLOAT_FORMAT))

    # -- final outputs -----------------------------------------------------------------------------
    def write_tables(self, tables: Mapping[str, pd.DataFrame]) -> None:
        """A searcher's own tables (file name -> table) as CSV files in the run directory."""
        for name, table in tables.items():
            if Path(name).name != name or not name.endswith(".csv"):
                raise RunDirError(f"a searcher's table must be a plain file name ending in .csv, got {name!r}")
            atomic_write(self.file(name), lambda tmp, table=table: table.to_csv(tmp, index=False))

    def write_final(self, write: Callable[[Path], None]) -> None:
        """``write(directory)`` fills a new ``final-K/``; one atomic symlink switch makes it ``final``.

        ``best_policy.json``, ``model`` and ``summary.json`` at the top level link into ``final/``.
        """
        number = 1 + max((int(p.name[6:]) for p in self.path.glob("final-*") if p.name[6:].isdigit()), default=0)
        target = self.file(f"final-{number}")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        write(target)
        _fsync_tree(target)
        link = self.file(f".final-{number}.link")
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        os.replace(link, self.file(FINAL))
        for name in (BEST_POLICY, MODEL_DIR, SUMMARY):
            if not self.file(name).is_symlink():
                if self.file(name).is_dir():
                    shutil.rmtree(self.file(name))
                self.file(name).unlink(missing_ok=True)
                self.file(name).symlink_to(Path(FINAL) / name)
        for stale in self.path.glob("final-*"):  # the previous outputs, and any a killed writer left half-made
            if stale.resolve() != target.resolve():
                shutil.rmtree(stale, ignore_errors=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_REPEATS_SAID: set[tuple[str, int]] = set()  # (trial log, line) whose repeat was logged: said once per process


def _repeated(path: Path, number: int, first: tuple[int, bytes], line: bytes, trial_id: int) -> None:
    """A record of a trial the log already holds: the same bytes again are ignored (logged once); a different
    record of that trial is refused."""
    if line != first[1]:
        raise RunDirError(f"{str(path)!r} line {number} is a second, different record of trial {trial_id} (first on "
                          f"line {first[0]}); the run directory was changed by hand: start a new one")
    if (str(path), number) not in _REPEATS_SAID:
        _REPEATS_SAID.add((str(path), number))
        log.warning("%r line %d repeats the record of trial %d on line %d; the repeat is ignored", str(path), number,
                    trial_id, first[0])


def _is_trial_row(row: Any) -> bool:
    """Whether ``row`` has a trial record's keys with their types: an integer id, a status, a number for the
    accuracy (NaN when failed), a boolean feasibility, numbers for the ratios and figures."""
    if not isinstance(row, dict) or not {"trial_id", "status", "accuracy", "feasible"} <= set(row):
        return False
    numbers = [v for k, v in row.items() if k.startswith("ratio:") or (k in NUMERIC_TRIAL_FIELDS and v is not None)]
    return (isinstance(row["trial_id"], int) and not isinstance(row["trial_id"], bool) and row["trial_id"] >= 0
            and isinstance(row["status"], str) and _is_number(row["accuracy"]) and isinstance(row["feasible"], bool)
            and all(_is_number(v) for v in numbers))


def read_json(path: Path, limit: int) -> dict[str, Any]:
    """A run file holding one JSON object, at most ``limit`` bytes (``RunDirError`` otherwise)."""
    try:
        data = read_json_file(path, what="run file", limit=limit)
    except ConfigError as exc:  # missing, too large, not text, not JSON
        raise RunDirError(str(exc)) from None
    if not isinstance(data, dict):
        raise RunDirError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
