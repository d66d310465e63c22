"""The run directory: config, trials table, searcher state, best policy, pruned model, summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from search_spaces.errors import RunDirError
from search_spaces.io import atomic_write, atomic_write_json

CONFIG = "config.json"
TRIALS_CSV = "trials.csv"
TRIALS_PARQUET = "trials.parquet"
SEARCHER_STATE = "searcher_state.pt"
SCHEDULER_STATE = "scheduler_state.json"
BEST_POLICY = "best_policy.json"
MODEL_DIR = "model"
SUMMARY = "summary.json"
LATENCY_TABLE = "latency_table.json"
# Layout of the run directory; config.json records it. 1: written before "format_version" existed (same layout).
FORMAT_VERSION = 2
# Settings that must match when a search is resumed (trials may grow).
RESUME_KEYS = ("fingerprint", "space", "budget", "searcher", "searcher_options", "seed", "evaluator", "scheduler")
# What a run directory written before a setting existed used (so it still resumes).
RESUME_DEFAULTS = {"scheduler": {"kind": "none", "grace_period": None, "reduction_factor": 3}}


class RunDir:
    """One search's output directory. Every file in it is written atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, config: Mapping[str, Any], *, resume: bool) -> bool:
        """Create the directory or check it can be resumed; returns True when resuming earlier work.

        Raises:
            RunDirError: the directory holds files and ``resume`` is False, or it holds a different search.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run_dir {str(self.path)!r} exists and is not a directory")
        has_files = self.path.exists() and any(self.path.iterdir())
        if has_files and not resume:
            raise RunDirError(
                f"run_dir {str(self.path)!r} is not empty; pass resume=True (CLI: --resume) to continue "
                "that search, or choose a new run_dir"
            )
        if not has_files:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.file(CONFIG), dict(config))
            return False
        if not self.file(CONFIG).exists():
            raise RunDirError(f"run_dir {str(self.path)!r} has files but no {CONFIG}: not an autoprune run")
        saved = json.loads(self.file(CONFIG).read_text())
        version = saved.get("format_version", 1)
        if version not in (1, FORMAT_VERSION):
            raise RunDirError(f"{str(self.path)!r} holds run directory format version {version!r}; this autoprune "
                              f"reads versions 1 and {FORMAT_VERSION}: resume it with the autoprune that wrote it")
        fresh = json.loads(json.dumps(dict(config), default=str))
        differ = [k for k in RESUME_KEYS if saved.get(k, RESUME_DEFAULTS.get(k)) != fresh.get(k)]
        if differ:
            detail = "; ".join(f"{k}: saved {saved.get(k)!r} vs now {fresh.get(k)!r}" for k in differ)
            raise RunDirError(f"cannot resume {str(self.path)!r}: the search settings changed ({detail})")
        atomic_write_json(self.file(CONFIG), dict(config))
        return True

    def discard(self) -> None:
        """Remove a run directory that was just created and holds nothing but its config."""
        self.file(CONFIG).unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def write_trials(self, trials: pd.DataFrame) -> None:
        atomic_write(self.file(TRIALS_PARQUET), lambda tmp: trials.to_parquet(tmp, index=False))
        atomic_write(self.file(TRIALS_CSV), lambda tmp: trials.to_csv(tmp, index=False))

    def read_trials(self) -> pd.DataFrame | None:
        path = self.file(TRIALS_PARQUET)
        return pd.read_parquet(path) if path.exists() else None

    def write_searcher_state(self, state: Mapping[str, Any]) -> None:
        atomic_write(self.file(SEARCHER_STATE), lambda tmp: torch.save(dict(state), tmp))

    def read_searcher_state(self) -> dict[str, Any] | None:
        path = self.file(SEARCHER_STATE)
        # Our own file in the user's run directory; searcher states hold numpy RNG states and networks.
        return torch.load(path, weights_only=False) if path.exists() else None

    def write_scheduler_state(self, state: Mapping[str, Any]) -> None:
        atomic_write_json(self.file(SCHEDULER_STATE), dict(state))

    def read_scheduler_state(self) -> dict[str, Any] | None:
        path = self.file(SCHEDULER_STATE)
        return json.loads(path.read_text()) if path.exists() else None

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.file(SUMMARY), dict(summary))
