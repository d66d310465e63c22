"""The Ray Tune executor on a two-node Ray cluster running on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from factories import RecordingSearcher
from ray.cluster_utils import Cluster

import autoprune as ap
from autoprune.executors import RayOptions, make_executor
from search_spaces.ground.errors import ConfigError, DataError

pytestmark = pytest.mark.xdist_group("ray")  # one xdist worker runs every Ray module (see the Makefile)
FAST = {"bn_batches": 1, "finetune_steps": 3, "val_batches": 1}


@pytest.fixture(scope="module")
def cluster():
    # trial workers at the driver's priority, as the embedded Ray runs them: at Ray's default (15 nicer) a loaded
    # machine starves the second node's worker while it starts, and every trial goes to the first node's
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "_system_config": {"worker_niceness": 0}})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _trial_worker_pids() -> list[int]:
    """Processes running a Ray Tune trial (their title names the actor class ``tune.with_resources`` makes of
    the trainable class, ResourceTrainable)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ResourceTrainable" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _search(model, digits, **kwargs):
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val, evaluator=FAST,
                   final={"measure_latency": False}, executor="ray")
    options.update(kwargs)
    return ap.search(model, digits.example_inputs(), **options)


@pytest.mark.slow  # a two-node Ray cluster
def test_trials_run_on_both_nodes_out_of_order(cluster, trained_cnn, digits, tmp_path, capfd) -> None:
    # Tune keeps one trial pending (its default with a search algorithm) and hands a pending trial whose worker is
    # still starting to the first worker that frees up: each trial must outlast a worker's start (about 5 s alone,
    # longer under load; 1000 steps take about 3.5 s) for the second node to get one
    result = _search(
        trained_cnn,
        digits,
        trials=4,
        evaluator={**FAST, "finetune_steps": 6000},
        run={"dir": tmp_path / "run"},
        final={"rescore": 0},
    )
    trials = result.trials
    assert sorted(trials["trial_id"]) == list(range(4))
    assert trials["status"].eq("ok").all() and trials["feasible"].all()
    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert set(trials["node"]) == node_ids and len(node_ids) == 2  # both nodes did work
    assert trials["pid"].gt(0).all()
    assert result.best_policy is not None and (tmp_path / "run" / "ray").is_dir()
    # no per-trial Tune files are written, and Tune's result grid does not warn about each missing one
    assert "Failed to fetch metrics" not in capfd.readouterr().err


@pytest.mark.slow  # a two-node Ray cluster
def test_a_worker_killed_mid_trial_is_retried_without_losing_or_duplicating_rows(cluster, trained_cnn,
                                                                                   digits) -> None:
    killed: list[int] = []

    def kill_first_trial_worker() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for pid in _trial_worker_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_trial_worker, daemon=True)
    killer.start()
    result = _search(trained_cnn, digits, trials=3, executor=RayOptions(max_failures=3))
    killer.join(timeout=1)
    assert killed, "no trial worker was found to kill"
    assert sorted(result.trials["trial_id"]) == [0, 1, 2]
    assert result.trials["status"].eq("ok").all()


@pytest.mark.slow  # a two-node Ray cluster
@pytest.mark.parametrize(("scheduler", "fidelities"), [("asha", {1, 3, 9}), ("cascade", {0, 9})])
def test_scheduled_scores_reach_the_searcher_with_their_fidelity(cluster, trained_cnn, digits, scheduler,
                                                                 fidelities) -> None:
    searcher = RecordingSearcher()
    result = _search(trained_cnn, digits, trials=6, evaluator={**FAST, "finetune_steps": 9}, searcher=searcher,
                     run={"scheduler": scheduler})
    assert len(result.trials) == 6
    assert set(result.trials["fidelity"]) <= fidelities and (result.trials["fidelity"] == 9).any()
    assert sorted(searcher.told_fidelities) == sorted(result.trials["fidelity"])  # told what it came from
    stopped = result.trials["fidelity"] < 9
    if scheduler == "cascade":  # every candidate was screened: the searcher learns from each one's screen
        assert stopped.any() and None not in searcher.learnable
        assert sorted(searcher.learnable) == sorted(result.trials["first_accuracy"])
    else:  # stopped candidates are not comparable with full scores: nothing to learn from them
        assert searcher.learnable.count(None) == int(stopped.sum())
    best = result.trials[result.trials["trial_id"] == result.summary.best_trial_id]
    assert int(best["fidelity"].iloc[0]) == 9  # the best policy is chosen among full-fidelity scores


@pytest.mark.slow  # a two-node Ray cluster
def test_bad_input_stops_a_ray_search_with_the_real_error(cluster, trained_cnn, digits) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError, match="no samples"):
        _search(trained_cnn, digits, trials=20, val_data=[])
    assert time.perf_counter() - start < 120  # not 20 trials x retries


def test_executor_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="cpus_per_trial must be a number > 0"):
        make_executor(RayOptions(cpus_per_trial=0))
    with pytest.raises(ConfigError, match="unknown ray executor options"):
        make_executor(RayOptions.from_dict({"cpu": 1}))
    with pytest.raises(ConfigError, match="gpus_per_trial=1 but this machine's Ray has 0 GPUs"):
        make_executor(RayOptions(gpus_per_trial=1))._check_resources({"CPU": 2.0})


@pytest.mark.slow  # a two-node Ray cluster
def test_ray_tune_search_algorithm_runs_on_the_ray_executor(cluster, trained_cnn, digits) -> None:
    result = _search(trained_cnn, digits, trials=3, searcher="ray_tune", searcher_options={"algorithm": "basic"})
    assert sorted(result.trials["trial_id"]) == [0, 1, 2] and result.trials["feasible"].all()


def test_embedded_ray_is_local_and_its_dashboard_binds_to_loopback(monkeypatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert make_executor(RayOptions(dashboard=True))._init_ray() is True
    assert make_executor(RayOptions(address="auto"))._init_ray() is True
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == os.cpu_count()
    assert calls[0]["_system_config"] == {"worker_niceness": 0}  # trials as urgent as a local search's
    assert calls[0]["include_dashboard"] is True and calls[0]["dashboard_host"] == "127.0.0.1"
    assert calls[1]["address"] == "auto" and calls[1]["include_dashboard"] is False


def test_tunes_experiment_checkpoint_saves_the_adapter_without_a_warning(tmp_path, caplog) -> None:
    """Ray Tune saves its search algorithm with every experiment checkpoint; the adapter saves what it holds (its
    metric and mode: the searcher's state is in the run directory), so Tune never logs "save not implemented"."""
    from ray.tune.search import Searcher as TuneSearcher

    from autoprune.executors.ray_tune import TuneSearcherAdapter

    adapter = TuneSearcherAdapter(RecordingSearcher(), on_result=lambda done: None)
    adapter.set_search_properties("objective", "max", {})
    with caplog.at_level("WARNING"):
        TuneSearcher.save_to_dir(adapter, str(tmp_path), session_str="test")
    assert "not implemented" not in caplog.text and list(tmp_path.iterdir())
    again = TuneSearcherAdapter(RecordingSearcher(), on_result=lambda done: None)
    TuneSearcher.restore_from_dir(again, str(tmp_path))
    assert (again.metric, again.mode) == ("objective", "max")



def test_an_embedded_ray_starts_without_the_token_auth_banner() -> None:
    """Ray turns token authentication on for a new local cluster and warns about it on every start: autoprune keeps
    the authentication and drops the warning, which names nothing a user of the embedded Ray could change. (In a
    process of its own: Ray's auth mode is process-wide, and this module's cluster runs without it.)"""
    probe = ("import os, ray; from autoprune.executors.ray_tune import RayExecutor; "
             "assert RayExecutor()._init_ray(); print('auth', os.environ.get('RAY_AUTH_MODE')); ray.shutdown()")
    environment = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True,
                          env=environment)
    assert "auth token" in done.stdout  # Ray's default for a local cluster: still on
    assert "Token authentication is" not in done.stdout + done.stderr, done.stderr


class _StopAllButTheFirst:
    """A user's Ray Tune scheduler (built lazily: ray.tune imports here only): stops every trial but trial 0 at its
    first rung, and records what Tune told it."""

    @staticmethod
    def make():
        from ray.tune.schedulers import FIFOScheduler, TrialScheduler

        class StopAllButTheFirst(FIFOScheduler):
            def __init__(self) -> None:
                super().__init__()
                self.told, self.added, self.completed = None, [], []

            def set_search_properties(self, metric, mode, **spec) -> bool:
                self.told = metric
                return super().set_search_properties(metric, mode, **spec)

            def on_trial_add(self, tune_controller, trial) -> None:
                self.added.append(trial.config["trial_id"])

            def on_trial_complete(self, tune_controller, trial, result) -> None:
                self.completed.append(trial.config["trial_id"])

            def on_trial_result(self, tune_controller, trial, result) -> str:
                return TrialScheduler.CONTINUE if trial.config["trial_id"] == 0 else TrialScheduler.STOP

        return StopAllButTheFirst()


def test_a_users_tune_scheduler_is_checked_before_ray_starts(trained_cnn, digits) -> None:
    from ray.tune.schedulers import HyperBandScheduler, PopulationBasedTraining

    from autoprune.executors.ray_tune import RayExecutor

    for conflicting in (PopulationBasedTraining(hyperparam_mutations={"lr": [0.1]}), HyperBandScheduler()):
        with pytest.raises(ConfigError, match=f"{type(conflicting).__name__} pauses trials or changes their configs"):
            RayExecutor(tune_scheduler=conflicting)
    with pytest.raises(ConfigError, match="must be a ray.tune.schedulers.TrialScheduler, got 'median'"):
        RayExecutor(tune_scheduler="median")
    with pytest.raises(ConfigError, match="acts on the scores a trial reports at its rungs, and this search has none"):
        _search(trained_cnn, digits, trials=2, executor=RayExecutor(tune_scheduler=_StopAllButTheFirst.make()))


@pytest.mark.slow  # a two-node Ray cluster
def test_a_users_tune_scheduler_may_stop_trials_at_the_autoprune_rungs(cluster, trained_cnn, digits,
                                                                       tmp_path) -> None:
    from autoprune.executors.ray_tune import RayExecutor

    mine = _StopAllButTheFirst.make()
    result = _search(trained_cnn, digits, trials=3, evaluator={**FAST, "finetune_steps": 9},
                     executor=RayExecutor(address=cluster.address, tune_scheduler=mine),
                     run={"scheduler": "asha", "dir": tmp_path / "run"}, final={"rescore": 0, "measure_latency": False})
    fidelity = dict(zip(result.trials["trial_id"], result.trials["fidelity"], strict=True))
    assert fidelity[0] == 9 and fidelity[1] < 9 and fidelity[2] < 9  # the first rung is 1 step of 9
    assert mine.told is not None and sorted(mine.added) == [0, 1, 2] and 0 in mine.completed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["executor"]["tune_scheduler"] == "StopAllButTheFirst"
