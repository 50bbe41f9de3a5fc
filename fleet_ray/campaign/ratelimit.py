"""Token-bucket math for the per-target rate limit (pure, clock passed in).

A request *reserves* the next slot: the bucket may go into debt, and the caller sleeps until its slot
instead of polling. That is the generic cell-rate algorithm, a token bucket seen from the request's
side: one store round trip per request, first come first served, and slots never closer than
``spacing`` apart once the burst is spent. The same arithmetic runs in the Redis Lua script
(:mod:`fleet_ray.campaign.guardrails_redis`) and on SQLite/memory (:mod:`fleet_ray.campaign.guardrails`).
"""

from __future__ import annotations

from typing import NamedTuple


class Bucket(NamedTuple):
    tokens: float  # may be negative: slots already promised to waiting requests
    ts: float  # when ``tokens`` was last brought up to date (seconds)


class Reservation(NamedTuple):
    granted: bool  # False: the wait would exceed max_wait, nothing was reserved
    wait_s: float  # sleep this long, then send (0: send now)
    bucket: Bucket  # the state to store (unchanged when not granted)


def effective_rate(rate: float, jitter_margin: float) -> float:
    """Slots per second actually handed out: a little under ``rate`` so send jitter stays inside it."""
    return rate / (1.0 + jitter_margin)


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


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most events in any half-open window ``[t, t + window_s)`` starting at an event."""
    ts = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(ts):
        while j < len(ts) and ts[j] < t + window_s:
            j += 1
        best = max(best, j - i)
    return best
