"""Fleet metrics: exported through ``ray.util.metrics`` (Ray's Prometheus endpoint and dashboard), and
kept as a short per-pool history the API serves for the web dashboard's charts.

The supervisor calls :meth:`FleetMetrics.record_step` once per reconcile step; a sample is taken at most every
``period_s`` (default 1 s), so the step stays cheap. :class:`Sampler` is the pure part (what changed
since the last sample, from the slot table and the recent events); :class:`RayExporter` writes a
sample to Ray's metrics. Every exported metric carries the fleet's namespace as a tag.

Metrics (Prometheus names get Ray's ``ray_`` prefix):

=================================  ======================  ===========================================
``fleet_slots``                    gauge namespace,pool,    slots per lifecycle state
                                   state
``fleet_pool_desired_slots``       gauge namespace,pool     desired slots
``fleet_tasks_total``              counter namespace,pool   tasks (items or runs) finished
``fleet_tasks_per_second``         gauge namespace,pool     recent task rate
``fleet_slot_failures_total``      counter namespace,pool,  slot failures (died, start failed,
                                   kind                     unhealthy, config rejected)
``fleet_slot_recycles_total``      counter namespace,pool   slot replacements
``fleet_heal_escalations_total``   counter namespace,pool   heal back-offs (slot.heal_escalated)
``fleet_stream_depth``             gauge namespace,stream   items queued in a typed output stream
``fleet_items_emitted_total``      counter namespace,       items emitted into a stream
                                   stream
``fleet_reconcile_step_ms``        gauge namespace          duration of the last reconcile step
=================================  ======================  ===========================================
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ray.util.metrics import Counter, Gauge

log = logging.getLogger(__name__)

STATES = ("pending", "starting", "running", "draining", "stopping", "failed", "unreachable")
FAILURE_KINDS = ("slot.died", "slot.start_failed", "slot.unhealthy", "config.rejected")


@dataclass
class PoolSample:
    counts: dict[str, int] = field(default_factory=dict)
    desired: int = 0
    tasks: int = 0  # finished since the previous sample
    failures: dict[str, int] = field(default_factory=dict)  # by event kind
    recycles: int = 0
    escalations: int = 0


@dataclass
class Sample:
    t: float
    dt: float
    pools: dict[str, PoolSample]
    streams: list[dict[str, Any]]
    step_ms: float


class Sampler:
    """Turns the supervisor's state into samples: per-pool deltas since the previous sample."""

    def __init__(self, period_s: float = 1.0, history: int = 600):
        self.period_s = period_s
        self.history: deque[tuple[float, dict[str, tuple[float, float, int]]]] = deque(maxlen=history)
        self._last_t: float | None = None
        self._tasks: dict[tuple[str, int], tuple[int, int]] = {}  # position -> (generation, tasks)
        self._event_mark: tuple[int, int] = (0, 0)
        self._emitted: dict[str, int] = {}

    def due(self, now: float) -> bool:
        return self._last_t is None or now - self._last_t >= self.period_s

    def sample(
        self,
        now: float,
        records: Iterable[Any],
        desired: dict[str, int],
        events: Iterable[Any],
        streams: list[dict[str, Any]] | None = None,
        step_ms: float = 0.0,
    ) -> Sample:
        """``records``: slot records (pool, index, generation, state, tasks); ``events``: recent
        events (kind, pool, physical, counter), oldest first; ``desired``: pool -> slots."""
        dt = 0.0 if self._last_t is None else now - self._last_t
        pools = {name: PoolSample(desired=n) for name, n in desired.items()}
        seen: set[tuple[str, int]] = set()
        for r in records:
            ps = pools.setdefault(r.pool, PoolSample())
            state = getattr(r.state, "value", r.state)
            ps.counts[state] = ps.counts.get(state, 0) + 1
            key = (r.pool, r.index)
            seen.add(key)
            gen, before = self._tasks.get(key, (r.generation, 0))
            delta = r.tasks - before if gen == r.generation else r.tasks
            ps.tasks += max(0, delta)
            self._tasks[key] = (r.generation, r.tasks)
        for key in set(self._tasks) - seen:
            del self._tasks[key]
        mark = self._event_mark
        for e in events:
            hlc = (e.physical, e.counter)
            if hlc <= self._event_mark:
                continue
            mark = max(mark, hlc)
            if not e.pool:
                continue
            ps = pools.setdefault(e.pool, PoolSample())
            if e.kind in FAILURE_KINDS:
                ps.failures[e.kind] = ps.failures.get(e.kind, 0) + 1
            elif e.kind == "slot.recycled":
                ps.recycles += 1
            elif e.kind == "slot.heal_escalated":
                ps.escalations += 1
        self._event_mark = mark
        rates = {
            name: (
                ps.tasks / dt if dt > 0 else 0.0,
                sum(ps.failures.values()) / dt if dt > 0 else 0.0,
                ps.counts.get("running", 0),
            )
            for name, ps in pools.items()
        }
        if dt > 0:
            self.history.append((now, rates))
        self._last_t = now
        return Sample(now, dt, pools, list(streams or []), step_ms)

    def emitted_delta(self, stream: str, total: int) -> int:
        before = self._emitted.get(stream, 0)
        self._emitted[stream] = total
        return max(0, total - before)

    def series(self) -> dict[str, Any]:
        pools: dict[str, list[dict[str, Any]]] = {}
        for t, rates in self.history:
            for name, (tps, fps, running) in rates.items():
                pools.setdefault(name, []).append(
                    {"t": round(t, 3), "tasks_per_s": round(tps, 3), "failures_per_s": round(fps, 3), "running": running}
                )
        return {"period_s": self.period_s, "pools": [{"pool": n, "points": p} for n, p in sorted(pools.items())]}


class RayExporter:
    """Writes samples to ``ray.util.metrics`` (created lazily: only inside a Ray worker)."""

    def __init__(self, namespace: str):

        self.namespace = namespace
        ns, pool = ("namespace",), ("namespace", "pool")
        self.slots = Gauge("fleet_slots", "Slots per pool and lifecycle state.", tag_keys=(*pool, "state"))
        self.desired = Gauge("fleet_pool_desired_slots", "Desired slots per pool.", tag_keys=pool)
        self.tasks = Counter("fleet_tasks_total", "Tasks (items or runs) finished by a pool's slots.", tag_keys=pool)
        self.task_rate = Gauge("fleet_tasks_per_second", "Recent task rate of a pool.", tag_keys=pool)
        self.failures = Counter(
            "fleet_slot_failures_total", "Slot failures by event kind.", tag_keys=(*pool, "kind")
        )
        self.recycles = Counter("fleet_slot_recycles_total", "Slot replacements.", tag_keys=pool)
        self.escalations = Counter("fleet_heal_escalations_total", "Heal back-offs.", tag_keys=pool)
        self.stream_depth = Gauge("fleet_stream_depth", "Items queued in a stream.", tag_keys=(*ns, "stream"))
        self.emitted = Counter("fleet_items_emitted_total", "Items emitted into a stream.", tag_keys=(*ns, "stream"))
        self.step_ms = Gauge("fleet_reconcile_step_ms", "Duration of the last reconcile step.", tag_keys=ns)
        self._known_pools: set[str] = set()

    def export(self, s: Sample, sampler: Sampler) -> None:
        ns = self.namespace
        for name in self._known_pools - set(s.pools):  # a removed pool drops to zero
            for state in STATES:
                self.slots.set(0, tags={"namespace": ns, "pool": name, "state": state})
            self.desired.set(0, tags={"namespace": ns, "pool": name})
            self.task_rate.set(0, tags={"namespace": ns, "pool": name})
        self._known_pools = set(s.pools)
        for name, ps in s.pools.items():
            tags = {"namespace": ns, "pool": name}
            for state in STATES:
                self.slots.set(ps.counts.get(state, 0), tags={**tags, "state": state})
            self.desired.set(ps.desired, tags=tags)
            if ps.tasks:
                self.tasks.inc(ps.tasks, tags=tags)
            self.task_rate.set(ps.tasks / s.dt if s.dt > 0 else 0.0, tags=tags)
            for kind, n in ps.failures.items():
                self.failures.inc(n, tags={**tags, "kind": kind})
            if ps.recycles:
                self.recycles.inc(ps.recycles, tags=tags)
            if ps.escalations:
                self.escalations.inc(ps.escalations, tags=tags)
        for st in s.streams:
            tags = {"namespace": ns, "stream": str(st.get("name"))}
            self.stream_depth.set(float(st.get("depth", 0)), tags=tags)
            delta = sampler.emitted_delta(tags["stream"], int(st.get("items_emitted", 0)))
            if delta:
                self.emitted.inc(delta, tags=tags)
        self.step_ms.set(s.step_ms, tags={"namespace": ns})


class FleetMetrics:
    def __init__(self, namespace: str, period_s: float = 1.0):
        self.sampler = Sampler(period_s)
        self.exporter: RayExporter | None = None
        self.namespace = namespace

    def record(self, state: Any, events: Iterable[Any], streams: Callable[[], list[Any]], step_ms: float,
               now: float) -> None:
        """``state``: the supervisor's FleetState; ``streams``: called only when a sample is due."""
        if not self.sampler.due(now):
            return
        sample = self.sampler.sample(
            now,
            state.table,
            {name: p.slots for name, p in state.desired.items()},
            list(events),
            [s.model_dump() for s in streams()],
            step_ms,
        )
        if self.exporter is None:
            self.exporter = RayExporter(self.namespace)
        self.exporter.export(sample, self.sampler)

    def record_step(self, state: Any, events: Iterable[Any], streams: Callable[[], list[Any]], step_ms: float,
                    now: float) -> None:
        """Called by the supervisor once per step; never raises into the loop."""
        try:
            self.record(state, events, streams, step_ms, now)
        except Exception:
            log.exception("recording fleet metrics failed; continuing")
