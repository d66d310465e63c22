"""The run directory: one search per directory, a lock, the trial log as the truth, tables and final outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from autoprune.study import rundir as rd
from search_spaces.ground.errors import RunDirError

CONFIG = {"format_version": rd.FORMAT_VERSION, "fingerprint": {"groups": {"a": 4}}, "trials": 2}
ROW = {"trial_id": 0, "status": "ok", "accuracy": 0.5, "feasible": True}


def test_a_new_directory_is_created_locked_and_refuses_a_second_search(tmp_path) -> None:
    path = tmp_path / "run"
    run = rd.RunDir(path)
    assert run.prepare(CONFIG, resume=False) is False
    assert json.loads((path / rd.CONFIG).read_text()) == CONFIG
    with pytest.raises(RunDirError, match="resume=True"):
        rd.RunDir(path).prepare(CONFIG, resume=False)
    with pytest.raises(RunDirError):  # the lock: another process holds the run
        rd.RunDir(path).prepare(CONFIG, resume=True)
    run.close()


def test_the_log_holds_rows_with_their_state_and_a_resume_reads_both(tmp_path) -> None:
    run = rd.RunDir(tmp_path / "run")
    run.prepare(CONFIG, resume=False)
    run.record(ROW, 1, {"searcher": {"next_id": 1}})
    run.record({**ROW, "trial_id": 1}, 2, {"searcher": {"next_id": 2}})
    run.close()
    again = rd.RunDir(tmp_path / "run")
    assert again.prepare(CONFIG, resume=True) is True
    rows, state = again.read_log()
    assert [r["trial_id"] for r in rows] == [0, 1] and state["searcher"] == {"next_id": 2}
    assert sorted(p.name for p in again.file(rd.STATE_DIR).iterdir()) == [
        "000001.json", "000001.pt", "000002.json", "000002.pt"]
    again.close()


def test_a_resume_with_other_settings_or_an_older_format_is_refused_naming_it(tmp_path) -> None:
    run = rd.RunDir(tmp_path / "run")
    run.prepare(CONFIG, resume=False)
    run.close()
    with pytest.raises(RunDirError, match="settings changed.*fingerprint"):
        rd.RunDir(tmp_path / "run").prepare({**CONFIG, "fingerprint": {"groups": {"a": 8}}}, resume=True)
    (tmp_path / "run" / rd.CONFIG).write_text(json.dumps({**CONFIG, "format_version": 2}))
    with pytest.raises(RunDirError, match="format version 2"):
        rd.RunDir(tmp_path / "run").prepare(CONFIG, resume=True)


def test_a_searchers_tables_are_written_as_csv_by_plain_name_only(tmp_path) -> None:
    run = rd.RunDir(tmp_path / "run")
    run.prepare(CONFIG, resume=False)
    table = pd.DataFrame({"group": ["a"], "ratio": [0.5]})
    run.write_tables({"scan.csv": table})
    assert pd.read_csv(run.file("scan.csv")).equals(table)
    for name in ("../escape.csv", "scan.json"):
        with pytest.raises(RunDirError, match="plain file name ending in .csv"):
            run.write_tables({name: table})
    assert not (tmp_path / "escape.csv").exists()
    run.close()


def test_a_new_directory_that_ran_nothing_is_discarded(tmp_path) -> None:
    run = rd.RunDir(tmp_path / "run")
    run.prepare(CONFIG, resume=False)
    run.discard()
    assert not (tmp_path / "run").exists()
