"""Rate-limit math, the breaker window, and the guardrail-state contract on the memory and SQLite backends.

The contract itself is ``tests/contracts/guardrails.py`` (run against Redis in
``tests/integration/test_campaign_guardrails_redis.py``).
"""

from __future__ import annotations

import pytest

from fleet_ray.campaign.ratelimit import effective_rate, max_in_window
from fleet_ray.store import guardrails as gs
from fleet_ray.store import open_guardrails
from fleet_ray.store.guardrails import Bucket, reserve
from fleet_ray.store.memory_guardrails import MemoryGuardrails
from fleet_ray.store.sqlite_guardrails import SQLiteGuardrails
from fleet_ray.testing import FakeClock
from tests.contracts.guardrails import CONTRACT

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
        buckets = gs.add_outcome(buckets, float(t), ok=t % 2 == 0, window_s=5, bucket_s=1)
    counts = gs.window_counts(buckets, 9.0, 5, 1)
    assert counts == gs.WindowCounts(samples=5, failures=3)  # t=5..9, odd ones failed
    assert min(buckets) == 5


def test_trip_needs_min_samples_and_strictly_more_than_the_rate():
    assert not gs.should_trip(gs.WindowCounts(19, 10), 0.1, 20)
    assert not gs.should_trip(gs.WindowCounts(20, 2), 0.1, 20)  # exactly 10% is not "exceeds"
    assert gs.should_trip(gs.WindowCounts(20, 3), 0.1, 20)


# --- backend contract ---------------------------------------------------------------------------


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


def test_open_guardrails_picks_the_backend_beside_the_store(tmp_path):
    from fleet_ray.errors import StoreError

    mem = open_guardrails("memory://")
    assert isinstance(mem, MemoryGuardrails)
    lite = open_guardrails(f"sqlite://{tmp_path / 'store.db'}", "ns")
    try:
        assert isinstance(lite, SQLiteGuardrails) and lite.path == tmp_path / "store.db"
    finally:
        lite.close()
    with pytest.raises(StoreError, match="unsupported store URL") as err:
        open_guardrails("postgres://admin:s3cret@db/x")
    assert "s3cret" not in str(err.value)
