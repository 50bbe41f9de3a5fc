"""Hybrid logical clock: ``{physical, counter}`` timestamps that stay causally ordered.

``tick()`` stamps a local event; ``merge(remote)`` folds in a timestamp received from elsewhere,
clamping it to ``wall + max_skew`` so one misbehaving peer can't push the clock into the future.
The wall clock is injected, so tests need no sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

DEFAULT_MAX_SKEW_MS = 10 * 60 * 1000


class HLCTimestamp(NamedTuple):
    physical: int  # milliseconds since the epoch
    counter: int

    def key(self) -> str:
        """A string that sorts the way the timestamps do (for lexicographic indexes)."""
        return f"{self.physical:015d}.{self.counter:08d}"


def _wall_ms() -> int:
    return int(time.time() * 1000)


class HLC:
    def __init__(self, wall_ms: Callable[[], int] = _wall_ms, max_skew_ms: int = DEFAULT_MAX_SKEW_MS):
        self._wall = wall_ms
        self._max_skew = max_skew_ms
        self._last = HLCTimestamp(0, 0)
        self._lock = threading.Lock()

    @property
    def last(self) -> HLCTimestamp:
        return self._last

    def tick(self) -> HLCTimestamp:
        with self._lock:
            wall = self._wall()
            if wall > self._last.physical:
                self._last = HLCTimestamp(wall, 0)
            else:
                self._last = HLCTimestamp(self._last.physical, self._last.counter + 1)
            return self._last

    def merge(self, remote: HLCTimestamp | tuple[int, int]) -> HLCTimestamp:
        with self._lock:
            wall = self._wall()
            r = HLCTimestamp(*remote)
            limit = wall + self._max_skew
            if r.physical > limit:  # clamp a peer that is too far ahead
                r = HLCTimestamp(limit, 0)
            physical = max(wall, self._last.physical, r.physical)
            if physical == self._last.physical == r.physical:
                counter = max(self._last.counter, r.counter) + 1
            elif physical == self._last.physical:
                counter = self._last.counter + 1
            elif physical == r.physical:
                counter = r.counter + 1
            else:
                counter = 0
            self._last = HLCTimestamp(physical, counter)
            return self._last
