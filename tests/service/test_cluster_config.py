"""The cluster-launcher configs pass Ray's own validation (the schema `ray up` checks)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parents[2]
CONFIGS = [ROOT / "ray_cluster.yaml", ROOT / "docs" / "ray_cluster_onprem.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_config_passes_ray_validation(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert any("autoprune" in command for command in config["setup_commands"])


def test_aws_config_has_head_cpu_and_gpu_workers_and_shared_storage() -> None:
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    assert config["provider"]["type"] == "aws"
    assert set(config["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}
    assert config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    assert any("/mnt/shared" in command for command in config["setup_commands"])


def test_validation_would_catch_a_broken_config() -> None:
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    config["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(config))
