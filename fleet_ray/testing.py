"""Fakes for unit tests of pure logic. They live in the package so they stay honest: the in-memory
store passes the same contract suite as the real stores."""

from __future__ import annotations

from fleet_ray.store.memory import MemoryStore

__all__ = ["FakeClock", "MemoryStore"]


class FakeClock:
    """A clock that only moves when told to (``advance``); call it for the time in seconds."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
