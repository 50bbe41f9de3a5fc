"""Durable batch work on real Ray and real stores: a work queue SIGKILLed mid-job (once, twice), and the
whole head (Ray and supervisor) restarted mid-job on Redis and on the embedded store, the driver
re-attaching by job id. Each asserts counts: every item ends with exactly one result the driver sees.

One Ray cluster per module; the head-restart tests replace it (they shut Ray down and start a new
cluster), so the module's fixture hands out a box whose cluster may change.
"""

from __future__ import annotations

import collections
import uuid

import pytest

from fleet_ray.names import workqueue_name
from fleet_ray.store import open_work_log
from tests.contracts.work_log import *  # noqa: F403  (the work-log contract, on Redis here)

from .conftest import REDIS_URL, make_cluster, sigkill, wait_for

WORKERS = [{"num_cpus": 2, "resources": {"http": 8}}]
N = 300


def start_cluster():
    return make_cluster(WORKERS, head_cpus=2)[0]


class ClusterBox:
    def __init__(self):
        self.cluster = start_cluster()

    def restart(self) -> None:
        """The head restarts: Ray (every actor, the GCS) and the driver's connection are gone."""
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        self.cluster = start_cluster()


@pytest.fixture(scope="module")
def box():
    import ray

    b = ClusterBox()
    yield b
    ray.shutdown()
    b.cluster.shutdown()


@pytest.fixture
def work_log():
    w = open_work_log(REDIS_URL, namespace=uuid.uuid4().hex[:8])
    yield w
    w.close()


def start_fleet(store_url: str, ns: str):
    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    return FleetClient(start_supervisor(store_url, namespace=ns, tick_s=0.05), ns)


@pytest.fixture
def fleet_on(box, tmp_path):
    made = []

    def make(store_url: str | None = None, ns: str | None = None):
        ns = ns or f"t-{uuid.uuid4().hex[:8]}"
        fleet = start_fleet(store_url or f"sqlite://{tmp_path}/store.db", ns)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made[-1:]:
        try:
            fleet.down(timeout_s=5)
        except Exception:
            pass


def sleepy(name: str = "work", slots: int = 2, **extra):
    return {"name": name, "automation": "builtin.sleep", "slots": slots, "concurrency": 4,
            "config": {"delay_s": 0.02}, "health": {"period_s": 0.5}, "placement": {"resources": {"http": 1}}, **extra}


def queue_stats(fleet, pool: str = "work") -> dict:
    import ray

    return ray.get(ray.get_actor(workqueue_name(pool), namespace=fleet.namespace).stats.remote(), timeout=30)


def kill_queue(fleet, pool: str = "work") -> int:
    pid = queue_stats(fleet, pool)["pid"]
    sigkill(pid)
    return pid


def assert_each_once(seen: list, n: int = N) -> None:
    counts = collections.Counter(r.item_id for r in seen)
    assert len(counts) == n, f"{n - len(counts)} item(s) lost"
    assert set(counts.values()) == {1}, f"duplicated: {[i for i, c in counts.items() if c > 1][:10]}"
    assert sorted(int(i) for i in counts) == list(range(n))
    assert all(r.ok for r in seen)


def test_a_sigkilled_work_queue_loses_and_duplicates_no_result(fleet_on):
    fleet = fleet_on()
    fleet.apply({"pools": [sleepy()]})
    fleet.wait_ready(120)
    job = fleet.submit("work", list(range(N)))
    seen, killed = [], None
    for r in job.results(timeout_s=240):
        seen.append(r)
        if len(seen) == 60 and killed is None:
            killed = kill_queue(fleet)
    assert killed is not None
    assert_each_once(seen)
    assert queue_stats(fleet)["pid"] != killed and queue_stats(fleet)["durable"] is True
    assert any(e["kind"] == "workqueue.recreated" for e in fleet.events(500))
    # the pool still takes work (the supervisor holds the new queue, not the dead one)
    assert sorted(r.value for r in fleet.map("work", [1, 2, 3], timeout_s=120)) == [1, 2, 3]


def test_a_work_queue_sigkilled_twice_in_one_job(fleet_on):
    fleet = fleet_on()
    fleet.apply({"pools": [sleepy()]})
    fleet.wait_ready(120)
    job = fleet.submit("work", list(range(N)))
    seen, kills = [], []
    for r in job.results(timeout_s=300):
        seen.append(r)
        if len(seen) in (50, 180) and len(kills) < (1 if len(seen) == 50 else 2):
            kills.append(kill_queue(fleet))
    assert len(kills) == 2
    assert_each_once(seen)
    assert sum(e["kind"] == "workqueue.recreated" for e in fleet.events(1000)) >= 2
    progress = job.progress()
    assert (progress["total"], progress["done"], progress["cursor"]) == (N, N, N)  # all read: all trimmed


def test_the_in_memory_queue_is_kept_on_request(fleet_on):
    fleet = fleet_on()
    fleet.apply({"pools": [sleepy(slots=1, work_queue={"durable": False})]})
    fleet.wait_ready(120)
    assert [r.value for r in fleet.map("work", [5, 6], timeout_s=120)] == [5, 6]
    assert queue_stats(fleet)["durable"] is False and queue_stats(fleet)["writes"] == 0


def _restart_head_mid_job(box, fleet_on, store_url: str) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    fleet = fleet_on(store_url, ns)
    fleet.apply({"pools": [sleepy()]})
    fleet.wait_ready(120)
    job = fleet.submit("work", list(range(N)))
    seen = []
    results = job.results(timeout_s=240)
    for r in results:
        seen.append(r)
        if len(seen) == 70:
            break
    results.close()  # what the driver read is acknowledged before the head goes
    assert job.cursor == 70
    box.restart()
    fleet = fleet_on(store_url, ns)  # `fleet-ray up` again on the same store: the supervisor recovers
    again = fleet.job("work", job.id)  # a driver that restarted too: re-attach by job id
    assert again.cursor == 70 and again.total == N
    seen += list(again.results(timeout_s=300))
    assert_each_once(seen)
    st = queue_stats(fleet)
    assert st["durable"] and st["leased"] == 0 and st["queued"] == 0
    wait_for(lambda: fleet.status().pool("work").counts.get("running", 0) == 2, 120)


@pytest.mark.slow
def test_a_head_restart_on_redis_mid_job_loses_nothing(box, fleet_on, redis_url):
    _restart_head_mid_job(box, fleet_on, redis_url)


@pytest.mark.slow
def test_a_head_restart_on_the_embedded_store_mid_job_loses_nothing(box, fleet_on, tmp_path):
    _restart_head_mid_job(box, fleet_on, f"sqlite://{tmp_path}/head.db")
