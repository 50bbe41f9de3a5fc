"""Coordinator semantics on the thread executor (no Ray): what each returns, short-circuits, races,
concurrency bounds, refusals, teardown and resume. The same engine drives the Ray executor."""

from __future__ import annotations

import json
import threading
import time

import pytest

from fleet_ray.campaign import Campaign, PolicyDecision, SigningKey, verify_audit_file
from fleet_ray.errors import (
    CampaignClosed,
    CampaignConfigError,
    CampaignError,
    CampaignLeaseHeld,
    CircuitOpen,
)
from fleet_ray.store.sqlite_guardrails import SQLiteGuardrails


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def make(key, tmp_path):
    made = []

    def _make(members=4, **kw):
        kw.setdefault("store_url", f"sqlite://{tmp_path}/store.db")
        kw.setdefault("campaign_id", "c1")
        c = Campaign(members, executor="local", signing_key=key, namespace="t", **kw)
        made.append(c)
        return c

    yield _make
    for c in made:
        c.destroy()


def receipts(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_broadcast_and_plan_return_one_result_per_member_and_failures_as_values(make):
    c = make(members=4)

    def task(ctx, item):
        if ctx.member == 1:
            raise ValueError("no luck")
        return (ctx.member, item, ctx.identity.id)

    res = c.broadcast(task, "hello")
    assert [r.ok for r in res] == [True, False, True, True]
    assert res[0].value == (0, "hello", "member-0")
    assert (res[1].error_type, res[1].error) == ("ValueError", "no luck")
    with pytest.raises(Exception, match="no luck"):
        res[1].unwrap()
    planned = c.plan(lambda i, ident: f"in-{i}", lambda ctx, item: item.upper())
    assert [r.value for r in planned] == ["IN-0", "IN-1", "IN-2", "IN-3"]


def test_pipeline_feeds_each_stage_and_short_circuits_a_failed_member(make):
    c = make(members=4)
    seen: list[tuple[int, int, object]] = []
    lock = threading.Lock()

    def stage(n):
        def run(ctx, item):
            with lock:
                seen.append((n, ctx.member, item))
            if n == 1 and ctx.member == 2:
                raise RuntimeError("stage 1 broke")
            return (item or 0) + 10 ** n

        return run

    res = c.pipeline([stage(0), stage(1), stage(2)], planner=lambda i, ident: i)
    assert [r.value for r in res] == [111, 112, None, 114]
    assert (res[2].ok, res[2].stage, res[2].error) == (False, 1, "stage 1 broke")
    assert not [s for s in seen if s[0] == 2 and s[1] == 2]  # stage 2 never ran for member 2
    assert (1, 1, 2) in seen and (2, 1, 12) in seen  # each stage got the previous output


def test_race_has_one_winner_cancels_siblings_and_suppresses_late_results(make, tmp_path):
    c = make(members=5, audit={"sink": tmp_path / "race.ndjson"})
    stopped = []
    running = threading.Semaphore(0)

    def task(ctx, item):
        running.release()
        if ctx.member == 3:
            for _ in range(5):  # win only once every sibling is running
                running.acquire(timeout=10)
            return "found"
        if ctx.member == 0:
            ctx.wait(10)  # ignores cancellation: returns a (late) success anyway
            return "late"
        if not ctx.wait(10):
            stopped.append(ctx.member)
            ctx.check_cancelled()
        return "slow"

    res = c.race(task)
    assert [r.ok for r in res] == [False, False, False, True, False]
    assert res[3].value == "found" and res[3].winner
    assert all(r.cancelled for i, r in enumerate(res) if i != 3)
    assert res[0].suppressed and not res[1].suppressed
    assert sorted(stopped) == [1, 2, 4]
    c.destroy()
    kinds = [r["kind"] for r in receipts(tmp_path / "race.ndjson")]
    assert kinds.count("campaign.member.complete") == 1 and kinds.count("campaign.race.won") == 1
    assert kinds.count("campaign.member.cancelled") == 4


def test_race_goal_decides_the_winner_and_unstarted_siblings_never_run(make):
    c = make(members=6, active_concurrency=2)
    ran = []

    def task(ctx, item):
        ran.append(ctx.member)
        if ctx.member:
            ctx.wait(0.3)  # member 0 finishes first, short of the goal
        return ctx.member

    res = c.race(task, goal=lambda v: v >= 1)
    winners = [r for r in res if r.winner]
    assert len(winners) == 1 and winners[0].value >= 1 and winners[0].ok
    assert res[0].ok and not res[0].winner  # finished first, but short of the goal: kept as is
    assert len(ran) < 6  # members queued behind active_concurrency were dropped, not started
    assert all(r.cancelled for r in res if not r.ok)
    assert [r.ok for r in res].count(True) == 2


def test_active_concurrency_bounds_members_in_flight(make):
    c = make(members=12, active_concurrency=3)
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def task(ctx, item):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        deadline = time.monotonic() + 1
        while state["now"] < 3 and time.monotonic() < deadline:  # give a 4th every chance to sneak in
            time.sleep(0.005)
        time.sleep(0.01)
        with lock:
            state["now"] -= 1

    assert all(r.ok for r in c.broadcast(task))
    assert state["max"] == 3


def test_map_targets_runs_each_target_once_and_a_member_one_op_at_a_time(make):
    c = make(members=2, active_concurrency=8, rate_limit={"per_target_rps": 1000})
    busy: set[int] = set()
    overlap = []
    lock = threading.Lock()

    def task(ctx, target):
        with lock:
            overlap.append(ctx.member in busy)
            busy.add(ctx.member)
        time.sleep(0.01)
        with lock:
            busy.discard(ctx.member)
        return target

    targets = [f"http://h{i % 3}.example/{i}" for i in range(10)]
    res = c.map_targets(task, targets)
    assert [r.value for r in res] == targets and not any(overlap)
    assert {b.target for b in c.status().breakers} == {"h0.example", "h1.example", "h2.example"}


def test_policy_denies_with_a_reason_before_dispatch_and_inside_members(make):
    def policy(req):
        if "target:evil.example" in req.capabilities:
            return PolicyDecision(allow=False, reason="DENY_TARGET")
        return True

    c = make(members=3, policy=policy, rate_limit={"per_target_rps": 1000})
    called = []

    def task(ctx, item):
        called.append(item)
        with ctx.guard("evil.example"):  # denied inside the member too
            return "sent"

    res = c.plan(lambda i, _: {"target": "https://evil.example/x" if i == 0 else "https://ok.example"}, task)
    assert (res[0].error_type, "DENY_TARGET" in res[0].error) == ("PolicyDenied", True)
    assert len(called) == 2  # member 0 never dispatched
    assert all(r.error_type == "PolicyDenied" for r in res[1:])


def test_tripped_breaker_refuses_new_work_until_an_operator_resets(make, tmp_path):
    trips = []
    c = make(members=1, notifier=trips.append, rate_limit={"per_target_rps": 1000},
             breaker={"min_samples": 5, "failure_rate": 0.1})

    def flaky(ctx, item):
        with ctx.guard("down.example") as g:
            g.fail("HTTP 503", 503)

    res = c.map_targets(flaky, ["down.example"] * 6)
    assert len(trips) == 1 and trips[0].target == "down.example" and trips[0].samples == 5
    assert res[-1].error_type == "CircuitOpen"  # refused once tripped
    with pytest.raises(CircuitOpen):
        c.map_targets(lambda ctx, t: "x", ["https://down.example/"])[0].unwrap()
    st = c.status()
    assert st.circuit_tripped and st.breakers[0].tripped
    from fleet_ray.campaign import reset_breaker

    before = reset_breaker(f"sqlite://{tmp_path}/store.db", "t", "down.example", operator="ops")
    assert before.tripped
    assert c.map_targets(lambda ctx, t: "x", ["https://down.example/"])[0].ok
    assert c.events.query(kind="campaign.breaker.tripped") and c.events.query(kind="campaign.breaker.reset")


def test_destroy_waits_for_in_flight_work_and_refuses_new(make, tmp_path):
    c = make(members=6, active_concurrency=2, audit={"sink": tmp_path / "d.ndjson"})
    started = threading.Semaphore(0)
    out = {}

    def task(ctx, item):
        started.release()
        time.sleep(0.3)
        return "done"

    t = threading.Thread(target=lambda: out.setdefault("res", c.broadcast(task)))
    t.start()
    assert started.acquire(timeout=5) and started.acquire(timeout=5)  # two members in flight
    c.destroy()
    size = (tmp_path / "d.ndjson").stat().st_size
    t.join(5)
    res = out["res"]
    assert [r.ok for r in res].count(True) == 2  # the two in flight finished
    assert all(r.error_type == "CampaignClosed" for r in res if not r.ok)
    with pytest.raises(CampaignClosed):
        c.broadcast(task)
    assert (tmp_path / "d.ndjson").stat().st_size == size
    rs = receipts(tmp_path / "d.ndjson")
    assert rs[-1]["kind"] == "campaign.closed" and rs[-1]["payload"]["completed"] == 2
    assert verify_audit_file(tmp_path / "d.ndjson", c.chain._key.verify_key()).closed


def test_resume_runs_only_outstanding_targets_and_extends_the_chain(make, key, tmp_path):
    sink = tmp_path / "r.ndjson"
    first = make(members=2, audit={"sink": sink}, rate_limit={"per_target_rps": 1000})
    targets = [f"https://t.example/{i}" for i in range(6)]
    first.map_targets(lambda ctx, t: t[-1], targets[:4])
    first.flush()
    first._lease_stop.set()  # simulate a dead driver: nothing closed, lease left to lapse
    first.guardrails.release(first._lease_name, first._token)
    first._closed = True
    with pytest.raises(CampaignError, match="resume=True"):
        make(members=2)
    second = make(members=2, resume=True, audit={"sink": sink}, rate_limit={"per_target_rps": 1000})
    ran = []
    res = second.map_targets(lambda ctx, t: ran.append(t) or t[-1], targets)
    assert sorted(ran) == targets[4:]
    assert [r.value for r in res] == ["0", "1", "2", "3", "4", "5"]
    assert [r.resumed for r in res] == [True] * 4 + [False] * 2
    second.destroy()
    report = verify_audit_file(sink, key.verify_key())
    assert report.ok and report.closed


def test_a_second_driver_cannot_take_a_live_campaign(make):
    make(members=1, campaign_id="solo")
    with pytest.raises(CampaignLeaseHeld):
        make(members=1, campaign_id="solo")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate_limit": {"per_target_rps": 0.5}}, "rate_limit.per_target_rps"),
        ({"rate_limit": {"per_host": {"a.example": 0.2}}}, "rate_limit.per_host"),
        ({"active_concurrency": 0}, "active_concurrency"),
        ({"breaker": {"failure_rate": 1.5}}, "breaker.failure_rate"),
        ({"campaign_id": "bad id!"}, "campaign_id"),
        ({"proxies": ["user:pw@host"]}, "proxies"),
    ],
)
def test_bad_config_names_the_field_and_starts_nothing(make, tmp_path, options, field):
    with pytest.raises(CampaignConfigError) as exc:
        make(members=2, **options)
    assert any(f.startswith(field) for f in exc.value.fields)
    assert "pw" not in str(exc.value)
    g = SQLiteGuardrails(tmp_path / "store.db", "t")
    assert g.claim("campaign:c1", "probe", 1) == 0.0  # no lease was taken


def test_no_key_means_no_campaign(tmp_path, monkeypatch):
    monkeypatch.delenv("FLEET_AUDIT_KEY", raising=False)
    from fleet_ray.errors import AuditKeyError

    with pytest.raises(AuditKeyError, match="FLEET_AUDIT_KEY"):
        Campaign(2, executor="local", store_url=f"sqlite://{tmp_path}/s.db")


def test_status_counts(make):
    c = make(members=3)
    c.broadcast(lambda ctx, _: 1 / (ctx.member - 1))
    st = c.status()
    assert (st.members, st.active, st.completed, st.failed, st.closed) == (3, 0, 2, 1, False)
    assert st.audit.signing and st.audit.receipts > 3


def test_concurrent_coordinator_calls_share_members_and_the_concurrency_bound(make):
    c = make(members=3, active_concurrency=2)
    busy: set[int] = set()
    state = {"overlap": False, "now": 0, "max": 0}
    lock = threading.Lock()

    def task(ctx, item):
        with lock:
            state["overlap"] |= ctx.member in busy
            busy.add(ctx.member)
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            busy.discard(ctx.member)
            state["now"] -= 1
        return item

    out: dict[str, list] = {}
    threads = [threading.Thread(target=lambda n=n: out.__setitem__(n, c.broadcast(task, n))) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.value for r in out["a"]] == ["a"] * 3 and [r.value for r in out["b"]] == ["b"] * 3
    assert not state["overlap"] and state["max"] <= 2


def test_a_sender_that_stalls_past_its_slot_gives_it_up_and_takes_a_new_one(make):
    c = make(members=1, store_url="memory://", rate_limit={"per_target_rps": 20})
    calls = []
    real = c.guardrails.reserve

    def slow_first_reply(*args):
        res = real(*args)
        calls.append(res.wait_s)
        if len(calls) == 1:
            time.sleep(0.3)  # the reply (or this process) stalls far beyond the 50 ms of slack
        return res

    c.guardrails.reserve = slow_first_reply
    sent = []
    res = c.map_targets(lambda ctx, t: sent.append(time.monotonic()) or "sent", ["https://a.example/1"])
    assert res[0].value == "sent"
    assert len(calls) == 2  # the stale slot was given up and a fresh one taken before sending
    assert c.guardrails.reserve("a.example", 20 / 1.05, 1, 60).wait_s > 0  # …and the fresh one was used
