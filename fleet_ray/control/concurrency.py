"""A slot's concurrency under host pressure, the slot's side of
:func:`~fleet_ray.control.autoscale.decide_concurrency`, pure and clock-injected.

A batch slot of a pool with ``concurrency_bounds`` keeps one :class:`ConcurrencyGovernor`. The slot
actor (``actors/slot.py``) samples its host every :meth:`ConcurrencyGovernor.sample_every` seconds —
host CPU and memory in use, how late its event loop ran the sampling timer, for browser slots
Chromium's memory against ``browser.max_browser_rss_mb``, the items it works on now — and hands the
readings to :meth:`ConcurrencyGovernor.sample`. Every ``interval_s`` (:meth:`ConcurrencyGovernor.due`)
:meth:`ConcurrencyGovernor.decide` averages the samples of the interval (:class:`PressureWindow`), asks
``decide_concurrency`` for the next value and returns a :class:`ConcurrencyChange` when it moved; the
slot then leases and starts up to :attr:`ConcurrencyGovernor.current` items (items already running
above a lowered value finish; none is cancelled) and reports the change as a ``slot.concurrency``
event. :meth:`ConcurrencyGovernor.report` is what the slot's health report carries to status.

Everything here is plain values: the readings come in, time comes in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fleet_ray.spec.scaling import ConcurrencyBounds

from .autoscale import PressureSnapshot, decide_concurrency

SAMPLES_PER_INTERVAL = 5  # readings averaged per decision
MIN_SAMPLE_S = 0.05
MAX_SAMPLE_S = 1.0

_FIELDS = ("cpu_ratio", "memory_ratio", "event_loop_lag_s", "chromium_memory_ratio", "in_flight")


@dataclass
class PressureWindow:
    """Readings since the last decision; :meth:`snapshot` is their mean (a reading never given stays
    None: not measured)."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, **readings: float | None) -> None:
        for name, value in readings.items():
            if name not in _FIELDS:
                raise TypeError(f"unknown pressure reading {name!r} (one of {', '.join(_FIELDS)})")
            if value is None:
                continue
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1

    @property
    def samples(self) -> int:
        return max(self.counts.values(), default=0)

    def snapshot(self) -> PressureSnapshot:
        means = {n: self.sums[n] / self.counts[n] for n in self.counts}
        in_flight = means.pop("in_flight", None)
        return PressureSnapshot(**means, in_flight=None if in_flight is None else round(in_flight))

    def clear(self) -> None:
        self.sums.clear()
        self.counts.clear()


@dataclass(frozen=True)
class ConcurrencyChange:
    """The slot's concurrency moved from ``previous`` to ``current`` at ``at``, for ``reason``, on the
    averaged ``pressure``."""

    previous: int
    current: int
    reason: str
    pressure: PressureSnapshot
    at: float

    @property
    def direction(self) -> str:
        return "up" if self.current > self.previous else "down"

    def readings(self) -> dict[str, Any]:
        """The pressure as event data (rounded; readings not measured left out)."""
        return _rounded(self.pressure)


class ConcurrencyGovernor:
    """One slot's concurrency within ``bounds`` (see the module docstring). ``start`` is the pool's
    ``concurrency`` (brought inside the bounds); ``now`` is when the slot starts, the first decision
    comes ``interval_s`` after it."""

    def __init__(self, bounds: ConcurrencyBounds, start: int, now: float):
        self.bounds = bounds
        self.current = max(bounds.min, min(bounds.max, start))
        self.reason = f"starting at {self.current} (concurrency_bounds {bounds.min}..{bounds.max})"
        self.window = PressureWindow()
        self.decided_at = now
        self.changed_at: float | None = None
        self.changes = 0
        self.last: PressureSnapshot | None = None  # what the last decision read

    def sample_every(self) -> float:
        """Seconds between readings: :data:`SAMPLES_PER_INTERVAL` per ``interval_s``, within 0.05..1 s."""
        return max(MIN_SAMPLE_S, min(MAX_SAMPLE_S, self.bounds.interval_s / SAMPLES_PER_INTERVAL))

    def sample(self, **readings: float | None) -> None:
        """One set of readings (``cpu_ratio``, ``memory_ratio``, ``event_loop_lag_s``,
        ``chromium_memory_ratio``, ``in_flight``; None: not measured)."""
        self.window.add(**readings)

    def due(self, now: float) -> bool:
        return now - self.decided_at >= self.bounds.interval_s

    def decide(self, now: float) -> ConcurrencyChange | None:
        """Decide on the interval's readings (and start a new interval); the change, if any."""
        pressure = self.window.snapshot()
        self.window.clear()
        self.decided_at = now
        new, reason = decide_concurrency(self.bounds, pressure, self.current)
        self.reason, self.last = reason, pressure
        if new == self.current:
            return None
        change = ConcurrencyChange(self.current, new, reason, pressure, now)
        self.current, self.changed_at = new, now
        self.changes += 1
        return change

    def tick(self, now: float, **readings: float | None) -> ConcurrencyChange | None:
        """:meth:`sample`, then :meth:`decide` if an interval has passed."""
        self.sample(**readings)
        return self.decide(now) if self.due(now) else None

    def report(self) -> dict[str, Any]:
        """What the slot's health report carries (``SlotStatus.concurrency`` in status)."""
        return {
            "current": self.current,
            "min": self.bounds.min,
            "max": self.bounds.max,
            "reason": self.reason,
            "changes": self.changes,
            "changed_at": self.changed_at,
            "decided_at": self.decided_at,
            "pressure": _rounded(self.last) if self.last is not None else {},
        }


def cpu_busy_ratio(before: Mapping[str, float], after: Mapping[str, float]) -> float | None:
    """The busy share (0..1) of all CPUs between two readings of their cumulative times (``psutil.cpu_times()
    ._asdict()``, seconds per mode): everything but idle and iowait, over everything (guest time is already
    counted in user time on Linux, so it is not added twice); None when no time passed."""
    def total(t: Mapping[str, float]) -> float:
        return sum(t.values()) - t.get("guest", 0.0) - t.get("guest_nice", 0.0)

    def idle(t: Mapping[str, float]) -> float:
        return t.get("idle", 0.0) + t.get("iowait", 0.0)

    elapsed = total(after) - total(before)
    if elapsed <= 0:
        return None
    busy = elapsed - (idle(after) - idle(before))
    return max(0.0, min(1.0, busy / elapsed))


def _rounded(pressure: PressureSnapshot) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(pressure).items() if v is not None}
