"""The Redis guardrail backend (Lua scripts) against the same contract as the SQLite and memory
backends, plus the server-clock path that production uses."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from fleet_ray.campaign.config import BreakerConfig
from fleet_ray.errors import StoreUnavailable
from fleet_ray.store.redis_guardrails import RedisGuardrails
from fleet_ray.testing import FakeClock
from tests.contracts.guardrails import CONTRACT

from .conftest import REDIS_URL


@pytest.fixture
def ns(redis_url):
    name = f"t-campg-{uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=f"fleet:{name}:*", count=1000):
        r.delete(k)


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__)
def test_redis_backend_contract(ns, check):
    clock = FakeClock(1_700_000_000.0)
    g = RedisGuardrails(REDIS_URL, ns, clock=clock)
    try:
        check(g, clock)
    finally:
        g.close()


def test_server_clock_buckets_are_shared_by_every_client(ns):
    clients = [RedisGuardrails(REDIS_URL, ns) for _ in range(4)]
    waits: list[float] = []
    lock = threading.Lock()

    def take(g):
        for _ in range(5):
            res = g.reserve("shared.example", 2.0, 1, 600)
            with lock:
                waits.append(res.bucket.ts + res.wait_s)  # the slot, on the server's clock

    threads = [threading.Thread(target=take, args=(g,)) for g in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 20 reservations from 4 clients: slots at least 0.5 s apart, none handed out twice
    slots = sorted(waits)
    assert len(slots) == 20
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= 0.5 - 1e-3
    for g in clients:
        g.close()


def test_breaker_trips_exactly_once_under_concurrent_recorders(ns):
    cfg = BreakerConfig(min_samples=20, failure_rate=0.1)
    clients = [RedisGuardrails(REDIS_URL, ns) for _ in range(4)]
    trips: list[bool] = []

    def record(g):
        for i in range(10):
            _, just = g.breaker_record("t.example", i % 3 != 0, cfg)
            trips.append(just)

    threads = [threading.Thread(target=record, args=(g,)) for g in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trips.count(True) == 1 and clients[0].breaker_state("t.example").tripped


def test_unreachable_redis_is_a_clear_error_without_the_password():
    g = RedisGuardrails("redis://admin:s3cret@127.0.0.1:1/0", "x", timeout_s=0.5)
    with pytest.raises(StoreUnavailable) as exc:
        g.reserve("h", 1.0, 1, 10)
    assert "127.0.0.1:1" in str(exc.value) and "s3cret" not in str(exc.value)
