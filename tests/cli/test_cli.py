from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import onnxruntime
import pytest
import torch
import yaml

from autoprune import Policy, load_pruned_model
from autoprune.builtins.models import small_cnn
from autoprune.cli.main import build_parser, main
from search_spaces.ground.errors import RunDirError


@pytest.mark.slow  # the demo, then exports incl. an AOTInductor compile
def test_demo_end_to_end_then_apply(tmp_path, capsys) -> None:
    run = tmp_path / "demo"
    assert main(["demo", "--trials", "3", "--run-dir", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "best policy" in shown and "baseline" in shown and "pruned" in shown
    assert shown.strip().splitlines()[-1] == f"report: {run / 'report.html'}"  # make demo ends with the report
    assert (run / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pruned"]["flops_ratio"] <= 0.5 and summary["trials"] == 3
    assert summary["pruned"]["accuracy"] > 0.5  # a trained model, finetuned after pruning
    checkpoint = json.loads((run / "config.json").read_text())["checkpoint"]
    hint = next(line for line in shown.splitlines() if line.startswith("baseline checkpoint: "))
    assert hint.startswith(f"baseline checkpoint: {checkpoint} (prune it again with: autoprune apply ")
    out = tmp_path / "applied"
    printed = shlex.split(hint.split("with: autoprune ", 1)[1].removesuffix(")"))  # the command the demo printed
    assert printed == ["apply", str(run / "best_policy.json"), "--checkpoint", checkpoint, "--model", "small_cnn",
                       "--dataset", "digits", "--out", "pruned/"]
    assert main([*printed[:-1], str(out), "--format", "eager,export,compile,onnx"]) == 0
    assert (out / "pruned_state_dict.pt").exists() and (out / "pruning_history.json").exists()
    shown = capsys.readouterr().out
    assert "FLOPs" in shown and shown.count("outputs match eager") == 3
    pruned = load_pruned_model(small_cnn(in_channels=1), out, torch.zeros(1, 1, 8, 8)).eval()
    batch = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = pruned(batch)
        assert torch.allclose(torch.export.load(out / "model.pt2").module()(batch), expected, atol=1e-5)
        compiled = torch._inductor.aoti_load_package(str(out / "model_compiled.pt2"))
        assert torch.allclose(compiled(batch), expected, atol=1e-5)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)
    assert main(["apply", str(run / "best_policy.json"), "--checkpoint", checkpoint, "--out", str(out),
                 "--format", "tflite"]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err.lower()


@pytest.mark.slow  # a search, its resume and its re-run from the CLI
def test_search_from_config_with_overrides_and_resume(tmp_path, capsys) -> None:
    config = tmp_path / "search.yaml"
    run = tmp_path / "run"
    config.write_text(yaml.safe_dump({
        "model": "small_cnn", "dataset": "digits", "budget": {"params": 0.6}, "searcher": "random",
        "trials": 2, "evaluator": {"bn_batches": 2, "finetune_steps": 1, "val_batches": 1},
        "final_finetune_steps": 2, "train": {"epochs": 2}, "run_dir": str(run),
    }))
    assert main(["search", str(config), "--trials", "2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["pruned"]["params_ratio"] <= 0.6
    assert "2 of 2 finished" in (run / "report.html").read_text()
    config_json = (run / "config.json").read_bytes()
    assert main(["search", "--resume", str(run), "--trials", "1"]) == 2
    assert "2 trials have finished already; give trials >= 2" in capsys.readouterr().err.replace("\n", "")
    assert (run / "config.json").read_bytes() == config_json
    assert main(["search", "--resume", str(run), "--trials", "3", "--executor", "local", "--time-budget", "1h"]) == 0
    assert "resuming from 2 finished trials" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["trials"] == 3
    assert json.loads((run / "config.json").read_text())["config"]["time_budget"] == "1h"
    policy = Policy.load(run / "best_policy.json")
    assert policy.budget == {"metric": "params", "fraction": 0.6, "absolute": None}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "missing.yaml"], "does not exist"),
        (["search", "--model", "resnet1000", "--trials", "1"], "unknown model 'resnet1000'"),
        (["search", "--dataset", "imagenet", "--trials", "1"], "unknown dataset 'imagenet'"),
        (["search", "--budget-flops", "2", "--trials", "1"], "fraction must be in (0, 1], got 2.0"),
        (["search", "--budget-flops", "0.5", "--budget-params", "0.5"],
         "give only one budget, got --budget-flops, --budget-params"),
        (["search", "--budget-latency", "0.5", "--latency-threads", "0"], "threads must be a positive integer, got 0"),
        (["search", "--resume", "nowhere"], "not an autoprune run directory"),
        (["search", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], "dataset-fashion-mnist"),
        (["apply", "nope.json", "--checkpoint", "x.pt", "--out", "o"], "does not exist"),
        (["search", "--resume", "r", "--seed", "3"], "only --trials, --time-budget, --tracking and where"),
        (["search", "--trials", "0"], "'trials' must be an integer >= 1, got 0"),
        (["search", "--model", "", "--trials", "1"], "'model' must be a non-empty string"),
        (["report", "nowhere"], "'nowhere' is not a directory; give the run directory of a search"),
        (["report", "."], "'.' is not an autoprune run directory: it has no config.json"),
        (["search", "--searcher-option", "sampler=cmaes", "--trials", "1"],
         "searcher 'random' has no option 'sampler'; accepted: fit"),
        (["search", "--searcher", "uniform", "--searcher-option", "fit=none"],
         "searcher 'uniform' has no option 'fit'; it takes no options"),
        (["search", "--time-budget", "-5", "--trials", "1"], "'time_budget' must be a positive duration, got '-5'"),
        (["train", "--seed", "-1"], "train seed must be an integer >= 0, got -1"),
        (["serve", "--port", "70000"], "--port must be at most 65535, got 70000"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err.replace("\n", "")


def test_config_file_errors_name_the_entry(tmp_path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("trails: 3\n")
    assert main(["search", str(config)]) == 2
    assert "trails" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["search", "demo", "train", "apply", "sensitivity", "report", "serve",
                                     "submit", "runs"])
def test_help_explains_every_option(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.choices).choices[command]
    for action in sub._actions:
        assert action.help, f"{command} option {action.option_strings or action.dest} has no help"
    assert "usage" in text


def test_documented_example_configs_are_valid() -> None:

    from autoprune.composition.config import SearchConfig, demo_config

    examples = sorted((Path(__file__).parents[2] / "docs" / "examples").glob("*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        config = SearchConfig.from_yaml(path)
        assert config.trials >= 1 and config.budget
    assert SearchConfig.from_yaml(examples[0].parent / "demo.yaml") == demo_config()
    resnet = SearchConfig.from_yaml(examples[0].parent / "resnet20-fashion-mnist.yaml")
    assert resnet.run_dir.endswith(f"-{resnet.budget.fraction * 100:.0f}")  # named after its budget


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("model: 5", "'model' must be a non-empty string, got 5"),
        ("batch_size: 0", "'batch_size' must be an integer >= 1, got 0"),
        ("seed: '1'", "'seed' must be an integer >= 0, got '1'"),
        ("ignore: branch_b.0", "'ignore' must be a list of module names"),
        ("train: {lr: true}", "train lr must be a number > 0, got True"),
        ("evaluator: {bn_batches: -2}", "bn_batches must be an integer >= 0, got -2"),
        ("budget: {flops: 0}", "fraction must be in (0, 1]"),
    ],
)
def test_config_values_are_type_checked_before_any_work(entry, message, tmp_path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(entry + "\n")
    assert main(["search", str(config)]) == 2
    assert message in capsys.readouterr().err.replace("\n", "")


def test_apply_rejects_a_checkpoint_of_another_model(tmp_path, capsys) -> None:
    import torch

    from autoprune.builtins.models import resnet20
    from search_spaces import SearchSpace

    checkpoint = tmp_path / "r20.pt"
    torch.save(resnet20(in_channels=1).state_dict(), checkpoint)
    space = SearchSpace.from_model(resnet20(in_channels=1), torch.zeros(1, 1, 8, 8))
    space.policy([0.3] * len(space)).save(tmp_path / "p.json")
    argv = ["apply", str(tmp_path / "p.json"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert main(argv) == 2  # default --model small_cnn
    assert "does not fit model 'small_cnn'" in capsys.readouterr().err.replace("\n", "")
    assert main([*argv, "--model", "resnet20"]) == 0
    assert (tmp_path / "o" / "pruned_state_dict.pt").exists()
    (tmp_path / "a_file").write_text("")
    assert main([*argv[:-1], str(tmp_path / "a_file"), "--model", "resnet20"]) == 2
    assert "is an existing file; name a directory" in capsys.readouterr().err.replace("\n", "")


def test_sensitivity_command_writes_table_and_plot(tmp_path, capsys) -> None:
    run = tmp_path / "sens"
    argv = ["sensitivity", "--levels", "0.5,1", "--bn-batches", "1", "--finetune-steps", "0", "--run-dir", str(run)]
    assert main(argv) == 0
    assert (run / "sensitivity.csv").exists() and (run / "sensitivity.png").exists()
    assert "branch_a.0" in capsys.readouterr().out
    written = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(argv) == 2  # a second scan (or a search's run directory) is never written into
    assert "is not empty; a sensitivity scan writes to a new or empty directory" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == written


def test_ctrl_c_names_the_run_directory_to_resume(tmp_path, capsys, monkeypatch) -> None:
    def interrupted(config, **_):
        if not config.run_dir.endswith("early"):
            Path(config.run_dir).mkdir(parents=True)
            (Path(config.run_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("autoprune.cli.commands.run_search", interrupted)
    assert main(["search", "--run-dir", str(tmp_path / "started")]) == 130
    assert f"interrupted; resume with: autoprune search --resume {tmp_path / 'started'}" in capsys.readouterr().err
    assert main(["search", "--run-dir", str(tmp_path / "early")]) == 130
    assert "interrupted; nothing was written to resume" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["search"]) == 130  # the default run directory is named, not the placeholder RUN_DIR
    assert "interrupted; resume with: autoprune search --resume runs/small_cnn-digits-" in capsys.readouterr().err


def test_an_unreachable_ray_address_is_a_one_line_error(tmp_path, capsys, monkeypatch) -> None:
    def no_cluster(**_):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr("ray.is_initialized", lambda: False)  # an earlier test's Ray may still run in this process
    monkeypatch.setattr("ray.init", no_cluster)
    argv = ["search", "--executor", "ray", "--address", "auto", "--trials", "1", "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "cannot reach a Ray cluster at address 'auto' (Could not find any running Ray instance.)" in err
    assert "ray start --head" in err and not (tmp_path / "r").exists()


def test_searcher_options_from_flags(tmp_path) -> None:
    run = tmp_path / "run"
    argv = ["search", "--searcher", "optuna", "--searcher-option", "sampler=random", "--trials", "2",
            "--bn-batches", "1", "--finetune-steps", "0", "--final-finetune-steps", "0", "--run-dir", str(run)]
    assert main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["searcher_options"] == {"sampler": "random"} and (run / "trials.jsonl").exists()
    assert main(["search", "--searcher-option", "oops", "--trials", "1"]) == 2


def test_switching_to_the_local_executor_drops_ray_options() -> None:
    from autoprune.cli.flag_configs import with_executor_flags
    from autoprune.composition.config import SearchConfig
    from autoprune.executors import RayOptions

    ray_run = SearchConfig(executor="ray", executor_options={"cpus_per_trial": 1, "fidelity": "asha"},
                           evaluator={"finetune_steps": 9})
    args = build_parser().parse_args(["search", "--executor", "local"])
    assert with_executor_flags(ray_run, args).executor_options is None
    args = build_parser().parse_args(["search", "--address", "auto"])
    switched = with_executor_flags(SearchConfig(), args)
    assert switched.executor == "ray" and switched.executor_options == RayOptions(address="auto")


def test_resume_does_not_start_a_dashboard_or_reach_a_cluster_a_run_directory_names_unless_trusted(tmp_path) -> None:
    from autoprune.cli.flag_configs import resume_config
    from autoprune.composition.config import SearchConfig

    run = tmp_path / "run"
    run.mkdir()

    def resumed(options: dict, *flags: str) -> SearchConfig:
        saved = SearchConfig(executor="ray", executor_options=options, run_dir=str(run)).to_dict()
        (run / "config.json").write_text(json.dumps({"config": saved}))
        return resume_config(build_parser().parse_args(["search", "--resume", str(run), *flags]))

    for options, named in (({"dashboard": True, "dashboard_host": "0.0.0.0"}, "dashboard=True"),
                           ({"storage_path": "/etc/ray"}, "storage_path='/etc/ray'")):
        with pytest.raises(RunDirError, match="pass --trust-run-dir") as refused:
            resumed(options)
        assert named in str(refused.value)
        assert resumed(options, "--trust-run-dir").executor_options.dashboard_host == options.get(
            "dashboard_host", "127.0.0.1")
    with pytest.raises(RunDirError, match="pass --address auto again"):
        resumed({"address": "auto"})
    assert resumed({"address": "auto"}, "--executor", "local").executor_options is None  # the rsync-down case
    assert resumed({"address": "auto"}, "--address", "auto").executor_options.address == "auto"


@pytest.mark.slow  # searches in subprocesses
def test_resume_does_not_run_import_strings_from_a_run_directory_unless_trusted(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["search", "--model", "factories:tiny_model", "--dataset", "factories:tiny_data", "--trials", "1",
            "--bn-batches", "1", "--finetune-steps", "0", "--final-finetune-steps", "0", "--run-dir", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["search", "--resume", str(run), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "import strings" in err and "factories:tiny_model" in err and "--trust-run-dir" in err
    assert main(["search", "--resume", str(run), "--trials", "2", "--trust-run-dir"]) == 0


def test_version_and_literal_percent_in_help(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("autoprune 0.")
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    shown = capsys.readouterr().out
    assert "50% FLOPs" in shown.replace("\n", " ") and "%%" not in shown


def test_help_fits_the_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "latency" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sensitivity", "--help"])
    shown = capsys.readouterr().out
    assert "--finetune-steps" in shown and "--model" in shown
    for search_only in ("--budget-flops", "--trials", "--searcher", "--scheduler", "--executor", "--rescore-top"):
        assert search_only not in shown


def test_output_that_is_not_a_terminal_is_not_wrapped(capsys) -> None:
    from rich.table import Table

    from autoprune.cli.console import make_console

    line = "budget flops <= 50% of the unpruned model " + "x" * 120
    table = Table("group", "ratios -> accuracy")
    table.add_row("layer1.0", "  ".join(f"0.{i}:0.99" for i in range(1, 10)) * 2)
    shown = make_console()
    shown.print(line)
    shown.print(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == line and sum("layer1.0" in row for row in lines) == 1
    assert not any(row.strip("│ ").startswith("0.") for row in lines)  # the long cell is not broken either


def test_apply_can_finetune_and_reports_the_accuracy_of_the_model_it_writes(trained_cnn, digits, tmp_path,
                                                                            capsys) -> None:
    import re

    from autoprune.evaluation.evaluator import validate
    from search_spaces import SearchSpace

    checkpoint, out = tmp_path / "cnn.pt", tmp_path / "pruned"
    torch.save(trained_cnn.state_dict(), checkpoint)
    space = SearchSpace.from_model(trained_cnn, digits.example_inputs())
    space.policy([0.5] * len(space)).save(tmp_path / "p.json")
    assert main(["apply", str(tmp_path / "p.json"), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--finetune-steps", "30"]) == 0
    shown = re.search(r"test accuracy: baseline (\S+) -> pruned (\S+) \(BatchNorm recalibrated, 30 finetune steps\)",
                      capsys.readouterr().out)
    pruned = load_pruned_model(small_cnn(in_channels=1), out, digits.example_inputs()).eval()
    accuracy, _ = validate(pruned, digits.test)
    assert shown is not None and float(shown[2]) == pytest.approx(accuracy, abs=5e-5) and accuracy > 0.5
    assert float(shown[1]) == pytest.approx(validate(trained_cnn, digits.test)[0], abs=5e-5)
    assert main(["apply", str(tmp_path / "p.json"), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--finetune-steps", "-1"]) == 2
    capsys.readouterr()
    for lr, message in (("-1", "--lr must be a number > 0, got -1.0"), ("nan", "--lr must be a number > 0, got nan")):
        assert main(["apply", str(tmp_path / "p.json"), "--checkpoint", str(checkpoint), "--out", str(out),
                     "--finetune-steps", "30", "--lr", lr]) == 2
        assert message in capsys.readouterr().err.replace("\n", "")


def test_the_console_says_whether_a_latency_budget_was_met() -> None:
    from autoprune import Budget, LatencyCheck, ModelFigures, Summary
    from autoprune.cli.render import latency_verdict

    figures = ModelFigures(accuracy=0.9, loss=0.3, flops=100, params=10)
    check = LatencyCheck(predicted_ms=1.0, limit_predicted_ms=1.1, repairs=1, measured_ms=1.05, met=True,
                         baseline_ms=2.2, measured_ratio=0.48)
    summary = Summary(budget=Budget.latency(0.5), best_trial_id=3, search_accuracy=0.9, final_finetune_steps=0,
                      trials=5, failed_trials=0, baseline=figures, pruned=figures, latency_check=check)
    assert latency_verdict(summary) == ("latency budget met: measured 48.0% of the unpruned model's latency, "
                                         "budget 50%; pruned further 1 time(s) to get there")
    missed = replace(summary, budget=Budget.latency(ms=1.0), latency_check=replace(check, met=False, repairs=0))
    assert latency_verdict(missed) == "latency budget NOT met: measured 1.050 ms, budget 1.000 ms"


def test_a_non_empty_run_directory_fails_at_once_without_training(tmp_path, capsys, monkeypatch) -> None:
    import time

    from autoprune.composition import config as config_module

    def no_training(*args, **kwargs):
        raise AssertionError("the model was loaded or trained before the cheap checks")

    monkeypatch.setattr(config_module, "load_model_and_data", no_training)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    started = time.monotonic()
    assert main(["search", "--model", "resnet20", "--epochs", "15", "--run-dir", str(run)]) == 2
    assert time.monotonic() - started < 2
    assert "is not empty" in capsys.readouterr().err


def test_epochs_flag_sets_the_baseline_recipe() -> None:
    from autoprune.cli.flag_configs import config_from_args

    args = build_parser().parse_args(["search", "--epochs", "3"])
    assert config_from_args(args).train.epochs == 3
    args = build_parser().parse_args(["sensitivity", "--epochs", "2"])
    assert config_from_args(args).train.epochs == 2


def test_final_distill_flag_overrides_the_config_only_when_given(tmp_path) -> None:
    from autoprune.cli.flag_configs import config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["search", "--no-final-distill"])).final_config().distill is False
    assert config_from_args(parse(["search"])).final_distill is True  # the default: distilling recovered more
    (tmp_path / "c.yaml").write_text("final_distill: false\n")
    assert config_from_args(parse(["search", str(tmp_path / "c.yaml")])).final_distill is False
    assert config_from_args(parse(["search", str(tmp_path / "c.yaml"), "--final-distill"])).final_distill is True


def test_scheduler_flag_and_config_choose_the_cascade() -> None:
    from autoprune.cli.flag_configs import config_from_args
    from autoprune.composition.config import SearchConfig
    from autoprune.evaluation.rungs import Cascade

    config = config_from_args(build_parser().parse_args(["search", "--scheduler", "cascade"]))
    assert isinstance(config.scheduler.make(), Cascade)
    promoted = SearchConfig.from_dict({"scheduler": {"kind": "cascade", "promote": 0.1}})
    assert promoted.scheduler.make().promote == 0.1
    assert SearchConfig.from_dict(promoted.to_dict()).scheduler == promoted.scheduler  # written and read back


def test_each_commands_help_names_only_flags_it_has() -> None:
    """No help text (e.g. sensitivity's --run-dir) points at a flag its command lacks, such as --resume."""
    import argparse
    import re

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        flags = {option for action in command._actions for option in action.option_strings}
        texts = [command.description or "", *(action.help or "" for action in command._actions)]
        named = {flag for text in texts for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z](?![\w*-])", text)}
        assert named <= flags, f"autoprune {name} --help names {sorted(named - flags)}, which it does not take"


def test_train_shows_its_progress_within_each_epoch(capsys) -> None:
    assert main(["train", "--epochs", "2", "--retrain", "--seed", "7"]) == 0
    shown = capsys.readouterr()
    lines = [line for line in shown.err.splitlines() if line.startswith("train epoch ")]
    per_epoch = [line for line in lines if line.endswith("epoch 1 of 2")]
    done, total = per_epoch[-1].split()[2].split("/")  # "train epoch 38/38 · epoch 1 of 2"
    assert 2 <= len(per_epoch) <= 11 and done == total  # a line every tenth of the epoch in a log
    assert any(line.endswith("epoch 2 of 2") for line in lines) and "train baseline 2/2" in shown.err
    assert "trained checkpoint: " in shown.out
