"""The reputation circuit breaker's window arithmetic (pure, clock passed in).

Outcomes land in fixed-width buckets (``bucket_s``); the window is the last ``window_s`` worth of
buckets. The breaker trips when the window holds at least ``min_samples`` outcomes and
``failures / samples > failure_rate``. A tripped breaker stays tripped — there is no half-open
state and no timer — until an operator resets it. The Redis Lua script mirrors this code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field


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


class BreakerTrip(BaseModel):
    """What the notifier hook receives (and the ``campaign.breaker.tripped`` event holds)."""

    model_config = ConfigDict(extra="forbid")

    target: str
    samples: int
    failures: int
    failure_rate: float
    threshold: float
    window_s: float
    tripped_at_ms: int
    campaign_id: str | None = None


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
