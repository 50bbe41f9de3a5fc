"""Rate-limit math, the breaker window and the guardrail backends' shared contract.

The ``contract_*`` functions take a backend built on a :class:`FakeClock`; they run here against the
memory and SQLite backends and in ``tests/integration/test_campaign_guardrails_redis.py`` against Redis.
"""

from __future__ import annotations

import pytest

from fleet_ray.campaign import breaker as br
from fleet_ray.campaign.config import BreakerConfig
from fleet_ray.campaign.guardrails import MemoryGuardrails, SQLiteGuardrails
from fleet_ray.campaign.ratelimit import Bucket, effective_rate, max_in_window, reserve
from fleet_ray.testing import FakeClock

# --- token bucket -------------------------------------------------------------------------------


def test_first_request_is_free_then_slots_are_spaced_by_the_rate():
    r1 = reserve(None, 100.0, rate=2.0, burst=1)
    assert r1.granted and r1.wait_s == 0
    r2 = reserve(r1.bucket, 100.0, rate=2.0, burst=1)
    r3 = reserve(r2.bucket, 100.0, rate=2.0, burst=1)
    assert (r2.wait_s, r3.wait_s) == pytest.approx((0.5, 1.0))


def test_idle_time_refills_only_up_to_the_burst():
    b = reserve(None, 0.0, rate=2.0, burst=3).bucket
    after_idle = reserve(b, 1000.0, rate=2.0, burst=3)
    assert after_idle.bucket.tokens == pytest.approx(2.0)  # capped at 3, minus this request


def test_a_wait_beyond_max_wait_reserves_nothing():
    b = Bucket(-10.0, 5.0)  # 10 requests already waiting
    res = reserve(b, 5.0, rate=1.0, burst=1, max_wait_s=3.0)
    assert not res.granted and res.wait_s == pytest.approx(11.0)
    assert res.bucket == b


def test_a_clock_stepping_back_mints_no_tokens():
    b = reserve(None, 50.0, rate=1.0).bucket
    res = reserve(b, 40.0, rate=1.0)
    assert res.wait_s == pytest.approx(1.0)


@pytest.mark.parametrize("rate", [1.0, 2.0, 5.0, 20.0])
def test_send_times_never_exceed_the_rate_in_any_one_second_window(rate):
    clock = FakeClock(0.0)
    bucket = None
    sends = []
    for _ in range(200):  # 200 requests arriving together: each sleeps until its slot
        res = reserve(bucket, clock(), effective_rate(rate, 0.02), burst=1)
        bucket = res.bucket
        sends.append(clock() + res.wait_s)
        clock.advance(0.001)
    assert max_in_window(sends) <= rate
    assert max_in_window(sends) >= rate - 1  # …and the limiter isn't needlessly slow


def test_max_in_window_counts_half_open_windows():
    assert max_in_window([0.0, 0.5, 1.0, 1.5]) == 2
    assert max_in_window([0.0, 0.1, 0.2, 2.0]) == 3
    assert max_in_window([]) == 0


# --- breaker window -----------------------------------------------------------------------------


def test_window_drops_old_buckets_and_counts_recent_ones():
    buckets: dict = {}
    for t in range(10):
        buckets = br.add_outcome(buckets, float(t), ok=t % 2 == 0, window_s=5, bucket_s=1)
    counts = br.window_counts(buckets, 9.0, 5, 1)
    assert counts == br.WindowCounts(samples=5, failures=3)  # t=5..9, odd ones failed
    assert min(buckets) == 5


def test_trip_needs_min_samples_and_strictly_more_than_the_rate():
    assert not br.should_trip(br.WindowCounts(19, 10), 0.1, 20)
    assert not br.should_trip(br.WindowCounts(20, 2), 0.1, 20)  # exactly 10% is not "exceeds"
    assert br.should_trip(br.WindowCounts(20, 3), 0.1, 20)


# --- backend contract ---------------------------------------------------------------------------


def contract_breaker(g, clock: FakeClock) -> None:
    cfg = BreakerConfig(window_s=60, min_samples=20, failure_rate=0.1)
    host = "shop.example"
    for _ in range(18):
        state, just = g.breaker_record(host, True, cfg)
        assert not just
        clock.advance(0.5)
    for _ in range(2):
        state, just = g.breaker_record(host, False, cfg)
    assert (state.samples, state.failures, state.tripped, just) == (20, 2, False, False)  # 10%: holds
    state, just = g.breaker_record(host, False, cfg)
    assert just and state.tripped and (state.trip_samples, state.trip_failures) == (21, 3)
    state, just = g.breaker_record(host, True, cfg)
    assert state.tripped and not just  # trips once
    clock.advance(3600)  # far past the window: still tripped, no self-healing
    state = g.breaker_state(host, cfg)
    assert state.tripped and state.samples == 0 and "3/21" in state.reason
    assert [s.target for s in g.breaker_states(cfg)] == [host]
    assert g.breaker_reset(host) is True
    assert not g.breaker_state(host, cfg).tripped
    assert g.breaker_reset(host) is False


def contract_breaker_window_forgets(g, clock: FakeClock) -> None:
    cfg = BreakerConfig(window_s=10, min_samples=5, failure_rate=0.1)
    for _ in range(4):
        g.breaker_record("a.example", False, cfg)  # 4 failures, below min_samples
    clock.advance(11)  # they leave the window
    for _ in range(5):
        state, just = g.breaker_record("a.example", True, cfg)
    assert not state.tripped and (state.samples, state.failures) == (5, 0)


def contract_rate(g, clock: FakeClock) -> None:
    first = g.reserve("t.example", 2.0, 1, 300.0)
    second = g.reserve("t.example", 2.0, 1, 300.0)
    other = g.reserve("u.example", 2.0, 1, 300.0)
    assert first.granted and first.wait_s == 0
    assert second.granted and second.wait_s == pytest.approx(0.5, abs=1e-3)
    assert other.wait_s == 0  # buckets are per host
    refused = g.reserve("t.example", 2.0, 1, 0.6)
    assert not refused.granted and refused.wait_s == pytest.approx(1.0, abs=1e-3)
    clock.advance(10)
    assert g.reserve("t.example", 2.0, 1, 300.0).wait_s == 0


def contract_lease_and_shared(g, clock: FakeClock) -> None:
    assert g.claim("campaign:x", "driver-a", 5.0) == 0.0
    assert g.claim("campaign:x", "driver-b", 5.0) == pytest.approx(5.0, abs=1e-3)
    clock.advance(2)
    assert g.claim("campaign:x", "driver-a", 5.0) == 0.0  # renewal
    clock.advance(4)
    assert g.claim("campaign:x", "driver-b", 5.0) == pytest.approx(1.0, abs=1e-3)
    clock.advance(1.5)
    assert g.claim("campaign:x", "driver-b", 5.0) == 0.0  # lapsed: b takes over
    g.release("campaign:x", "driver-a")  # not the owner: no effect
    assert g.claim("campaign:x", "driver-a", 5.0) > 0
    g.release("campaign:x", "driver-b")
    assert g.claim("campaign:x", "driver-a", 5.0) == 0.0
    assert g.shared_get("k") is None
    g.shared_put("k", b'{"ok": true}', 60)
    assert g.shared_get("k") == b'{"ok": true}'


CONTRACT = [contract_breaker, contract_breaker_window_forgets, contract_rate, contract_lease_and_shared]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    clock = FakeClock(1_700_000_000.0)
    if request.param == "memory":
        g = MemoryGuardrails(clock)
    else:
        g = SQLiteGuardrails(tmp_path / "store.db", namespace="t", clock=clock)
    yield g, clock
    g.close()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__)
def test_backend_contract(backend, check):
    check(*backend)


def test_sqlite_state_is_shared_between_handles_on_one_file(tmp_path):
    clock = FakeClock(1000.0)
    a = SQLiteGuardrails(tmp_path / "s.db", "ns", clock)
    b = SQLiteGuardrails(tmp_path / "s.db", "ns", clock)
    other_ns = SQLiteGuardrails(tmp_path / "s.db", "other", clock)
    assert a.reserve("h", 1.0, 1, 100).wait_s == 0
    assert b.reserve("h", 1.0, 1, 100).wait_s == pytest.approx(1.0)
    assert other_ns.reserve("h", 1.0, 1, 100).wait_s == 0
