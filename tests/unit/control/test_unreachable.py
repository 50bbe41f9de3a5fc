"""Slots that don't answer: "unavailable" is not "dead". Pure lifecycle and decide(), no Ray.

The observation sequences are the ones :class:`fleet_ray.actors.handles.SlotCalls` reports: a call
failing "temporarily unavailable" (``ActorUnavailableError``: connections reset, or a host gone but
not yet marked dead), a health check timing out while its host doesn't answer a probe either, and
Ray's verdicts (the actor or its node dead).
"""

from __future__ import annotations

from fleet_ray.cli.render import render_status
from fleet_ray.control.lifecycle import (
    Alive,
    Died,
    Drained,
    Gone,
    HealthReport,
    HealthTimeout,
    Ready,
    SlotRecord,
    SlotState,
    SlotTable,
    Unreachable,
    awaiting_death,
    begin_drain,
    finish_stop,
    kill_sent,
    observe,
    recheck_delay,
)
from fleet_ray.control.reconcile import (
    CheckHealth,
    Drain,
    Kill,
    NodeView,
    PushConfig,
    Start,
    decide,
    node_deaths,
)
from fleet_ray.control.recovery import settle
from fleet_ray.control.state import FleetState
from fleet_ray.control.status_view import SupervisorFacts, fleet_status
from fleet_ray.spec.models import FleetSpec, PoolSpec

RESET = "ActorUnavailableError: The actor 12ab is unavailable: The actor is temporarily unavailable: RpcError"


def pool(name="web", slots=2, **kw) -> PoolSpec:
    return PoolSpec(name=name, automation="builtin.echo", slots=slots, **kw)


def running(table: SlotTable, p: PoolSpec, index: int, gen: int = 1, node: str = "n2") -> SlotRecord:
    rec = SlotRecord(p.name, index, generation=gen, state=SlotState.STARTING, created_at=0.0)
    rec.shape_hash, rec.config_hash = p.slot_shape_hash(), p.config_hash()
    table.add(rec)
    observe(table, Ready(rec.key, gen, pid=100 + index, node_id=node), 0.0, p)
    rec.next_check_at = 1e9
    return rec


def kinds(events) -> list[str]:
    return [e.kind for e in events]


def test_a_reset_connection_makes_a_running_slot_unreachable_not_dead_and_it_comes_back():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    events = observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 10.0, p)
    assert kinds(events) == ["slot.unreachable"] and events[0].data["was"] == "running"
    assert rec.state is SlotState.UNREACHABLE and rec.reason.startswith("unreachable: ActorUnavailableError")
    assert not rec.failure_pending and rec.health_failures == 0
    # nothing replaces it, nothing drains it: it is re-checked soon
    assert decide({"web": p}, t, {"web": None}, 10.1) == []
    (check,) = decide({"web": p}, t, {"web": None}, 10.0 + recheck_delay(0, p.health.period_s))
    assert check == CheckHealth(("web", 0), 1, p.health.timeout_s)
    rec.health_inflight = True
    # the re-check answers: running again, same generation, no failure counted
    events = observe(t, HealthReport(rec.key, 1, ok=True, tasks=4), 11.0, p)
    assert kinds(events) == ["slot.reachable"] and events[0].data["unreachable_s"] == 1.0
    assert rec.state is SlotState.RUNNING and rec.reason == "" and rec.tasks == 4 and rec.generation == 1
    assert rec.failures == [] and rec.unreachable_since is None


def test_more_unavailable_errors_while_unreachable_change_nothing_and_failed_rechecks_back_off():
    p = pool(slots=1, health={"period_s": 5})
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    assert observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.5, p) == []  # the watch issued again
    waits = []
    now = 0.0
    for _ in range(6):
        (check,) = [a for a in decide({"web": p}, t, {"web": None}, rec.next_check_at) if isinstance(a, CheckHealth)]
        now = rec.next_check_at
        rec.health_inflight = True
        assert observe(t, Unreachable(rec.key, 1, RESET, call="health"), now, p) == []
        waits.append(rec.next_check_at - now)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]  # doubling, capped at the health period
    assert rec.state is SlotState.UNREACHABLE and not rec.health_inflight


def test_an_unreachable_slot_whose_node_ray_marks_dead_is_lost_and_replaced_at_once():
    p = pool(slots=2)
    t = SlotTable()
    a, b = running(t, p, 0, node="n2"), running(t, p, 1, node="n3")
    observe(t, Unreachable(a.key, 1, RESET, call="watch"), 1.0, p)
    nodes = [NodeView("n2", False, {"CPU": 2}, death_reason="health check failed due to missing too many heartbeats"),
             NodeView("n3", True, {"CPU": 2})]
    (died,) = node_deaths(t, nodes)
    assert died.key == ("web", 0) and died.host_lost and "node n2 dead (health check failed" in died.cause
    events = observe(t, died, 20.0, p)
    assert kinds(events) == ["slot.died"] and events[0].data == {"draining": False, "host_lost": True,
                                                                 "unreachable_s": 19.0}
    assert a.state is SlotState.STOPPING and a.reason.startswith("died: its host was lost")
    # lost with its host: not the position's failure (no heal backoff, no rollout failure)
    (kill,) = [x for x in decide({"web": p}, t, {"web": None}, 20.0) if isinstance(x, Kill)]
    assert kill.key == ("web", 0) and not kill.failure
    finish_stop(t, a.key, 20.0, p, kill.failure)
    assert a.state is SlotState.PENDING and a.failures == [] and a.backoff_until == 0.0
    assert Start(("web", 0), 2) in decide({"web": p}, t, {"web": None}, 20.0)
    assert b.state is SlotState.RUNNING and node_deaths(t, nodes) == []  # nothing left on the dead node


def test_every_slot_on_a_dead_node_dies_at_once_whatever_it_was_doing():
    p = pool(slots=5)
    t = SlotTable()
    run = running(t, p, 0)
    draining = running(t, p, 1)
    t.transition(draining.key, SlotState.DRAINING, "scaled down")
    unreachable = running(t, p, 2)
    observe(t, Unreachable(unreachable.key, 1, RESET, call="watch"), 0.0, p)
    starting = SlotRecord("web", 3, generation=1, state=SlotState.STARTING, created_at=0.0)
    t.add(starting)
    observe(t, Alive(starting.key, 1, "n2"), 1.0, p)  # placed on n2, not ready yet
    elsewhere = running(t, p, 4, node="n1")
    dead = [NodeView("n2", False, {"CPU": 2}), NodeView("n1", True, {"CPU": 2})]
    deaths = node_deaths(t, dead)
    assert sorted(d.key[1] for d in deaths) == [0, 1, 2, 3] and all(d.host_lost for d in deaths)
    for d in deaths:
        observe(t, d, 2.0, p)
    assert {r.state for r in (run, draining, unreachable, starting)} == {SlotState.STOPPING}
    assert elsewhere.state is SlotState.RUNNING
    assert node_deaths(t, [NodeView("n2", True, {"CPU": 2})]) == []  # a node list that says alive


def test_a_draining_slot_whose_host_stops_answering_waits_for_ray_not_for_its_drain():
    p = pool(slots=1, recycle={"drain_timeout_s": 30})
    t = SlotTable()
    rec = running(t, p, 0)
    t.transition(rec.key, SlotState.DRAINING, "reached max_tasks (5 >= 5)")
    rec.drain_deadline = 30.0
    observe(t, Unreachable(rec.key, 1, RESET, call="drain"), 1.0, p)
    assert rec.state is SlotState.UNREACHABLE and rec.resume_state is SlotState.DRAINING
    assert [a for a in decide({"web": p}, t, {"web": None}, 29.0) if not isinstance(a, CheckHealth)] == []
    # its node is marked dead well before the drain would have timed out: replaced at once
    (died,) = node_deaths(t, [NodeView("n2", False, {"CPU": 2})])
    events = observe(t, died, 16.0, p)
    assert events[0].data["draining"] and rec.state is SlotState.STOPPING
    (kill,) = decide({"web": p}, t, {"web": None}, 16.0)
    assert isinstance(kill, Kill) and not kill.failure and not kill.lost


def test_a_draining_slot_that_answers_again_goes_on_draining_with_its_reason():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    t.transition(rec.key, SlotState.DRAINING, "scaled down")
    rec.drain_deadline, rec.retire = 30.0, True
    observe(t, Unreachable(rec.key, 1, RESET, call="drain"), 1.0, p)
    assert kinds(observe(t, Drained(rec.key, 1), 3.0, p)) == ["slot.reachable"]  # the drain issued again finished
    assert rec.state is SlotState.STOPPING and rec.reason == "scaled down" and rec.retire


def test_an_unreachable_drain_that_runs_out_of_time_is_killed_as_lost():
    p = pool(slots=1, recycle={"drain_timeout_s": 5})
    t = SlotTable()
    rec = running(t, p, 0)
    t.transition(rec.key, SlotState.DRAINING, "unhealthy: boom")
    rec.drain_deadline, rec.failure_pending = 5.0, True
    observe(t, Unreachable(rec.key, 1, RESET, call="drain"), 1.0, p)
    (kill,) = decide({"web": p}, t, {"web": None}, 5.0)
    assert isinstance(kill, Kill) and kill.lost and kill.failure and kill.confirm
    assert kill.reason.startswith("drain timeout; unreachable for 4s (unreachable: ActorUnavailableError")


def test_a_slot_killed_while_unreachable_keeps_its_position_until_ray_confirms_its_process_is_gone():
    p = pool(slots=1, recycle={"drain_timeout_s": 5})
    t = SlotTable()
    rec = running(t, p, 0)
    t.transition(rec.key, SlotState.DRAINING, "reached max_tasks (5 >= 5)")
    rec.drain_deadline = 5.0
    observe(t, Unreachable(rec.key, 1, RESET, call="drain"), 1.0, p)
    (kill,) = decide({"web": p}, t, {"web": None}, 5.0)
    events = kill_sent(t, rec.key, 5.0, kill.reason)
    assert kinds(events) == ["slot.kill_sent"] and events[0].data["unreachable_s"] == 4.0
    assert kill_sent(t, rec.key, 6.0, kill.reason) == []  # repeatable
    assert rec.state is SlotState.STOPPING and awaiting_death(rec) and rec.persisted()["kill_sent_at"] == 5.0
    # nothing frees or refills the position meanwhile, whatever Ray's callers hear
    for now in (5.0, 30.0, 600.0):
        assert decide({"web": p}, t, {"web": None}, now) == []
    assert observe(t, Died(rec.key, 1, "ActorDiedError: killed by ray.kill"), 31.0, p) == []
    assert observe(t, Died(rec.key, 1, "its host was lost", host_lost=True), 31.0, p) == []
    assert awaiting_death(rec)
    # the evidence: its host's side says the process is gone
    events = observe(t, Gone(rec.key, 1, "its node's raylet reported its worker process (pid 9) exited"), 40.0, p)
    assert kinds(events) == ["slot.death_confirmed"] and events[0].data["after_kill_s"] == 35.0
    assert observe(t, Gone(rec.key, 1, "again"), 41.0, p) == []  # once
    (free,) = decide({"web": p}, t, {"web": None}, 41.0)
    assert free == Kill(("web", 0), 1, kill.reason, lost=True)
    finish_stop(t, rec.key, 41.0, p, free.failure)
    assert rec.kill_sent_at is None and not rec.death_confirmed
    assert Start(("web", 0), 2) in decide({"web": p}, t, {"web": None}, 41.0)


def test_the_node_of_a_slot_killed_while_unreachable_dying_is_its_confirmation():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0, node="n2")
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    kill_sent(t, rec.key, 1.0, "drain timeout")
    assert node_deaths(t, [NodeView("n2", True, {"CPU": 2})]) == []
    (gone,) = node_deaths(t, [NodeView("n2", False, {"CPU": 2}, death_reason="missing heartbeats")])
    assert gone == Gone(("web", 0), 1, "Ray marked node n2 dead (missing heartbeats)")
    observe(t, gone, 20.0, p)
    assert node_deaths(t, [NodeView("n2", False, {"CPU": 2})]) == []  # confirmed: nothing more to say


def test_a_restarted_supervisor_keeps_a_killed_slot_waiting_for_its_confirmation():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    kill_sent(t, rec.key, 1.0, "drain timeout; unreachable for 1s")
    t2 = SlotTable([SlotRecord.restore(rec.persisted())])
    settle(t2, {}, attached=set())  # no actor under its name (ray.kill released it)
    again = t2.get(("web", 0))
    assert again.state is SlotState.STOPPING and awaiting_death(again)
    assert again.reason == "drain timeout; unreachable for 1s"
    assert decide({"web": p}, t2, {"web": None}, 2.0) == []


def test_status_says_a_killed_slot_waits_for_ray_and_the_pool_is_not_ok():
    p = pool(slots=1)
    st = FleetState(fleet_name="f")
    st.set_desired(FleetSpec(name="f", pools=[p]))
    rec = running(st.table, p, 0, node="n2")
    observe(st.table, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    kill_sent(st.table, rec.key, 10.0, "drain timeout; unreachable for 10s")
    out = fleet_status(st, [], SupervisorFacts("ns", 1, 0.0, "memory://"), 25.0)
    web = out.pool("web")
    assert web.state == "unreachable"
    assert web.reason == ("1 killed while unreachable, not replaced until Ray confirms their processes are gone "
                          "(node n2): web:0")
    slot = out.slot("web:0")
    assert slot.state == "stopping"
    assert slot.reason == ("drain timeout; unreachable for 10s; killed 15s ago, waiting for Ray to confirm its "
                           "process is gone")


def test_a_config_push_that_got_no_answer_is_pushed_again_once_the_slot_answers():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    p2 = pool(slots=1, config={"tag": "x"})
    rec.config_inflight = True
    observe(t, Unreachable(rec.key, 1, RESET, call="config"), 1.0, p2)
    assert not rec.config_inflight and rec.state is SlotState.UNREACHABLE
    assert not any(isinstance(a, PushConfig) for a in decide({"web": p2}, t, {"web": None}, 1.2))
    observe(t, HealthReport(rec.key, 1, ok=True), 2.0, p2)
    assert PushConfig(("web", 0), 1, {"tag": "x"}, p2.config_hash()) in decide({"web": p2}, t, {"web": None}, 2.0)


def test_a_hung_slot_on_a_host_that_answers_is_still_unhealthy_and_recycled():
    p = pool(slots=1, health={"failure_threshold": 2})
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, "no answer to a health check in 3s, and its host doesn't answer either",
                           call="health"), 1.0, p)
    # the host answered the probe of a later check: the slot itself is hung
    assert kinds(observe(t, HealthTimeout(rec.key, 1), 5.0, p)) == ["slot.reachable"]
    observe(t, HealthTimeout(rec.key, 1), 10.0, p)
    assert rec.state is SlotState.RUNNING and rec.health_failures == 2
    (drain,) = decide({"web": p}, t, {"web": None}, 10.0)
    assert isinstance(drain, Drain) and drain.failure and "timed out" in drain.reason


def test_an_unreachable_slot_scaled_away_drains_once_it_answers():
    p = pool(slots=2)
    t = SlotTable()
    running(t, p, 0)
    rec = running(t, p, 1)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    small = pool(slots=1)
    (drain,) = [a for a in decide({"web": small}, t, {"web": None}, 0.1) if isinstance(a, Drain | Kill)]
    assert drain == Drain(("web", 1), 1, "scaled down", small.recycle.drain_timeout_s, retire=True)
    assert kinds(begin_drain(t, rec.key, 0.1, drain.reason, drain.timeout_s, retire=True)) == ["slot.draining"]
    # still unreachable (nothing answered), now to drain: asked once, not again
    assert rec.state is SlotState.UNREACHABLE and rec.resume_state is SlotState.DRAINING and rec.retire
    assert not [a for a in decide({"web": small}, t, {"web": None}, 1.0) if isinstance(a, Drain | Kill)]
    observe(t, HealthReport(rec.key, 1, ok=True), 1.0, small)  # it answers: it drains
    assert rec.state is SlotState.DRAINING and rec.reason == "scaled down"


def test_an_unreachable_slot_scaled_away_that_never_answers_is_killed_at_its_drain_timeout():
    p = pool(slots=1, recycle={"drain_timeout_s": 10})
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    none = pool(slots=0, recycle={"drain_timeout_s": 10})
    (drain,) = decide({"web": none}, t, {"web": None}, 1.0)
    begin_drain(t, rec.key, 1.0, drain.reason, drain.timeout_s, retire=True)
    assert [a for a in decide({"web": none}, t, {"web": None}, 10.9) if not isinstance(a, CheckHealth)] == []
    (kill,) = decide({"web": none}, t, {"web": None}, 11.0)
    assert isinstance(kill, Kill) and kill.confirm and kill.lost and kill.reason.startswith("drain timeout")


def test_a_recycle_asked_for_an_unreachable_slot_is_a_drain_it_does_once_it_answers():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    rec.recycle_requested = "recycled by operator"
    (drain,) = decide({"web": p}, t, {"web": None}, 0.1)
    assert drain == Drain(("web", 0), 1, "recycled by operator", p.recycle.drain_timeout_s)
    # a config change that needs a fresh slot rolls within the pool's budget instead, once it answers
    rec.recycle_requested = "config change needs a fresh slot: tag"
    assert not [a for a in decide({"web": p}, t, {"web": None}, 0.2) if isinstance(a, Drain | Kill)]


def test_an_unreachable_starting_slot_scaled_away_is_killed_at_once_and_waits_for_confirmation():
    p = pool(slots=1)
    t = SlotTable()
    rec = SlotRecord("web", 0, generation=1, state=SlotState.STARTING, created_at=0.0)
    t.add(rec)
    observe(t, Unreachable(rec.key, 1, RESET, call="alive"), 1.0, p)
    (kill,) = decide({"web": pool(slots=0)}, t, {"web": None}, 2.0)
    assert kill == Kill(("web", 0), 1, "scaled down", lost=True, confirm=True)


def test_a_slot_unreachable_longer_than_unreachable_max_s_is_killed_and_replaced_only_once_confirmed():
    p = pool(slots=1, health={"unreachable_max_s": 30})
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, "no answer to a health check in 3s, and its host (node n2) doesn't answer "
                           "either", call="health"), 10.0, p)
    assert [a for a in decide({"web": p}, t, {"web": None}, 39.9) if not isinstance(a, CheckHealth)] == []
    (kill,) = decide({"web": p}, t, {"web": None}, 40.0)
    assert isinstance(kill, Kill) and kill.confirm and kill.lost and not kill.failure
    assert kill.reason.startswith("unreachable for 30s (health.unreachable_max_s: 30s; unreachable: no answer")
    kill_sent(t, rec.key, 40.0, kill.reason)
    assert decide({"web": p}, t, {"web": None}, 400.0) == []  # not refilled before Ray's word
    observe(t, Gone(rec.key, 1, "its node's raylet reported its worker process exited"), 401.0, p)
    (free,) = decide({"web": p}, t, {"web": None}, 401.0)
    assert free == Kill(("web", 0), 1, kill.reason, lost=True)
    finish_stop(t, rec.key, 401.0, p, free.failure)
    assert Start(("web", 0), 2) in decide({"web": p}, t, {"web": None}, 401.0)


def test_unreachable_max_s_defaults_to_two_minutes_and_must_be_positive():
    assert pool().health.unreachable_max_s == 120.0
    for bad in (0, -1):
        try:
            pool(health={"unreachable_max_s": bad})
        except ValueError as exc:
            assert "unreachable_max_s" in str(exc)
        else:
            raise AssertionError(f"unreachable_max_s={bad} was accepted")


def test_a_slot_that_ray_says_died_while_unreachable_counts_as_its_own_failure():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    events = observe(t, Died(rec.key, 1, "Ray says the actor is dead: the worker process died"), 2.0, p)
    assert kinds(events) == ["slot.died"] and rec.failure_pending
    assert rec.reason == "died: Ray says the actor is dead: the worker process died"


def test_an_unreachable_slot_is_checkpointed_as_the_state_it_returns_to():
    p = pool(slots=1)
    t = SlotTable()
    rec = running(t, p, 0)
    observe(t, Unreachable(rec.key, 1, RESET, call="watch"), 0.0, p)
    assert rec.persisted()["state"] == "running"
    assert SlotRecord.restore(rec.persisted()).state is SlotState.RUNNING
    # a restarted supervisor that finds no actor under its name marks it lost, as any live state
    t2 = SlotTable([SlotRecord("web", 0, generation=1, state=SlotState.UNREACHABLE)])
    settle(t2, {}, attached=set())
    assert t2.get(("web", 0)).state is SlotState.STOPPING


def test_status_names_the_unreachable_slots_and_the_pool_is_not_ok():
    p = pool(slots=3)
    st = FleetState(fleet_name="f")
    st.set_desired(FleetSpec(name="f", pools=[p]))
    for i in range(3):
        running(st.table, p, i, node="n2" if i else "n1")
    for i in (1, 2):
        observe(st.table, Unreachable(("web", i), 1, RESET, call="watch"), 10.0, p)
    out = fleet_status(st, [], SupervisorFacts("ns", 1, 0.0, "memory://"), 14.5)
    web = out.pool("web")
    assert web.state == "unreachable" and web.counts == {"running": 1, "unreachable": 2}
    assert web.reason == "2 slot(s) not answering (node n2): web:1, web:2"
    slot = out.slot("web:1")
    assert slot.state == "unreachable" and slot.unreachable_s == 4.5 and slot.reason.startswith("unreachable:")
    assert out.slot("web:0").state == "running" and out.slot("web:0").unreachable_s is None
    shown = render_status(out)  # the CLI: the state, and why and since when instead of a stale phase
    assert "pool web  [unreachable]" in shown and "reason: 2 slot(s) not answering" in shown
    line = next(row for row in shown.splitlines() if row.startswith("web:1"))
    assert "unreachable" in line and "for 0m04s: unreachable: ActorUnavailableError" in line


def test_a_draining_slot_is_health_checked_so_a_silent_host_shows_as_unreachable():
    p = pool(slots=1, health={"period_s": 2, "timeout_s": 1})
    t = SlotTable()
    rec = running(t, p, 0)
    t.transition(rec.key, SlotState.DRAINING, "recycled by operator")
    rec.drain_deadline, rec.next_check_at = 100.0, 5.0
    assert decide({"web": p}, t, {"web": None}, 4.9) == []
    (check,) = decide({"web": p}, t, {"web": None}, 5.0)
    assert check == CheckHealth(("web", 0), 1, 1.0)
    rec.health_inflight = True
    observe(t, HealthReport(rec.key, 1, ok=True), 5.1, p)  # it answers: still draining, checked again later
    assert rec.state is SlotState.DRAINING and rec.next_check_at == 7.1 and not rec.health_inflight
    rec.health_inflight = True
    observe(t, Unreachable(rec.key, 1, "no answer to a health check in 1s, and its host doesn't answer either",
                           call="health"), 8.2, p)
    assert rec.state is SlotState.UNREACHABLE and rec.resume_state is SlotState.DRAINING
