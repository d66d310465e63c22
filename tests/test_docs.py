"""The README's Python example runs as written; documented defaults are the measured ones."""

from __future__ import annotations

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
