"""Durable stores: :func:`open_store` turns a URL into a :class:`Store`.

- ``sqlite:///path/to/file.db`` — the embedded default (no server);
- ``redis://[user:password@]host:port/db`` — production;
- ``memory://`` — in-process, for tests.
"""

from __future__ import annotations

from fleet_ray.errors import StoreError, redact_url
from fleet_ray.store.base import LogEntry, Store
from fleet_ray.store.memory import MemoryStore

__all__ = ["LogEntry", "MemoryStore", "Store", "open_store"]


def open_store(url: str, namespace: str = "default") -> Store:
    if url.startswith(("redis://", "rediss://", "unix://")):
        from fleet_ray.store.redis import RedisStore

        return RedisStore(url, namespace=namespace)
    if url.startswith("sqlite://"):
        from fleet_ray.store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite://"):], namespace=namespace)
    if url.startswith("memory://"):
        return MemoryStore(url)
    raise StoreError(f"unsupported store URL {redact_url(url)!r} (use sqlite:///…, redis://… or memory://)")
