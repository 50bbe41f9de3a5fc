"""Durable stores: :func:`open_store` turns a URL into a :class:`Store`, :func:`open_guardrails` into
the campaign :class:`GuardrailState` beside it (same URL, same server or file, same namespace), and
:func:`open_work_log` / :func:`open_stream_log` into the work queues' and durable streams'
write-ahead copies (``*_work_log.py``, ``*_stream_log.py``).

- ``sqlite:///path/to/file.db`` — the embedded default (no server);
- ``redis://[user:password@]host:port/db`` — production; the password may instead come from the file
  ``FLEET_STORE_PASSWORD_FILE`` names, and must for URLs handed to actors (:func:`url_for_actors`);
- ``memory://`` — in-process, for tests.

Backends sit side by side, one module per backend and kind (``sqlite.py`` / ``sqlite_guardrails.py``,
``redis.py`` / ``redis_guardrails.py``, ``memory.py`` / ``memory_guardrails.py``); a backend's
guardrail state reuses its store module's connection setup and error translator. :func:`store_backend`
is the one place a URL picks a backend. The Redis and SQLite modules are imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

from fleet_ray.errors import StoreError
from fleet_ray.redact import redact_url
from fleet_ray.store.base import LogEntry, Store
from fleet_ray.store.guardrails import GuardrailState
from fleet_ray.store.memory import MemoryStore
from fleet_ray.store.memory_guardrails import MemoryGuardrails
from fleet_ray.store.memory_stream_log import MemoryStreamLog
from fleet_ray.store.memory_work_log import MemoryWorkLog
from fleet_ray.store.stream_log import StreamLog
from fleet_ray.store.work_log import WorkLog

__all__ = [
    "GuardrailState", "LogEntry", "MemoryStore", "Store", "StreamLog", "WorkLog", "open_guardrails", "open_store",
    "open_stream_log", "open_work_log", "store_backend", "url_for_actors",
]

Backend = Literal["redis", "sqlite", "memory"]


def store_backend(url: str) -> tuple[Backend, str]:
    """``(backend, location)`` for a store URL: the Redis URL itself, the SQLite file's path, or
    ``memory://``. Raises :class:`~fleet_ray.errors.StoreError` (the URL redacted) for anything else."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis", url
    if url.startswith("sqlite://"):
        return "sqlite", url[len("sqlite://"):]
    if url.startswith("memory://"):
        return "memory", url
    raise StoreError(f"unsupported store URL {redact_url(url)!r} (use sqlite:///…, redis://… or memory://)")


def url_for_actors(url: str) -> str:
    """``url`` checked before it travels to actors as a creation argument (which Ray keeps in its
    actor table, the GCS's Redis and its task records): a URL carrying a password is refused with an
    error naming the setting to use instead — the password goes in a file named by
    ``FLEET_STORE_PASSWORD_FILE`` on every host that opens the server (``deploy/fleet-env.sh``
    exports it from ``node.env``), and the URL the fleet passes around names only the server."""
    if store_backend(url)[0] == "redis" and urlsplit(url).password:
        raise StoreError(
            f"the store URL {redact_url(url)!r} carries a password, which would travel in actor arguments: "
            "put the password in a file (mode 0600), set FLEET_STORE_PASSWORD_FILE=<that file> on every host "
            "(node.env) and leave it out of the URL")
    return url


def open_store(url: str, namespace: str = "default") -> Store:
    backend, where = store_backend(url)
    if backend == "redis":
        from fleet_ray.store.redis import RedisStore

        return RedisStore(where, namespace=namespace)
    if backend == "sqlite":
        from fleet_ray.store.sqlite import SQLiteStore

        return SQLiteStore(where, namespace=namespace)
    return MemoryStore(where)


def open_guardrails(url: str, namespace: str = "default", clock: Callable[[], float] | None = None
                    ) -> GuardrailState:
    """Campaign guardrail state next to the store at ``url`` (a fresh, empty one for ``memory://``)."""
    backend, where = store_backend(url)
    if backend == "redis":
        from fleet_ray.store.redis_guardrails import RedisGuardrails

        return RedisGuardrails(where, namespace, clock=clock)
    if backend == "sqlite":
        from fleet_ray.store.sqlite_guardrails import SQLiteGuardrails

        return SQLiteGuardrails(where, namespace, clock=clock)
    return MemoryGuardrails(clock)


def open_stream_log(url: str, namespace: str = "default") -> StreamLog:
    """The durable streams' write-ahead copy next to the store at ``url`` (a fresh one for ``memory://``)."""
    backend, where = store_backend(url)
    if backend == "redis":
        from fleet_ray.store.redis_stream_log import RedisStreamLog

        return RedisStreamLog(where, namespace)
    if backend == "sqlite":
        from fleet_ray.store.sqlite_stream_log import SQLiteStreamLog

        return SQLiteStreamLog(where, namespace)
    return MemoryStreamLog()


def open_work_log(url: str, namespace: str = "default") -> WorkLog:
    """The work queues' write-ahead copy next to the store at ``url`` (a fresh one for ``memory://``)."""
    backend, where = store_backend(url)
    if backend == "redis":
        from fleet_ray.store.redis_work_log import RedisWorkLog

        return RedisWorkLog(where, namespace)
    if backend == "sqlite":
        from fleet_ray.store.sqlite_work_log import SQLiteWorkLog

        return SQLiteWorkLog(where, namespace)
    return MemoryWorkLog()
