"""A resumable run's ledger and its resume plan (pure: the in-memory store passes the store contract)."""

from __future__ import annotations

from fleet_ray.client.runs import RunLedger, RunRecord, RunState, plan_resume
from fleet_ray.testing import MemoryStore

IDS = [f"i{n}" for n in range(6)]


def test_the_ledger_records_each_items_result_once():
    led = RunLedger(MemoryStore(), "prices-1")
    assert led.record([RunRecord(item_id="i0", ok=True, value=1), RunRecord(item_id="i1", ok=False, error="x")]) == 2
    assert led.record([RunRecord(item_id="i0", ok=True, value=999)]) == 0  # a repeat changes nothing
    led.record([RunRecord(item_id="i1", ok=True, value=2)])  # a later success wins over the failure
    st = led.state()
    assert sorted(st.ok) == ["i0", "i1"] and st.failed == []
    assert {r.item_id: r.value for r in led.results()} == {"i0": 1, "i1": 2}


def test_submissions_are_kept_in_order_and_unqueued_marks_are_dropped():
    led = RunLedger(MemoryStore(), "r")
    led.mark_submitted(["a", "b", "c", "d"])
    assert led.state().submitted == ["a", "b", "c", "d"]
    led.mark_submitted(["x", "d"], keep_first=2)  # the surviving job holds only a, b
    assert led.state().submitted == ["a", "b", "x", "d"]
    led.mark_submitted(["y"], keep_first=None)  # no job survives: start over
    assert led.state().submitted == ["y"]


def test_a_rerun_skips_what_is_done_follows_what_is_queued_and_submits_the_rest():
    state = RunState(ok=["i0", "i1"], failed=["i2"], submitted=["i0", "i1", "i2", "i3", "i4"])
    plan = plan_resume(IDS, state, job_total=4)
    assert plan.skipped == ["i0", "i1", "i2"] and plan.adopted == ["i3"] and plan.submit == ["i4", "i5"]
    assert plan.keep_submitted == 4
    lost = plan_resume(IDS, state, job_total=None)  # the work queue was lost too
    assert lost.adopted == [] and lost.submit == ["i3", "i4", "i5"] and lost.keep_submitted is None
    retry = plan_resume(IDS, state, job_total=None, retry_failed=True)
    assert retry.skipped == ["i0", "i1"] and retry.submit == ["i2", "i3", "i4", "i5"]
