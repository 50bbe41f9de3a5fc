"""Hosts the supervisor can't reach, on a real Ray cluster (``ray.cluster_utils.Cluster``): a worker
"host" whose processes are all SIGSTOPped for a while (alive, not answering: its slots are reported
unreachable, nothing is replaced, its batch work finishes afterwards once each); a slot SIGSTOPped
alone on a host that answers (hung, not unreachable: recycled as before); and a worker host that
loses power while its slots drain (every process killed: its slots are replaced without waiting out
the drain, each with one crash record that keeps what the slot last wrote and says the host was
lost).

One cluster for the module (a head and two tagged worker nodes); the tests run in file order (the
second removes a node). Every wait is a poll with a deadline; nothing here asserts a timing. A
SIGSTOPped node is always continued (finally), also when the test fails.
"""

from __future__ import annotations

import signal

import psutil
import pytest

from fleet_ray.observe.crashes import read_slot_context
from fleet_ray.store import open_store

from .conftest import make_cluster, wait_for

WORKERS = [
    {"num_cpus": 2, "resources": {"edge": 8}, "labels": {"host": "a"}},
    {"num_cpus": 2, "resources": {"edge": 8}, "labels": {"host": "b"}},
]
HEALTH = {"period_s": 0.5, "timeout_s": 1, "failure_threshold": 2, "start_timeout_s": 120}


@pytest.fixture(scope="module")
def cluster():
    import ray

    cluster, nodes = make_cluster(WORKERS)
    cluster.worker_nodes_list = nodes
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def node_processes(node) -> list[psutil.Process]:
    """Every process of a worker node: its raylet and what it started (agents, the slots' workers)."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return [raylet, *raylet.children(recursive=True)]


def pool(name: str, slots: int, placement: dict, **config) -> dict:
    return {"name": name, "automation": "builtin.probe", "slots": slots, "concurrency": 1, "config": config,
            "health": HEALTH, "placement": placement, "recycle": {"drain_timeout_s": 600}}


def slots_of(status, name: str):
    return status.pool(name).slots


def test_a_host_that_stops_answering_is_unreachable_and_nothing_is_replaced(cluster, fleet):
    fleet.apply({"pools": [pool("steady", 2, {"resources": {"edge": 1}, "labels": {"host": "a"}}, delay_s=0.05)]})
    before = {s.id: (s.generation, s.pid) for s in slots_of(fleet.wait_ready(180), "steady")}
    host_a = next(n for n in cluster.worker_nodes_list if n.node_id == slots_of(fleet.status(), "steady")[0].node_id)
    job = fleet.submit("steady", [f"i{n}" for n in range(60)], job_id="across")
    wait_for(lambda: job.progress().get("done", 0) >= 5, 60)
    stopped = node_processes(host_a)
    try:
        for p in stopped:
            p.send_signal(signal.SIGSTOP)
        # every process alive, none answering: status says so (not running, the pool not ok)
        st = fleet.wait_until(lambda s: s.pool("steady").state == "unreachable"
                              and all(x.state == "unreachable" for x in slots_of(s, "steady")), 40)
        assert "not answering" in st.pool("steady").reason
        # it stays so while the host is stopped (re-checks fail), and nothing replaces its slots
        st = fleet.wait_until(lambda s: all(x.state == "unreachable" and (x.unreachable_s or 0) >= 5
                                            for x in slots_of(s, "steady")), 40)
        assert {s.id: s.generation for s in slots_of(st, "steady")} == {k: g for k, (g, _) in before.items()}
    finally:
        for p in stopped:
            p.send_signal(signal.SIGCONT)
    st = fleet.wait_until(lambda s: s.pool("steady").state == "ok", 60)
    assert {s.id: (s.generation, s.pid) for s in slots_of(st, "steady")} == before  # the same actors
    results = job.wait(timeout_s=120)
    assert sorted(r.item_id for r in results) == sorted(str(n) for n in range(60))  # 0 lost, 0 twice
    assert all(r.ok for r in results)
    assert fleet.crashes("steady") == []
    kinds = [e["kind"] for e in fleet.events(500) if e.get("pool") == "steady"]
    assert "slot.unreachable" in kinds and "slot.reachable" in kinds and "slot.died" not in kinds


def test_a_hung_slot_on_a_host_that_answers_is_recycled_not_left_unreachable(cluster, fleet):
    spec = pool("hung", 1, {"resources": {"edge": 1}, "labels": {"host": "a"}})
    spec["recycle"] = {"drain_timeout_s": 2}
    fleet.apply({"pools": [spec]})
    slot = slots_of(fleet.wait_ready(180), "hung")[0]
    proc = psutil.Process(slot.pid)
    try:
        proc.send_signal(signal.SIGSTOP)  # only the slot: its host's raylet and other workers answer
        st = fleet.wait_until(lambda s: any(x.generation == 2 and x.state == "running" for x in slots_of(s, "hung")),
                              120)
    finally:
        if proc.is_running():
            proc.send_signal(signal.SIGCONT)
    assert slots_of(st, "hung")[0].node_id == slot.node_id
    kinds = [e["kind"] for e in fleet.events(500) if e.get("pool") == "hung"]
    assert "slot.unhealthy" in kinds and "slot.died" not in kinds


def test_slots_draining_on_a_host_that_loses_power_are_replaced_each_with_one_crash_record(cluster, fleet):
    fleet.apply({"pools": [pool("lossy", 2, {"resources": {"edge": 1}}, phase="fetch", hang_on=["h0", "h1"])]})
    fleet.wait_ready(180)
    job = fleet.submit("lossy", ["h0", "h1"], job_id="held")  # one hanging item per slot

    def contexts():
        store = open_store(fleet.store_url, fleet.namespace)
        try:
            return [read_slot_context(store, "lossy", i, 1) for i in range(2)]
        finally:
            store.close()

    wait_for(lambda: all(c is not None and c.tasks and c.step for c in contexts()), 60)
    for i in range(2):
        fleet.recycle(f"lossy:{i}")  # both drain, and the drains wait for their items
    st = fleet.wait_until(lambda s: all(x.state == "draining" for x in slots_of(s, "lossy")), 30)
    lost_node = slots_of(st, "lossy")[0].node_id
    lost = {s.id for s in slots_of(st, "lossy") if s.node_id == lost_node}
    kept = {s.id for s in slots_of(st, "lossy")} - lost
    wrote = {f"lossy:{i}": c for i, c in enumerate(contexts())}
    power_loss = next(n for n in cluster.worker_nodes_list if n.node_id == lost_node)
    cluster.remove_node(power_loss, allow_graceful=False)  # every process of the host, SIGKILLed
    cluster.worker_nodes_list.remove(power_loss)
    # it can't answer: shown unreachable (not draining) until Ray marks the node dead ...
    fleet.wait_until(lambda s: {x.id for x in slots_of(s, "lossy") if x.state == "unreachable"} == lost, 60, 0.05)
    # ... then replaced elsewhere at once, far inside the drain timeout (600 s)
    st = fleet.wait_until(lambda s: all(x.generation == 2 and x.state == "running"
                                        for x in slots_of(s, "lossy") if x.id in lost), 120)
    assert all(x.node_id != lost_node for x in slots_of(st, "lossy") if x.id in lost)
    assert all(x.generation == 1 and x.state == "draining" for x in slots_of(st, "lossy") if x.id in kept)
    records = wait_for(lambda: (r := fleet.crashes("lossy")) and len(r) >= len(lost) and r, 60)
    assert sorted((r["slot"], r["generation"]) for r in records) == sorted((s, 1) for s in lost)
    for r in records:  # what the slot last wrote, and the truth about its host
        ctx = wrote[r["slot"]]
        assert (r["task"], r["phase"], r["step"]) == (ctx.tasks[-1], "fetch", ctx.step)
        assert r["died"] and "host was lost" in r["cause"] and r["node_id"] == lost_node
    job.drop()
