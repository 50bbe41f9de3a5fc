"""The store contract: every store (in-memory, embedded SQLite, Redis) must pass these.

Each test takes a ``store`` fixture; a test module runs the suite by importing these functions and
defining ``store`` for its backends — ``tests/unit/store/test_store_contract.py`` (memory, SQLite) and
``tests/integration/test_store_contract.py`` (a real Redis server).
"""

from __future__ import annotations

import threading

from fleet_ray.store import LogEntry

__all__ = [
    "test_get_put_delete",
    "test_put_many_and_prefix_keys",
    "test_incr_and_raise_to_are_atomic_under_threads",
    "test_log_append_is_idempotent_ordered_and_trimmable",
    "test_ties_in_sort_key_are_broken_by_id",
]


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


def test_ties_in_sort_key_are_broken_by_id(store):
    store.log_append("events", [LogEntry("b", "1", b"x"), LogEntry("a", "1", b"y")])
    assert [e.id for e in store.log_range("events")] == ["a", "b"]
