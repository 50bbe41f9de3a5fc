"""An in-memory store for unit tests; passes the same contract suite as the real stores."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping

from fleet_ray.errors import StoreUnavailable
from fleet_ray.store.base import LogEntry


class MemoryStore:
    def __init__(self, url: str = "memory://"):
        self.url = url
        self._kv: dict[str, bytes] = {}
        self._logs: dict[str, list[tuple[str, str, bytes]]] = {}
        self._ids: dict[str, set[str]] = {}
        self._lock = threading.RLock()
        self.available = True  # tests flip this to simulate an outage

    def _check(self) -> None:
        if not self.available:

            raise StoreUnavailable(self.url, "simulated outage")

    def ping(self) -> None:
        self._check()

    def get(self, key: str) -> bytes | None:
        self._check()
        return self._kv.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._check()
        self._kv[key] = bytes(value)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        self._check()
        with self._lock:
            self._kv.update({k: bytes(v) for k, v in items.items()})

    def delete(self, *keys: str) -> int:
        self._check()
        with self._lock:
            return sum(self._kv.pop(k, None) is not None for k in keys)

    def incr(self, key: str, amount: int = 1) -> int:
        self._check()
        with self._lock:
            value = int(self._kv.get(key, b"0")) + amount
            self._kv[key] = str(value).encode()
            return value

    def raise_to(self, key: str, value: int) -> int:
        self._check()
        with self._lock:
            value = max(int(self._kv.get(key, b"0")), value)
            self._kv[key] = str(value).encode()
            return value

    def keys(self, prefix: str = "") -> list[str]:
        self._check()
        return sorted(k for k in self._kv if k.startswith(prefix))

    def log_append(self, log: str, entries: list[LogEntry]) -> int:
        self._check()
        with self._lock:
            rows = self._logs.setdefault(log, [])
            ids = self._ids.setdefault(log, set())
            new = 0
            for e in entries:
                if e.id in ids:
                    continue
                ids.add(e.id)
                bisect.insort(rows, (e.sort_key, e.id, bytes(e.data)))
                new += 1
            return new

    def log_range(self, log, start=None, end=None, limit=None) -> list[LogEntry]:
        self._check()
        with self._lock:
            out = [
                LogEntry(i, k, d)
                for k, i, d in self._logs.get(log, [])
                if (start is None or k >= start) and (end is None or k < end)
            ]
        return out[:limit] if limit is not None else out

    def log_len(self, log: str) -> int:
        self._check()
        return len(self._logs.get(log, []))

    def log_trim(self, log: str, max_len: int) -> int:
        self._check()
        with self._lock:
            rows = self._logs.get(log, [])
            drop = max(0, len(rows) - max_len)
            for _, i, _ in rows[:drop]:
                self._ids[log].discard(i)
            del rows[:drop]
            return drop

    def close(self) -> None:
        pass
