"""Experiment tracking: every finished trial as a step in TensorBoard and MLflow, the best policy as an artifact.

Both write under the run directory, so they need one:

- ``tensorboard``: event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR/tensorboard``);
  scalars ``trial/<metric>`` at step = trial id, and at the end ``final/<metric>`` and the best policy as text.
- ``mlflow``: an SQLite store ``RUN_DIR/mlflow.db`` with artifacts in ``RUN_DIR/mlflow-artifacts``
  (``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db``); experiment ``autoprune``, one MLflow run per
  ``search()`` call (a resumed search adds one) named after the run directory, with the search settings as
  params, the metrics at step = trial id, and ``best_policy.json`` and ``summary.json`` as artifacts.
"""

from __future__ import annotations

import abc
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search_spaces.ground.errors import ConfigError, unknown_name

TRACKERS = ("tensorboard", "mlflow")
#: the trial row's numbers every tracker records
TRIAL_METRICS = ("accuracy", "loss", "flops", "params", "flops_ratio", "params_ratio", "feasible", "fidelity",
                 "first_accuracy", "seconds", "latency_ms")
EXPERIMENT = "autoprune"
#: the search settings an MLflow run records as params (JSON, at most 500 characters each)
SETTINGS = ("budget", "searcher", "searcher_options", "seed", "trials", "evaluator", "scheduler", "time_budget_seconds")


def check_tracking(tracking: Sequence[str] | str | None, run_dir: object) -> tuple[str, ...]:
    """The tracker names, checked (a single name may be given as a string); they need a ``run_dir``."""
    names = (tracking,) if isinstance(tracking, str) else tuple(tracking or ())
    for name in names:
        if name not in TRACKERS:
            raise unknown_name("tracker", name, list(TRACKERS))
    if names and run_dir is None:
        raise ConfigError(f"tracking {list(names)} writes under the run directory: give run_dir")
    return names


class Tracker(abc.ABC):
    """Receives each finished trial's row, then the final outputs."""

    @abc.abstractmethod
    def trial(self, row: Mapping[str, Any]) -> None:
        """Record one finished trial (a trials-table row)."""

    @abc.abstractmethod
    def final(self, summary: Mapping[str, Any] | None, files: Sequence[Path]) -> None:
        """Record the final result (``summary.json``'s content, None without one) and its files; then close."""


class Trackers(Tracker):
    """Several trackers as one."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = tuple(trackers)

    def trial(self, row: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.trial(row)

    def final(self, summary: Mapping[str, Any] | None, files: Sequence[Path]) -> None:
        for tracker in self.trackers:
            tracker.final(summary, files)


def make_trackers(names: Sequence[str], run_dir: Path, config: Mapping[str, Any]) -> Trackers:
    """The trackers named (checked by :func:`check_tracking`) writing under ``run_dir``; ``config`` is the run's
    settings."""
    made: list[Tracker] = []
    for name in names:
        made.append(TensorBoardTracker(run_dir / "tensorboard") if name == "tensorboard"
                    else MlflowTracker(run_dir, config))
    return Trackers(made)


def _numbers(row: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The finite numbers among a row's :data:`TRIAL_METRICS` (bools as 0/1), keys prefixed."""
    values = {}
    for key in TRIAL_METRICS:
        value = row.get(key)
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            values[f"{prefix}{key}"] = float(value)
    return values


def _final_numbers(summary: Mapping[str, Any]) -> dict[str, float]:
    pruned, baseline = summary["pruned"], summary["baseline"]
    return {"final/accuracy": pruned["accuracy"], "final/flops_ratio": pruned["flops_ratio"],
            "final/params_ratio": pruned["params_ratio"], "final/baseline_accuracy": baseline["accuracy"],
            "final/best_trial_id": summary["best_trial_id"]}


class TensorBoardTracker(Tracker):
    """Scalars per trial (step = trial id) and the final figures, as TensorBoard event files."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.best: float | None = None

    def trial(self, row: Mapping[str, Any]) -> None:
        step = int(row["trial_id"])
        for key, value in _numbers(row, "trial/").items():
            self.writer.add_scalar(key, value, step)
        if row["status"] == "ok" and row["feasible"]:
            self.best = max(self.best or 0.0, float(row["accuracy"]))
        if self.best is not None:
            self.writer.add_scalar("search/best_feasible_accuracy", self.best, step)
        self.writer.flush()

    def final(self, summary: Mapping[str, Any] | None, files: Sequence[Path]) -> None:
        if summary is not None:
            step = int(summary["best_trial_id"])
            for key, value in _final_numbers(summary).items():
                self.writer.add_scalar(key, value, step)
        for path in files:
            self.writer.add_text(path.name, f"```\n{path.read_text(encoding='utf-8')}\n```")
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run per search call in an SQLite store under the run directory."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        run_dir = run_dir.resolve()
        with warnings.catch_warnings():  # from MLflow's own store on SQLAlchemy 2.1: nothing a user can act on
            warnings.filterwarnings("ignore", message=".*noload.*loader strategy is deprecated")
            self.client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
            found = self.client.get_experiment_by_name(EXPERIMENT)  # the first call sets the store up
        experiment = found.experiment_id if found is not None else self.client.create_experiment(
            EXPERIMENT, artifact_location=(run_dir / "mlflow-artifacts").as_uri())
        self.run_id = self.client.create_run(experiment, run_name=run_dir.name).info.run_id
        params = {key: json.dumps(config[key], default=str)[:500] for key in SETTINGS if key in config}
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def _log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key.replace("/", "_"), value, now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def trial(self, row: Mapping[str, Any]) -> None:
        self._log(_numbers(row, ""), int(row["trial_id"]))

    def final(self, summary: Mapping[str, Any] | None, files: Sequence[Path]) -> None:
        if summary is not None:
            self._log(_final_numbers(summary), int(summary["best_trial_id"]))
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id)
