"""Probes of issue 33 kept fast: numbers out of range from every source (HTTP bodies, configs, YAML, CLI options,
policies, run files), configs a driver would refuse, batch-0 inputs, duplicated and damaged run records. Each
must end in one clear line (an AutopruneError: HTTP 400, CLI exit 2), never a traceback or a 500."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from served import TINY, TOKEN

import autoprune as ap
from autoprune.builtins.models import small_cnn
from autoprune.cli.main import main
from autoprune.composition.config import SearchConfig
from autoprune.service.app import ServerSettings, create_app
from autoprune.service.store import RunStore
from autoprune.service.supervisor import Supervisor
from autoprune.study.rundir import RunDir
from search_spaces.ground.documents import loads_json, loads_yaml
from search_spaces.ground.errors import AutopruneError, ConfigError
from search_spaces.ground.io import read_json_file
from search_spaces.ground.options import check_fraction, check_int, check_number

AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUGE = "9" * 5001  # past Python's 4,300-digit limit for int <-> str
BIG = "1" + "0" * 400  # converts, but overflows a float


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[TestClient, RunStore]]:
    store = RunStore(tmp_path / "runs")
    try:
        yield TestClient(create_app(store, Supervisor(store), ServerSettings(tokens={TOKEN: "default"}))), store
    finally:
        store.close()


def _with(entry: str, number: str) -> str:
    """TINY as JSON text with ``entry`` set to the literal ``number`` (json.dumps cannot write a 5001-digit int)."""
    return json.dumps({**TINY, entry: "@"}).replace('"@"', number)


def test_huge_numbers_and_configs_a_driver_refuses_get_400_and_create_nothing(service) -> None:
    client, store = service
    refused = [  # (body, content type, what the message says)
        (_with("trials", HUGE), "application/json",
         "the integer 999999999999...9999 (5,001 characters) is out of range"),
        (json.dumps({**TINY, "budget": {"flops": "@"}}).replace('"@"', BIG), "application/json", "is out of range"),
        (json.dumps({**TINY, "budget": {"flops": "@"}}).replace('"@"', "1e400"), "application/json",
         "the number 1e400 is too large for a float"),
        (_with("time_budget", BIG), "application/json", "is out of range"),
        (_with("time_budget", "1e999"), "application/json", "too large for a float"),
        (_with("seed", str(2**64 + 1)), "application/json", "is out of range"),
        (_with("seed", str(2**40)), "application/json", "'seed' must be an integer from 0 to 4,294,967,295"),
        (json.dumps({**TINY, "max_ratio": 1.0}), "application/json", "'max_ratio' must be a number in (0, 1), got 1.0"),
        (f"model: small_cnn\ntrials: {HUGE}\n", "application/yaml", "(line 2) is out of range"),
        ("model: small_cnn\nbudget: {flops: 1.0e+400}\n", "application/yaml", "too large for a float"),
    ]
    for body, content_type, message in refused:
        response = client.post("/runs", content=body, headers={**AUTH, "Content-Type": content_type})
        assert response.status_code == 400 and message in response.json()["detail"], (body[:60], response.text)
    assert store.all() == [] and [p.name for p in store.root.iterdir() if not p.name.startswith(".")] == []
    run_id = store.create(SearchConfig.from_dict(TINY), owner="default")["id"]
    store.update(run_id, status="failed")
    response = client.post(f"/runs/{run_id}/resume", content=f'{{"trials": {BIG}}}', headers=AUTH)
    assert response.status_code == 400 and "out of range" in response.json()["detail"]


def test_one_validation_point_reads_numbers_from_json_and_yaml() -> None:
    for text in (HUGE, f"[{HUGE}]", f"-{HUGE}", str(2**64), str(-(2**63) - 1), "1.0e+400", "-1.0e+400"):
        with pytest.raises(ConfigError, match="^a document: the "):
            loads_json(text, what="a document")
        with pytest.raises(ConfigError, match="^a document: the "):
            loads_yaml(text, what="a document")  # YAML 1.1 floats need a dot
    assert loads_json('[NaN, Infinity, 18446744073709551615, 1.5e300]', what="x")[2:] == [2**64 - 1, 1.5e300]
    assert loads_yaml("[.inf, 0x10, 1_000]", what="x") == [float("inf"), 16, 1000]
    for text, message in (("[" * 100_000, "nested too deeply"), ("a: !!python/object:os.system x", "not valid YAML"),
                          ("a: [", "not valid YAML")):
        with pytest.raises(ConfigError, match=message):
            loads_yaml(text, what="a document")
    with pytest.raises(ConfigError, match="not UTF-8"):
        loads_json(b'{"a": "\xff"}', what="a document")


def test_field_checks_describe_huge_values_instead_of_crashing() -> None:
    huge = 10**5000
    for check in (lambda: check_int("trials", huge, low=1), lambda: check_number("lr", huge, low=0),
                  lambda: check_fraction("budget", huge, low_inclusive=False, high_inclusive=True),
                  lambda: check_number("lr", float("inf"), low=0)):
        with pytest.raises(ConfigError, match="must be .*, got (an integer of about 5,001 digits|inf)"):
            check()
    with pytest.raises(AutopruneError, match="an integer of about 5,001 digits"):
        ap.Budget.flops(huge)


@pytest.mark.parametrize(("argv", "message"), [
    (["--searcher-option", f"levels={HUGE}"], "--searcher-option 'levels': the integer"),
    (["--searcher-option", "levels=!!python/object/apply:os.system [echo]"], "--searcher-option 'levels' is not valid"),
    (["--searcher-option", "levels=["], "--searcher-option 'levels' is not valid YAML"),
    (["--seed", str(2**64 + 1)], "'seed' must be an integer from 0 to 4,294,967,295"),
], ids=["huge-option", "constructor-error", "parser-error", "huge-seed"])
def test_the_cli_refuses_bad_numbers_and_yaml_in_one_line(argv, message, tmp_path, capsys) -> None:
    assert main(["search", "--trials", "1", "--run-dir", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ") and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "message"), [
    (f"model: small_cnn\ntrials: {HUGE}\n", "is out of range"),
    ("model: small_cnn\nbudget: {flops: 1.0e+400}\n", "too large for a float"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("max_ratio: 1.0\n", "'max_ratio' must be a number in (0, 1)"),
], ids=["huge-int", "huge-float", "nested-5000", "max-ratio"])
def test_a_config_file_with_bad_numbers_is_one_line(text, message, tmp_path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert main(["search", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ") and "Traceback" not in err


def test_policies_and_run_files_with_huge_numbers_are_refused_naming_the_file(tmp_path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(f'{{"ratios": {{"conv1": {HUGE}}}}}')
    with pytest.raises(AutopruneError, match="policy file .*policy.json.*: the integer .* is out of range"):
        ap.Policy.load(policy)
    for name in ("config.json", "summary.json", "pruning_history.json"):
        path = tmp_path / name
        path.write_text(f'{{"value": {HUGE}}}')
        with pytest.raises(ConfigError, match=f"{name}.*out of range"):
            read_json_file(path, what="run file")


def test_batch_0_example_inputs_are_refused_before_anything_is_traced(cnn_inputs, digits) -> None:
    model = small_cnn(in_channels=1)
    with pytest.raises(AutopruneError, match=r"at least one example .* shape \[0, 1, 8, 8\]"):
        ap.search(model, torch.zeros(0, 1, 8, 8), budget=ap.Budget.flops(0.5), train_data=digits.train,
                  val_data=digits.val, trials=1)


def _copy(finished_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run, symlinks=True)
    return run


def test_a_repeated_trial_record_is_ignored_once_and_said_once(finished_run, tmp_path, caplog) -> None:
    run = _copy(finished_run, tmp_path)
    log = run / "trials.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([*lines, lines[-1]]) + "\n")  # the last record twice
    with caplog.at_level(logging.WARNING):
        rows = RunDir(run).read_rows()
        assert RunDir(run).read_rows() == rows
    assert sorted(r["trial_id"] for r in rows) == list(range(len(lines)))
    said = [r for r in caplog.records if "repeats the record of trial" in r.getMessage()]
    assert len(said) == 1 and f"line {len(lines) + 1}" in said[0].getMessage()
    different = json.loads(lines[-1])
    different["trial"]["accuracy"] = 0.123
    log.write_text("\n".join([*lines, json.dumps(different)]) + "\n")
    with pytest.raises(AutopruneError, match=f"line {len(lines) + 1} is a second, different record of trial"):
        RunDir(run).read_rows()


def test_a_damaged_state_tensor_file_is_named_as_such(finished_run, tmp_path) -> None:
    run = _copy(finished_run, tmp_path)
    tensors = max((run / "state").glob("*.pt"))
    tensors.write_bytes(b"damaged" + tensors.read_bytes()[7:])
    with pytest.raises(AutopruneError) as refused:
        RunDir(run).read_log()
    assert tensors.name in str(refused.value) and tensors.with_suffix(".json").name not in str(refused.value)


def test_a_trial_log_line_with_a_0xff_byte_or_deep_nesting_is_one_line(finished_run, tmp_path, capsys) -> None:
    for bad in (b'{"trial": "\xff"}', b"[" * 100_000 + b"]" * 100_000):
        run = _copy(finished_run, tmp_path / str(len(bad)))
        log = run / "trials.jsonl"
        log.write_bytes(bad + b"\n" + log.read_bytes())
        assert main(["report", str(run)]) == 2
        err = capsys.readouterr().err
        assert "trials.jsonl' line 1 is not a trial record" in err.replace("\n", "") and "Traceback" not in err


def test_markup_in_paths_and_run_ids_is_printed_literally(finished_run, tmp_path, capsys) -> None:
    from autoprune.cli.render import report_runs

    run = tmp_path / "[bold red]boom[/bold red]" / "x[/x]"
    shutil.copytree(finished_run, run, symlinks=True)
    assert main(["report", str(run)]) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out.replace("\n", "")
    brief = {"id": "x[/y]", "status": "[red]done", "progress": {"completed": 1, "total": 2, "best_accuracy": None},
             "budget": {"flops": 0.5}, "searcher": "random", "created": "now", "owner": "[b]bob"}
    report_runs("http://[/s]", [brief])
    printed = capsys.readouterr().out
    assert all(text in printed for text in ("x[/y]", "[red]done", "[b]bob", "http://[/s]")), printed


def test_serve_with_a_runs_root_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_TOKEN", TOKEN)
    root = tmp_path / "a-file"
    root.write_text("")
    assert main(["serve", "--runs-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "--runs-root" in err and "is a file" in err and "Traceback" not in err


def test_import_strings_are_refused_before_anything_imports_them(tmp_path) -> None:
    from autoprune.service.remote import checked_config

    for entry in ("searcher", "model", "dataset"):
        with pytest.raises(ConfigError, match="import strings from a request are refused"):
            checked_config({**TINY, entry: "no_such_module_anywhere:thing"}, checkpoints=tmp_path,
                           allow_imports=False, ray_address=None)


class _Tiny(torch.nn.Module):
    def __init__(self, forward: str) -> None:
        super().__init__()
        self.conv, self.fc, self.kind = torch.nn.Conv2d(1, 8, 3), torch.nn.Linear(8, 10), forward

    def forward(self, x: torch.Tensor) -> object:
        y = self.fc(self.conv(x).mean((2, 3)))
        return {"tuple": (y, y), "scalar": y.sum(), "plain": y}[self.kind]


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("tuple", None, "model _Tiny must return one row of class scores per input .* it returned tuple"),
    ("scalar", None, r"model _Tiny must return one row .* it returned \[\]"),
    ("plain", lambda x, y: (x, y + 100), "val_data's targets must be class indices from 0 to 9 .* got 100 to 109"),
    ("plain", lambda x, y: (x, y - 100), "val_data's targets must be class indices from 0 to 9 .* got -100"),
    ("plain", lambda x, y: (x, y.float()), "val_data's targets must be integer class indices, got torch.float32"),
    ("plain", lambda x, y: (x[:, :0], y), "model _Tiny fails on the first batch of val_data"),
], ids=["tuple", "scalar", "labels-high", "labels-negative", "labels-float", "zero-channels"])
def test_a_model_or_data_set_that_fails_on_its_first_batch_is_named_before_any_trial(kind, change, message, digits,
                                                                                     tmp_path) -> None:
    data = [(x, y) for x, y in list(digits.val)[:2]]
    data = [change(x, y) for x, y in data] if change else data
    with pytest.raises(AutopruneError, match=message):
        ap.search(_Tiny(kind), digits.example_inputs(), budget=ap.Budget.flops(0.5), train_data=data, val_data=data,
                  trials=1, evaluator={"bn_batches": 1, "finetune_steps": 0, "val_batches": 1},
                  run={"dir": tmp_path / "run"})
    assert not (tmp_path / "run" / "trials.jsonl").exists()


def test_a_full_disk_stops_the_search_in_one_line_and_resume_completes(tmp_path, capsys, monkeypatch) -> None:
    import errno

    from autoprune.study.rundir import RunDir as Dir

    run, record = tmp_path / "run", Dir.record
    argv = ["search", "--model", "small_cnn", "--dataset", "digits", "--epochs", "1", "--budget-params", "0.6",
            "--searcher", "random", "--trials", "3", "--finetune-steps", "1", "--final-finetune-steps", "1",
            "--run-dir", str(run)]

    def full_after_one(self, row, count, state) -> None:
        if count > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.file("trials.jsonl")))
        record(self, row, count, state)

    monkeypatch.setattr(Dir, "record", full_after_one)
    assert main(argv) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "cannot write" in err and "No space left on device" in err and "Traceback" not in err
    assert f"resume with: autoprune search --resume {run}" in err
    monkeypatch.setattr(Dir, "record", record)
    assert main(["search", "--resume", str(run)]) == 0
    assert "resuming from 1 finished trials" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["trials"] == 3


def test_a_read_only_report_folder_is_one_line(finished_run, tmp_path, capsys, monkeypatch) -> None:
    import errno

    import autoprune.report.run_record as record

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(record, "atomic_write_text", read_only)
    assert main(["report", str(_copy(finished_run, tmp_path / "run"))]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "cannot write" in err and "report.html" in err and "Read-only file system" in err and "Traceback" not in err


@pytest.mark.parametrize(("content", "why"), [
    (b"", "it is empty"),
    (b"\xff\xfe\x00\x01binary\x00", "does not parse"),
    (b"group,ratio,accuracy\nconv1,0.5,high\n", "accuracy that is not a finite number: 'high'"),
])
def test_an_empty_or_binary_sensitivity_table_is_one_line(finished_run, tmp_path, capsys, content, why) -> None:
    run = _copy(finished_run, tmp_path / "run")
    (run / "sensitivity.csv").write_bytes(content)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "is not a sensitivity table" in err or "has a" in err
    assert why in err and "Traceback" not in err


def test_a_permission_error_says_access_not_write() -> None:
    import errno

    from autoprune.cli.stops import cannot_write

    assert cannot_write(OSError(errno.EACCES, "Permission denied", "/x/y")) == "cannot access '/x/y': Permission denied"
    assert cannot_write(OSError(errno.ENOSPC, "No space left on device")) == "cannot write: No space left on device"
