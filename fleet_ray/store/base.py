"""The store protocol: a small durable key-value store plus append-only, idempotent logs.

Implementations: :class:`~fleet_ray.store.sqlite.SQLiteStore` (the embedded default, no server),
:class:`~fleet_ray.store.redis.RedisStore` (production) and :class:`~fleet_ray.store.memory.MemoryStore`
(tests). All pass ``tests/integration/test_store_contract.py``. Keys are named in
:mod:`fleet_ray.store.keys`. Failures to reach a server raise :class:`~fleet_ray.errors.StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol, runtime_checkable


class LogEntry(NamedTuple):
    id: str  # unique; appending an id twice is a no-op
    sort_key: str  # entries come back ordered by it (e.g. an HLC key), ties broken by id
    data: bytes


@runtime_checkable
class Store(Protocol):
    url: str  # redacted: never holds a password

    def ping(self) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Write all keys or none (atomic)."""

    def delete(self, *keys: str) -> int: ...
    def incr(self, key: str, amount: int = 1) -> int: ...
    def raise_to(self, key: str, value: int) -> int:
        """Atomically set an integer key to max(current, value); returns the result."""

    def keys(self, prefix: str = "") -> list[str]: ...
    def log_append(self, log: str, entries: list[LogEntry]) -> int:
        """Append entries not seen before (by id); returns how many were new."""

    def log_range(
        self, log: str, start: str | None = None, end: str | None = None, limit: int | None = None
    ) -> list[LogEntry]:
        """Entries with ``start <= sort_key < end`` in (sort_key, id) order."""

    def log_len(self, log: str) -> int: ...
    def log_trim(self, log: str, max_len: int) -> int:
        """Drop the oldest entries beyond ``max_len``; returns how many were dropped."""

    def close(self) -> None: ...
