"""Experiment tracking: the files TensorBoard and MLflow write, read back with their own libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import autoprune as ap
from search_spaces.ground.errors import ConfigError, UnknownNameError


@pytest.mark.slow  # imports TensorBoard and MLflow
def test_tensorboard_and_mlflow_get_every_trial_and_the_best_policy(trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "run"
    fast = {"bn_batches": 1, "finetune_steps": 1, "val_batches": 1}
    result = ap.search(
        trained_cnn,
        digits.example_inputs(),
        budget=ap.Budget.flops(0.5),
        train_data=digits.train,
        val_data=digits.val,
        trials=3,
        evaluator=fast,
        final={"steps": 1, "measure_latency": False},
        run={"dir": run, "tracking": ["tensorboard", "mlflow"]},
    )
    trials = result.trials.set_index("trial_id")

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    accuracy = events.Scalars("trial/accuracy")
    assert [e.step for e in accuracy] == [0, 1, 2]
    assert [e.value for e in accuracy] == pytest.approx(list(trials["accuracy"]))
    assert [e.value for e in events.Scalars("trial/flops_ratio")] == pytest.approx(list(trials["flops_ratio"]))
    assert events.Scalars("final/accuracy")[0].value == pytest.approx(result.summary.pruned.accuracy)
    assert "best_policy.json" in " ".join(events.Tags()["tensors"])  # the policy, as text

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("autoprune").experiment_id])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"
    history = client.get_metric_history(mlflow_run.info.run_id, "accuracy")
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx(list(trials["accuracy"]))
    assert json.loads(mlflow_run.data.params["budget"]) == {"metric": "flops", "fraction": 0.5, "absolute": None}
    assert mlflow_run.data.metrics["final_accuracy"] == pytest.approx(result.summary.pruned.accuracy)
    names = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert names == {"best_policy.json", "summary.json"}
    local = client.download_artifacts(mlflow_run.info.run_id, "best_policy.json", str(tmp_path))
    assert ap.Policy.load(local) == result.best_policy


def test_tracking_is_checked_before_any_work(trained_cnn, digits, tmp_path) -> None:
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val, trials=1)
    with pytest.raises(UnknownNameError, match="tracker 'wandb'"):
        ap.search(trained_cnn, digits.example_inputs(), **options, run={"tracking": ["wandb"], "dir": tmp_path / "run"})
    with pytest.raises(ConfigError, match="give run_dir"):
        ap.search(trained_cnn, digits.example_inputs(), **options, run={"tracking": "mlflow"})
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # starts MLflow's tracking server (the `mlflow` package, a dev dependency)
def test_mlflow_ui_serves_the_runs_a_search_tracked(trained_cnn, digits, tmp_path) -> None:
    import subprocess
    import sys
    import time

    import httpx

    from autoprune.service.local import free_port

    run = tmp_path / "run"
    ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.flops(0.5), train_data=digits.train,
              val_data=digits.val, trials=2, evaluator={"bn_batches": 1, "finetune_steps": 1, "val_batches": 1},
              final={"steps": 1, "measure_latency": False}, run={"dir": run, "tracking": "mlflow"})
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{run / 'mlflow.db'}",
               "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{base}/health"):
            assert time.monotonic() < deadline and server.poll() is None, "mlflow ui did not start"
            time.sleep(1)
        assert "MLflow" in httpx.get(base, timeout=30).text  # the UI's page
        experiment = httpx.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                               params={"experiment_name": "autoprune"}, timeout=30).json()["experiment"]
        runs = httpx.post(f"{base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment["experiment_id"]]},
                          timeout=30).json()["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["run"] and runs[0]["info"]["status"] == "FINISHED"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_the_mlflow_tracker_sets_its_store_up_without_a_deprecation_warning(tmp_path) -> None:
    """MLflow's SQLite store warns about SQLAlchemy's ``noload`` on its first use in a process: not the user's
    business. (In a process of its own, so this is the first use.)"""
    probe = ("import sys, warnings; from pathlib import Path; warnings.simplefilter('always'); "
             "from autoprune.study.tracking import MlflowTracker; MlflowTracker(Path(sys.argv[1]), {'trials': 1})")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True,
                          timeout=300)
    assert "noload" not in done.stderr, done.stderr
