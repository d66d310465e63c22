"""The house keeps its shape: layers import only downward (pyproject's import-linter contract), no import cycles."""

from __future__ import annotations

import graphlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("autoprune", "agents", "search_spaces")


def test_no_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    try:
        graphlib.TopologicalSorter(imports).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(reversed(exc.args[1]))}") from None


def test_layer_contract_is_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_cli_parser_and_the_package_import_without_torch() -> None:
    """`autoprune --help` and `import autoprune` stay fast: torch, pandas and the rest load on first use (numpy, a
    tenth of a second, comes with the CLI's error types)."""
    probe = ("import sys; import autoprune, search_spaces; from autoprune.cli.main import build_parser; "
             "build_parser().format_help(); "
             "print(sorted(m for m in ('torch', 'pandas', 'ray', 'optuna', 'fastapi') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_every_public_name_resolves_from_its_home() -> None:
    import autoprune
    import search_spaces

    for package in (autoprune, search_spaces):
        assert len(package.__all__) >= 8
        missing = [name for name in package.__all__ if getattr(package, name, None) is None]
        assert missing == [], missing
        assert all(name in vars(package) for name in package.__all__)  # each kept once resolved
    with pytest.raises(AttributeError, match="module 'autoprune' has no attribute 'serach'"):
        getattr(autoprune, "serach")  # noqa: B009 - a misspelled name is an AttributeError naming it
