"""Guardrail state on the embedded store's SQLite file (beside :mod:`~fleet_ray.store.sqlite`).

Runs :class:`~fleet_ray.store.guardrails.KVGuardrails` over a ``campaign_kv`` table of JSON values
with optional expiry, each operation one ``BEGIN IMMEDIATE`` transaction, so every process on the
host shares one state. Connections, transactions and error translation are the store's own
(:func:`~fleet_ray.store.sqlite.open_file`, :func:`~fleet_ray.store.sqlite.immediate`, whose
failures :func:`~fleet_ray.store.sqlite.sqlite_errors` turns into ``StoreError``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet_ray.store.guardrails import KV, KVGuardrails
from fleet_ray.store.sqlite import immediate, open_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign_kv (
    ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires REAL,
    PRIMARY KEY (ns, key)
);
"""


class SQLiteGuardrails(KVGuardrails):
    """On the embedded store's SQLite file; transactions are ``BEGIN IMMEDIATE`` (writers serialise)."""

    def __init__(self, path: str | Path, namespace: str = "default", clock: Callable[[], float] | None = None):
        super().__init__(clock)
        self.path = Path(path).expanduser()
        self.url = f"sqlite://{self.path}"
        self.ns = namespace
        self._conns = open_file(self.path, _SCHEMA, f"can't open campaign guardrail state in {self.url}")

    @contextmanager
    def _tx(self) -> Iterator[KV]:
        with immediate(self._conns.get(), begin_error=f"campaign guardrail state in {self.url}") as conn:
            yield _SqlKV(conn, self.ns, self._clock())

    def close(self) -> None:
        self._conns.close()


class _SqlKV:
    def __init__(self, conn: sqlite3.Connection, ns: str, now: float):
        self.conn, self.ns, self.now = conn, ns, now

    def get(self, key: str) -> Any:
        row = self.conn.execute(
            "SELECT value FROM campaign_kv WHERE ns=? AND key=? AND (expires IS NULL OR expires > ?)",
            (self.ns, key, self.now),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self.conn.execute(
            "INSERT INTO campaign_kv(ns, key, value, expires) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(ns, key) DO UPDATE SET value=excluded.value, expires=excluded.expires",
            (self.ns, key, json.dumps(value), None if ttl_s is None else self.now + ttl_s),
        )

    def delete(self, key: str) -> None:
        self.conn.execute("DELETE FROM campaign_kv WHERE ns=? AND key=?", (self.ns, key))

    def keys(self, prefix: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT key FROM campaign_kv WHERE ns=? AND substr(key, 1, ?) = ? "
            "AND (expires IS NULL OR expires > ?)",
            (self.ns, len(prefix), prefix, self.now),
        )
        return [r[0] for r in rows]
