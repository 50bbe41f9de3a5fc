"""Proxy health: cooldown after consecutive failures, quarantine after repeated cooldowns or bad
credentials, least-used rotation, country preference - on a fake clock."""

from __future__ import annotations

import random

from fleet_ray.browser.proxies import Outcome, ProxyHealth, ProxyPool
from fleet_ray.spec.browser_options import ProxyPolicy, ProxySpec
from fleet_ray.testing import FakeClock

POLICY = ProxyPolicy(failure_threshold=2, cooldown_s=30, quarantine_after=2, quarantine_window_s=600, quarantine_s=900)


def _pool(*countries: str | None, clock: FakeClock) -> ProxyPool:
    specs = [
        ProxySpec(url=f"http://10.0.0.{i}:3128", username=f"user{i}", password=f"pw-secret-{i}", country=c)
        for i, c in enumerate(countries)
    ]
    return ProxyPool(specs, POLICY, clock=clock, rng=random.Random(1))


def test_consecutive_failures_cool_a_proxy_down_and_it_comes_back():
    clock = FakeClock()
    pool = _pool(None, clock=clock)
    assert pool.report("p0", Outcome.CONNECT_FAILED) is ProxyHealth.HEALTHY
    assert pool.report("p0", Outcome.CONNECT_FAILED) is ProxyHealth.COOLDOWN
    assert pool.acquire() is None
    clock.advance(29)
    assert pool.acquire() is None
    clock.advance(2)
    assert pool.acquire().id == "p0"


def test_a_success_resets_the_failure_count():
    clock = FakeClock()
    pool = _pool(None, clock=clock)
    pool.report("p0", Outcome.REPUTATION)
    pool.report("p0", Outcome.OK)
    assert pool.report("p0", Outcome.REPUTATION) is ProxyHealth.HEALTHY


def test_repeated_cooldowns_quarantine():
    clock = FakeClock()
    pool = _pool(None, clock=clock)
    for _ in range(2):
        pool.report("p0", Outcome.CONNECT_FAILED)
        pool.report("p0", Outcome.CONNECT_FAILED)
        clock.advance(31)
    assert pool.get("p0").health(clock()) is ProxyHealth.QUARANTINED
    clock.advance(800)
    assert pool.acquire() is None
    clock.advance(100)
    assert pool.acquire() is not None


def test_rejected_credentials_quarantine_at_once():
    clock = FakeClock()
    pool = _pool(None, None, clock=clock)
    assert pool.report("p1", Outcome.AUTH_FAILED) is ProxyHealth.QUARANTINED
    picks = {pool.acquire().id for _ in range(10)}
    assert picks == {"p0"}


def test_rotation_spreads_use_and_honours_country_and_avoid():
    clock = FakeClock()
    pool = _pool("DE", "DE", "US", clock=clock)
    uses = [pool.acquire().id for _ in range(6)]
    assert sorted(uses) == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert {pool.acquire("US").id for _ in range(3)} == {"p2"}
    assert pool.acquire("DE", avoid=["p0"]).id == "p1"
    assert pool.acquire("FR").id in {"p0", "p1", "p2"}  # no FR proxy: any healthy one
    # the only healthy proxy is handed out even if the caller wanted to avoid it
    pool.report("p0", Outcome.AUTH_FAILED)
    pool.report("p1", Outcome.AUTH_FAILED)
    assert pool.acquire(avoid=["p2"]).id == "p2"


def test_snapshot_is_redacted():
    clock = FakeClock()
    pool = _pool("DE", clock=clock)
    pool.report("p0", Outcome.AUTH_FAILED)
    snap = pool.snapshot()
    text = repr(snap)
    assert "pw-secret" not in text and "user0" not in text
    assert snap[0]["health"] == "quarantined" and snap[0]["last_outcome"] == "auth_failed"
