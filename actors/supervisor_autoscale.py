"""Autoscaled pools, wired into the supervisor: signals in, sizes out, nodes asked for.

:class:`PoolAutoscaler` is one of the supervisor's parts. Once a second (:data:`DECIDE_EVERY_S`, from the
reconcile step, never blocking) it takes each autoscaled pool that is not paused, builds its
observation (:func:`fleet_ray.control.pool_scaling.observe_pool`: the pool's size, ready and pending
positions, the latest signal reading, whether a rollout is in progress), calls
:func:`fleet_ray.control.autoscale.decide_scale` with the pool's :class:`ScaleState` (kept in
``FleetState.autoscale`` and checkpointed, so a restarted supervisor keeps its windows and cool-down),
and on a change sets the pool's size the way ``scale`` does (:meth:`SpecEditor.resize
<fleet_ray.actors.supervisor_specs.SpecEditor.resize>`): the reconcile step then starts the new
positions, or drains the highest ones (``Drain(retire=True)``: in-flight items finish or their leases
go back to the queue). Each change is one ``pool.scaled`` event; holds show in status only.

Beside the step, :meth:`PoolAutoscaler.run` refreshes the signals (:class:`RayScaleSignals`: each batch
pool's work queue ``stats()`` — queued + leased, and the item latency from the completion rate —
and the consumer lag the stream hubs report through :class:`~fleet_ray.actors.services.FleetServices`)
and sends Ray's autoscaler what the pools that wait for nodes need, autoscaled or fixed (:class:`RayResourceRequests`:
``ray.autoscaler.sdk.request_resources`` with one slot bundle per wanted slot; an empty request
once nothing waits, so idle nodes can go). Unit tests hand it :class:`fleet_ray.testing.FakeScaleSignals`
and :class:`fleet_ray.testing.FakeResourceRequests` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.autoscaler.sdk import request_resources

from fleet_ray.control.autoscale import ScaleState, decide_scale
from fleet_ray.control.pool_scaling import (
    PoolScale,
    ResourceRequest,
    SignalReading,
    little_latency,
    observe_pool,
    pending_positions,
    pool_signal,
    resource_request,
)
from fleet_ray.control.state import FleetState
from fleet_ray.names import workqueue_name
from fleet_ray.observe.kinds import PoolScaled
from fleet_ray.ray_boundary import short_cause
from fleet_ray.spec.scaling import ScaleSignal

from .supervisor_events import EventJournal

log = logging.getLogger(__name__)

DECIDE_EVERY_S = 1.0  # decisions per pool: once a second (the policy's windows are seconds long)
REFRESH_EVERY_S = 1.0  # signal readings and the resource request
STATS_TIMEOUT_S = 2.0


class PoolAutoscaler:
    """Sizes the autoscaled pools (see the module docstring)."""

    def __init__(self, state: FleetState, journal: EventJournal, specs: Any, signals: Any, requests: Any,
                 clock: Callable[[], float] = time.time):
        self.state, self.journal, self.specs = state, journal, specs
        self.signals, self.requests, self.clock = signals, requests, clock
        self.watching: dict[str, ScaleSignal] = {}  # pool -> what to read for it
        self.request = ResourceRequest()
        self._sent: ResourceRequest | None = None  # None: nothing sent by this supervisor yet
        self._decided_at = float("-inf")

    # -- the step (never blocks) -------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if now - self._decided_at < DECIDE_EVERY_S:
            return
        self._decided_at = now
        st = self.state
        watching: dict[str, ScaleSignal] = {}
        for name in [n for n in st.autoscale if n not in st.desired or st.desired[n].autoscale is None]:
            del st.autoscale[name]
        for name, pool in st.desired.items():
            policy = pool.autoscale
            if policy is None:
                continue
            scale = st.autoscale.setdefault(name, PoolScale(ScaleState()))
            try:
                signal = pool_signal(pool, st.batch.get(name, False))
            except ValueError as exc:
                scale.problem, scale.decision = str(exc), None
                continue
            scale.problem, scale.signal = "", signal.describe()
            watching[name] = signal
            if pool.paused:  # a paused pool leases no work: its backlog says nothing (its state is kept)
                continue
            scale.reading = self.signals.reading(name)
            rollout = st.rollouts.get(name)
            obs = observe_pool(pool, st.table.of_pool(name), scale.reading, now,
                               rollout is not None and rollout.active, scale.signal)
            before = scale.state
            decision, scale.state = decide_scale(policy, scale.state, obs, now)
            scale.decision, scale.decided_at = decision, now
            scale.ready, scale.pending = obs.ready, obs.pending_slots
            if decision.changed:
                self.specs.resize(name, decision.slots)
                self.journal.emit(PoolScaled, pool=name, from_=decision.previous, to=decision.slots,
                                  wanted=decision.wanted, reason=decision.reason, signal=scale.signal,
                                  signal_value=decision.signal,
                                  message=f"{decision.previous} → {decision.slots} slot(s): {decision.reason}")
                log.info("pool %s scaled %d -> %d: %s", name, decision.previous, decision.slots, decision.reason)
                st.dirty = True
            elif _windows(before) != _windows(scale.state):
                st.dirty = True  # a delay window began or ended: a restarted supervisor must see it
            else:
                st.routine_dirty = True  # only the signal's average moved: checkpointed every few seconds
        self.watching = watching
        self.request = resource_request(st.desired, st.autoscale, pending_positions(st.desired, st.table))

    # -- beside the step ---------------------------------------------------------------------------
    def sync_request(self) -> bool:
        """Send Ray's autoscaler the current request if it changed (blocking: a GCS call). Nothing is
        sent by a supervisor that has no autoscaled pool, no pending slots and never sent anything (an
        operator's own request_resources stays as it is); its first request clears what an earlier
        incarnation left."""
        req = self.request
        if req == self._sent or (self._sent is None and not req.bundles and not self.watching):
            return False
        self.requests.send(req)
        self._sent = req
        if req.bundles:
            log.info("asked Ray's autoscaler for %s", ", ".join(f"{n} slot(s) of pool {p}" for p, n in req.pools))
        return True

    async def run(self) -> None:
        """Refresh the signals and send the resource request, every :data:`REFRESH_EVERY_S`; a failure
        is logged and the loop goes on."""
        while True:
            try:
                await self.signals.refresh(dict(self.watching))
                await asyncio.to_thread(self.sync_request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autoscale signals or resource request failed; will retry")
            await asyncio.sleep(REFRESH_EVERY_S)

    def shutdown(self) -> None:
        """The fleet goes down: clear a request this supervisor made, so its nodes can go."""
        self.watching, self.request = {}, ResourceRequest()
        if self._sent is not None and self._sent.bundles:
            try:
                self.requests.send(ResourceRequest())
                self._sent = ResourceRequest()
            except Exception as exc:
                log.warning("could not clear the resource request: %s", short_cause(exc))


def _windows(state: ScaleState) -> tuple[float | None, ...]:
    """The up/down delay windows and the cool-down: written at once when one begins or ends (a signal
    that flickers around 0 moves idle_since/busy_since every second; those go with the routine writes)."""
    return state.up_since, state.down_since, state.changed_at


class RayScaleSignals:
    """The readings autoscaled pools scale on, from Ray: a batch pool's work queue ``stats()`` (queued +
    leased items; the item latency by Little's law from its completions), a stream consumer's lag from
    the hub stats :class:`~fleet_ray.actors.services.FleetServices` polls each second."""

    def __init__(self, namespace: str, services: Any, clock: Callable[[], float] = time.time):
        self.namespace, self.services, self.clock = namespace, services, clock
        self._readings: dict[str, SignalReading] = {}
        self._queues: dict[str, Any] = {}  # pool -> work queue handle (looked up by name)
        self._last: dict[str, tuple[float, int]] = {}  # pool -> (when, completed) of the previous stats
        self._hub_stats: dict[str, Any] = {}  # pool -> the hub stats read last (each poll makes a new dict)

    def reading(self, pool: str) -> SignalReading | None:
        return self._readings.get(pool)

    async def refresh(self, watching: dict[str, ScaleSignal]) -> None:
        for pool in [p for p in self._readings if p not in watching]:
            self._readings.pop(pool, None)
            self._last.pop(pool, None)
            self._queues.pop(pool, None)
            self._hub_stats.pop(pool, None)
        backlog = [p for p, s in watching.items() if s.kind == "backlog"]
        if backlog:
            await asyncio.gather(*(self._queue_stats(p) for p in backlog))
        for pool, signal in watching.items():
            if signal.kind == "lag" and signal.stream:
                self._lag(pool, signal.stream)

    async def _queue_stats(self, pool: str) -> None:
        handle = self._queues.get(pool)
        try:
            if handle is None:
                handle = await asyncio.to_thread(ray.get_actor, workqueue_name(pool), namespace=self.namespace)
                self._queues[pool] = handle
            stats = await asyncio.wait_for(handle.stats.remote(), STATS_TIMEOUT_S)
        except Exception as exc:  # not created yet, recreated meanwhile, or slow: the reading ages
            self._queues.pop(pool, None)
            log.debug("work queue stats of pool %s: %s", pool, short_cause(exc))
            return
        now = self.clock()
        queued, leased, completed = int(stats.get("queued", 0)), int(stats.get("leased", 0)), int(stats.get("completed", 0))
        latency = None
        prev = self._last.get(pool)
        if prev is not None and completed >= prev[1]:  # a recreated queue counts from 0 again
            latency = little_latency(leased, completed - prev[1], now - prev[0])
        if latency is None and pool in self._readings and leased:  # nothing finished this second: keep the last
            latency = self._readings[pool].item_latency_s
        self._last[pool] = (now, completed)
        self._readings[pool] = SignalReading(float(queued + leased), now, latency, queued, leased)

    def _lag(self, pool: str, stream: str) -> None:
        stats = getattr(self.services, "stats", {}).get(stream)
        if stats is None:
            return
        if self._hub_stats.get(pool) is stats:
            return  # the same stats as last time (the hub did not answer since): the reading ages
        self._hub_stats[pool] = stats
        group = (stats.get("groups") or {}).get(pool)
        if group is None:
            return
        self._readings[pool] = SignalReading(float(group.get("lag", 0)), self.clock())


class RayResourceRequests:
    """Ray's autoscaler, asked for cluster capacity (``request_resources``: the whole request each time,
    replacing the previous one; an empty one clears it)."""

    def send(self, request: ResourceRequest) -> None:
        selectors = request.selector_dicts()
        if selectors:
            request_resources(bundles=request.bundle_dicts(), bundle_label_selectors=selectors)
        else:
            request_resources(bundles=request.bundle_dicts())
