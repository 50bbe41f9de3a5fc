"""Typed events around the generic envelope, and the durable log's queries, cap and live tail."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC
from fleet_ray.observe.kinds import (
    EVENT_TYPES,
    SlotDied,
    SlotReady,
    StreamBackpressure,
    TaskFailed,
    typed,
)
from fleet_ray.testing import FakeClock, MemoryStore


def test_a_typed_event_travels_as_the_envelope_and_comes_back_typed():
    clock = FakeClock(1000.0)
    hlc = HLC(clock.ms)
    ev = TaskFailed.stamp(hlc, pool="web", slot="web:0", generation=2, task="j:7", phase="parse",
                          error_type="ValueError", frame="acme.parse:12", error="bad")
    env = ev.to_event()
    assert isinstance(env, Event) and env.kind == "task.failed" and env.physical == 1_000_000
    assert env.data == {"task": "j:7", "phase": "parse", "step": None, "error_type": "ValueError",
                        "frame": "acme.parse:12", "error": "bad", "attempt": 1}
    back = typed(env.model_dump(mode="json"))
    assert isinstance(back, TaskFailed) and back == ev


def test_the_supervisors_generic_events_parse_as_their_models():
    env = Event(kind="slot.ready", physical=5, counter=1, pool="web", slot="web:1", generation=3,
                message="pid 42", data={"pid": 42})
    ready = typed(env)
    assert isinstance(ready, SlotReady) and ready.pid == 42 and ready.slot == "web:1"
    assert typed(Event(kind="something.new", physical=1)).kind == "something.new"  # unknown stays generic
    core_kinds = {"slot.started", "slot.pending", "slot.ready", "slot.start_failed", "slot.unhealthy",
                  "slot.draining", "slot.died", "slot.recycled", "slot.removed", "slot.heal_escalated",
                  "config.applied", "config.rejected", "config.needs_restart", "pool.applied", "supervisor.recovered"}
    assert core_kinds <= set(EVENT_TYPES)
    with pytest.raises(ValidationError):
        StreamBackpressure(physical=1, stream="a.b", depth="many", capacity=1)


def test_every_event_ticks_the_clock_so_the_log_keeps_causal_order():
    clock = FakeClock(1000.0)
    hlc = HLC(clock.ms)
    events = [SlotDied.stamp(hlc, pool="a", slot="a:0", generation=g) for g in range(5)]  # same wall ms
    assert [e.counter for e in events] == [0, 1, 2, 3, 4]
    log = EventLog(MemoryStore())
    assert log.append(list(reversed(events))) == 5
    assert log.append(events) == 0  # idempotent by id
    assert [e.generation for e in log.query_typed(kind="slot.died")] == [0, 1, 2, 3, 4]


def test_queries_by_kind_prefix_pool_slot_origin_and_time_range():
    log = EventLog(MemoryStore())
    log.append([
        Event(kind="slot.ready", physical=10, pool="a", slot="a:0"),
        Event(kind="slot.died", physical=20, pool="a", slot="a:1"),
        Event(kind="task.failed", physical=30, pool="b", slot="b:0", origin="fleet:b:0:g1",
              data={"task": "t", "error_type": "E", "frame": "f"}),
        Event(kind="stream.backpressure", physical=40, pool="a",
              data={"stream": "a.x", "depth": 5, "capacity": 5}),
    ])
    assert [e.kind for e in log.query(kinds=["slot.*"])] == ["slot.ready", "slot.died"]
    assert [e.kind for e in log.query(pool="a", since_ms=15)] == ["slot.died", "stream.backpressure"]
    assert [e.kind for e in log.query(slot="b:0")] == ["task.failed"]
    assert [e.kind for e in log.query(origin="fleet:b:0:g1")] == ["task.failed"]
    assert [e.kind for e in log.query(since_ms=10, until_ms=30)] == ["slot.ready", "slot.died"]
    first = log.query(limit=1)[0]
    assert [e.kind for e in log.query(after=(first.physical, first.counter, first.id), limit=1)] == ["slot.died"]
    assert isinstance(log.query_typed(kind="stream.backpressure")[0], StreamBackpressure)


def test_the_log_is_capped_and_keeps_the_newest():
    log = EventLog(MemoryStore(), max_len=3)
    log.append([Event(kind="k", physical=i) for i in range(10)])
    assert log.size() == 3 and [e.physical for e in log.query()] == [7, 8, 9]


def test_follow_tails_the_log_live():
    store = MemoryStore()
    log = EventLog(store)
    log.append([Event(kind="old", physical=1)])
    pending = [[Event(kind="slot.ready", physical=100)], [Event(kind="slot.died", physical=200),
                                                            Event(kind="noise", physical=300)]]

    def sleep(_s):  # each poll, another process appends
        if pending:
            log.append(pending.pop(0))

    seen = []
    for ev in log.follow(after=(50, 0, ""), poll_s=0, kinds=["slot.*"], sleep=sleep):
        seen.append(ev.kind)
        if len(seen) == 2:
            break
    assert seen == ["slot.ready", "slot.died"]


def test_events_from_a_slot_whose_clock_runs_far_ahead_are_clamped_on_ingest():
    from fleet_ray.actors.services import FleetServices
    from fleet_ray.actors.supervisor_events import EventJournal
    from fleet_ray.actors.supervisor_store import StoreGateway
    from fleet_ray.control.state import FleetState
    from fleet_ray.testing import FakeSlotCalls, MemoryStore

    clock = FakeClock(1000.0)
    journal = EventJournal(HLC(clock.ms, max_skew_ms=60_000))
    svc = FleetServices("f", FleetState(fleet_name="f"), journal, StoreGateway("memory://", "f", MemoryStore()),
                        FakeSlotCalls())
    try:
        slot_clock = HLC(FakeClock(1000.0 + 3600).ms)  # an hour ahead
        ahead = TaskFailed.stamp(slot_clock, origin="fleet:a:0:g1", pool="a", slot="a:0", task="t",
                                 error_type="ValueError", frame="acme.f:1")
        near = TaskFailed.stamp(HLC(FakeClock(1000.0 + 5).ms), origin="fleet:a:1:g1", pool="a", slot="a:1",
                                task="u", error_type="ValueError", frame="acme.f:1")
        assert svc.ingest([ahead.to_event().model_dump(mode="json"), near.to_event().model_dump(mode="json")]) == 2
        stored = journal.take_unsaved()
        assert stored[0].physical == clock.ms() + 60_000  # clamped to wall + max skew
        assert stored[1].physical == near.physical  # within the skew: kept as stamped
        assert journal.hlc.last.physical <= clock.ms() + 60_000
        groups = svc.errors.groups()
        assert len(groups) == 1 and groups[0].count == 2 and groups[0].slots == ["a:0", "a:1"]
    finally:
        svc.reporter.close()


def test_one_matcher_for_kinds_and_filters():
    from fleet_ray.observe.events import kind_matches, matches

    assert kind_matches("slot.died", ["slot.*"]) and kind_matches("slot.died", ["x", "slot.died"])
    assert not kind_matches("slot.died", ["slot.dead", "task.*"]) and not kind_matches("slot.died", [])
    e = Event(id="b", kind="slot.died", physical=2000, counter=1, pool="web", slot="web:0")
    assert matches(e) and matches(e, kinds=["slot.*"], pool="web", slot="web:0", since_ms=2000, until_ms=2001)
    assert matches(e, after=(2000, 1, "a")) and not matches(e, after=[2000, 1, "b"])  # the cursor is exclusive
    assert not matches(e, until_ms=2000) and not matches(e, pool="") and not matches(e, origin="slot")


def test_the_envelope_kinds_and_log_modules_import_in_one_direction():
    import ast
    import importlib

    def imports(mod: str) -> set[str]:
        tree = ast.parse(open(importlib.import_module(mod).__file__).read())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert not imports("fleet_ray.observe.envelope") & {"fleet_ray.observe.kinds", "fleet_ray.observe.events"}
    assert "fleet_ray.observe.events" not in imports("fleet_ray.observe.kinds")
