"""The supervisor's composition root: the parts it is handed, and the tick that runs them.

Every ``tick_s``: **recover** (once, :class:`~fleet_ray.actors.supervisor_recovery.StateRecovery`) →
**observe** (poll outstanding slot calls, never blocking) → **decide**
(:func:`fleet_ray.control.reconcile.decide`, pure) → **act** (through the slot calls) → **track
rollouts** → **metrics**. Beside it run the checkpointer (in a thread, coalesced), the node list
refresh and the fleet services (streams, crashes, grouped errors). Each part runs under its own
``try``: one that fails logs and the others go on, as Ray Serve's controller does per state manager.

The parts are handed in (:func:`fleet_ray.actors.supervisor.build_core` wires the real ones; unit tests
wire fakes from :mod:`fleet_ray.testing`), so nothing here creates a Ray call of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fleet_ray.api.models import NodeOut
from fleet_ray.api.status import FleetStatus
from fleet_ray.api.supervisor import ShutdownResult
from fleet_ray.control.lifecycle import (
    Died,
    HealthReport,
    LifecycleEvent,
    SlotKey,
    SlotRecord,
    SlotState,
    awaiting_death,
    begin_drain,
    finish_stop,
    kill_sent,
    observe,
)
from fleet_ray.control.reconcile import (
    CheckHealth,
    Drain,
    Forget,
    Kill,
    MarkPending,
    NodeView,
    PushConfig,
    Start,
    decide,
    node_deaths,
    placement_problem,
)
from fleet_ray.control.recovery import undurable_generation
from fleet_ray.control.state import FleetState
from fleet_ray.control.status_view import SupervisorFacts, fleet_status, node_views
from fleet_ray.names import slot_actor_name
from fleet_ray.store import keys

from .supervisor_events import EventJournal
from .supervisor_packages import PackageEnvs
from .supervisor_recovery import StateRecovery
from .supervisor_specs import SpecEditor
from .supervisor_store import Checkpointer, StoreGateway

log = logging.getLogger(__name__)

NODE_REFRESH_S = 1.0
RECOVERY_WAIT_S = 5.0  # a change waits this long for a (re)started supervisor to recover, then is refused
STEP_WINDOW = 200  # status reports the median and p95 of the last this many reconcile steps


@dataclass
class Parts:
    """What a :class:`SupervisorCore` is made of (every field handed in, nothing built inside)."""

    namespace: str
    state: FleetState
    journal: EventJournal
    gateway: StoreGateway
    checkpointer: Checkpointer
    calls: Any  # SlotCalls (actors/handles.py) or FakeSlotCalls (fleet_ray.testing)
    workqueues: Any  # WorkQueueCalls or FakeWorkQueues
    packages: PackageEnvs
    specs: SpecEditor
    recovery: StateRecovery
    services: Any  # FleetServices (actors/services.py): streams, crashes, error groups, notifiers
    records: Any  # StoreRecords (actors/supervisor_records.py)
    metrics: Any = None  # FleetMetrics (actors/metrics.py); None: no metrics
    autoscaler: Any = None  # PoolAutoscaler (actors/supervisor_autoscale.py); None: pools keep their size
    clock: Callable[[], float] = time.time
    pid: int = 0
    rng: random.Random | None = None


class SupervisorCore:
    def __init__(self, parts: Parts, tick_s: float = 0.1):
        self.parts = parts
        self.namespace, self.state, self.journal = parts.namespace, parts.state, parts.journal
        self.gateway, self.checkpointer = parts.gateway, parts.checkpointer
        self.calls, self.workqueues, self.packages = parts.calls, parts.workqueues, parts.packages
        self.specs, self.recovery, self.services, self.records = parts.specs, parts.recovery, parts.services, parts.records
        self.clock = parts.clock
        self.tick_s = tick_s
        self.started = self.clock()
        self.steps = 0
        self.last_step_ms = self.last_step_cpu_ms = 0.0
        self.step_ms: deque[float] = deque(maxlen=STEP_WINDOW)  # the last steps' wall times
        self.nice: int | None = None
        self.nice_problem: str | None = None
        self.nodes: list[NodeView] = []
        self._rng = parts.rng or random.Random()
        self._tasks: list[asyncio.Task] = []

    # -- the tick ----------------------------------------------------------------------------------
    def _guard(self, part: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            log.exception("%s failed; the other parts go on", part)
            return None

    def step(self, now: float | None = None) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        if not self.state.recovered and not self._guard("recovery", self.recovery.run):
            return
        now = self.clock() if now is None else now
        self._guard("work queues", self._recreate_workqueues)
        if self.parts.autoscaler is not None:  # autoscaled pools' sizes, before they are reconciled
            self._guard("autoscale", lambda: self.parts.autoscaler.tick(now))
        self._guard("reconcile", lambda: self._reconcile(now))
        self._guard("rollouts", self.specs.track_rollouts)
        self.steps += 1
        self.last_step_ms = (time.perf_counter() - t0) * 1000
        self.step_ms.append(self.last_step_ms)
        self.last_step_cpu_ms = (time.thread_time() - c0) * 1000  # without waits for a CPU or the GIL
        if self.parts.metrics is not None:  # fleet metrics (Ray metrics + the API's history), ~1/s
            self.parts.metrics.record_step(self.state, self.journal.recent, self.services.streams_state,
                                           self.last_step_ms, now)

    def _reconcile(self, now: float) -> None:
        st = self.state
        # a node Ray marks dead takes every slot on it at once (none waits out a drain or a re-check)
        for obs in [*node_deaths(st.table, self.nodes), *self.calls.poll(now)]:
            pool = st.desired.get(obs.key[0])
            jitter = self._rng.random() * (pool.health.jitter if pool else 0.1)
            events = observe(st.table, obs, now, pool, jitter)
            self.journal.record(events)
            if isinstance(obs, Died) and any(e.kind == "slot.died" for e in events):
                self._slot_gone(obs.key, obs.generation, obs.cause, died=True)  # once per generation
            if isinstance(obs, HealthReport) and obs.ok:
                st.routine_dirty = True  # only a task count moved: checkpointed every few seconds
            else:
                st.dirty = True
        for rec in st.table.in_state(SlotState.STOPPING):
            if awaiting_death(rec):  # killed while unreachable (also before a restart: the checkpoint keeps it)
                self.calls.await_death(rec.key, rec.generation, rec.node_id)
        if not self.nodes:  # first step; afterwards the nodes loop refreshes them off the step
            self.nodes = self.calls.nodes()
        placement = {n: placement_problem(p.placement, self.nodes) for n, p in st.desired.items()}
        actions = decide(st.desired, st.table, placement, now, self.specs.paused_pools())
        if actions:
            self._act(actions, now)
            if all(isinstance(a, CheckHealth) for a in actions):
                st.routine_dirty = True
            else:
                st.dirty = True

    def _recreate_workqueues(self) -> None:
        """A work queue that died is created again; it reloads its jobs from the store."""
        for pool, cause in self.workqueues.poll():
            self.journal.lifecycle("workqueue.recreated", pool, cause)

    def _slot_gone(self, key: SlotKey, generation: int, cause: str, died: bool) -> None:
        self.workqueues.release(key[0], slot_actor_name(key[0], key[1], generation), cause)
        self.services.slot_gone(key, generation, cause, died=died)

    # -- acting ------------------------------------------------------------------------------------
    def _act(self, actions: list, now: float) -> None:
        st = self.state
        starts = [a for a in actions if isinstance(a, Start)]
        # write-ahead: a generation is durable before its actor exists. One that can't be (the store is
        # degraded) is taken from this supervisor's epoch range instead, which no later supervisor
        # hands out (control/recovery.py); the catch-up after the outage writes it
        if starts and not self.checkpointer.write_ahead({keys.generation(*a.key): a.generation for a in starts}):
            actions = [Start(a.key, undurable_generation(a.generation, st.epoch)) if isinstance(a, Start) else a
                       for a in actions]
        for a in actions:
            pool = st.desired.get(a.key[0])
            rec = st.table.get(a.key)
            if isinstance(a, Start):
                self._start(a, rec, pool, now)
            elif isinstance(a, MarkPending):
                if rec is None:
                    rec = SlotRecord(a.key[0], a.key[1])
                    st.table.add(rec)
                if rec.reason != a.reason:
                    self.journal.record([LifecycleEvent("slot.pending", rec.pool, rec.index, rec.generation,
                                                        a.reason)])
                st.table.transition(a.key, SlotState.PENDING, a.reason)
            elif isinstance(a, CheckHealth):
                rec.health_inflight = True
                self.calls.health(a.key, a.generation, a.timeout_s, now, node_id=rec.node_id)
            elif isinstance(a, Drain):  # (an unreachable slot stays so, to drain once it answers)
                self.journal.record(begin_drain(st.table, a.key, now, a.reason, a.timeout_s, a.retire, a.failure))
                self.calls.drain(a.key, a.generation)
            elif isinstance(a, Kill):
                if a.confirm:
                    # it can't be reached, nor can the kill be sure to: nothing is freed, and no crash
                    # record written, until Ray confirms its process is gone (then a Kill with lost does)
                    self.calls.kill(a.key, a.generation, confirm=True, node_id=rec.node_id)
                    self.journal.record(kill_sent(st.table, a.key, now, a.reason))
                    continue
                if a.failure:
                    self.specs.rollout_failure(rec, a.reason)
                self.calls.kill(a.key, a.generation)
                # a slot killed while its host doesn't answer is lost with what it held: a crash record
                self._slot_gone(a.key, a.generation, f"its host stopped answering: {a.reason}" if a.lost else a.reason,
                                died=a.lost)
                if rec.state is not SlotState.STOPPING:
                    rec.reason = a.reason
                self.journal.record(finish_stop(st.table, a.key, now, pool, a.failure))
            elif isinstance(a, Forget):
                st.table.remove(a.key)
            elif isinstance(a, PushConfig):
                rec.config_inflight = True
                self.calls.reconfigure(a.key, a.generation, a.config, a.config_hash)

    def _start(self, a: Start, rec: SlotRecord | None, pool: Any, now: float) -> None:
        st = self.state
        if rec is None:
            rec = SlotRecord(a.key[0], a.key[1])
            st.table.add(rec)
        rec.generation, rec.created_at, rec.reason = a.generation, now, ""
        rec.shape_hash, rec.config_hash = pool.slot_shape_hash(), pool.config_hash()
        st.table.transition(a.key, SlotState.STARTING)
        self.journal.record([LifecycleEvent("slot.started", a.key[0], a.key[1], a.generation)])
        try:
            self.calls.create(a.key, a.generation, pool, st.batch.get(pool.name, False),
                              self.packages.runtime_env(pool))
        except Exception as exc:
            rec.failure_pending = True
            st.table.transition(a.key, SlotState.STOPPING, f"could not create actor: {exc}")

    # -- the loops beside the step -----------------------------------------------------------------
    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every("reconcile step", lambda: self.tick_s, self._step_async)),
            loop.create_task(self._every("checkpoint", self._persist_period, self._persist_async)),
            loop.create_task(self._every("node list", lambda: NODE_REFRESH_S, self._refresh_nodes)),
            loop.create_task(self.services.run()),  # streams, crash bridge, error groups (actors/services.py)
            *([loop.create_task(self.parts.autoscaler.run())] if self.parts.autoscaler is not None else []),
        ]

    @staticmethod
    async def _every(part: str, period: Callable[[], float], fn: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await fn()
            except Exception:
                log.exception("%s failed; will retry", part)
            await asyncio.sleep(period())

    async def _step_async(self) -> None:
        self.step()

    def _persist_period(self) -> float:
        return self.tick_s if not self.gateway.degraded else 1.0

    async def _persist_async(self) -> None:
        await asyncio.to_thread(self.checkpointer.persist_once)

    async def _refresh_nodes(self) -> None:
        """The cluster's node list, and the actor state of slots that stopped answering (GCS round
        trips), in a thread, outside the step."""
        self.nodes = await asyncio.to_thread(self.calls.nodes)
        await asyncio.to_thread(self.calls.confirm)

    # -- answers -----------------------------------------------------------------------------------
    def status(self) -> FleetStatus:
        facts = SupervisorFacts(
            namespace=self.namespace, pid=self.parts.pid, started=self.started, store=self.gateway.shown_url,
            store_degraded=self.gateway.degraded, store_error=self.gateway.error, steps=self.steps,
            last_step_ms=self.last_step_ms, last_step_cpu_ms=self.last_step_cpu_ms, step_ms=self.step_ms,
            nice=self.nice, nice_problem=self.nice_problem,
        )
        return fleet_status(self.state, self.journal.recent, facts, self.clock())

    def node_list(self) -> list[NodeOut]:
        return node_views(self.nodes, self.state)

    async def until_recovered(self, timeout_s: float = RECOVERY_WAIT_S) -> None:
        """Wait (up to ``timeout_s``) for the checkpoint to be recovered, so a change that arrives
        just after a restart goes through instead of being refused; a recovery that failed, or one
        still waiting for the store after that, is left to the change to refuse."""
        deadline = time.monotonic() + timeout_s
        while not self.state.recovered and self.state.recovery_error is None and time.monotonic() < deadline:
            await asyncio.sleep(min(self.tick_s, 0.05))

    async def resume(self, pool: str, slots: int | None) -> Any:
        self.specs.ready()
        spec = self.specs.pool(pool)
        previous = None
        if slots is None and not spec.slots and pool not in self.state.drained_from:
            previous = await self.records.last_drained_slots(pool)  # drained before a restart
        return self.specs.resume(pool, slots, lambda: previous or 0)

    async def shutdown(self, timeout_s: float = 30.0) -> ShutdownResult:
        """Remove every slot (gracefully, within ``timeout_s``), the work queues and the checkpoint."""
        self.state.recovered = True  # a recovery still to come must not bring the old spec back meanwhile
        self.specs.clear()
        deadline = time.monotonic() + timeout_s
        while len(self.state.table) and time.monotonic() < deadline:
            await asyncio.sleep(self.tick_s)
        leftover = len(self.state.table)
        for rec in list(self.state.table):
            self.calls.kill(rec.key, rec.generation)
            self.state.table.remove(rec.key)
        for name in self.calls.live_slot_actors():
            self.calls.kill_by_name(name)
        self.workqueues.remove_all()
        self.services.shutdown()
        for t in self._tasks:
            t.cancel()
        self.gateway.call(lambda s: s.delete(keys.SUPERVISOR_CHECKPOINT, *s.keys("gen:")))
        return ShutdownResult(killed_after_timeout=leftover)
