"""Malformed input of every kind (API, config files, other files, CLI) is an AutopruneError that names the bad
value, the CLI exits 2 with one line quoting it, and nothing in an existing run directory changes."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import autoprune as ap
from autoprune.builtins.models import build_model, small_cnn
from autoprune.cli.main import main
from autoprune.composition.config import SearchConfig
from autoprune.evaluation.training import load_checkpoint
from autoprune.latency.table import LatencyTable
from autoprune.prune.channels import prune
from autoprune.study.state import digest
from search_spaces.ground.errors import AutopruneError

FAST = {"bn_batches": 1, "finetune_steps": 1, "val_batches": 1}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, trained_cnn, digits) -> Path:
    run = tmp_path_factory.mktemp("bad-inputs") / "run"
    ap.search(trained_cnn, digits.example_inputs(), budget=ap.Budget.flops(0.5), train_data=digits.train,
              val_data=digits.val, trials=2, evaluator=FAST, run={"dir": run}, final={"measure_latency": False})
    return run


def _snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def _search(model, digits, run_dir, **kwargs) -> None:
    """A resume of ``run_dir`` with ``kwargs`` changed (the ``run`` and ``final`` groups merged field by field)."""
    options = dict(budget=ap.Budget.flops(0.5), train_data=digits.train, val_data=digits.val, trials=3,
                   evaluator=FAST)
    groups = {"run": {"dir": run_dir, "resume": True, **kwargs.pop("run", {})},
              "final": {"measure_latency": False, **kwargs.pop("final", {})}}
    ap.search(model, digits.example_inputs(), **{**options, **groups, **kwargs})


# (case id, keyword arguments of search() that are wrong, text the error must contain)
SEARCH_CASES = [
    ("budget-not-a-budget", {"budget": "half"}, "'half'"),
    ("trials-zero", {"trials": 0}, "got 0"),
    ("trials-float", {"trials": 1.5}, "got 1.5"),
    ("seed-negative", {"seed": -1}, "got -1"),
    ("searcher-unknown", {"searcher": "nope"}, "'nope'"),
    ("searcher-option-unknown", {"searcher_options": {"bogus": 1}}, "bogus"),
    ("evaluator-steps", {"evaluator": {"finetune_steps": -1}}, "got -1"),
    ("evaluator-lr", {"evaluator": {"lr": "fast"}}, "'fast'"),
    ("evaluator-importance", {"evaluator": {"importance": "magic"}}, "'magic'"),
    ("evaluator-unknown-key", {"evaluator": {"steps": 3}}, "steps"),
    ("executor-unknown", {"executor": "cloud"}, "'cloud'"),
    ("executor-old-options", {"executor_options": {"address": "auto"}}, "executor_options= is executor=RayOptions"),
    ("old-flat-keyword", {"final_finetune_steps": 3, "resume": True},
     "final_finetune_steps= is final=FinalConfig(steps=...); resume= is run=RunOptions(resume=...)"),
    ("run-unknown-key", {"run": {"directory": "x"}}, "unknown run options ['directory']"),
    ("space-not-a-mapping", {"space": 0.5}, "space options must be a mapping"),
    ("scheduler-unknown", {"run": {"scheduler": "hyperband"}}, "'hyperband'"),
    ("rescore-negative", {"final": {"rescore": -1}}, "got -1"),
    ("final-steps", {"final": {"steps": -5}}, "got -5"),
    ("changed-seed", {"seed": 7}, "seed"),
    ("not-resuming", {"run": {"resume": False}}, "not empty"),
    ("budget-unreachable", {"budget": ap.Budget.flops(0.001)}, "cannot be met"),
    ("train-data-none", {"train_data": None}, "train_data must be an iterable of (inputs, targets) batches"),
    ("val-data-a-number", {"val_data": 3}, "val_data must be an iterable"),
    ("test-data-a-string", {"test_data": "test.csv"}, "test_data must be an iterable"),
    ("nonzeros-on-channels", {"budget": ap.Budget.nonzeros(0.3)}, "needs granularity 'element'"),
]


@pytest.mark.parametrize(("case", "kwargs", "text"), SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_bad_search_arguments(case, kwargs, text, finished_run, trained_cnn, digits) -> None:
    before = _snapshot(finished_run)
    with pytest.raises(AutopruneError, match=None) as caught:
        _search(trained_cnn, digits, finished_run, **kwargs)
    assert text in str(caught.value), f"{case}: {caught.value}"
    assert _snapshot(finished_run) == before


def test_bad_space_options_on_a_new_run_leave_nothing_behind(trained_cnn, digits, tmp_path) -> None:
    for kwargs, text in (({"max_ratio": 1.5}, "1.5"), ({"round_to": 0}, "got 0"), ({"ignore": ["no.such"]}, "no.such"),
                         ({"preset": "nope"}, "'nope'")):
        with pytest.raises(AutopruneError, match=None) as caught:
            _search(trained_cnn, digits, tmp_path / "new", space=kwargs, run={"resume": False})
        assert text in str(caught.value)
        assert not (tmp_path / "new").exists()


VALUE_CASES = [
    ("budget-fraction-above-1", lambda: ap.Budget.flops(1.5), "1.5"),
    ("budget-fraction-zero", lambda: ap.Budget.flops(0), "got 0"),
    ("budget-params-negative", lambda: ap.Budget.params(absolute=-1), "-1"),
    ("budget-threads", lambda: ap.Budget.latency(0.5, threads=0), "got 0"),
    ("budget-dict-value", lambda: ap.Budget.from_dict({"flops": "x"}), "'x'"),
    ("budget-dict-metric", lambda: ap.Budget.from_dict({"energy": 0.5}), "'energy'"),
    ("budget-not-a-mapping", lambda: ap.Budget.from_dict([1]), "[1]"),
    ("policy-ratio-one", lambda: ap.Policy({"a": 1.0}), "1.0"),
    ("policy-ratio-text", lambda: ap.Policy({"a": "x"}), "'x'"),
    ("policy-name-number", lambda: ap.Policy({3: 0.5}), "3"),
    ("config-unknown-entry", lambda: SearchConfig.from_dict({"trails": 3}), "trails"),
    ("config-trials-text", lambda: SearchConfig.from_dict({"trials": "many"}), "'many'"),
    ("config-budget", lambda: SearchConfig.from_dict({"budget": {"flops": 2}}), "2"),
    ("config-model-number", lambda: SearchConfig.from_dict({"model": 42}), "42"),
    ("config-local-options", lambda: SearchConfig.from_dict({"executor_options": {"address": "auto"}}), "address"),
    ("config-scheduler", lambda: SearchConfig.from_dict({"scheduler": {"kind": "asha", "reduction_factor": 1}}),
     "got 1"),
    ("model-unknown", lambda: build_model("resnet9000", in_channels=1, num_classes=10), "'resnet9000'"),
    ("search-model-a-name", lambda: ap.search("resnet20", torch.zeros(1, 1, 8, 8), budget=ap.Budget.flops(0.5),
                                              train_data=[], val_data=[]), "must be a torch.nn.Module, got str"),
    ("space-model-a-path", lambda: ap.SearchSpace.from_model("model.pt", torch.zeros(1, 1, 8, 8)), "'model.pt'"),
    ("apply-model-none", lambda: ap.apply_policy(None, {}, torch.zeros(1, 1, 8, 8)), "got NoneType"),
    ("export-model-a-dict", lambda: ap.export_model({}, torch.zeros(1, 1, 8, 8), "out"), "got dict"),
]


@pytest.mark.parametrize(("case", "make", "text"), VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_values(case, make, text) -> None:
    with pytest.raises(AutopruneError) as caught:
        make()
    assert text in str(caught.value), f"{case}: {caught.value}"


def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


FILE_CASES = [
    ("policy-missing", lambda d: ap.Policy.load(d / "none.json"), "none.json"),
    ("policy-not-json", lambda d: ap.Policy.load(_file(d, "p.json", b"{oops")), "p.json"),
    ("policy-a-list", lambda d: ap.Policy.load(_file(d, "p.json", b"[1, 2]")), "p.json"),
    ("policy-binary", lambda d: ap.Policy.load(_file(d, "p.json", b"\xff\xfe\x00")), "p.json"),
    ("config-missing", lambda d: SearchConfig.from_yaml(d / "none.yaml"), "none.yaml"),
    ("config-bad-yaml", lambda d: SearchConfig.from_yaml(_file(d, "c.yaml", b"trials: [")), "c.yaml"),
    ("config-a-list", lambda d: SearchConfig.from_yaml(_file(d, "c.yaml", b"- 1\n- 2\n")), "c.yaml"),
    ("config-python-tag", lambda d: SearchConfig.from_yaml(_file(d, "c.yaml", b"x: !!python/object/apply:os.system"
                                                                               b" ['true']\n")), "c.yaml"),
    ("latency-table-garbage", lambda d: LatencyTable.load(_file(d, "t.json", b"{}")), "t.json"),
    ("checkpoint-garbage", lambda d: load_checkpoint(small_cnn(in_channels=1), _file(d, "w.pt", b"not a zip")),
     "w.pt"),
    ("checkpoint-pickled-code", lambda d: load_checkpoint(small_cnn(in_channels=1), _pickled(d)), "evil.pt"),
    ("pruned-model-missing", lambda d: ap.load_pruned_model(small_cnn(in_channels=1), d, torch.zeros(1, 1, 8, 8)),
     "has no"),
]


class _Evil:
    def __reduce__(self):  # what a crafted checkpoint would do on an unsafe load
        return (print, ("this must never run",))


def _pickled(directory: Path) -> Path:
    path = directory / "evil.pt"
    torch.save({"weight": _Evil()}, path)
    return path


def test_a_pruned_model_loads_only_into_the_architecture_it_was_pruned_from(trained_cnn, digits, tmp_path) -> None:
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs)
    pruned = prune(trained_cnn, {space.names[0]: 0.5}, inputs)
    ap.export_model(pruned.model, inputs, tmp_path, history=pruned.history)
    with pytest.raises(AutopruneError, match=r"names modules .*CifarResNet does not have \(stem"):
        ap.load_pruned_model(build_model("resnet20", in_channels=1, num_classes=10), tmp_path, inputs)
    with pytest.raises(AutopruneError, match="do not fit the model given .*size mismatch for classifier"):
        ap.load_pruned_model(small_cnn(in_channels=1, num_classes=5), tmp_path, inputs)
    loaded = ap.load_pruned_model(small_cnn(in_channels=1), tmp_path, inputs)
    assert torch.equal(loaded.eval()(inputs), pruned.model.eval()(inputs))


def test_a_damaged_pruned_model_directory_is_refused_naming_the_file(trained_cnn, digits, tmp_path) -> None:
    inputs = digits.example_inputs()
    space = ap.SearchSpace.from_model(trained_cnn, inputs)
    pruned = prune(trained_cnn, {space.names[0]: 0.5}, inputs)
    ap.export_model(pruned.model, inputs, tmp_path, history=pruned.history)
    history_file, weights = tmp_path / "pruning_history.json", tmp_path / "pruned_state_dict.pt"
    history = json.loads(history_file.read_text())
    name, is_out, indices = history[0]
    cases = [
        ([[name, is_out, 5]], "entry 0 is not .module name, is_out"),
        ([["", is_out, indices]], "entry 0 is not"),
        ([[name, "yes", indices]], "entry 0 is not"),
        ([[name, is_out, [-1]]], "entry 0 is not"),
        ([[name.rsplit(".", 1)[0], is_out, indices]], "the pruning history does not fit .*SmallCNN"),  # a container
        ([[name, is_out, [10_000]]], "do not fit the model given"),
    ]
    for bad, message in cases:
        history_file.write_text(json.dumps(bad))
        with pytest.raises(AutopruneError, match=message):
            ap.load_pruned_model(small_cnn(in_channels=1), tmp_path, inputs)
    history_file.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AutopruneError, match=r"pruning_history.json' is nested too deeply"):
        ap.load_pruned_model(small_cnn(in_channels=1), tmp_path, inputs)
    history_file.write_text(json.dumps(history))
    stored = weights.read_bytes()
    torch.save([torch.zeros(2)], weights)  # a tensor file, not a state dict
    with pytest.raises(AutopruneError, match=r"pruned_state_dict.pt' must hold a state dict .*got list"):
        ap.load_pruned_model(small_cnn(in_channels=1), tmp_path, inputs)
    weights.write_bytes(stored[:500])
    with pytest.raises(AutopruneError, match=r"pruned_state_dict.pt' is not a readable pruned weights file"):
        ap.load_pruned_model(small_cnn(in_channels=1), tmp_path, inputs)


def test_deeply_nested_json_is_refused_naming_the_file(tmp_path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AutopruneError, match=r"deep.json' is nested too deeply"):
        ap.Policy.load(deep)
    from autoprune.study.rundir import read_json

    with pytest.raises(AutopruneError, match=r"deep.json' is nested too deeply"):
        read_json(deep, 1_000_000)


@pytest.mark.parametrize(("case", "read", "text"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_files(case, read, text, tmp_path, capsys) -> None:
    with pytest.raises(AutopruneError) as caught:
        read(tmp_path)
    assert text in str(caught.value), f"{case}: {caught.value}"
    assert "this must never run" not in capsys.readouterr().out


def test_import_strings_can_be_turned_off(monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_ALLOW_IMPORTS", "0")
    with pytest.raises(AutopruneError, match="'os:system'.*turned off"):
        build_model("os:system", in_channels=1, num_classes=10)


CLI_CASES = [
    ("budget", ["--budget-flops", "2"], "2"),
    ("two-budgets", ["--budget-flops", "0.5", "--budget-params", "0.5"], "--budget-flops"),
    ("trials", ["--trials", "0"], "got 0"),
    ("searcher", ["--searcher", "nope"], "'nope'"),
    ("searcher-option", ["--searcher-option", "oops"], "'oops'"),
    ("importance", ["--importance", "magic"], "'magic'"),
    ("latency-flags", ["--latency-threads", "2"], "--latency-threads"),
    ("nonzeros-on-channels", ["--budget-nonzeros", "0.3"], "--granularity element on the command line"),
    ("markup-in-value", ["--searcher", "[bold]x[/bold]"], "'[bold]x[/bold]'"),
]


@pytest.mark.parametrize(("case", "argv", "text"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_exits_2_with_one_line(case, argv, text, finished_run, capsys) -> None:
    before = _snapshot(finished_run)
    assert main(["search", "--run-dir", str(finished_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and text in err, f"{case}: {err!r}"
    assert _snapshot(finished_run) == before


def test_an_output_file_given_as_a_directory_is_refused(finished_run, tmp_path, capsys) -> None:
    for argv in (["report", str(finished_run), "--out", str(tmp_path)],
                 ["sparsity", str(finished_run), "--csv", str(tmp_path)]):
        assert main(argv) == 2
        assert f"{str(tmp_path)!r} is a directory; name a file to write" in capsys.readouterr().err.replace("\n", "")
    (tmp_path / "a_file").write_text("")
    assert main(["report", str(finished_run), "--out", str(tmp_path / "a_file" / "report.html")]) == 2
    assert "a file stands where its folder would be" in capsys.readouterr().err.replace("\n", "")


def test_bad_resume_from_the_cli(finished_run, tmp_path, capsys) -> None:
    assert main(["search", "--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["search", "--resume", str(tmp_path / "empty")]) == 2
    assert "is empty (no config.json): nothing to resume; start a search there without resume" in \
        capsys.readouterr().err.replace("\n", "")
    assert main(["search", "--resume", str(finished_run), "--seed", "3"]) == 2
    assert "--seed" in capsys.readouterr().err


def _names_a_safe_yaml_loader(path: Path, code: str) -> bool:
    """Whether a ``yaml.load`` call names ``yaml.SafeLoader`` or a class of its module that derives from it."""
    match = re.search(r"\byaml\.load\(.*\bLoader=([\w.]+)", code)
    if match is None:
        return False
    name = match.group(1)
    if name == "yaml.SafeLoader":
        return True
    module = importlib.import_module(".".join(path.with_suffix("").parts))
    loader = getattr(module, name, None)
    return isinstance(loader, type) and issubclass(loader, yaml.SafeLoader)


def test_no_unsafe_deserialization_in_the_source() -> None:
    root = Path(__file__).parent.parent
    offences = []
    for path in sorted(p for d in ("autoprune", "agents", "search_spaces", "bench") for p in (root / d).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            unsafe = (re.search(r"\bimport (c?pickle|dill|marshal|shelve)\b|\bpickle\.loads?\(", code)
                      or ("torch.load(" in code and "weights_only=True" not in code)
                      or (re.search(r"\byaml\.(unsafe_)?load\(", code)
                          and not _names_a_safe_yaml_loader(path.relative_to(root), code)))
            if unsafe:
                offences.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("change", [{"accuracy": "high"}, {"accuracy": None}, {"trial_id": "x"}, {"trial_id": True},
                                    {"feasible": 1}, {"status": 3}, {"flops": "many"}])
def test_a_trial_row_with_a_wrong_type_is_refused_naming_the_line(change, finished_run, trained_cnn, digits, tmp_path,
                                                                   capsys) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run, symlinks=True)
    log = run / "trials.jsonl"
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    first["trial"].update(change)
    log.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert main(["report", str(run)]) == 2
    assert "trials.jsonl' line 1 is not a trial record" in capsys.readouterr().err.replace("\n", "")
    with pytest.raises(AutopruneError, match="trials.jsonl' line 1 is not a trial record"):
        ap.search(
            trained_cnn,
            digits.example_inputs(),
            budget=ap.Budget.flops(0.5),
            train_data=digits.train,
            val_data=digits.val,
            trials=3,
            evaluator=FAST,
            run={"dir": run, "resume": True},
            final={"measure_latency": False},
        )


def test_a_crafted_state_file_in_a_run_directory_never_runs(finished_run, trained_cnn, digits, tmp_path,
                                                            capsys) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run, symlinks=True)
    state = max((run / "state").glob("*.pt"))
    torch.save({"0": _Evil()}, state)  # a pickle that would call print() if it were ever unpickled
    with pytest.raises(AutopruneError, match="does not match the digest"):
        _search(trained_cnn, digits, run)
    log = run / "trials.jsonl"  # the forger also fixes the digest: the tensors are loaded with weights_only
    lines = log.read_text().splitlines()
    record = json.loads(lines[-1])
    document = (run / "state" / f"{record['state']:06d}.json").read_bytes()
    record["state_sha256"] = digest(document, state.read_bytes())
    log.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
    with pytest.raises(AutopruneError, match="not a readable autoprune state"):
        _search(trained_cnn, digits, run)
    assert "this must never run" not in capsys.readouterr().out


def test_lost_tables_are_rebuilt_from_the_trial_log(finished_run, trained_cnn, digits, tmp_path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run, symlinks=True)
    (run / "trials.parquet").unlink()
    (run / "trials.csv").write_text("garbage")
    _search(trained_cnn, digits, run, trials=3)
    table = pd.read_csv(run / "trials.csv")
    assert list(table["trial_id"]) == [0, 1, 2] and len(pd.read_parquet(run / "trials.parquet")) == 3


def test_installed_plugins_register_by_entry_point(monkeypatch) -> None:
    from importlib.metadata import EntryPoint

    from autoprune.builtins import registry

    plugin = EntryPoint(name="tiny", value="autoprune.builtins.models:small_cnn", group="autoprune.models")
    monkeypatch.setattr(registry, "entry_points", lambda group: [plugin] if group == "autoprune.models" else [])
    monkeypatch.setenv("AUTOPRUNE_ALLOW_IMPORTS", "0")  # entry points stay open when import strings are closed
    assert isinstance(build_model("tiny", in_channels=1, num_classes=10), torch.nn.Module)
    with pytest.raises(AutopruneError, match="accepted: .*tiny"):
        build_model("huge", in_channels=1, num_classes=10)


def test_errors_carry_public_autoprune_names() -> None:
    """Tracebacks and ``type(error).__module__`` name ``autoprune.errors``, where pickles (Ray) find them too."""
    import pickle

    import autoprune.errors

    for name in autoprune.errors.__all__:
        error = getattr(ap, name)
        assert error is getattr(autoprune.errors, name) and error.__module__ == "autoprune.errors"
        assert issubclass(error, AutopruneError)
    with pytest.raises(ap.ConfigError) as raised:
        _tiny_search(searcher="optna")
    assert type(raised.value).__module__ == "autoprune.errors"
    again = pickle.loads(pickle.dumps(raised.value))
    assert type(again) is type(raised.value) and str(again) == str(raised.value)


def _tiny_search(**options: object) -> ap.SearchResult:
    """A search of an untrained small CNN with no data: bad names are refused before any evaluation."""
    return ap.search(small_cnn(), torch.zeros(1, 1, 8, 8), budget=ap.Budget.flops(0.5), train_data=[], val_data=[],
                     **{"searcher": "random", **options})


@pytest.mark.parametrize(("call", "slip", "meant"), [
    (lambda name: _tiny_search(searcher=name), "optna", "optuna"),
    (lambda name: build_model(name, in_channels=1, num_classes=10), "resnt20", "resnet20"),
    (lambda name: _tiny_search(space={"preset": name}), "Resnet20", "resnet20"),
    (lambda name: ap.Budget.latency(0.5, runtime=name), "onnxrutime", "onnxruntime"),
    (lambda name: __import__("autoprune.builtins.data", fromlist=["x"]).load_dataset(name), "digts", "digits"),
])
def test_a_near_miss_name_gets_a_did_you_mean(call, slip: str, meant: str) -> None:
    with pytest.raises(AutopruneError, match=re.escape(f"(did you mean {meant!r}?)")):
        call(slip)
    with pytest.raises(AutopruneError) as far:
        call("zzzzzz")
    assert "did you mean" not in str(far.value)
