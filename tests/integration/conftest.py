"""Integration fixtures: a real multi-node Ray cluster per test module, real Redis, a fleet per test.

Conventions:
- one ``ray.cluster_utils.Cluster`` per module (``cluster`` fixture); never ``ray stop`` (other
  clusters on this machine would die);
- every fleet gets its own Ray namespace and store, so tests don't see each other's slots;
- wait with deadlines (``FleetClient.wait_until``), never with bare sleeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

REDIS_URL = os.environ.get("FLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# node layout: head (no tags), two "browser" nodes in region eu/us, one "http" node
WORKERS = [
    {"num_cpus": 2, "resources": {"browser": 4}, "labels": {"region": "eu"}},
    {"num_cpus": 2, "resources": {"browser": 4}, "labels": {"region": "us"}},
    {"num_cpus": 2, "resources": {"http": 8}, "labels": {"region": "eu"}},
]


def make_cluster(workers=WORKERS, head_cpus: int = 2, attempts: int = 3):
    """A head and tagged worker nodes, with the driver attached. On a loaded machine a raylet can
    time out while it starts: what did start is shut down and the cluster is tried again."""
    import ray
    from ray.cluster_utils import Cluster

    for attempt in range(attempts):
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": head_cpus, "include_dashboard": False},
        )
        try:
            nodes = [cluster.add_node(**w) for w in workers]
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, namespace="fleet-tests", logging_level="WARNING", log_to_driver=False)
            return cluster, nodes
        except Exception:
            cluster.shutdown()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster():
    import ray

    cluster, nodes = make_cluster()
    cluster.worker_nodes_list = nodes
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def redis_url():
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis must run at {REDIS_URL} for integration tests (.ci/run starts it)")
    yield REDIS_URL
    r.close()


@contextlib.contextmanager
def fleet_on_embedded_store(tmp_path):
    """A supervisor in its own namespace on an embedded store under ``tmp_path``, on whatever Ray
    cluster the caller is connected to; brought down afterwards."""
    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    ns = f"t-{uuid.uuid4().hex[:8]}"
    sup = start_supervisor(f"sqlite://{tmp_path}/store.db", namespace=ns, tick_s=0.05)
    client = FleetClient(sup, ns)
    client.store_url = f"sqlite://{tmp_path}/store.db"
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.down(timeout_s=5)


@pytest.fixture
def fleet(cluster, tmp_path):
    """A supervisor in its own namespace on an embedded store; torn down after the test."""
    with fleet_on_embedded_store(tmp_path) as client:
        yield client


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of our own that the test can stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server must be installed for this test")
    port = _free_port()

    def start():
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    state = {"proc": start()}
    yield {"url": f"redis://127.0.0.1:{port}/0", "stop": lambda: (state["proc"].kill(), state["proc"].wait()),
           "start": lambda: state.__setitem__("proc", start())}
    state["proc"].kill()
    state["proc"].wait()


def wait_for(fn, timeout_s=60, interval_s=0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s (last: {value!r})")
        time.sleep(interval_s)
