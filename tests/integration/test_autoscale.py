"""An autoscaled pool on Ray's fake autoscaling cluster: a burst of batch work grows the pool, its slots
that no node can host yet make Ray's autoscaler launch nodes of the pool's tag and the slots land on
them; idle shrinks the pool to zero and the nodes go.

The cluster is ``ray.cluster_utils.AutoscalingCluster`` (Ray's fake multi-node provider: each "node" is
a raylet on this machine, launched and terminated by a real autoscaler monitor), with two changes so it
can share a machine with other clusters: its ``start()`` begins with ``ray stop --force`` (which would
kill every Ray on the machine, other test sessions' included) and its workers join a GCS on port 6379,
so :class:`SharedAutoscalingCluster` starts the head itself on a free port (``ray start --head --block``
in a process group of its own) and points the fake provider at it (``provider.gcs_address``); the base
config Ray reads from ``fake_multi_node/example.yaml`` is not in the installed wheel, so it is written
here. Shutdown kills that process group and any process still naming the cluster's GCS address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import uuid

import psutil
import pytest
import ray
from ray.cluster_utils import AutoscalingCluster

from .conftest import _free_port, fleet_on_embedded_store, wait_for

TAG = "burst"  # the worker node type's resource, and the pool's placement
PER_NODE = 2  # slots one worker node can host
MAX_NODES = 2


class SharedAutoscalingCluster(AutoscalingCluster):
    """``AutoscalingCluster`` on a free port, without a machine-wide ``ray stop`` (see the module docstring)."""

    def __init__(self, head_resources: dict, worker_node_types: dict, **config_kwargs):
        self.port = _free_port()
        self.ip = ray._private.services.get_node_ip_address()
        self.address = f"{self.ip}:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="fleet-autoscale-")
        super().__init__(head_resources, worker_node_types, **config_kwargs)

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        config = {
            "cluster_name": f"fleet-autoscale-{uuid.uuid4().hex[:6]}",
            "max_workers": MAX_NODES,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": {**worker_node_types,
                                     "ray.head.default": {"resources": head_resources, "node_config": {},
                                                          "max_workers": 0}},
            "head_node_type": "ray.head.default",
            "auth": {}, "docker": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [],
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config=None, override_env=None):
        path = os.path.join(self._dir, "autoscaling.json")
        with open(path, "w") as f:
            json.dump(self._config, f)
        head = dict(self._head_resources)
        cmd = ["ray", "start", "--head", "--block", f"--port={self.port}", f"--autoscaling-config={path}",
               f"--num-cpus={head.pop('CPU', 1)}", "--include-dashboard=false", "--disable-usage-stats",
               # every port of its own: the defaults (10001, 52365, ...) may be another cluster's here
               *(f"--{name}={_free_port()}" for name in (
                   "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                   "metrics-export-port", "runtime-env-agent-port"))]
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        # RAY_AUTH_MODE: a head started while ~/.ray/auth_token exists turns token auth on, which this
        # test's driver doesn't speak unless told; the cluster is this test's own, on loopback-only work
        env = {**os.environ, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
               "RAY_AUTH_MODE": "disabled", **(override_env or {})}
        self._proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(self._dir, "ray-start.log"), "w"))
        wait_for(lambda: self._gcs_up(), timeout_s=90, interval_s=0.5)

    def _gcs_up(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            log = open(os.path.join(self._dir, "ray-start.log")).read()[-2000:]
            raise RuntimeError(f"ray start exited with {self._proc.returncode}: {log}")
        try:
            socket.create_connection((self.ip, self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def shutdown(self):
        mine = [p for p in psutil.process_iter(["pid", "cmdline"])
                if self.address in " ".join(p.info.get("cmdline") or [])]
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in mine + [p for p in psutil.process_iter(["pid", "cmdline"])
                         if self.address in " ".join(p.info.get("cmdline") or [])]:
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def autoscaling_cluster():
    cluster = SharedAutoscalingCluster(
        head_resources={"CPU": 2},
        worker_node_types={"ray.worker.burst": {"resources": {"CPU": 1, TAG: PER_NODE}, "node_config": {},
                                                "min_workers": 0, "max_workers": MAX_NODES}},
    )
    cluster.start()
    try:
        ray.init(address=cluster.address, namespace="fleet-tests", logging_level="WARNING", log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def fleet(autoscaling_cluster, tmp_path):
    with fleet_on_embedded_store(tmp_path) as client:
        yield client


def tagged_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive") and (n.get("Resources") or {}).get(TAG))


def test_a_burst_brings_nodes_for_the_pool_and_idle_makes_them_go(fleet):
    fleet.apply({"pools": [{
        "name": "burst", "automation": "builtin.sleep", "config": {"delay_s": 0.3}, "concurrency": 2,
        "placement": {"resources": {TAG: 1}},
        "health": {"period_s": 0.5}, "recycle": {"drain_timeout_s": 10},
        "autoscale": {"min_slots": 0, "max_slots": PER_NODE * MAX_NODES, "target_backlog_per_slot": 4,
                      "smoothing_s": 0, "upscale_delay_s": 1, "downscale_delay_s": 3,
                      "downscale_to_zero_delay_s": 3, "cooldown_s": 1},
    }]})
    assert tagged_nodes() == []  # min_workers 0: no node can host the pool yet
    st = fleet.status().pool("burst")
    assert st.desired == 0 and st.autoscale.min_slots == 0

    job = fleet.submit("burst", list(range(200)))
    # the backlog asks for every slot; none can be placed, so Ray's autoscaler is asked for nodes
    wait_for(lambda: fleet.status().pool("burst").autoscale.desired == PER_NODE * MAX_NODES, timeout_s=60)
    wait_for(lambda: len(tagged_nodes()) == MAX_NODES, timeout_s=120, interval_s=0.5)
    st = fleet.wait_until(lambda s: s.pool("burst").counts.get("running", 0) == PER_NODE * MAX_NODES, 120)
    nodes = set(tagged_nodes())
    assert {s.node_id for s in st.pool("burst").slots if s.state == "running"} <= nodes  # they landed there

    results = job.wait(timeout_s=180)
    assert sorted(int(r.item_id) for r in results if r.ok) == list(range(200))  # each item once, none lost

    # idle: the pool drains to zero, the request is cleared, the idle nodes go
    st = fleet.wait_until(lambda s: s.pool("burst").desired == 0 and not s.pool("burst").slots, 60)
    wait_for(lambda: tagged_nodes() == [], timeout_s=120, interval_s=0.5)
    scaled = [e for e in fleet.events(limit=500) if e["kind"] == "pool.scaled"]
    assert scaled[0]["data"]["from"] == 0 and scaled[0]["data"]["to"] >= 1
    assert scaled[-1]["data"]["to"] == 0 and "scale to zero" in scaled[-1]["data"]["reason"]
    assert "slot.draining" in {e["kind"] for e in fleet.events(limit=500)}


def test_a_fixed_pool_whose_tag_no_node_has_brings_a_node_and_its_slots_land_there(fleet):
    fleet.apply({"pools": [{"name": "fixed", "automation": "builtin.echo", "slots": PER_NODE,
                            "placement": {"resources": {TAG: 1}}, "health": {"period_s": 0.5}}]})
    assert fleet.status().pool("fixed").autoscale is None  # a fixed size: no autoscale block
    # its slots are pending for lack of a node with the tag, so Ray's autoscaler is asked for one
    st = fleet.wait_until(lambda s: s.pool("fixed").counts.get("running", 0) == PER_NODE, 180)
    nodes = set(tagged_nodes())
    assert nodes and {s.node_id for s in st.pool("fixed").slots} <= nodes
    fleet.apply({"pools": []})  # nothing pending any more, nothing running: the request is cleared
    wait_for(lambda: tagged_nodes() == [], timeout_s=120, interval_s=0.5)
