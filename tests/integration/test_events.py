"""Typed lifecycle events on a real cluster with the durable log in a real Redis: causal order,
idempotent appends, queries by kind/origin/pool/time, task events with phases, live subscription."""

from __future__ import annotations

import threading
import uuid

import pytest

from fleet_ray.observe.events import EventLog
from fleet_ray.observe.kinds import SlotDied, SlotHealed, SlotReady, TaskFailed, TaskFinished, TaskStarted
from fleet_ray.store import open_store

from .conftest import sigkill, wait_for
from .stream_fixtures import single_node_cluster


@pytest.fixture(scope="module")
def cluster():
    import ray

    cluster = single_node_cluster({"http": 8})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def redis_fleet(cluster, redis_url):
    """A fleet whose store (checkpoint, event log, crash records) is the real Redis, db 15."""
    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    ns = f"ev-{uuid.uuid4().hex[:8]}"
    client = FleetClient(start_supervisor(redis_url, namespace=ns, tick_s=0.05), ns)
    store = open_store(redis_url, ns)
    yield client, store
    try:
        client.down(timeout_s=5)
    finally:
        for k in store.keys():
            store.delete(k)
        store._r.delete(*store._log_keys("events"), *store._log_keys("crashes"))
        store.close()


def test_lifecycle_and_task_events_land_typed_in_the_durable_log_in_causal_order(redis_fleet):
    fleet, store = redis_fleet
    log = EventLog(store)
    fleet.apply({"pools": [{"name": "probe", "automation": "builtin.probe", "slots": 1, "task_events": True,
                            "config": {"phase": "parse", "fail_on": ["bad"]}, "health": {"period_s": 0.3},
                            "placement": {"resources": {"http": 1}}}]})
    slot = fleet.wait_ready(120).pool("probe").slots[0]
    results = fleet.submit("probe", ["a", "b", "bad"], job_id="j").wait(timeout_s=60)
    assert sorted(r.ok for r in results) == [False, True, True]
    # the slot ships its task events to the supervisor, which appends them to the durable log
    origin = f"fleet:probe:0:g{slot.generation}"
    tasks = wait_for(lambda: len(t := log.query_typed(kinds=["task.*"], origin=origin)) == 6 and t, 30)
    assert [type(e) for e in tasks].count(TaskStarted) == 3 and [type(e) for e in tasks].count(TaskFinished) == 2
    failed = [e for e in tasks if isinstance(e, TaskFailed)]
    assert len(failed) == 1 and failed[0].task == "j:2" and failed[0].phase == "parse"
    assert failed[0].error_type == "fleet_ray.builtins.streams.ProbeError"

    follower: list = []
    cursor = fleet.event_cursor()

    def follow():  # a live subscriber, as the API and dashboard use
        for ev in fleet.follow_events(kinds=["slot.*"], pool="probe", timeout_s=90, after=cursor):
            follower.append(ev)
            if isinstance(ev, SlotHealed):
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    sigkill(slot.pid)
    t.join(90)
    kinds = [e.kind for e in follower]
    assert "slot.died" in kinds and "slot.healed" in kinds and kinds.index("slot.died") < kinds.index("slot.healed")
    assert isinstance(follower[kinds.index("slot.died")], SlotDied)

    # the durable log: typed, causally ordered, queryable
    wait_for(lambda: log.query(kind="slot.healed", pool="probe"), 30)
    events = log.query(pool="probe")
    stamps = [(e.physical, e.counter) for e in events]
    assert stamps == sorted(stamps)
    sup = [(e.physical, e.counter) for e in events if e.origin == "supervisor"]
    assert len(set(sup)) == len(sup)  # every event ticks the clock: no two alike
    ready = log.query_typed(kind="slot.ready", pool="probe")
    assert all(isinstance(e, SlotReady) and e.pid for e in ready) and len(ready) == 2
    started = log.query(kind="slot.started", pool="probe")[0]
    assert (started.physical, started.counter) < (ready[0].physical, ready[0].counter)
    t_mid = ready[0].physical + 1
    assert all(e.physical >= t_mid for e in log.query(since_ms=t_mid, pool="probe"))
    # appends are idempotent by id: writing the whole log again adds nothing
    assert log.append(events) == 0 and len(log.query(pool="probe")) == len(events)
