"""The supervisor on a real multi-node cluster: placement, healing, recovery, scaling."""

from __future__ import annotations

import os

import psutil
import pytest
import ray

from fleet_ray.errors import SpecError

from .conftest import sigkill


def echo_pool(name="web", slots=2, **extra):
    pool = {"name": name, "automation": "builtin.echo", "slots": slots, "health": {"period_s": 0.2, "timeout_s": 2}}
    pool.update(extra)
    return pool


def test_slots_are_placed_on_nodes_with_the_pool_tag(fleet, cluster):
    fleet.apply({"pools": [echo_pool("b", 3, placement={"resources": {"browser": 1}, "labels": {"region": "us"}}),
                           echo_pool("h", 2, placement={"resources": {"http": 1}})]})
    st = fleet.wait_ready(60)
    us_node = cluster.worker_nodes_list[1].node_id
    http_node = cluster.worker_nodes_list[2].node_id
    assert {s.node_id for s in st.pool("b").slots} == {us_node}
    assert {s.node_id for s in st.pool("h").slots} == {http_node}
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == fleet.namespace}
    assert {"fleet:b:0:g1", "fleet:b:1:g1", "fleet:b:2:g1", "fleet:h:0:g1", "fleet:h:1:g1"} <= names


def test_infeasible_pool_is_reported_pending_with_the_reason(fleet):
    fleet.apply({"pools": [echo_pool("gpu", 2, placement={"resources": {"gpu_box": 1}})]})
    st = fleet.wait_until(lambda s: s.pool("gpu").state == "pending", 30)
    pool = st.pool("gpu")
    assert "no node has resource 'gpu_box'" in pool.reason
    assert all(s.state == "pending" for s in pool.slots) and len(pool.slots) == 2
    # the pool becomes placeable when its requirement is relaxed
    fleet.apply({"pools": [echo_pool("gpu", 2)]})
    fleet.wait_ready(60)


def test_sigkilled_slot_is_replaced_with_the_next_generation(fleet):
    fleet.apply({"pools": [echo_pool("web", 2)]})
    st = fleet.wait_ready(60)
    victim, bystander = st.pool("web").slots
    sigkill(victim.pid)
    st = fleet.wait_until(
        lambda s: (x := s.slot(victim.id)) is not None and x.state == "running" and x.generation == victim.generation + 1,
        30,
    )
    new = st.slot(victim.id)
    assert new.pid != victim.pid and new.recycles == 1
    other = st.pool("web").slots[1]
    assert (other.generation, other.pid, other.recycles) == (1, bystander.pid, 0)  # untouched
    kinds = [e.kind for e in st.events if e.slot == victim.id]
    assert "slot.died" in kinds and kinds.count("slot.ready") >= 2


def test_supervisor_sigkill_recovers_without_duplicates_or_orphans(fleet):
    fleet.apply({"pools": [echo_pool("web", 3)]})
    before = fleet.wait_ready(60)
    sup_pid = ray.get(fleet.supervisor.ping.remote())
    sigkill(sup_pid)
    # Ray restarts the supervisor; it reloads its checkpoint and adopts the live slots
    after = fleet.wait_until(lambda s: s.supervisor_pid != sup_pid and s.pool("web") is not None
                             and s.pool("web").counts.get("running") == 3, 60)
    assert [(s.id, s.generation, s.pid) for s in after.pool("web").slots] == [
        (s.id, s.generation, s.pid) for s in before.pool("web").slots
    ]
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == fleet.namespace and a["name"].startswith("fleet:web:") and ":g" in a["name"])
    assert names == ["fleet:web:0:g1", "fleet:web:1:g1", "fleet:web:2:g1"]
    # generations continue after the restart
    sigkill(after.pool("web").slots[0].pid)
    fleet.wait_until(lambda s: s.slot("web:0").generation == 2 and s.slot("web:0").state == "running", 30)


def test_scale_up_and_down(fleet):
    fleet.apply({"pools": [echo_pool("web", 1)]})
    fleet.wait_ready(60)
    fleet.scale("web", 4)
    st = fleet.wait_ready(60)
    assert [s.id for s in st.pool("web").slots] == ["web:0", "web:1", "web:2", "web:3"]
    fleet.scale("web", 2)
    st = fleet.wait_until(lambda s: len(s.pool("web").slots) == 2, 60)
    assert [s.id for s in st.pool("web").slots] == ["web:0", "web:1"]
    fleet.wait_until(
        lambda s: sum(a["name"].startswith("fleet:web:") and ":g" in a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["namespace"] == fleet.namespace) == 2, 30)
    # positions that come back continue their generations (never g1 again, never a reused actor name)
    fleet.scale("web", 3)
    st = fleet.wait_ready(60)
    assert st.slot("web:2").generation == 2 and st.slot("web:2").actor == "fleet:web:2:g2"


def test_invalid_spec_is_rejected_naming_the_field_and_changes_nothing(fleet):
    fleet.apply({"pools": [echo_pool("web", 2)]})
    before = fleet.wait_ready(60)
    bad = {"pools": [echo_pool("web", 5), echo_pool("more", 1, config={"tag": 5, "nope": True})]}
    with pytest.raises(SpecError) as err:
        ray.get(fleet.supervisor.apply.remote(bad))  # straight to the supervisor, past client checks
    msg = str(err.value)
    assert "pools.more.config.tag" in msg and "pools.more.config.nope" in msg
    with pytest.raises(SpecError, match="pools.web.slots"):
        fleet.apply({"pools": [echo_pool("web", -1)]})
    after = fleet.status()
    assert after.pool("more") is None and after.pool("web").desired == 2
    assert [(s.id, s.generation) for s in after.pool("web").slots] == [(s.id, s.generation) for s in before.pool("web").slots]


def test_batch_items_survive_a_slot_dying_mid_flight(fleet):
    fleet.apply({"pools": [{"name": "slow", "automation": "builtin.sleep", "slots": 2, "concurrency": 4,
                            "health": {"period_s": 0.2}, "config": {"delay_s": 0.05}}]})
    st = fleet.wait_ready(60)
    job = fleet.submit("slow", list(range(200)))
    seen = []
    killed = False
    for r in job.results(timeout_s=120):
        seen.append(r)
        if len(seen) == 20 and not killed:
            sigkill(st.pool("slow").slots[0].pid)
            killed = True
    assert killed
    assert sorted(int(r.item_id) for r in seen) == list(range(200))  # each exactly once
    assert all(r.ok for r in seen)
    assert any(r.attempts > 1 for r in seen)  # some were retried on the other slot


def test_config_change_is_pushed_in_place_or_recycles(fleet):
    fleet.apply({"pools": [echo_pool("web", 2, config={"tag": "a-"})]})
    before = fleet.wait_ready(60)
    fleet.apply({"pools": [echo_pool("web", 2, config={"tag": "b-"})]})
    fleet.wait_until(lambda s: any(e.kind == "config.applied" for e in s.events), 30)
    results = fleet.map("web", ["x", "y"], timeout_s=60)
    assert {r.value["item"] for r in results} == {"b-x", "b-y"}
    st = fleet.status()
    assert [s.generation for s in st.pool("web").slots] == [s.generation for s in before.pool("web").slots]
    # a change the automation can't take in place gets fresh slots
    fleet.apply({"pools": [echo_pool("web", 2, config={"tag": "c-", "in_place": False})]})
    st = fleet.wait_until(lambda s: all(x.generation == 2 and x.state == "running" for x in s.pool("web").slots), 60)
    assert {r.value["item"] for r in fleet.map("web", ["z"], timeout_s=60)} == {"c-z"}


def test_recycle_by_operator_and_by_max_tasks(fleet):
    fleet.apply({"pools": [echo_pool("web", 1, recycle={"max_tasks": 10, "drain_timeout_s": 5})]})
    fleet.wait_ready(60)
    fleet.recycle("web:0")
    fleet.wait_until(lambda s: s.slot("web:0").generation == 2 and s.slot("web:0").state == "running", 30)
    fleet.map("web", list(range(25)), timeout_s=60)
    st = fleet.wait_until(lambda s: s.slot("web:0").generation >= 3, 30)
    assert st.slot("web:0").recycles >= 2


def test_node_loss_reschedules_slots_on_nodes_with_the_tag(fleet, cluster):
    fleet.apply({"pools": [echo_pool("b", 2, placement={"resources": {"browser": 1}, "labels": {"region": "eu"}}),
                           echo_pool("any", 2, placement={"resources": {"browser": 1}})]})
    st = fleet.wait_ready(60)
    eu = cluster.worker_nodes_list[0]
    assert {s.node_id for s in st.pool("b").slots} == {eu.node_id}
    on_eu = [s.id for s in st.pool("any").slots if s.node_id == eu.node_id]
    cluster.remove_node(eu)
    cluster.worker_nodes_list[0] = None
    # 'any' slots come back on the other browser node; 'b' (region eu only) has nowhere to go
    st = fleet.wait_until(lambda s: s.pool("any").counts.get("running") == 2
                          and all(x.node_id != eu.node_id for x in s.pool("any").slots), 90)
    assert all(st.slot(i).generation == 2 for i in on_eu)
    st = fleet.wait_until(lambda s: s.pool("b").state in ("pending", "degraded"), 90)
    assert all(x.state != "running" for x in st.pool("b").slots)


def test_repeated_failures_escalate_to_backoff_and_a_degraded_pool(fleet):
    fleet.apply({"pools": [{"name": "bad", "automation": "builtin.chaos", "slots": 1,
                            "config": {"fail_setup": True},
                            "heal": {"max_failures": 2, "window_s": 60, "backoff_base_s": 30}}]})
    st = fleet.wait_until(lambda s: s.pool("bad").state == "degraded", 60)
    slot = st.slot("bad:0")
    assert slot.backoff_s > 10 and slot.state == "failed"
    assert "chaos: setup failed on purpose" in slot.reason
    assert any(e.kind == "slot.heal_escalated" and e.slot == "bad:0" for e in st.events)
    gen = slot.generation
    # no hot crash loop: during the backoff the position is not restarted
    st2 = fleet.wait_until(lambda s: s.steps > st.steps + 20, 30)
    assert st2.slot("bad:0").generation == gen


def test_crashing_and_unhealthy_automations_are_recycled(fleet):
    fleet.apply({"pools": [
        {"name": "crash", "automation": "builtin.chaos", "slots": 1, "config": {"crash_after_s": 0.5},
         "health": {"period_s": 0.2, "failure_threshold": 1}, "recycle": {"drain_timeout_s": 2}},
        {"name": "sick", "automation": "builtin.chaos", "slots": 1, "config": {"unhealthy_after_s": 0.5},
         "health": {"period_s": 0.2, "failure_threshold": 2}, "recycle": {"drain_timeout_s": 2}},
        echo_pool("fine", 1),
    ]})
    st = fleet.wait_until(lambda s: s.slot("crash:0").generation >= 2 and s.slot("sick:0").generation >= 2, 60)
    assert st.slot("fine:0").generation == 1  # a crashing neighbour takes nothing else down
    assert any(e.kind == "slot.unhealthy" and e.slot == "crash:0" and "crashed on purpose" in e.message
               for e in st.events)


def test_supervisor_runs_at_control_plane_priority_above_its_slots(fleet):
    """Ray starts workers at nice 15; the supervisor takes the raylet's priority back so that a node
    saturated by slot processes can't starve the loop that supervises them."""
    fleet.apply({"pools": [echo_pool("prio", 1)]})
    st = fleet.wait_ready(60)
    slot_nice = psutil.Process(st.slot("prio:0").pid).nice()
    sup = psutil.Process(st.supervisor_pid)
    thread_nice = {os.getpriority(os.PRIO_PROCESS, t.id) for t in sup.threads()}
    if os.geteuid() == 0:
        assert st.supervisor_nice == 0 and st.supervisor_nice_problem is None
        assert thread_nice == {0} and slot_nice > 0  # every thread, Ray's own included
    else:  # pragma: no cover - CI runs as root
        assert st.supervisor_nice == slot_nice and "can't set nice" in st.supervisor_nice_problem
    # the step statistics cover the supervisor's recent steps
    st = fleet.wait_until(lambda s: s.steps > 20, 30)
    assert 0 < st.step_ms_p50 <= st.step_ms_p95
