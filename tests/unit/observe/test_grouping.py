"""Grouping failures by (exception type, first frame in user code), and the crash bridge's merge."""

from __future__ import annotations

import json

from fleet_ray.observe.crashes import CrashError, SlotContext, list_crashes, merge_crash, record_crash
from fleet_ray.observe.grouping import ErrorGrouper, FailureRecord, cause_signature, fingerprint
from fleet_ray.store import keys
from fleet_ray.testing import MemoryStore

USER = [__name__]


def parse_price(text: str) -> float:
    return json.loads(text)["price"]  # raises inside the json library


def parse_other(text: str) -> float:
    return json.loads(text)["price"]


def caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_the_frame_is_the_innermost_one_in_user_code_not_the_library():
    fp = fingerprint(caught(parse_price, "{nope"), USER)
    assert fp.error_type == "json.decoder.JSONDecodeError"
    assert fp.frame.startswith(f"{__name__}.parse_price:")
    # the same error from another line of user code is another group; the same line is the same group
    assert fingerprint(caught(parse_other, "{"), USER) != fp
    assert fingerprint(caught(parse_price, "[1"), USER) == fp
    # without declared user modules, stdlib frames are still skipped
    assert fingerprint(caught(parse_price, "{nope")).frame.startswith(f"{__name__}.parse_price:")
    assert fingerprint(caught(lambda: {}["k"]), USER).error_type == "KeyError"


def test_a_group_counts_failures_and_remembers_slots_phases_and_when():
    groups = ErrorGrouper()
    for i in range(10):
        g, new = groups.add(FailureRecord(error_type="ValueError", frame="acme.parse:3", message=f"bad {i}",
                                          pool="web", slot=f"web:{i % 4}", phase="parse" if i < 8 else "save",
                                          at=100.0 + i))
        assert new is (i == 0)
    groups.add(FailureRecord(error_type="KeyError", frame="acme.save:9", pool="db", slot="db:0", at=50.0))
    first, second = groups.groups()
    assert first.count == 10 and first.slots == ["web:0", "web:1", "web:2", "web:3"]
    assert first.phases == ["parse", "save"] and (first.first_seen, first.last_seen) == (100.0, 109.0)
    assert first.sample == "bad 9" and second.error_type == "KeyError"
    assert [g.key for g in groups.groups(pool="db")] == ["KeyError @ acme.save:9"]


def test_alike_deaths_group_by_their_masked_cause():
    a = cause_signature("ActorDiedError: worker 1a2b3c4d5e6f7a8b (pid 4242) was killed by signal 9")
    b = cause_signature("ActorDiedError: worker ffee00112233aabb (pid 77) was killed by signal 9")
    assert a == b and "4242" not in a


# -- the crash bridge's merge -------------------------------------------------------------------------
def ctx(**kw) -> SlotContext:
    return SlotContext(pool="web", index=1, generation=4, pid=77, node_id="n1", **kw)


def test_a_sigkilled_slot_still_gets_a_full_record_from_what_it_wrote_as_it_went():
    rec = merge_crash("web", 1, 4, ctx(tasks=["job:17"], phase="fetch", step="page 2"), died=True,
                      death_cause="ActorDiedError: the worker was killed", now=5.0)
    assert (rec.id, rec.slot, rec.generation, rec.task, rec.phase, rec.step) == ("web:1:g4", "web:1", 4, "job:17", "fetch", "page 2")
    assert rec.cause.startswith("ActorDiedError") and rec.sources == ["slot", "supervisor"]
    assert rec.failure().error_type == "SlotDied"


def test_a_slot_that_wrote_nothing_is_filled_in_by_the_supervisor():
    rec = merge_crash("web", 1, 4, None, died=True, death_cause="worker died", seen={"pid": 9, "phase": "login"})
    assert rec.sources == ["supervisor"] and rec.pid == 9 and rec.phase == "login" and rec.task is None


def test_an_error_the_slot_recorded_and_its_death_make_one_record():
    err = CrashError(error_type="RuntimeError", frame="acme.worker:5", message="RuntimeError: boom",
                     source="thread", phase="parse")
    rec = merge_crash("web", 1, 4, ctx(tasks=["j:1"], phase="fetch", error=err), died=True, death_cause="killed")
    assert rec.error_type == "RuntimeError" and rec.phase == "parse" and rec.sources == ["slot", "thread", "supervisor"]
    assert "boom" in rec.cause and "killed" in rec.cause
    assert rec.failure().frame == "acme.worker:5"


def test_a_clean_stop_is_no_crash():
    assert merge_crash("web", 1, 4, ctx(tasks=[]), died=False, death_cause="scaled down") is None
    assert merge_crash("web", 1, 4, None, died=False, death_cause="recycled") is None


def test_a_crash_seen_twice_is_recorded_once():
    store = MemoryStore()
    store.put(keys.slot_context("web", 1, 4), b"{}")
    rec = merge_crash("web", 1, 4, ctx(), died=True, death_cause="killed")
    assert record_crash(store, rec) is True
    assert record_crash(store, rec.model_copy(update={"cause": "seen again"})) is False
    assert store.get(keys.slot_context("web", 1, 4)) is None
    assert [r.cause for r in list_crashes(store)] == ["killed"]
