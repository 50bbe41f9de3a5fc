"""Guardrail state: per-target rate-limit buckets, breaker windows, leases and shared values.

Campaign members on many nodes share one guardrail state, so it lives in the fleet's store, next to
the event log, behind one protocol, :class:`GuardrailState`, with a backend beside each store backend:

- :class:`~fleet_ray.store.redis_guardrails.RedisGuardrails` — production: each operation is one Lua
  script, atomic on the server and timed by the server's clock (nodes' clocks may disagree);
- :class:`~fleet_ray.store.sqlite_guardrails.SQLiteGuardrails` — the embedded store's file, each
  operation one ``BEGIN IMMEDIATE`` transaction (every process on the host sees the same state);
- :class:`~fleet_ray.store.memory_guardrails.MemoryGuardrails` — one process (the thread executor, tests).

:func:`fleet_ray.store.open_guardrails` picks the backend from the store URL, as
:func:`~fleet_ray.store.open_store` does. This module holds what they share: the protocol, its values,
the key names, and the arithmetic every backend runs — the token bucket (:func:`reserve`) and the
breaker window (:func:`add_outcome`, :func:`window_counts`, :func:`should_trip`). The SQLite and memory
backends run it inside a transaction over a small JSON key-value table (:class:`KVGuardrails`); the
Lua scripts mirror it. ``tests/*/test_campaign_guardrails*.py`` hold all three to one contract.
Pure: no I/O here.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

# --- the token bucket -----------------------------------------------------------------------------
# A request *reserves* the next slot: the bucket may go into debt, and the caller sleeps until its slot
# instead of polling. That is the generic cell-rate algorithm, a token bucket seen from the request's
# side: one store round trip per request, first come first served, and slots never closer than
# 1/rate apart once the burst is spent.


class Bucket(NamedTuple):
    tokens: float  # may be negative: slots already promised to waiting requests
    ts: float  # when ``tokens`` was last brought up to date (seconds)


class Reservation(NamedTuple):
    granted: bool  # False: the wait would exceed max_wait, nothing was reserved
    wait_s: float  # sleep this long, then send (0: send now)
    bucket: Bucket  # the state to store (unchanged when not granted)


def reserve(
    bucket: Bucket | None, now: float, rate: float, burst: int = 1, max_wait_s: float = float("inf")
) -> Reservation:
    """Reserve one slot at ``now`` from a bucket refilling at ``rate``/s up to ``burst`` tokens."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if bucket is None:
        bucket = Bucket(float(burst), now)
    elapsed = max(0.0, now - bucket.ts)  # a clock that steps back never mints tokens
    tokens = min(float(burst), bucket.tokens + elapsed * rate) - 1.0
    wait = 0.0 if tokens >= 0 else -tokens / rate
    if wait > max_wait_s:
        return Reservation(False, wait, bucket)
    return Reservation(True, wait, Bucket(tokens, max(now, bucket.ts)))


# --- the breaker window ---------------------------------------------------------------------------
# Outcomes land in fixed-width buckets (``bucket_s``); the window is the last ``window_s`` worth of
# buckets. A breaker trips when the window holds at least ``min_samples`` outcomes and
# ``failures / samples > failure_rate``, and stays tripped until an operator resets it.


class BreakerWindow(Protocol):
    """The breaker settings the state needs (a campaign's ``BreakerConfig`` is one)."""

    @property
    def failure_rate(self) -> float: ...
    @property
    def window_s(self) -> float: ...
    @property
    def min_samples(self) -> int: ...
    @property
    def bucket_s(self) -> float: ...


@dataclass(frozen=True)
class WindowDefaults:
    failure_rate: float = 0.10
    window_s: float = 60.0
    min_samples: int = 20
    bucket_s: float = 1.0


DEFAULT_WINDOW = WindowDefaults()  # the defaults of a campaign's BreakerConfig, too


class WindowCounts(NamedTuple):
    samples: int
    failures: int


class BreakerState(BaseModel):
    """One target's breaker as ``status()`` and ``fleet-ray breaker status`` show it."""

    model_config = ConfigDict(extra="forbid")

    target: str
    tripped: bool = False
    samples: int = Field(0, description="Outcomes in the current window")
    failures: int = Field(0, description="Failures in the current window")
    tripped_at_ms: int | None = None
    trip_samples: int | None = Field(None, description="Window samples when it tripped")
    trip_failures: int | None = Field(None, description="Window failures when it tripped")

    @property
    def reason(self) -> str:
        if not self.tripped or not self.trip_samples:
            return ""
        rate = (self.trip_failures or 0) / self.trip_samples
        return f"{self.trip_failures}/{self.trip_samples} failures ({rate:.0%}) in the window"


def bucket_of(now: float, bucket_s: float) -> int:
    return math.floor(now / bucket_s)


def buckets_in_window(window_s: float, bucket_s: float) -> int:
    return max(1, math.ceil(window_s / bucket_s))


def add_outcome(
    buckets: dict[int, tuple[int, int]], now: float, ok: bool, window_s: float, bucket_s: float
) -> dict[int, tuple[int, int]]:
    """Count one outcome and drop buckets that fell out of the window. Returns the new buckets."""
    b = bucket_of(now, bucket_s)
    oldest = b - buckets_in_window(window_s, bucket_s) + 1
    out = {k: v for k, v in buckets.items() if k >= oldest}
    s, f = out.get(b, (0, 0))
    out[b] = (s + 1, f + (0 if ok else 1))
    return out


def window_counts(buckets: dict[int, tuple[int, int]], now: float, window_s: float, bucket_s: float) -> WindowCounts:
    b = bucket_of(now, bucket_s)
    oldest = b - buckets_in_window(window_s, bucket_s) + 1
    s = f = 0
    for k, (bs, bf) in buckets.items():
        if oldest <= k <= b:
            s += bs
            f += bf
    return WindowCounts(s, f)


def should_trip(counts: WindowCounts, failure_rate: float, min_samples: int) -> bool:
    return counts.samples >= min_samples and counts.failures > failure_rate * counts.samples


# --- key names (relative to the backend's namespace), in one place --------------------------------


def k_bucket(host: str) -> str:
    return f"rl:{host}"


def k_breaker(host: str) -> str:
    return f"br:{host}"


def k_lease(name: str) -> str:
    return f"lease:{name}"


def k_shared(name: str) -> str:
    return f"sh:{name}"


# --- the protocol ---------------------------------------------------------------------------------


class GuardrailState(Protocol):
    url: str  # redacted: never holds a password

    def reserve(self, host: str, rate: float, burst: int, max_wait_s: float) -> Reservation: ...
    def breaker_record(self, host: str, ok: bool, cfg: BreakerWindow) -> tuple[BreakerState, bool]:
        """Count one outcome; returns the state and whether *this* outcome tripped the breaker."""

    def breaker_state(self, host: str, cfg: BreakerWindow | None = None) -> BreakerState: ...
    def breaker_states(self, cfg: BreakerWindow | None = None) -> list[BreakerState]: ...
    def breaker_reset(self, host: str) -> bool:
        """Close a breaker and forget its window; returns whether it was tripped."""

    def claim(self, name: str, owner: str, ttl_s: float) -> float:
        """Take or renew a lease; returns 0.0 when held by ``owner`` now, else seconds until it lapses."""

    def release(self, name: str, owner: str) -> None: ...
    def shared_get(self, name: str) -> bytes | None: ...
    def shared_put(self, name: str, value: bytes, ttl_s: float) -> None: ...
    def close(self) -> None: ...


# --- the arithmetic over a transactional JSON key-value table (SQLite and memory) -----------------


class KV(Protocol):
    """One transaction's view of a backend's JSON key-value table."""

    now: float  # the clock, read once the transaction holds its lock

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> list[str]: ...


def _state_from(host: str, raw: dict | None, now: float, cfg: BreakerWindow) -> BreakerState:
    raw = raw or {}
    buckets = {int(k): tuple(v) for k, v in raw.get("buckets", {}).items()}
    counts = window_counts(buckets, now, cfg.window_s, cfg.bucket_s)
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
    """:class:`GuardrailState` over a transactional JSON key-value table; a backend provides ``_tx``."""

    url: str

    def __init__(self, clock: Callable[[], float] | None = None):
        self._clock = clock or time.time

    def _tx(self) -> AbstractContextManager[KV]:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def reserve(self, host: str, rate: float, burst: int, max_wait_s: float) -> Reservation:
        with self._tx() as kv:
            now = kv.now  # read under the lock: a stale time would hand out slots twice
            raw = kv.get(k_bucket(host))
            res = reserve(Bucket(*raw) if raw else None, now, rate, burst, max_wait_s)
            if res.granted:
                # the bucket is full again after (burst - tokens)/rate seconds: then the key can go
                kv.set(k_bucket(host), list(res.bucket), ttl_s=(burst - res.bucket.tokens) / rate + 60)
            return res

    def breaker_record(self, host: str, ok: bool, cfg: BreakerWindow) -> tuple[BreakerState, bool]:
        with self._tx() as kv:
            now = kv.now
            raw = kv.get(k_breaker(host)) or {}
            buckets = {int(k): tuple(v) for k, v in raw.get("buckets", {}).items()}
            buckets = add_outcome(buckets, now, ok, cfg.window_s, cfg.bucket_s)
            raw["buckets"] = {str(k): list(v) for k, v in buckets.items()}
            just = False
            if not raw.get("tripped"):
                counts = window_counts(buckets, now, cfg.window_s, cfg.bucket_s)
                if should_trip(counts, cfg.failure_rate, cfg.min_samples):
                    just = True
                    raw.update(tripped=True, tripped_at_ms=int(now * 1000),
                               trip_samples=counts.samples, trip_failures=counts.failures)
            kv.set(k_breaker(host), raw)
            return _state_from(host, raw, now, cfg), just

    def breaker_state(self, host: str, cfg: BreakerWindow | None = None) -> BreakerState:
        with self._tx() as kv:
            return _state_from(host, kv.get(k_breaker(host)), kv.now, cfg or DEFAULT_WINDOW)

    def breaker_states(self, cfg: BreakerWindow | None = None) -> list[BreakerState]:
        window = cfg or DEFAULT_WINDOW
        with self._tx() as kv:
            base = k_breaker("")
            hosts = sorted(k[len(base):] for k in kv.keys(base))
            return [_state_from(h, kv.get(k_breaker(h)), kv.now, window) for h in hosts]

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


__all__ = [
    "DEFAULT_WINDOW", "KV", "BreakerState", "BreakerWindow", "Bucket", "GuardrailState", "KVGuardrails",
    "Reservation", "WindowCounts", "add_outcome", "k_breaker", "k_bucket", "k_lease", "k_shared", "reserve",
    "should_trip", "window_counts",
]
