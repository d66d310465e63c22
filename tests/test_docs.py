"""The README's Python example runs as written; documented defaults are the measured ones."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


@pytest.mark.slow  # the README's 50-trial search
def test_readme_api_example_runs(tmp_path, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    api = next(b for b in blocks if "ap.search(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(api, "README.md", "exec"), namespace)
    result, pruned = namespace["result"], namespace["pruned"]
    assert len(result.trials) == 50
    assert result.summary.flops_ratio <= 0.5
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in namespace["model"].parameters())
    assert (tmp_path / "runs" / "demo" / "summary.json").exists() and (tmp_path / "policy.json").exists()
    loading = next(b for b in blocks if "load_pruned_model(" in b)
    exec(compile(loading, "README.md", "exec"), namespace)
    assert sum(p.numel() for p in namespace["pruned"].parameters()) == result.summary.pruned.params


def test_the_evaluator_default_is_the_proxy_the_fidelity_study_picked(monkeypatch) -> None:
    """EvaluatorConfig's defaults and the search benchmarks' fidelity are the default proxy of fidelity.json."""
    monkeypatch.syspath_prepend(str(README.parent / "bench"))
    from common import FIDELITY, RESULTS

    from autoprune.evaluation.evaluator import EvaluatorConfig

    study = json.loads((RESULTS / "fidelity.json").read_text())
    (default,) = [p for p in study["proxies"] if p["default"]]
    run = next(r for r in study["config"]["runs"] if default["name"] in (r["name"], f"{r['name']}_loss"))
    product = EvaluatorConfig()
    assert not default["name"].endswith("_loss")  # the evaluator ranks candidates by accuracy
    assert (product.finetune_steps, product.val_batches, product.distill) == (run["steps"], run["val_batches"],
                                                                              run["kd"])
    assert (product.bn_batches, product.lr) == (study["config"]["bn_batches"], study["config"]["lr"])
    assert {key: getattr(product, key) for key in FIDELITY} == FIDELITY


def _documented_calls(name: str) -> list[tuple[str, ast.Call]]:
    """Every call of ``name`` (``ap.name(...)`` or ``name(...)``) in the Python blocks of README.md and docs/."""
    calls = []
    for page in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
            tree = ast.parse(re.sub(r",\s*\.\.\.(?=\s*[,)])", ", **{}", block))  # "f(a=1, ...)": more elided
            calls += [(page.name, node) for node in ast.walk(tree) if isinstance(node, ast.Call)
                      and (getattr(node.func, "attr", None) == name or getattr(node.func, "id", None) == name)]
    return calls


@pytest.mark.parametrize("name", ["search", "SpaceOptions", "FinalConfig", "RunOptions", "RayOptions"])
def test_every_documented_call_uses_keywords_the_api_takes(name) -> None:
    import autoprune as ap

    target = getattr(ap, name)
    accepted = set(inspect.signature(target).parameters)
    calls = _documented_calls(name)
    if name == "search":
        assert len(calls) >= 3, "the README and docs show search() calls"
    for page, call in calls:
        unknown = {k.arg for k in call.keywords if k.arg is not None} - accepted
        assert not unknown, f"{page}: {name}(...) is documented with {sorted(unknown)}, which it does not take"
