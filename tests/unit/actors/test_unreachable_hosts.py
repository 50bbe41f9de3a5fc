"""Hosts that can't be reached, through the supervisor core with fakes (no Ray): what the real
wrapper reports for a TCP reset, a partition, a host that lost power, and Ray's verdicts, replayed
through :class:`fleet_ray.testing.FakeSlotCalls`. Every scenario checks the same things the issue
asks of a real fleet: no healthy slot killed, exactly the desired slots, one actor per position, one
crash record per lost slot (with what the slot last wrote about itself), none for a survivor."""

from __future__ import annotations

import asyncio

from fleet_ray.control.lifecycle import Died
from fleet_ray.observe.crashes import SlotContext, list_crashes
from fleet_ray.testing import FakeSlotCalls

from .conftest import echo

HEAD, WORKER, OTHER = "node-1", "node-2", "node-3"


def fleet_on_worker(rig, slots: int = 3, **extra):
    calls = FakeSlotCalls(node_for={"web": WORKER})
    calls.add_node(WORKER)
    calls.add_node(OTHER)
    sup = rig(calls)
    health = {"period_s": 1, "timeout_s": 1, **extra.pop("health", {})}
    sup.apply({"pools": [echo("web", slots, health=health, **extra)]})
    sup.run(3)
    bridge(sup)  # the fleet services boot (a real supervisor runs them from its start)
    assert [s.state for s in sup.status().pool("web").slots] == ["running"] * slots
    return sup, calls


def states(sup) -> list[tuple[str, str, int]]:
    return [(s.id, s.state, s.generation) for s in sup.status().pool("web").slots]


def bridge(sup) -> None:
    """One turn of the crash bridge (the supervisor runs it beside the step)."""
    asyncio.run(sup.services.tick())


def crashes(store) -> list:
    return list_crashes(store, "web")


def write_context(store, index: int, generation: int = 1, **fields) -> None:
    """What a slot writes about itself as it goes (actors/slot_io.py)."""
    ctx = SlotContext(pool="web", index=index, generation=generation, node_id=WORKER, **fields)
    store.put(ctx.key(), ctx.model_dump_json().encode())


def one_actor_per_position(calls: FakeSlotCalls) -> bool:
    positions = [name.rsplit(":", 1)[0] for name in calls.live]
    return len(positions) == len(set(positions))


def test_reset_connections_kill_no_healthy_slot_and_write_no_crash_record(rig, store):
    sup, calls = fleet_on_worker(rig)
    for i in range(3):
        write_context(store, i, tasks=[f"job:{i}"])
    calls.reset_connections(WORKER)  # every call to the worker host fails "temporarily unavailable"
    sup.run(2)
    assert states(sup) == [(f"web:{i}", "unreachable", 1) for i in range(3)]
    web = sup.status().pool("web")
    assert web.state == "unreachable" and "3 slot(s) not answering (node node-2)" in web.reason
    calls.heal(WORKER)  # the connections are back
    sup.run(6)
    bridge(sup)
    assert states(sup) == [(f"web:{i}", "running", 1) for i in range(3)]
    assert calls.killed == [] and calls.created == [(("web", i), 1) for i in range(3)]
    assert crashes(store) == [] and sup.workqueues.released == []
    assert sup.kinds().count("slot.unreachable") == 3 and sup.kinds().count("slot.reachable") == 3
    assert "slot.died" not in sup.kinds() and sup.status().pool("web").state == "ok"


def test_a_partition_shows_unreachable_while_it_lasts_and_replaces_nothing(rig, store):
    sup, calls = fleet_on_worker(rig)
    calls.partition(WORKER)  # the link is down: calls wait, health checks time out, the host is silent
    seen = []
    for _ in range(40):  # 20 s of fake time
        sup.run(0.5)
        seen.append(sup.status().pool("web").state)
    assert seen[-1] == "unreachable" and "ok" not in seen[4:]  # from the first timed-out checks on
    assert {s.state for s in sup.status().pool("web").slots} == {"unreachable"}
    assert all(s.unreachable_s and s.unreachable_s > 15 for s in sup.status().pool("web").slots)
    calls.heal(WORKER)
    sup.run(8)
    bridge(sup)
    assert states(sup) == [(f"web:{i}", "running", 1) for i in range(3)]
    assert calls.created == [(("web", i), 1) for i in range(3)] and calls.killed == []
    assert one_actor_per_position(calls) and crashes(store) == []
    assert sup.workqueues.released == []  # its leases stand: the slots finish what they hold


def test_unavailable_then_its_node_dead_replaces_each_slot_once_with_one_crash_record(rig, store):
    sup, calls = fleet_on_worker(rig)
    write_context(store, 0, tasks=["job:7"], phase="fetch", step="item 7")  # what slot 0 last wrote
    calls.reset_connections(WORKER)  # power loss: the connections break first ...
    sup.run(5)
    assert {s.state for s in sup.status().pool("web").slots} == {"unreachable"}
    calls.node_for["web"] = OTHER
    calls.lose_node(WORKER)  # ... then Ray marks the node dead (and the watches fail ActorDiedError)
    sup.run(3)
    bridge(sup)
    assert states(sup) == [(f"web:{i}", "running", 2) for i in range(3)]
    assert calls.created[3:] == [(("web", i), 2) for i in range(3)] and one_actor_per_position(calls)
    recs = crashes(store)
    assert sorted((r.slot, r.generation) for r in recs) == [(f"web:{i}", 1) for i in range(3)]
    lost = {r.slot: r for r in recs}
    assert all(r.died and "its host was lost" in r.cause for r in recs)
    assert (lost["web:0"].task, lost["web:0"].phase, lost["web:0"].step) == ("job:7", "fetch", "item 7")
    assert sup.kinds().count("slot.crashed") == 3 and sup.kinds().count("slot.died") == 3
    # lost with their host: no heal backoff, the pool is ok again
    assert sup.status().pool("web").state == "ok" and "slot.heal_escalated" not in sup.kinds()
    assert {r[1] for r in sup.workqueues.released} == {f"fleet:web:{i}:g1" for i in range(3)}


def test_a_node_ray_marks_dead_takes_its_slots_at_once_without_a_watch_error(rig, store):
    sup, calls = fleet_on_worker(rig, slots=2)
    calls.node_for["web"] = OTHER
    calls.lose_node(WORKER, watch_errors=False)  # only the node list says so
    sup.run(2)
    bridge(sup)
    assert states(sup) == [("web:0", "running", 2), ("web:1", "running", 2)]
    assert len(crashes(store)) == 2


def test_draining_slots_of_a_host_that_lost_power_are_replaced_without_waiting_out_the_drain(rig, store):
    sup, calls = fleet_on_worker(rig, slots=2, recycle={"drain_timeout_s": 300})
    calls.busy |= {("web", 0), ("web", 1)}  # their drains wait for in-flight work
    for i in range(2):
        sup.core.specs.recycle(f"web:{i}")  # both draining ...
    sup.run(0.5)
    assert {s.state for s in sup.status().pool("web").slots} == {"draining"}
    calls.partition(WORKER)  # ... when the link is cut: the drains wait; the next health checks tell
    sup.run(6)
    assert {s.state for s in sup.status().pool("web").slots} == {"unreachable"}
    calls.node_for["web"] = OTHER
    calls.lose_node(WORKER)  # ... and then every process of the host is dead
    sup.run(12)  # far less than the drain timeout
    bridge(sup)
    slots = sup.status().pool("web").slots
    assert [(s.state, s.generation) for s in slots] == [("running", 2), ("running", 2)]
    assert sorted(r.slot for r in crashes(store)) == ["web:0", "web:1"]
    assert one_actor_per_position(calls)


def test_a_slot_the_gcs_says_is_dead_is_replaced_with_a_crash_record(rig, store):
    sup, calls = fleet_on_worker(rig, slots=1)
    calls.reset_connections(WORKER)
    sup.run(2)
    calls.gcs_dead(("web", 0))  # its worker died, though no call said so yet
    calls.heal(WORKER)
    sup.run(3)
    bridge(sup)
    assert states(sup) == [("web:0", "running", 2)]
    (rec,) = crashes(store)
    assert rec.died and rec.cause.startswith("Ray says the actor is dead")


def test_an_unreachable_drain_that_times_out_is_killed_with_a_crash_record_saying_so(rig, store):
    sup, calls = fleet_on_worker(rig, slots=1, recycle={"drain_timeout_s": 5})
    write_context(store, 0, tasks=["job:1"], step="item 1")
    calls.busy.add(("web", 0))  # its drain waits for in-flight work ...
    sup.core.specs.update_pool("web", slots=0)
    sup.run(1)
    calls.reset_connections(WORKER)  # ... when its host stops answering
    sup.run(8)
    bridge(sup)
    # the kill went out, but can't reach the process: the position waits for Ray's confirmation
    (slot,) = sup.status().pool("web").slots
    assert slot.state == "stopping" and "waiting for Ray to confirm its process is gone" in slot.reason
    assert calls.killed == ["fleet:web:0:g1"] and "fleet:web:0:g1" in calls.live and crashes(store) == []
    calls.heal(WORKER)  # the host answers again: the kill is carried out there, and confirmed
    sup.run(2)
    bridge(sup)
    assert sup.status().pool("web").slots == [] and calls.live == {}
    (rec,) = crashes(store)
    assert rec.task == "job:1" and rec.step == "item 1"
    assert rec.cause.startswith("its host stopped answering: drain timeout; unreachable for")
    assert sup.kinds().count("slot.kill_sent") == 1 and sup.kinds().count("slot.death_confirmed") == 1


def test_a_hung_slot_on_a_host_that_answers_is_still_recycled(rig, store):
    sup, calls = fleet_on_worker(rig, slots=1, recycle={"drain_timeout_s": 2})
    calls.hung.add(("web", 0))  # its health checks time out; the host answers (a probe would run)
    sup.run(10)
    assert "slot.unhealthy" in sup.kinds() and "slot.unreachable" not in sup.kinds()
    calls.hung.clear()
    sup.run(3)
    assert states(sup) == [("web:0", "running", 2)]


def test_a_slot_whose_node_is_unknown_stays_unreachable_instead_of_flapping(rig, store):
    calls = FakeSlotCalls(node_for={"web": ""})  # the wrapper never learns where its slots run
    sup = rig(calls)
    sup.apply({"pools": [echo("web", 1, health={"period_s": 1, "timeout_s": 1})]})
    sup.run(3)
    calls.hung.add(("web", 0))  # its checks time out, and its host can't be asked
    sup.run(20)
    assert states(sup) == [("web:0", "unreachable", 1)]
    assert sup.kinds().count("slot.unreachable") == 1 and "slot.reachable" not in sup.kinds()
    assert "slot.unhealthy" not in sup.kinds() and calls.killed == [] and calls.created == [(("web", 0), 1)]
    calls.hung.clear()  # it answers again
    sup.run(6)
    assert states(sup) == [("web:0", "running", 1)] and sup.kinds().count("slot.reachable") == 1
    assert crashes(store) == []


def partitioned_drain(rig, store):
    """A slot draining (its drain waits for in-flight work) on a host whose link then goes down, until
    well past its drain timeout."""
    sup, calls = fleet_on_worker(rig, slots=1, recycle={"drain_timeout_s": 5})
    write_context(store, 0, tasks=["job:3"], step="item 3")
    calls.busy.add(("web", 0))
    sup.core.specs.recycle("web:0")
    sup.run(0.5)
    calls.partition(WORKER)
    for _ in range(40):  # 20 s: the drain runs out, the kill goes out and doesn't arrive
        sup.run(0.5)
        assert one_actor_per_position(calls)
    return sup, calls


def test_a_partitioned_slot_killed_at_its_drain_timeout_is_not_replaced_until_ray_confirms_it_died(rig, store):
    sup, calls = partitioned_drain(rig, store)
    (slot,) = sup.status().pool("web").slots
    assert (slot.state, slot.generation) == ("stopping", 1) and calls.created == [(("web", 0), 1)]
    assert "fleet:web:0:g1" in calls.live  # alive where the kill can't reach
    assert sup.status().pool("web").state == "unreachable" and crashes(store) == []
    assert sup.workqueues.released == []  # its items aren't handed out while it may be working on them
    calls.node_for["web"] = OTHER
    calls.lose_node(WORKER)  # Ray marks the node dead: that is the confirmation
    sup.run(3)
    bridge(sup)
    assert states(sup) == [("web:0", "running", 2)] and one_actor_per_position(calls)
    (rec,) = crashes(store)
    assert (rec.generation, rec.task, rec.step) == (1, "job:3", "item 3")
    assert rec.cause.startswith("its host stopped answering: drain timeout; unreachable for")
    assert [r[1] for r in sup.workqueues.released] == ["fleet:web:0:g1"]


def test_a_killed_slot_whose_host_comes_back_is_reaped_there_before_it_is_replaced(rig, store):
    sup, calls = partitioned_drain(rig, store)
    calls.heal(WORKER)  # the kill was lost in the partition: a reaper on the host carries it out
    for _ in range(6):
        sup.run(0.5)
        assert one_actor_per_position(calls)
    bridge(sup)
    assert states(sup) == [("web:0", "running", 2)] and list(calls.live) == ["fleet:web:0:g2"]
    assert len(crashes(store)) == 1
    (confirmed,) = [e for e in sup.core.journal.recent if e.kind == "slot.death_confirmed"]
    assert "killed its process" in confirmed.message


def test_an_answer_from_a_killed_slot_or_its_death_notice_frees_nothing(rig, store):
    sup, calls = partitioned_drain(rig, store)
    # what Ray's callers hear after ray.kill (ActorDiedError from the GCS's word) is no confirmation
    calls._queued.append(Died(("web", 0), 1, "ActorDiedError: the actor was killed by ray.kill"))
    sup.run(3)
    assert [(s.state, s.generation) for s in sup.status().pool("web").slots] == [("stopping", 1)]
    assert calls.created == [(("web", 0), 1)]


def test_a_slot_that_never_answers_again_is_killed_past_unreachable_max_s_and_replaced_once_confirmed(rig, store):
    sup, calls = fleet_on_worker(rig, slots=1, health={"unreachable_max_s": 30})
    write_context(store, 0, tasks=["job:5"], step="item 5")
    calls.partition(WORKER)  # e.g. the GCS reaches its raylet, the supervisor never reaches its worker
    for _ in range(60):  # 30 s: unreachable all along
        sup.run(0.5)
        assert one_actor_per_position(calls)
    assert states(sup) == [("web:0", "unreachable", 1)] and calls.killed == []
    sup.run(10)  # past unreachable_max_s: killed, and the position waits for Ray's confirmation
    (slot,) = sup.status().pool("web").slots
    assert (slot.state, slot.generation) == ("stopping", 1) and slot.reason.startswith("unreachable for 3")
    assert calls.killed == ["fleet:web:0:g1"] and calls.created == [(("web", 0), 1)] and crashes(store) == []
    calls.node_for["web"] = OTHER
    calls.lose_node(WORKER)
    sup.run(3)
    bridge(sup)
    assert states(sup) == [("web:0", "running", 2)] and one_actor_per_position(calls)
    (rec,) = crashes(store)
    assert rec.generation == 1 and rec.task == "job:5"
    assert rec.cause.startswith("its host stopped answering: unreachable for 3")
    assert "health.unreachable_max_s: 30s" in rec.cause


def test_scaling_down_an_unreachable_slot_drains_it_once_it_answers_and_writes_no_crash_record(rig, store):
    sup, calls = fleet_on_worker(rig, slots=2)
    calls.partition(WORKER)
    sup.run(8)
    assert {s.state for s in sup.status().pool("web").slots} == {"unreachable"}
    sup.core.specs.update_pool("web", slots=1)  # web:1 is to go: a drain it does once it answers
    sup.run(2)
    assert states(sup) == [("web:0", "unreachable", 1), ("web:1", "unreachable", 1)]
    assert ("web", 1) in [k for k, _ in calls.drained] and calls.killed == []
    calls.heal(WORKER)
    sup.run(6)
    bridge(sup)
    assert states(sup) == [("web:0", "running", 1)] and calls.killed == ["fleet:web:1:g1"]
    assert crashes(store) == [] and one_actor_per_position(calls)


def test_a_recycle_of_an_unreachable_slot_that_never_answers_is_killed_at_its_drain_timeout(rig, store):
    sup, calls = fleet_on_worker(rig, slots=1, recycle={"drain_timeout_s": 5})
    calls.partition(WORKER)
    sup.run(8)
    sup.core.specs.recycle("web:0")  # honoured while unreachable: a drain, then a kill past its timeout
    sup.run(8)
    (slot,) = sup.status().pool("web").slots
    assert slot.state == "stopping" and slot.reason.startswith("drain timeout; unreachable for")
    calls.heal(WORKER)  # the kill was lost: reaped on the host, then replaced
    sup.run(3)
    assert states(sup) == [("web:0", "running", 2)] and one_actor_per_position(calls)
