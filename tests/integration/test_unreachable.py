"""Hosts the supervisor can't reach, on a real Ray cluster (``ray.cluster_utils.Cluster``): a worker
"host" whose processes are all SIGSTOPped for a while (alive, not answering: its slots are reported
unreachable, nothing is replaced, its batch work finishes afterwards once each); one stopped longer
than its pool's ``unreachable_max_s`` (its slot is killed, and its position refilled only after the
host, continued, confirms the process is gone); a slot SIGSTOPped alone on a host that answers
(hung, not unreachable: recycled as before); and a worker host that
loses power while its slots drain (every process killed: its slots are replaced without waiting out
the drain, each with one crash record that keeps what the slot last wrote and says the host was
lost).

One cluster for the module (a head and two tagged worker nodes); the tests run in file order (the
last removes a node). Every wait is a poll with a deadline; nothing here asserts a timing. A
SIGSTOPped node is always continued (:class:`Stopped`), also when the test fails.

The tests depend on how fast Ray declares a silent node dead, so the cluster pins it (:data:`NODE_DEATH`,
Ray 2.60's defaults, as the ``RAY_*`` variables the GCS reads when it starts, whatever the environment
says): a health check every 3 s, each given 10 s, dead after 5 failures in a row. A node whose processes
are SIGSTOPped answers no check, so it is declared dead about 5 x (10 + 3) = 65 s after it stops
(60 s at the least: the first failing check may have gone out just before); the SIGSTOP tests continue it within :data:`STOP_BUDGET_S` (40 s), so their host comes back
alive (if a slow machine makes them run out of it, they fail on the wait, not later on a dead node).
A node whose processes are killed refuses each check at once and is dead about 5 x 3 = 15 s after;
the power-loss test waits for that (its slots are unreachable meanwhile). What a test saw while a
state lasted is read from the supervisor's events (``slot.unreachable`` ...), not caught by polling
a status that may hold it for less than a poll.
"""

from __future__ import annotations

import signal
import time

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
#: Ray's node-death timing for this cluster (Ray 2.60's defaults, pinned: see the module docstring)
NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "5000",
    "RAY_health_check_period_ms": "3000",
    "RAY_health_check_timeout_ms": "10000",
    "RAY_health_check_failure_threshold": "5",
}
STOP_BUDGET_S = 40  # a SIGSTOPped node is continued within this: far inside the 65 s before Ray says dead


@pytest.fixture(scope="module")
def cluster():
    import ray

    with pytest.MonkeyPatch.context() as env:  # read by the GCS and raylets as they start, then undone
        for name, value in NODE_DEATH.items():
            env.setenv(name, value)
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


def events_of(fleet, pool: str, *kinds: str) -> list[dict]:
    """The supervisor's events about ``pool`` (of ``kinds``, if given), oldest first."""
    return [e for e in fleet.events(1000) if e.get("pool") == pool and (not kinds or e["kind"] in kinds)]


class Stopped:
    """A worker node SIGSTOPped whole (raylet, agents, workers: alive, none answering) until the block
    ends -- also when it fails -- and never longer than STOP_BUDGET_S (``left()`` says what remains)."""

    def __init__(self, node) -> None:
        self.procs = node_processes(node)

    def __enter__(self) -> Stopped:
        self.until = time.monotonic() + STOP_BUDGET_S
        for p in self.procs:
            p.send_signal(signal.SIGSTOP)
        return self

    def left(self) -> float:
        return max(0.0, self.until - time.monotonic())

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass


def test_a_host_that_stops_answering_is_unreachable_and_nothing_is_replaced(cluster, fleet):
    fleet.apply({"pools": [pool("steady", 2, {"resources": {"edge": 1}, "labels": {"host": "a"}}, delay_s=0.05)]})
    before = {s.id: (s.generation, s.pid) for s in slots_of(fleet.wait_ready(180), "steady")}
    host_a = next(n for n in cluster.worker_nodes_list if n.node_id == slots_of(fleet.status(), "steady")[0].node_id)
    job = fleet.submit("steady", [f"i{n}" for n in range(60)], job_id="across")
    wait_for(lambda: job.progress().get("done", 0) >= 5, 60)
    with Stopped(host_a) as stop:
        # every process alive, none answering: status says so (not running, the pool not ok) and keeps
        # saying so while the host is stopped (re-checks fail); nothing replaces its slots
        st = fleet.wait_until(lambda s: s.pool("steady").state == "unreachable"
                              and all(x.state == "unreachable" and (x.unreachable_s or 0) >= 5
                                      for x in slots_of(s, "steady")), stop.left())
        assert "not answering" in st.pool("steady").reason
        assert {s.id: s.generation for s in slots_of(st, "steady")} == {k: g for k, (g, _) in before.items()}
    st = fleet.wait_until(lambda s: s.pool("steady").state == "ok", 60)
    assert {s.id: (s.generation, s.pid) for s in slots_of(st, "steady")} == before  # the same actors
    results = job.wait(timeout_s=120)
    assert sorted(r.item_id for r in results) == sorted(str(n) for n in range(60))  # 0 lost, 0 twice
    assert all(r.ok for r in results)
    assert fleet.crashes("steady") == []
    kinds = [e["kind"] for e in events_of(fleet, "steady")]
    assert "slot.unreachable" in kinds and "slot.reachable" in kinds and "slot.died" not in kinds
    assert "slot.kill_sent" not in kinds


def test_a_slot_unreachable_too_long_is_killed_and_replaced_only_once_its_process_is_gone(cluster, fleet):
    spec = pool("cut", 1, {"resources": {"edge": 1}, "labels": {"host": "b"}}, delay_s=0.05)
    spec["health"] = {**HEALTH, "unreachable_max_s": 5}
    fleet.apply({"pools": [spec]})
    (slot,) = slots_of(fleet.wait_ready(180), "cut")
    host_b = next(n for n in cluster.worker_nodes_list if n.node_id == slot.node_id)
    with Stopped(host_b) as stop:
        # unreachable past unreachable_max_s: killed, but its position waits (the kill can't arrive)
        st = fleet.wait_until(lambda s: slots_of(s, "cut")[0].state == "stopping", stop.left())
        (waiting,) = slots_of(st, "cut")
        assert waiting.generation == 1 and waiting.reason.startswith("unreachable for")
        assert "waiting for Ray to confirm its process is gone" in waiting.reason
        assert st.pool("cut").state == "unreachable"
        assert [e["generation"] for e in events_of(fleet, "cut", "slot.started")] == [1]  # no replacement
    # continued: the kill arrives (or the reaper carries it out), its host's side says the process is
    # gone, and only then is the position refilled -- on the same host, which Ray never declared dead
    st = fleet.wait_until(lambda s: slots_of(s, "cut")[0].generation == 2 and slots_of(s, "cut")[0].state == "running",
                          120)
    assert not psutil.pid_exists(slot.pid) or psutil.Process(slot.pid).status() == psutil.STATUS_ZOMBIE
    order = [(e["kind"], e["generation"]) for e in events_of(fleet, "cut", "slot.unreachable", "slot.kill_sent",
                                                              "slot.death_confirmed", "slot.started")]
    assert order == [("slot.started", 1), ("slot.unreachable", 1), ("slot.kill_sent", 1),
                     ("slot.death_confirmed", 1), ("slot.started", 2)]
    (confirmed,) = events_of(fleet, "cut", "slot.death_confirmed")  # on its host's word, not a node death
    assert "Ray marked node" not in confirmed["message"], confirmed["message"]
    records = wait_for(lambda: fleet.crashes("cut"), 60)
    assert [(r["generation"], r["cause"].startswith("its host stopped answering: unreachable for")) for r in records] == [
        (1, True)]


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
    # replaced elsewhere once Ray marks the node dead (about 15 s: NODE_DEATH), far inside the drain
    # timeout (600 s) ...
    st = fleet.wait_until(lambda s: all(x.generation == 2 and x.state == "running"
                                        for x in slots_of(s, "lossy") if x.id in lost), 120)
    # ... and until then it couldn't answer: shown unreachable (not draining), as its events say
    unreachable = {e["slot"] for e in events_of(fleet, "lossy", "slot.unreachable") if e["generation"] == 1}
    assert unreachable == lost
    assert all(x.node_id != lost_node for x in slots_of(st, "lossy") if x.id in lost)
    assert all(x.generation == 1 and x.state == "draining" for x in slots_of(st, "lossy") if x.id in kept)
    records = wait_for(lambda: (r := fleet.crashes("lossy")) and len(r) >= len(lost) and r, 60)
    assert sorted((r["slot"], r["generation"]) for r in records) == sorted((s, 1) for s in lost)
    for r in records:  # what the slot last wrote, and the truth about its host
        ctx = wrote[r["slot"]]
        assert (r["task"], r["phase"], r["step"]) == (ctx.tasks[-1], "fetch", ctx.step)
        assert r["died"] and "host was lost" in r["cause"] and r["node_id"] == lost_node
    job.drop()
