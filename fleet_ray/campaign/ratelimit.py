"""The per-target rate limit, as a member applies it (pure).

Slots come from the token bucket in the guardrail state (:func:`fleet_ray.store.guardrails.reserve`,
mirrored by the Redis Lua script): one store round trip per request, first come first served. A member
asks for slots a little under the configured rate (:func:`effective_rate`) so the jitter of its sends
can't push the rate the target sees above it; :func:`max_in_window` is how tests and the benchmark
check that it doesn't.
"""

from __future__ import annotations


def effective_rate(rate: float, jitter_margin: float) -> float:
    """Slots per second actually handed out: a little under ``rate`` so send jitter stays inside it."""
    return rate / (1.0 + jitter_margin)


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
