"""The supervisor core driven without Ray: fakes for its slot calls and work queues, an in-memory
store that can go away, and a clock that moves only when told."""

from __future__ import annotations

import json

from fleet_ray.control.recovery import OUTAGE_STRIDE
from fleet_ray.store import keys

from .conftest import echo


def running(status, pool: str = "web") -> list[tuple[str, int]]:
    p = status.pool(pool)
    return [(s.id, s.generation) for s in p.slots if s.state == "running"]


def test_a_fresh_supervisor_starts_the_desired_slots_and_reports_them(rig):
    sup = rig()
    assert sup.apply({"pools": [echo("web", 2)]}).added == ["web"]
    sup.run(3)
    st = sup.status()
    web = st.pool("web")
    assert web.state == "ok" and web.counts == {"running": 2}
    assert running(st) == [("web:0", 1), ("web:1", 1)]
    assert not st.store_degraded and st.supervisor_pid == 4242
    assert "slot.ready" in sup.kinds()


def test_a_restarted_supervisor_adopts_live_slots_from_its_checkpoint(rig):
    first = rig()
    first.apply({"pools": [echo("web", 2)]})
    first.run(3)
    pids = {s.id: s.pid for s in first.status().pool("web").slots}
    survivors = first.calls  # the slot actors outlive the supervisor's process
    survivors.add_live("gone", 0, 3)  # an actor of a pool the checkpoint doesn't know

    second = rig(calls=type(survivors)(live=dict(survivors.live)))
    assert second.status().pools == []  # nothing known before recovery
    second.run(2)
    st = second.status()
    assert running(st) == [("web:0", 1), ("web:1", 1)]  # same generations: adopted, not restarted
    assert {s.id: s.pid for s in st.pool("web").slots} == pids
    assert second.calls.created == []
    assert second.calls.killed == ["fleet:gone:0:g3"]
    assert "supervisor.recovered" in second.kinds()


def test_a_slot_lost_while_the_supervisor_was_down_comes_back_with_a_new_generation(rig):
    first = rig()
    first.apply({"pools": [echo("web", 2)]})
    first.run(3)
    live = dict(first.calls.live)
    del live["fleet:web:1:g1"]  # died while no supervisor watched

    second = rig(calls=type(first.calls)(live=live))
    second.run(5)
    st = second.status()
    assert running(st) == [("web:0", 1), ("web:1", 2)]
    assert second.calls.created == [(("web", 1), 2)]


def test_while_the_store_is_down_the_fleet_runs_degraded_and_catches_up_when_it_is_back(rig, store):
    sup = rig()
    sup.apply({"pools": [echo("web", 1)]})
    sup.run(3)
    store.down = True
    sup.core.specs.update_pool("web", slots=2)
    sup.run(3)
    st = sup.status()
    assert st.store_degraded and "connection refused" in (st.store_error or "")
    # it kept reconciling in memory; a generation it can't write ahead comes from its epoch's range
    outage = OUTAGE_STRIDE * sup.core.state.epoch + 1
    assert running(st) == [("web:0", 1), ("web:1", outage)]

    store.down = False
    sup.run(1)
    st = sup.status()
    assert not st.store_degraded and st.store_error is None
    saved = json.loads(store.get(keys.SUPERVISOR_CHECKPOINT))
    assert saved["spec"]["pools"][0]["slots"] == 2 and len(saved["slots"]) == 2
    assert int(store.get(keys.generation("web", 1))) == outage  # the generation, written late


def test_a_supervisor_that_starts_while_the_store_is_down_waits_for_it(rig, store):
    first = rig()
    first.apply({"pools": [echo("web", 1)]})
    first.run(3)
    store.down = True
    second = rig(calls=type(first.calls)(live=dict(first.calls.live)))
    second.run(2)
    assert not second.core.state.recovered and second.status().pools == []
    store.down = False
    second.run(2)
    assert running(second.status()) == [("web:0", 1)]


def test_a_shape_change_rolls_out_slot_by_slot_to_completion(rig):
    sup = rig()
    sup.apply({"pools": [echo("web", 2, concurrency=1)]})
    sup.run(3)
    sup.apply({"pools": [echo("web", 2, concurrency=2)]})
    sup.run(20)
    web = sup.status().pool("web")
    assert web.rollout is not None and web.rollout.state == "complete"
    assert [s.generation for s in web.slots if s.state == "running"] == [2, 2]
    assert {"rollout.started", "rollout.completed"} <= set(sup.kinds())


def test_a_rollout_whose_new_slots_fail_rolls_back_to_the_previous_spec(rig):
    sup = rig()
    sup.apply({"pools": [echo("web", 2, concurrency=1, rollout={"failure_threshold": 2})]})
    sup.run(3)
    sup.calls.failing_starts["web"] = "ImportError: no module named acme"
    sup.apply({"pools": [echo("web", 2, concurrency=3, rollout={"failure_threshold": 2})]})
    sup.run(10)
    sup.calls.failing_starts.clear()
    sup.run(20)
    web = sup.status().pool("web")
    assert web.rollout is not None and web.rollout.state == "rolled_back"
    assert sup.core.state.spec.pools[0].concurrency == 1  # the previous spec is desired again
    assert web.counts == {"running": 2}
    assert "rollout.rolled_back" in sup.kinds()


def test_one_failing_part_does_not_stop_the_others(rig, caplog):
    sup = rig()
    sup.apply({"pools": [echo("web", 1)]})

    def broken() -> None:
        raise RuntimeError("rollout tracking is broken")

    sup.core.specs.track_rollouts = broken
    sup.run(3)
    assert running(sup.status()) == [("web:0", 1)]
    assert sup.core.steps > 0 and "rollouts failed" in caplog.text
