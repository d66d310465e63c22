"""bench/compare_searchers.py keeps one table per results directory: rows made with other settings are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from compare_searchers import settings_conflict

BENCH = Path(__file__).parents[2] / "bench"

CONFIG = {"model": "resnet20", "finetune_steps": 30, "evaluations": 50, "baseline_sha256": "a" * 64,
          "baseline_test_accuracy": 0.935}


def write_row(directory: Path, name: str, **changes: object) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"config": {**CONFIG, "seeds": "0", **changes}, "row": {}}))
    return path


def test_rows_of_the_same_settings_and_of_other_models_are_no_conflict(tmp_path: Path) -> None:
    write_row(tmp_path, "resnet20-uniform-0.3-0")
    write_row(tmp_path, "mobilenet_v2-uniform-0.3-0", model="mobilenet_v2", finetune_steps=0, baseline_sha256=None)
    write_row(tmp_path, "element-resnet20-uniform-0.1-0", granularity="element", finetune_steps=0)
    assert settings_conflict(tmp_path, CONFIG) is None


def test_a_row_of_another_baseline_is_refused_even_under_another_row_name(tmp_path: Path) -> None:
    write_row(tmp_path, "resnet20-uniform-0.3-0")
    older = write_row(tmp_path, "resnet20-amc-0.5-1", baseline_sha256=None, baseline_test_accuracy=0.9339)
    assert settings_conflict(tmp_path, CONFIG) == (older, {"baseline_sha256": (None, "a" * 64),
                                                           "baseline_test_accuracy": (0.9339, 0.935)})


def test_a_row_of_another_evaluator_is_refused(tmp_path: Path) -> None:
    other = write_row(tmp_path, "resnet20-global-0.3-2", finetune_steps=0)
    assert settings_conflict(tmp_path, CONFIG) == (other, {"finetune_steps": (0, 30)})


def test_a_missing_directory_has_no_conflict_and_a_file_that_is_no_row_is_named(tmp_path: Path) -> None:
    assert settings_conflict(tmp_path / "missing", CONFIG) is None
    (tmp_path / "notes.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"notes\.json is not a benchmark row"):
        settings_conflict(tmp_path, CONFIG)
    (tmp_path / "notes.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"notes\.json is not a benchmark row"):
        settings_conflict(tmp_path, CONFIG)


def test_the_run_exits_on_another_evaluators_rows_before_it_loads_a_baseline(tmp_path: Path) -> None:
    write_row(tmp_path, "small_cnn-uniform-0.3-0", model="small_cnn", dataset="digits", finetune_steps=0)
    result = subprocess.run([sys.executable, str(BENCH / "compare_searchers.py"), "--quick", "--results",
                             str(tmp_path), "--methods", "uniform"],
                            capture_output=True, text=True, env={**os.environ, "AUTOPRUNE_CACHE": str(tmp_path / "c")})
    assert result.returncode != 0
    assert "small_cnn-uniform-0.3-0.json was made with other settings" in result.stderr
    assert "'finetune_steps': (0, " in result.stderr
    assert not (tmp_path / "c").exists()  # no baseline was trained


def test_a_row_lock_is_held_only_while_its_process_lives(tmp_path: Path) -> None:
    from compare_searchers import row_lock

    lock = tmp_path / "resnet20-amc-0.3-2.lock"
    lock.write_text("12345")  # left by a process killed with its session: no flock on it
    with row_lock(lock) as mine:
        assert mine and lock.read_text() == str(os.getpid())
        with row_lock(lock) as again:  # another descriptor, as another process would open it
            assert not again
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(lock)!r}, os.O_WRONLY)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with row_lock(lock) as mine:
            assert not mine
    finally:
        holder.kill()
        holder.wait()
    with row_lock(lock) as mine:  # the holder died: its lock went with it
        assert mine


@pytest.mark.slow  # two quick searches (12 evaluations each)
def test_a_resumed_row_counts_the_trials_run_before_it_in_its_wall_time(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH / "compare_searchers.py"), "--quick", "--results", str(tmp_path / "rows"),
               "--methods", "random", "--budgets", "0.5", "--seeds", "0"]
    env = {**os.environ, "AUTOPRUNE_CACHE": str(tmp_path / "cache")}
    subprocess.run(command, check=True, capture_output=True, env=env)
    row_file = tmp_path / "rows" / "small_cnn-random-0.5-0.json"
    fresh = json.loads(row_file.read_text())["row"]
    assert fresh["resumed_trials"] == 0
    row_file.unlink()  # the row is lost, its finished run directory is not: the run resumes it
    subprocess.run(command, check=True, capture_output=True, env=env)
    resumed = json.loads(row_file.read_text())["row"]
    trials = [json.loads(line) for line in (tmp_path / "rows" / "runs" / "small_cnn-random-0.5-0" / "trials.jsonl")
              .read_text().splitlines()]
    assert resumed["resumed_trials"] == len(trials) == fresh["evaluations"] > 0
    assert resumed["search_seconds"] >= sum(t["trial"]["seconds"] for t in trials)
    assert resumed["test_accuracy"] == fresh["test_accuracy"]


def test_compute_is_counted_in_the_searchs_own_full_evaluations() -> None:
    import pandas as pd
    from compare_searchers import compute_figures

    trials = pd.DataFrame({"status": ["ok", "ok", "ok", "ok", "failed"], "fidelity": [30, 0, 30, 0, 30],
                           "seconds": [10.0, 1.0, 13.0, 1.0, 1.0], "rung": [0, 0, 1, 0, 0],
                           "validate_seconds": [0.5, 0.5, 2.0, 0.5, 0.0]})
    # the promoted candidate validated twice (screen and full score): one validation is left out of the unit
    assert compute_figures(trials, 30) == {"evaluation_seconds": 26.0, "full_scores": 2, "full_equivalents": 26 / 11}
