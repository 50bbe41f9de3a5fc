"""cluster.yaml and cluster-onprem.yaml validate against the schema that ships inside Ray."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def ray_validate(config: dict) -> None:
    """What `ray up` does before launching anything: fill the provider's defaults, then check the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_definition_is_valid_for_ray_up(name):
    ray_validate(yaml.safe_load((ROOT / name).read_text()))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_head_runs_persistent_redis_gcs_fault_tolerance_and_the_fleet(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    assert cfg["head_start_ray_commands"] == ["bash ~/fleet-ray/deploy/fleet-node.sh head"]
    assert cfg["worker_start_ray_commands"] == ["bash ~/fleet-ray/deploy/fleet-node.sh worker"]
    assert cfg["file_mounts"] == {"~/fleet-ray": "."}
    head = (ROOT / "deploy" / "fleet-node.sh").read_text()
    assert "redis-server" in head and "--appendonly yes" in head
    assert 'RAY_REDIS_ADDRESS="127.0.0.1:$REDIS_PORT"' in head and 'REDIS_PORT="${FLEET_REDIS_PORT:-6390}"' in head
    assert 'RAY_PORT="${FLEET_RAY_PORT:-6380}"' in head and "--dashboard-host=127.0.0.1" in head
    assert '"$BIN/fleet-ray" --address auto up' in head and 'FLEET_STORE_URL="redis://127.0.0.1:$REDIS_PORT/1"' in head
    assert any("chromium" in c for c in cfg["setup_commands"])
    assert any("pip install" in c and "fleet-ray[browser]" in c for c in cfg["setup_commands"])


def test_cloud_node_types_carry_tags():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert types["browser-eu"]["resources"] == {"browser": 8} and types["browser-eu"]["labels"] == {"region": "eu"}


def test_node_script_is_valid_bash():
    import subprocess

    for script in ("fleet-node.sh", "fleet-env.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "deploy" / script)], check=True)


def test_schema_catches_a_broken_definition():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["browser-eu"]["resources"] = {"browser": "eight"}
    with pytest.raises(Exception, match="eight"):
        ray_validate(cfg)
