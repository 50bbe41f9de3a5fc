"""Cluster-wide guardrail state: rate-limit buckets, breakers, driver leases, shared discoveries.

Members on many nodes share one state, so it lives in the fleet's store, next to the event log:

- :class:`~fleet_ray.campaign.guardrails_redis.RedisGuardrails` — production: each operation is one
  Lua script, atomic on the server, timed by the server's clock (nodes' clocks may disagree);
- :class:`SQLiteGuardrails` — the embedded store's file, each operation one ``BEGIN IMMEDIATE``
  transaction (every process on the host sees the same state);
- :class:`MemoryGuardrails` — one process (the thread executor and unit tests).

The SQLite and memory backends run the pure arithmetic of :mod:`~fleet_ray.campaign.ratelimit` and
:mod:`~fleet_ray.campaign.breaker` inside a transaction over a small JSON key-value table; the Lua
scripts do the same arithmetic. ``tests/*/test_campaign_guardrails*.py`` hold all three to one contract.
These are helpers of the campaign package; the :class:`~fleet_ray.store.base.Store` protocol is unchanged.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from fleet_ray.campaign import breaker as br
from fleet_ray.campaign.breaker import BreakerState
from fleet_ray.campaign.config import BreakerConfig
from fleet_ray.campaign.ratelimit import Bucket, Reservation, reserve
from fleet_ray.errors import StoreError, redact_url


# Key names (relative to the backend's namespace), in one place.
def k_bucket(host: str) -> str:
    return f"rl:{host}"


def k_breaker(host: str) -> str:
    return f"br:{host}"


def k_lease(name: str) -> str:
    return f"lease:{name}"


def k_shared(name: str) -> str:
    return f"sh:{name}"


class Guardrails(Protocol):
    def reserve(self, host: str, rate: float, burst: int, max_wait_s: float) -> Reservation: ...
    def breaker_record(self, host: str, ok: bool, cfg: BreakerConfig) -> tuple[BreakerState, bool]:
        """Count one outcome; returns the state and whether *this* outcome tripped the breaker."""

    def breaker_state(self, host: str, cfg: BreakerConfig | None = None) -> BreakerState: ...
    def breaker_states(self, cfg: BreakerConfig | None = None) -> list[BreakerState]: ...
    def breaker_reset(self, host: str) -> bool:
        """Close a breaker and forget its window; returns whether it was tripped."""

    def claim(self, name: str, owner: str, ttl_s: float) -> float:
        """Take or renew a lease; returns 0.0 when held by ``owner`` now, else seconds until it lapses."""

    def release(self, name: str, owner: str) -> None: ...
    def shared_get(self, name: str) -> bytes | None: ...
    def shared_put(self, name: str, value: bytes, ttl_s: float) -> None: ...
    def close(self) -> None: ...


class _KV(Protocol):
    now: float  # the clock, read once the transaction holds its lock

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> list[str]: ...


def _state_from(host: str, raw: dict | None, now: float, cfg: BreakerConfig) -> BreakerState:
    raw = raw or {}
    buckets = {int(k): tuple(v) for k, v in raw.get("buckets", {}).items()}
    counts = br.window_counts(buckets, now, cfg.window_s, cfg.bucket_s)
    return BreakerState(
        target=host,
        tripped=bool(raw.get("tripped")),
        samples=counts.samples,
        failures=counts.failures,
        tripped_at_ms=raw.get("tripped_at_ms"),
        trip_samples=raw.get("trip_samples"),
        trip_failures=raw.get("trip_failures"),
    )


class KVGuardrails:
    """Guardrail operations over a transactional JSON key-value table (SQLite and memory)."""

    def __init__(self, clock: Callable[[], float] | None = None):
        self._clock = clock or time.time

    @contextmanager
    def _tx(self) -> Iterator[_KV]:  # pragma: no cover - provided by subclasses
        raise NotImplementedError
        yield

    def reserve(self, host: str, rate: float, burst: int, max_wait_s: float) -> Reservation:
        with self._tx() as kv:
            now = kv.now  # read under the lock: a stale time would hand out slots twice
            raw = kv.get(k_bucket(host))
            res = reserve(Bucket(*raw) if raw else None, now, rate, burst, max_wait_s)
            if res.granted:
                # the bucket is full again after (burst - tokens)/rate seconds: then the key can go
                kv.set(k_bucket(host), list(res.bucket), ttl_s=(burst - res.bucket.tokens) / rate + 60)
            return res

    def breaker_record(self, host: str, ok: bool, cfg: BreakerConfig) -> tuple[BreakerState, bool]:
        with self._tx() as kv:
            now = kv.now
            raw = kv.get(k_breaker(host)) or {}
            buckets = {int(k): tuple(v) for k, v in raw.get("buckets", {}).items()}
            buckets = br.add_outcome(buckets, now, ok, cfg.window_s, cfg.bucket_s)
            raw["buckets"] = {str(k): list(v) for k, v in buckets.items()}
            just = False
            if not raw.get("tripped"):
                counts = br.window_counts(buckets, now, cfg.window_s, cfg.bucket_s)
                if br.should_trip(counts, cfg.failure_rate, cfg.min_samples):
                    just = True
                    raw.update(tripped=True, tripped_at_ms=int(now * 1000),
                               trip_samples=counts.samples, trip_failures=counts.failures)
            kv.set(k_breaker(host), raw)
            return _state_from(host, raw, now, cfg), just

    def breaker_state(self, host: str, cfg: BreakerConfig | None = None) -> BreakerState:
        with self._tx() as kv:
            return _state_from(host, kv.get(k_breaker(host)), kv.now, cfg or BreakerConfig())

    def breaker_states(self, cfg: BreakerConfig | None = None) -> list[BreakerState]:
        cfg = cfg or BreakerConfig()
        with self._tx() as kv:
            hosts = sorted(k[len("br:"):] for k in kv.keys("br:"))
            return [_state_from(h, kv.get(k_breaker(h)), kv.now, cfg) for h in hosts]

    def breaker_reset(self, host: str) -> bool:
        with self._tx() as kv:
            raw = kv.get(k_breaker(host)) or {}
            kv.delete(k_breaker(host))
            return bool(raw.get("tripped"))

    def claim(self, name: str, owner: str, ttl_s: float) -> float:
        with self._tx() as kv:
            now = kv.now
            raw = kv.get(k_lease(name))
            if raw and raw["owner"] != owner and raw["until"] > now:
                return max(raw["until"] - now, 1e-3)
            kv.set(k_lease(name), {"owner": owner, "until": now + ttl_s}, ttl_s=ttl_s)
            return 0.0

    def release(self, name: str, owner: str) -> None:
        with self._tx() as kv:
            raw = kv.get(k_lease(name))
            if raw and raw["owner"] == owner:
                kv.delete(k_lease(name))

    def shared_get(self, name: str) -> bytes | None:
        with self._tx() as kv:
            raw = kv.get(k_shared(name))
            return base64.b64decode(raw) if raw is not None else None

    def shared_put(self, name: str, value: bytes, ttl_s: float) -> None:
        with self._tx() as kv:
            kv.set(k_shared(name), base64.b64encode(value).decode(), ttl_s=ttl_s)

    def close(self) -> None:
        pass


class MemoryGuardrails(KVGuardrails):
    """In one process only: for the thread executor and unit tests."""

    url = "memory://"

    def __init__(self, clock: Callable[[], float] | None = None):
        super().__init__(clock)
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[_KV]:
        with self._lock:
            yield _MemKV(self._data, self._clock())


class _MemKV:
    def __init__(self, data: dict[str, tuple[Any, float | None]], now: float):
        self.data = data
        self.now = now

    def get(self, key: str) -> Any:
        item = self.data.get(key)
        if item is None or (item[1] is not None and item[1] <= self.now):
            return None
        return json.loads(json.dumps(item[0]))  # copy, like a real store

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self.data[key] = (json.loads(json.dumps(value)), None if ttl_s is None else self.now + ttl_s)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix) and self.get(k) is not None]


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
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn().executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"can't open campaign guardrail state in {self.url}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[_KV]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"campaign guardrail state in {self.url}: {exc}") from exc
        try:
            yield _SqlKV(conn, self.ns, self._clock())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


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


def open_guardrails(store_url: str, namespace: str = "default", clock: Callable[[], float] | None = None
                    ) -> Guardrails:
    """Guardrail state next to the store at ``store_url`` (``redis://``, ``sqlite://`` or ``memory://``)."""
    if store_url.startswith(("redis://", "rediss://", "unix://")):
        from fleet_ray.campaign.guardrails_redis import RedisGuardrails

        return RedisGuardrails(store_url, namespace, clock=clock)
    if store_url.startswith("sqlite://"):
        return SQLiteGuardrails(store_url[len("sqlite://"):], namespace, clock=clock)
    if store_url.startswith("memory://"):
        return MemoryGuardrails(clock)
    raise StoreError(f"unsupported store URL {redact_url(store_url)!r} for campaign guardrails")
