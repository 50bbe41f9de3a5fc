"""The store contract on a real Redis server (memory and SQLite run it in tests/unit/store/), and what
only Redis does: the stream mirror of the log, fail-fast and outage handling."""

from __future__ import annotations

import time
import uuid

import pytest

from fleet_ray.errors import StoreUnavailable
from fleet_ray.store import LogEntry, open_store
from fleet_ray.store.redis import RedisStore
from tests.contracts.store import *  # noqa: F403  (the shared contract suite, run on Redis here)

from .conftest import REDIS_URL


@pytest.fixture
def store():
    s = open_store(REDIS_URL, namespace=uuid.uuid4().hex[:8])
    yield s
    s.delete(*s.keys())
    for log in ("events", "other"):
        s.log_trim(log, 0)
        s._r.delete(s.log_stream_key(log))
    s.close()


def test_redis_log_is_mirrored_to_a_redis_stream_once_per_event():
    s = open_store(REDIS_URL, namespace=uuid.uuid4().hex[:8])
    try:
        entries = [LogEntry(f"id{i}", f"{9 - i:03d}", f"d{i}".encode()) for i in range(5)]
        s.log_append("events", entries[:3])
        s.log_append("events", entries)  # the first three again: not mirrored twice
        stream = s._r.xrange(s.log_stream_key("events"))
        assert [(f[b"id"], f[b"data"]) for _, f in stream] == [(f"id{i}".encode(), f"d{i}".encode()) for i in range(5)]
        # queries stay in causal (sort key) order; the stream keeps arrival order for tailing
        assert [e.id for e in s.log_range("events")] == [f"id{i}" for i in reversed(range(5))]
    finally:
        s.log_trim("events", 0)
        s._r.delete(s.log_stream_key("events"))
        s.close()


def test_unreachable_redis_fails_fast_naming_the_redacted_url():
    with pytest.raises(StoreUnavailable) as err:
        RedisStore("redis://admin:s3cret@127.0.0.1:1/0", timeout_s=0.5)
    assert "127.0.0.1:1" in str(err.value) and "s3cret" not in str(err.value)
    assert "***@" in str(err.value)


def test_store_outage_raises_store_unavailable_and_recovers(private_redis):
    s = RedisStore(private_redis["url"], namespace="x", timeout_s=0.5)
    s.put("k", b"v")
    private_redis["stop"]()
    with pytest.raises(StoreUnavailable):
        s.put("k", b"w")
    private_redis["start"]()
    deadline = time.monotonic() + 10
    while True:
        try:
            s.put("k", b"w")
            break
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert s.get("k") == b"w"
