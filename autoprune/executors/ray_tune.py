"""Ray Tune executor: every evaluation is a Ray Tune trial, on this machine or a Ray cluster.

The autoprune searcher is wrapped in a ``ray.tune.search.Searcher`` adapter, so Ray Tune asks it for
configs and reports completions (out of order) back to it in the driver. The evaluator (model weights and
data loaders) goes to the object store once through ``tune.with_parameters`` and each worker fetches it once:
Ray Tune reuses a worker's actor from trial to trial. A trial reports a score at
each of the autoprune scheduler's rungs; a ``TrialScheduler`` adapter lets that scheduler decide whether it
continues, so both executors stop the same candidates. Every score reaches the searcher with its fidelity.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune import Tuner
from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import Searcher as TuneSearcher

from autoprune.evaluation.evaluator import CANDIDATE_FAILURES, Evaluator
from autoprune.evaluation.rungs import Scheduler
from autoprune.executors.base import Executor
from autoprune.executors.options import RayOptions
from autoprune.searcher import Searcher
from autoprune.trial import Completed, Score, Trial
from search_spaces.ground import errors
from search_spaces.ground.errors import AutopruneError, ConfigError
from search_spaces.policy import Policy

log = logging.getLogger(__name__)
METRIC = "objective"
FATAL = "fatal_error_type"
_SCORE_FIELDS = tuple(f.name for f in fields(Score))
TUNE_ENVIRONMENT = {
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Ctrl+C must stop the search (resumable), not end Tune's loop "successfully"
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON/TensorBoard files: autoprune records results
}
# Warns on every start of a local Ray that token authentication is on (Ray's default for a new local cluster, which
# autoprune keeps): nothing a user of the embedded Ray can act on. RAY_AUTH_MODE, when a user sets it, still rules.
AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
# Builds fit()'s ResultGrid from those per-trial files and warns, once per trial, that they are missing.
RESULT_GRID_LOGGER = "ray.tune.analysis.experiment_analysis"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the duration (Ray Tune reads some of its options from them)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from the logger ``name`` for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class EvaluationTrainable(tune.Trainable):
    """The Ray Tune trainable: one trial scores one policy, one rung per ``step`` (the last is full fidelity).

    Ray Tune reuses the actor for the next trial (``reset_config``), so a worker process fetches the
    evaluator (model and data) from the object store once, not once per trial.
    """

    def setup(self, config: dict[str, Any], evaluator: Evaluator, rungs: tuple[int, ...], threads: int) -> None:
        torch.set_num_threads(threads)
        if ray.get_gpu_ids() and evaluator.config.device == "cpu":
            evaluator.config = replace(evaluator.config, device="cuda")  # this worker's copy: use its GPU
        self.evaluator, self.rungs = evaluator, rungs
        self.where = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
        self.reset_config(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        policy = Policy(new_config["ratios"], fingerprint=self.evaluator.cost_model.space.fingerprint)
        self.scores, self.done = self.evaluator.evaluate_rungs(policy, rungs=self.rungs), 0
        return True

    def step(self) -> dict[str, Any]:
        try:
            score = next(self.scores)
        except AutopruneError as exc:  # bad input: every trial would fail; the driver stops the search
            failed = Score.failed(exc, fidelity=self.done, seconds=0.0)
            return {**_result(failed), **self.where, FATAL: type(exc).__name__, "done": True}
        except CANDIDATE_FAILURES as exc:  # a failed candidate (e.g. diverged) is a result, not a crashed trial
            return {**_result(Score.failed(exc, fidelity=self.done, seconds=0.0)), **self.where, "done": True}
        self.done = score.fidelity
        return {**_result(score), **self.where, "done": score.fidelity >= self.evaluator.config.finetune_steps}


def _result(score: Score) -> dict[str, Any]:
    values = {name: getattr(score, name) for name in _SCORE_FIELDS}
    values[METRIC] = score.accuracy if score.ok and math.isfinite(score.accuracy) else 0.0
    values["error"] = values["error"] or ""
    return values


def _score(result: dict[str, Any]) -> Score:
    values = {name: result[name] for name in _SCORE_FIELDS}
    values["error"] = values["error"] or None
    return Score(**values)


class TuneSearcherAdapter(TuneSearcher):
    """Presents an autoprune Searcher to Ray Tune: ``suggest`` asks it, ``on_trial_complete`` tells it."""

    def __init__(self, searcher: Searcher, on_result: Callable[[Completed], None]) -> None:
        super().__init__()
        # not named ``searcher``: Ray Tune takes any object with that attribute for a wrapper of one
        self.wrapped, self.on_result = searcher, on_result
        self.trials: dict[str, Trial] = {}
        self.fatal: AutopruneError | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its search algorithm into the experiment state; the autoprune searcher and the
        # callbacks stay in the driver and are saved by autoprune's run directory instead.
        return {"_metric": self._metric, "_mode": self._mode}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        self._metric, self._mode = metric, mode  # the search space is autoprune's, not a Tune config
        return True

    def save(self, checkpoint_path: str) -> None:
        """What Ray Tune's experiment checkpoint holds of this adapter: the metric and mode, as JSON. The searcher's
        own state is in autoprune's run directory (a resume reads it there), so nothing is lost by this."""
        Path(checkpoint_path).write_text(json.dumps(self.__getstate__()), encoding="utf-8")

    def restore(self, checkpoint_path: str) -> None:
        """Read back :meth:`save`'s metric and mode."""
        state = json.loads(Path(checkpoint_path).read_text(encoding="utf-8"))
        self._metric, self._mode = state.get("_metric"), state.get("_mode")

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.fatal is not None:
            return TuneSearcher.FINISHED
        trial = self.wrapped.ask()
        if trial is None:  # nothing now: finished unless running trials may change the searcher's mind
            return TuneSearcher.FINISHED if not self.wrapped.pending else None
        self.trials[trial_id] = trial
        return {"ratios": dict(trial.policy), "trial_id": trial.id}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.trials.pop(trial_id, None)
        if trial is None:
            return
        if result and result.get(FATAL):
            kind = getattr(errors, str(result[FATAL]), AutopruneError)
            self.fatal = kind(result.get("error", "")) if isinstance(kind, type) else AutopruneError(result)
            return
        if error or not result or "status" not in result:
            score = Score.failed("the trial's worker died more often than max_failures allows "
                                 "(Ray Tune's logs in the storage path say why)", fidelity=0, seconds=0.0)
            where: dict[str, Any] = {}
        else:
            score = _score(result)
            where = {"node": result.get("node", ""), "pid": result.get("pid", -1)}
        self.wrapped.tell(trial, score)
        self.on_result(Completed(trial, score, where))


class TuneSchedulerAdapter(FIFOScheduler):
    """Presents an autoprune Scheduler to Ray Tune: at every rung it decides whether the trial continues; a user's
    own Ray Tune scheduler (``user``) is asked next and may stop it too."""

    def __init__(self, scheduler: Scheduler, full: int, user: TrialScheduler | None = None) -> None:
        super().__init__()
        self.wrapped, self.full, self.user = scheduler, full, user

    def __getstate__(self) -> dict[str, Any]:  # the scheduler's state is saved by autoprune's run directory
        return {"full": self.full}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self.user is not None:
            self.user.set_search_properties(metric, mode, **spec)
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if self.user is not None:
            self.user.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        if self.user is not None:
            self.user.on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if self.user is not None:
            self.user.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if self.user is not None:
            self.user.on_trial_remove(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        steps = int(result.get("fidelity", self.full))
        if result.get("status") != "ok" or steps >= self.full:
            return TrialScheduler.CONTINUE
        if not self.wrapped.keep_going(int(trial.config["trial_id"]), steps, float(result["accuracy"]),
                                       feasible=bool(result.get("feasible", True))):
            return TrialScheduler.STOP
        if self.user is not None and self.user.on_trial_result(tune_controller, trial, result) == TrialScheduler.STOP:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


# Ray Tune schedulers that pause trials or change their configs: the searcher owns the configs and a trial's
# finetune is not checkpointed, so they cannot run here.
CONFLICTING_TUNE_SCHEDULERS = (HyperBandScheduler, PopulationBasedTraining)


def check_tune_scheduler(tune_scheduler: Any) -> None:
    """A user's Ray Tune scheduler must only continue or stop trials."""
    if not isinstance(tune_scheduler, TrialScheduler):
        raise ConfigError(f"tune_scheduler must be a ray.tune.schedulers.TrialScheduler, got {tune_scheduler!r}")
    if isinstance(tune_scheduler, CONFLICTING_TUNE_SCHEDULERS):
        raise ConfigError(
            f"tune_scheduler {type(tune_scheduler).__name__} pauses trials or changes their configs, which the "
            "searcher owns; accepted: schedulers that continue or stop trials (e.g. MedianStoppingRule, "
            "AsyncHyperBandScheduler, or your own FIFOScheduler subclass)")


@dataclass(frozen=True)
class RayExecutor(RayOptions, Executor):
    """Evaluations as Ray Tune trials, with the options of :class:`RayOptions`.

    ``tune_scheduler`` (Python API): a Ray Tune ``TrialScheduler`` of your own, e.g. ``MedianStoppingRule``. The
    autoprune scheduler stays the one owner of rungs: a trial reports its score at each of its rungs, the autoprune
    scheduler decides first, then yours; either may stop the trial. It needs a scheduler with rungs (``asha`` or
    ``cascade``).
    """

    tune_scheduler: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tune_scheduler is not None:
            check_tune_scheduler(self.tune_scheduler)

    def describe(self) -> dict[str, Any]:
        options = {f.name: getattr(self, f.name) for f in fields(RayOptions)}
        user = {"tune_scheduler": type(self.tune_scheduler).__name__} if self.tune_scheduler is not None else {}
        return {"kind": "ray", **options, **user}

    def _init_ray(self) -> bool:
        """Connect to (or start) Ray; True if this call started it."""

        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": self.dashboard, "logging_level": logging.WARNING,
                                   "log_to_driver": False}
        if self.dashboard:
            options["dashboard_host"] = self.dashboard_host
        if self.address is None:  # trial workers at the driver's priority (Ray's default: 15 nicer, starved under load)
            with _quiet(AUTH_SETUP_LOGGER):
                ray.init(address="local", num_cpus=os.cpu_count(), _system_config={"worker_niceness": 0}, **options)
        else:
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as exc:
                raise ConfigError(
                    f"cannot reach a Ray cluster at address {self.address!r} ({' '.join(str(exc).split())}); start "
                    "one (ray start --head, or ray up ray_cluster.yaml) or leave the address out to run Ray inside "
                    "this process"
                ) from exc
        return True

    def run(
        self,
        searcher: Searcher,
        evaluator: Evaluator,
        *,
        scheduler: Scheduler,
        remaining: int,
        on_result: Callable[[Completed], None],
        run_dir: Path | None = None,
    ) -> None:
        if self.tune_scheduler is not None and not scheduler.rungs(evaluator.config.finetune_steps):
            raise ConfigError(f"tune_scheduler {type(self.tune_scheduler).__name__} acts on the scores a trial reports "
                              "at its rungs, and this search has none: use scheduler asha (with finetune_steps > 1) "
                              "or cascade (finetune_steps >= 1)")
        with _environment(TUNE_ENVIRONMENT):
            started = self._init_ray()
            scratch = None
            try:
                if started and self.address is None:
                    self._check_resources(ray.cluster_resources())
                if self.storage_path is None and run_dir is None:
                    scratch = tempfile.TemporaryDirectory(prefix="autoprune-ray-")
                storage = self.storage_path or (str(run_dir / "ray") if run_dir else scratch.name)
                adapter = TuneSearcherAdapter(searcher, on_result)
                with _quiet(RESULT_GRID_LOGGER):
                    self._tuner(evaluator, scheduler, adapter, remaining, storage).fit()
                if adapter.fatal is not None:
                    raise adapter.fatal
            finally:
                if started:
                    ray.shutdown()
                if scratch is not None:
                    scratch.cleanup()

    def _tuner(self, evaluator: Evaluator, scheduler: Scheduler, adapter: TuneSearcherAdapter, remaining: int,
               storage: str) -> Tuner:
        """A Ray Tune ``Tuner`` running ``remaining`` trials of ``evaluator`` as the adapter suggests them."""
        full = evaluator.config.finetune_steps
        rungs = scheduler.rungs(full)
        trainable = tune.with_resources(
            tune.with_parameters(EvaluationTrainable, evaluator=evaluator, rungs=rungs,
                                 threads=max(1, int(self.cpus_per_trial))),
            {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial},
        )
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=adapter, metric=METRIC, mode="max",
                num_samples=remaining, max_concurrent_trials=self.max_concurrent,
                scheduler=TuneSchedulerAdapter(scheduler, full, self.tune_scheduler),
                reuse_actors=True,  # one worker process per slot: no re-import or re-fetch per trial
            ),
            run_config=tune.RunConfig(
                storage_path=str(Path(storage).resolve()), name=f"trials-{time.strftime('%Y%m%d-%H%M%S')}",
                verbose=0, failure_config=tune.FailureConfig(max_failures=self.max_failures),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),  # a retried trial starts over
            ),
        )

    def _check_resources(self, available: dict[str, float]) -> None:
        """On an embedded Ray, a trial that asks for more than the machine has would wait forever."""
        for name, wanted in (("CPU", self.cpus_per_trial), ("GPU", self.gpus_per_trial)):
            if wanted > available.get(name, 0.0):
                raise ConfigError(
                    f"{name.lower()}s_per_trial={wanted} but this machine's Ray has {available.get(name, 0.0):g} "
                    f"{name}s; lower it, or pass address= to use a cluster that has them"
                )
