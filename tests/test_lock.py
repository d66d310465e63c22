"""The lock file: what `make` installs is exactly constraints.txt, and the lock satisfies pyproject.toml."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parent.parent
CUDA_PACKAGES = ("nvidia-", "cuda-", "triton")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(pin) == 2 for pin in pins), "every lock line is name==version"
    return {_normalized(name): version for name, version in pins}


def test_every_dependency_is_locked_at_a_version_pyproject_accepts() -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11's TOML reader")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(line)
        name = _normalized(requirement.name)
        assert name in locked, f"{name} is not in constraints.txt: run `make lock`"
        pinned = locked[name]
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"constraints.txt pins {name}=={pinned}, pyproject.toml asks {requirement.specifier}: run `make lock`")


def test_the_installed_packages_are_the_locked_versions() -> None:
    # the environment's own packages: setuptools, once imported, puts its vendored copies on sys.path too
    site = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    installed = {_normalized(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=site)}
    cpu_only = Version(installed.get("torch", "0")).local == "cpu"  # the README's CPU-only wheels (2.14.1+cpu)
    different = {}
    for name, version in _locked().items():
        have = installed.get(name)
        if have is None and cpu_only and name.startswith(CUDA_PACKAGES):
            continue  # the CUDA libraries only the CUDA build of torch pulls in
        if have is None or Version(have).public != Version(version).public:
            different[name] = (version, have)
    assert different == {}, f"installed versions differ from constraints.txt (locked, installed): {different}"
