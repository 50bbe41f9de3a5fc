"""decide() and the slot lifecycle, with fakes: no Ray."""

from __future__ import annotations

from fleet_ray.control.lifecycle import (
    Alive,
    ConfigResult,
    Died,
    HealthReport,
    HealthTimeout,
    Ready,
    SlotRecord,
    SlotState,
    SlotTable,
    StartFailed,
    finish_stop,
    observe,
)
from fleet_ray.control.reconcile import (
    CheckHealth,
    Drain,
    Forget,
    Kill,
    MarkPending,
    NodeView,
    PushConfig,
    Start,
    decide,
    placement_problem,
)
from fleet_ray.spec.models import Placement, PoolSpec
from fleet_ray.testing import FakeClock


def pool(name="web", slots=2, **kw) -> PoolSpec:
    return PoolSpec(name=name, automation="builtin.echo", slots=slots, **kw)


def running(table: SlotTable, p: PoolSpec, index: int, gen: int = 1, now: float = 0.0) -> SlotRecord:
    rec = SlotRecord(p.name, index, generation=gen, state=SlotState.STARTING, created_at=now)
    rec.shape_hash, rec.config_hash = p.slot_shape_hash(), p.config_hash()
    table.add(rec)
    observe(table, Ready(rec.key, gen, pid=100 + index, node_id="n1"), now, p)
    return rec


NODES = [NodeView("n1", True, {"CPU": 2, "browser": 4}, {"region": "eu"})]


def test_empty_table_starts_every_position_with_generation_one():
    p = pool(slots=3)
    actions = decide({"web": p}, SlotTable(), {"web": None}, 0.0)
    assert actions == [Start(("web", i), 1) for i in range(3)]


def test_decide_is_repeatable_and_does_not_mutate():
    p = pool(slots=2)
    t = SlotTable()
    running(t, p, 0)
    a1 = decide({"web": p}, t, {"web": None}, 100.0)
    a2 = decide({"web": p}, t, {"web": None}, 100.0)
    assert a1 == a2 and a1 == [CheckHealth(("web", 0), 1, 3.0), Start(("web", 1), 1)]


def test_infeasible_pool_marks_positions_pending_once():
    p = pool(slots=2, placement=Placement(resources={"gpu": 1}))
    reason = placement_problem(p.placement, NODES)
    assert reason == "no node has resource 'gpu'"
    t = SlotTable()
    actions = decide({"web": p}, t, {"web": reason}, 0.0)
    assert actions == [MarkPending(("web", 0), reason), MarkPending(("web", 1), reason)]
    for a in actions:
        t.add(SlotRecord("web", a.key[1], reason=reason))
    assert decide({"web": p}, t, {"web": reason}, 1.0) == []


def test_placement_problem_names_labels_and_amounts():
    assert placement_problem(Placement(resources={"browser": 8}), NODES) == (
        "no node has 8 of resource 'browser' (largest: 4)"
    )
    assert placement_problem(Placement(labels={"region": "us"}), NODES) == "no node has label region=us"
    assert placement_problem(Placement(resources={"browser": 1}, labels={"region": "eu"}), NODES) is None
    dead = [NodeView("n1", False, {"CPU": 2})]
    assert placement_problem(Placement(), dead) == "no alive node"


def test_health_failures_past_threshold_drain_as_a_failure():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    for i in range(3):
        rec.health_inflight = True
        observe(t, HealthTimeout(rec.key, 1), 10.0 + i, p)
    assert rec.health_failures == 3
    (a,) = decide({"web": p}, t, {"web": None}, 20.0)
    assert isinstance(a, Drain) and a.failure and "timed out" in a.reason


def test_successful_health_resets_failures_and_schedules_next_check():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, HealthTimeout(rec.key, 1), 1.0, p)
    observe(t, HealthReport(rec.key, 1, ok=True, tasks=7, rss_mb=50), 2.0, p, jitter=0.1)
    assert rec.health_failures == 0 and rec.tasks == 7
    assert rec.next_check_at == 2.0 + 5.0 * 1.1


def test_death_leads_to_kill_then_next_generation():
    clock = FakeClock(0)
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    events = observe(t, Died(rec.key, 1, "SIGKILL"), clock(), p)
    assert [e.kind for e in events] == ["slot.died"] and rec.state is SlotState.STOPPING
    (kill,) = decide({"web": p}, t, {"web": None}, clock())
    assert kill == Kill(("web", 0), 1, "died: SIGKILL", failure=True)
    evs = finish_stop(t, rec.key, clock(), p, failure=True)
    assert [e.kind for e in evs] == ["slot.recycled"] and rec.state is SlotState.FAILED
    assert decide({"web": p}, t, {"web": None}, clock()) == [Start(("web", 0), 2)]


def test_stale_observations_of_older_generations_are_ignored():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0, gen=3)
    assert observe(t, Died(rec.key, 2, "old"), 1.0, p) == []
    assert rec.state is SlotState.RUNNING


def test_repeated_failures_back_off_exponentially_and_escalate_once_over():
    clock = FakeClock(0)
    p = pool(slots=1, heal={"max_failures": 2, "window_s": 100, "backoff_base_s": 4, "backoff_max_s": 10})
    t = SlotTable()
    t.add(SlotRecord("web", 0))
    delays, escalations = [], 0
    for gen in range(1, 5):
        (start,) = decide({"web": p}, t, {"web": None}, clock())
        assert start == Start(("web", 0), gen)
        rec = t.get(("web", 0))
        rec.generation, rec.created_at = gen, clock()
        t.transition(rec.key, SlotState.STARTING)
        observe(t, StartFailed(rec.key, gen, "boom"), clock(), p)
        evs = finish_stop(t, rec.key, clock(), p, failure=True)
        escalations += sum(e.kind == "slot.heal_escalated" for e in evs)
        delays.append(rec.backoff_until - clock())
        assert decide({"web": p}, t, {"web": None}, clock()) == ([] if delays[-1] > 0 else [Start(("web", 0), gen + 1)])
        clock.advance(max(delays[-1], 0) + 0.001)
    assert delays == [0, 4, 8, 10]  # capped at backoff_max_s
    assert escalations == 3


def test_recycle_policy_max_tasks_age_and_rss():
    p = pool(slots=1, recycle={"max_tasks": 5, "max_age_s": 100, "max_rss_mb": 300})
    t = SlotTable()
    rec = running(t, p, 0, now=0.0)
    rec.next_check_at = 1e9
    assert decide({"web": p}, t, {"web": None}, 50.0) == []
    rec.tasks = 5
    (a,) = decide({"web": p}, t, {"web": None}, 50.0)
    assert isinstance(a, Drain) and "max_tasks" in a.reason and not a.failure
    rec.tasks = 0
    assert "max_age_s" in decide({"web": p}, t, {"web": None}, 100.0)[0].reason
    rec.rss_mb = 400
    assert "max_rss_mb" in decide({"web": p}, t, {"web": None}, 10.0)[0].reason


def test_config_change_is_pushed_and_a_refusal_recycles():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    rec.next_check_at = 1e9
    p2 = pool(slots=1, config={"tag": "x"})
    (a,) = decide({"web": p2}, t, {"web": None}, 1.0)
    assert a == PushConfig(("web", 0), 1, {"tag": "x"}, p2.config_hash())
    rec.config_inflight = True
    assert decide({"web": p2}, t, {"web": None}, 1.0) == []
    observe(t, ConfigResult(rec.key, 1, applied=False, config_hash=p2.config_hash()), 2.0, p2)
    (d,) = decide({"web": p2}, t, {"web": None}, 2.0)
    assert isinstance(d, Drain) and "fresh slot" in d.reason


def test_shape_change_recycles_running_slots():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    rec.next_check_at = 1e9
    p2 = pool(slots=1, placement=Placement(resources={"browser": 1}))
    (d,) = decide({"web": p2}, t, {"web": None}, 1.0)
    assert isinstance(d, Drain) and "spec changed" in d.reason


def test_scale_down_drains_surplus_and_forgets_pending_positions():
    p = pool(slots=3)
    t = SlotTable()
    for i in range(2):
        running(t, p, i).next_check_at = 1e9
    t.add(SlotRecord("web", 2, state=SlotState.PENDING, reason="x"))
    smaller = pool(slots=1)
    actions = decide({"web": smaller}, t, {"web": None}, 1.0)
    assert Forget(("web", 2)) in actions
    (drain,) = [a for a in actions if isinstance(a, Drain)]
    assert drain.key == ("web", 1) and drain.retire
    # a removed pool drains everything
    assert {a.key for a in decide({}, t, {}, 1.0) if isinstance(a, Drain)} == {("web", 0), ("web", 1)}


def test_drain_timeout_kills_and_start_timeout_fails():
    p = pool(slots=1, health={"start_timeout_s": 10})
    t = SlotTable()
    rec = SlotRecord("web", 0, generation=1, state=SlotState.STARTING, created_at=0.0)
    t.add(rec)
    # still queued in Ray (no process yet): a busy cluster is not the automation's failure
    assert decide({"web": p}, t, {"web": None}, 500.0) == []
    observe(t, Alive(rec.key, 1), 495.0, p)
    assert decide({"web": p}, t, {"web": None}, 500.0) == []
    (k,) = decide({"web": p}, t, {"web": None}, 506.0)
    assert isinstance(k, Kill) and k.failure and "not ready within 10s of its process starting" in k.reason
    t.transition(rec.key, SlotState.DRAINING)
    rec.drain_deadline, rec.next_check_at = 520.0, 1e9  # (a draining slot's health checks: their own test)
    assert decide({"web": p}, t, {"web": None}, 519.0) == []
    assert decide({"web": p}, t, {"web": None}, 520.0) == [Kill(("web", 0), 1, "drain timeout")]


def test_table_is_keyed_by_state_and_records_round_trip():
    t = SlotTable([SlotRecord("a", 0), SlotRecord("a", 1, state=SlotState.RUNNING)])
    assert [r.key for r in t.in_state(SlotState.RUNNING)] == [("a", 1)]
    t.transition(("a", 0), SlotState.STARTING)
    assert t.count(SlotState.PENDING) == 0 and t.count(SlotState.STARTING) == 1
    rec = t.get(("a", 1))
    rec.failures, rec.recycles, rec.generation = [1.0, 2.0], 4, 9
    back = SlotRecord.restore(rec.persisted())
    assert (back.generation, back.recycles, back.failures, back.state) == (9, 4, [1.0, 2.0], SlotState.RUNNING)


def test_spec_driven_replacements_roll_within_the_unavailability_budget():
    p = pool(slots=4)
    t = SlotTable()
    for i in range(4):
        running(t, p, i).next_check_at = 1e9
    changed = pool(slots=4, placement=Placement(resources={"browser": 1}), rollout={"max_unavailable": 2})
    drains = [a for a in decide({"web": changed}, t, {"web": None}, 1.0) if isinstance(a, Drain)]
    assert [d.key[1] for d in drains] == [0, 1]  # two at a time, the rest keep serving
    t.transition(("web", 0), SlotState.DRAINING)
    drains = [a for a in decide({"web": changed}, t, {"web": None}, 1.0) if isinstance(a, Drain)]
    assert [d.key[1] for d in drains] == [1]
    # an unhealthy slot is replaced at once, budget or not
    t.get(("web", 3)).health_failures = 3
    t.transition(("web", 1), SlotState.DRAINING)
    drains = [a for a in decide({"web": changed}, t, {"web": None}, 1.0) if isinstance(a, Drain)]
    assert [(d.key[1], d.failure) for d in drains] == [(3, True)]


def test_config_changes_that_need_fresh_slots_roll_one_at_a_time():
    p = pool(slots=3)
    t = SlotTable()
    for i in range(3):
        rec = running(t, p, i)
        rec.next_check_at = 1e9
        rec.recycle_requested = "config change needs a fresh slot"
    drains = [a for a in decide({"web": p}, t, {"web": None}, 1.0) if isinstance(a, Drain)]
    assert [d.key[1] for d in drains] == [0]
    # slots awaiting their turn keep being health-checked
    for i in (1, 2):
        t.get(("web", i)).next_check_at = 0.5
    checks = [a.key[1] for a in decide({"web": p}, t, {"web": None}, 1.0) if isinstance(a, CheckHealth)]
    assert checks == [1, 2]


def test_rollout_waits_for_the_replacement_to_pass_a_health_check_and_can_be_paused():
    p = pool(slots=2)
    t = SlotTable()
    for i in range(2):
        running(t, p, i).next_check_at = 1e9
    new = pool(slots=2, version="0.1.0")
    (d,) = [a for a in decide({"web": new}, t, {"web": None}, 1.0) if isinstance(a, Drain)]
    assert d.key == ("web", 0)
    assert [a for a in decide({"web": new}, t, {"web": None}, 1.0, frozenset({"web"})) if isinstance(a, Drain)] == []
    # position 0 replaced by a new-version slot that is running but not yet health-checked
    t.remove(("web", 0))
    rec = running(t, new, 0, gen=2)
    rec.next_check_at = 1e9
    assert [a for a in decide({"web": new}, t, {"web": None}, 2.0) if isinstance(a, Drain)] == []
    observe(t, HealthReport(rec.key, 2, ok=True), 2.0, new)
    drains = [a for a in decide({"web": new}, t, {"web": None}, 2.0) if isinstance(a, Drain)]
    assert [a.key for a in drains] == [("web", 1)]


def test_a_queued_slot_whose_placement_became_impossible_is_killed_then_reported_pending():
    # created for a node that died before Ray gave it a process: Ray would queue it for ever
    p = pool(slots=1, placement=Placement(labels={"region": "eu"}))
    t = SlotTable()
    rec = SlotRecord("web", 0, generation=2, state=SlotState.STARTING, created_at=0.0, node_id="gone")
    t.add(rec)
    assert decide({"web": p}, t, {"web": None}, 1.0) == []  # still placeable: keep waiting
    problem = placement_problem(p.placement, [NodeView("n2", True, {"CPU": 2}, {"region": "us"})])
    (k,) = decide({"web": p}, t, {"web": problem}, 2.0)
    assert k == Kill(("web", 0), 2, "can't be placed: no node has label region=eu") and not k.failure
    finish_stop(t, k.key, 2.0, p, k.failure)
    assert rec.state is SlotState.PENDING and rec.node_id == "" and rec.generation == 2
    assert decide({"web": p}, t, {"web": problem}, 3.0) == [MarkPending(("web", 0), problem)]
    # a slot that already has its process is not touched by a placement problem (it is running there)
    alive = SlotRecord("web", 0, generation=3, state=SlotState.STARTING, created_at=0.0, alive_at=1.0)
    t2 = SlotTable()
    t2.add(alive)
    assert decide({"web": p}, t2, {"web": problem}, 2.0) == []


def test_generations_continue_after_a_position_is_scaled_away_and_back():
    p = pool(slots=2)
    t = SlotTable()
    running(t, p, 0, gen=3)
    running(t, p, 1, gen=5)
    small = pool(slots=1)
    (d,) = [a for a in decide({"web": small}, t, {"web": None}, 1.0) if isinstance(a, Drain)]
    assert d.key == ("web", 1) and d.retire
    t.transition(d.key, SlotState.DRAINING)
    finish_stop(t, d.key, 2.0, small, failure=False)  # scaled away: the record is removed
    assert t.get(("web", 1)) is None and t.last_generation(("web", 1)) == 5
    starts = [a for a in decide({"web": p}, t, {"web": None}, 3.0) if isinstance(a, Start)]
    assert starts == [Start(("web", 1), 6)]
    # a floor known only from the store (a write-ahead generation) counts the same
    t.raise_floor(("web", 7), 9)
    t.raise_floor(("web", 7), 4)
    assert t.last_generation(("web", 7)) == 9 and t.floors()[("web", 7)] == 9
