"""The crash bridge and grouped errors on a real cluster: a SIGKILLed slot yields exactly one crash
record, a crash both paths saw is reported once, and ten alike failures send one notification."""

from __future__ import annotations

import time

import psutil
import pytest

from fleet_ray.observe.crashes import read_slot_context
from fleet_ray.store import open_store

from .conftest import sigkill, wait_for
from .stream_fixtures import single_node_cluster
from .test_notify import Inbox

HEALTH = {"period_s": 0.2, "timeout_s": 5}


@pytest.fixture(scope="module")
def cluster():
    import ray

    cluster = single_node_cluster({"http": 8})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def probe(slots=1, **config):
    return {"name": "probe", "automation": "builtin.probe", "slots": slots, "concurrency": 4, "config": config,
            "health": HEALTH, "placement": {"resources": {"http": 1}}}


def slot_context(fleet, generation=1):
    store = open_store(fleet.store_url, fleet.namespace)
    try:
        return read_slot_context(store, "probe", 0, generation)
    finally:
        store.close()


def crashes_of(fleet, generation):
    return [c for c in fleet.crashes("probe") if c["generation"] == generation]


def crashed_events(fleet, generation):
    return [e for e in fleet.events(500) if e["kind"] == "slot.crashed" and e["generation"] == generation]


def test_a_slot_sigkilled_mid_task_yields_exactly_one_crash_record(fleet):
    fleet.apply({"pools": [probe(phase="fetch", hang_on=["slow"])]})
    slot = fleet.wait_ready(120).pool("probe").slots[0]
    job = fleet.submit("probe", ["slow"], job_id="crashjob")
    # the slot writes what it is doing as it goes; no handler of its own will run after SIGKILL
    wait_for(lambda: (c := slot_context(fleet)) and c.tasks == ["crashjob:0"] and c.phase == "fetch", 60)
    sigkill(slot.pid)
    rec = wait_for(lambda: crashes_of(fleet, 1), 60)[0]
    assert (rec["pool"], rec["slot"], rec["generation"], rec["task"], rec["phase"]) == ("probe", "probe:0", 1, "crashjob:0", "fetch")
    assert rec["died"] and rec["pid"] == slot.pid and "died" in rec["cause"].lower()
    assert rec["sources"] == ["slot", "supervisor"] and rec["step"] == "item slow"
    # the slot comes back; the crash stays one record and one event
    fleet.wait_until(lambda s: s.slot("probe:0").generation == 2 and s.slot("probe:0").state == "running", 60)
    assert len(crashes_of(fleet, 1)) == 1 and len(crashed_events(fleet, 1)) == 1
    assert slot_context(fleet, 1) is None  # the bridge cleaned up after itself
    job.drop()


def test_a_crash_seen_by_the_slot_and_by_the_supervisor_is_reported_once(fleet):
    fleet.apply({"pools": [probe(phase="parse", thread_crash_on=["boom"])]})
    slot = fleet.wait_ready(120).pool("probe").slots[0]
    job = fleet.submit("probe", ["boom"], job_id="bothjob")
    # a thread of the automation dies: the slot's excepthook writes the error at once ...
    ctx = wait_for(lambda: (c := slot_context(fleet)) and c.error is not None and c, 60)
    assert ctx.error.source == "thread" and ctx.error.error_type == "RuntimeError"
    sigkill(slot.pid)  # ... and then the process dies too: the supervisor sees the death
    wait_for(lambda: not psutil.pid_exists(slot.pid), 30)
    rec = wait_for(lambda: crashes_of(fleet, 1), 60)[0]
    assert rec["sources"] == ["slot", "thread", "supervisor"]
    assert rec["error_type"] == "RuntimeError" and rec["frame"].startswith("fleet_ray.builtins.streams.Probe._explode:")
    assert "probe thread crashed on item 'boom'" in rec["cause"] and rec["task"] == "bothjob:0"
    fleet.wait_until(lambda s: s.slot("probe:0").generation >= 2, 60)
    assert len(crashes_of(fleet, 1)) == 1 and len(crashed_events(fleet, 1)) == 1
    groups = [g for g in fleet.error_groups("probe") if g["error_type"] == "RuntimeError"]
    assert len(groups) == 1 and groups[0]["count"] == 1 and groups[0]["kinds"] == ["crash"]
    job.drop()


def test_ten_alike_failures_make_one_group_and_one_notification(fleet):
    inbox = Inbox()
    try:
        shown = fleet.configure_notifiers({"webhook_url": f"{inbox.url}/hook/s3cr3t", "window_s": 2,
                                           "digest_s": 3600})
        assert "s3cr3t" not in str(shown)
        bad = [f"bad-{i}" for i in range(10)]
        fleet.apply({"pools": [probe(slots=2, phase="validate", fail_on=bad)]})
        fleet.wait_ready(120)
        results = fleet.submit("probe", bad + ["good"]).wait(timeout_s=120)
        assert sorted(r.ok for r in results) == [False] * 10 + [True]
        group = wait_for(lambda: [g for g in fleet.error_groups("probe") if g["count"] == 10], 30)[0]
        assert group["error_type"] == "fleet_ray.builtins.streams.ProbeError"
        assert group["frame"].startswith("fleet_ray.builtins.streams.check_item:")  # the innermost user frame
        assert group["phases"] == ["validate"] and set(group["slots"]) <= {"probe:0", "probe:1"}
        wait_for(lambda: len(inbox.requests) >= 1, 30)
        deadline = time.monotonic() + 3  # longer than the window: a second message would show here
        while time.monotonic() < deadline:
            assert len(inbox.requests) == 1
            time.sleep(0.1)
        _, body = inbox.requests[0]
        assert body["kind"] == "new" and "ProbeError @ fleet_ray.builtins.streams.check_item" in body["text"]
        failed = [e for e in fleet.events(500) if e["kind"] == "task.failed"]
        assert len(failed) == 10 and {e["data"]["phase"] for e in failed} == {"validate"}
    finally:
        inbox.close()
