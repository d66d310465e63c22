"""The README's Python example runs as written."""

from __future__ import annotations

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
