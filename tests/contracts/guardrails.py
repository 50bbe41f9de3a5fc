"""The guardrail-state contract: every backend (in-memory, SQLite, Redis) must pass these.

Each ``contract_*`` function takes a backend built on a :class:`~fleet_ray.testing.FakeClock` and that
clock; :data:`CONTRACT` lists them. ``tests/unit/campaign/test_campaign_guardrails.py`` runs them against the
memory and SQLite backends, ``tests/integration/test_campaign_guardrails_redis.py`` against Redis.
"""

from __future__ import annotations

import pytest

from fleet_ray.campaign.config import BreakerConfig
from fleet_ray.testing import FakeClock

__all__ = ["CONTRACT"]


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
