"""One contract, three stores: in-memory, embedded SQLite, and a real Redis server."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from fleet_ray.errors import StoreUnavailable
from fleet_ray.store import LogEntry, open_store
from fleet_ray.store.redis import RedisStore

from .conftest import REDIS_URL


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path):
    ns = uuid.uuid4().hex[:8]
    if request.param == "memory":
        s = open_store("memory://")
    elif request.param == "sqlite":
        s = open_store(f"sqlite://{tmp_path}/s.db", namespace=ns)
    else:
        s = open_store(REDIS_URL, namespace=ns)
    yield s
    if request.param == "redis":
        s.delete(*s.keys())
        for log in ("events", "other"):
            s.log_trim(log, 0)
            s._r.delete(s.log_stream_key(log))
    s.close()


def test_get_put_delete(store):
    assert store.get("a") is None
    store.put("a", b"1")
    assert store.get("a") == b"1"
    assert store.delete("a", "missing") == 1
    assert store.get("a") is None


def test_put_many_and_prefix_keys(store):
    store.put_many({"gen:web:0": b"1", "gen:web:1": b"2", "job:x": b"3"})
    assert store.keys("gen:") == ["gen:web:0", "gen:web:1"]
    assert set(store.keys()) >= {"gen:web:0", "gen:web:1", "job:x"}


def test_incr_and_raise_to_are_atomic_under_threads(store):
    def work():
        for _ in range(50):
            store.incr("n")
            store.raise_to("g", 7)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.incr("n", 0) == 200
    assert store.raise_to("g", 3) == 7  # never regresses
    assert store.raise_to("g", 9) == 9


def test_log_append_is_idempotent_ordered_and_trimmable(store):
    entries = [LogEntry(f"id{i}", f"{(i * 7) % 10:03d}", f"d{i}".encode()) for i in range(10)]
    assert store.log_append("events", entries[:6]) == 6
    assert store.log_append("events", entries) == 4
    got = store.log_range("events")
    assert [e.sort_key for e in got] == sorted(e.sort_key for e in entries)
    assert store.log_len("events") == 10
    assert [e.sort_key for e in store.log_range("events", "003", "006")] == ["003", "004", "005"]
    assert len(store.log_range("events", limit=2)) == 2
    assert store.log_trim("events", 4) == 6
    assert [e.sort_key for e in store.log_range("events")] == ["006", "007", "008", "009"]
    assert store.log_append("events", [entries[0]]) == 1  # trimmed ids may be appended again
    assert store.log_range("other") == []


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


def test_ties_in_sort_key_are_broken_by_id(store):
    store.log_append("events", [LogEntry("b", "1", b"x"), LogEntry("a", "1", b"y")])
    assert [e.id for e in store.log_range("events")] == ["a", "b"]


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
