"""The supervisor actor: a named, detached actor on the head node that reconciles pools of slot actors.

This module is the actor's typed remote API and nothing else: one method per question, each
returning a model of :mod:`fleet_ray.api` (they pickle across Ray), each a line or two over
:class:`~fleet_ray.actors.supervisor_core.SupervisorCore`, which :func:`build_core` wires from its
parts. If the process is killed, Ray restarts it; it reloads the checkpoint, adopts the live slot
actors by name, kills anything it does not own and carries on with generations continuing. If the
store can't be written it keeps running on its in-memory state, reports itself degraded, and writes
the latest checkpoint when the store is back.

The parts, one concern each: ``handles`` (every Ray call to slots, work queues and the cluster),
``supervisor_core`` (the tick), ``supervisor_specs`` (desired-state edits, rollouts),
``supervisor_recovery`` (restart and adoption), ``supervisor_store`` (store gateway, checkpointer),
``supervisor_events`` (event journal and queries), ``supervisor_packages`` (packaged pools' runtime
envs), ``supervisor_records`` (crashes, run ledgers, breakers), ``supervisor_autoscale`` (autoscaled pools'
sizes and the nodes they ask Ray for), ``services`` (streams, crash bridge,
error groups, notifiers); pure pieces live in :mod:`fleet_ray.control`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import ray

from fleet_ray.api.models import ApplyResult, BreakerOut, MetricsSeries, NodeOut, RecycleResult
from fleet_ray.api.status import FleetStatus
from fleet_ray.api.supervisor import (
    EventBatch,
    EventQuery,
    NotifierState,
    NotifierSummary,
    PoolTarget,
    RolloutOut,
    ShutdownResult,
    SinkStarted,
    StreamInfo,
    StreamState,
    WorkQueueInfo,
)
from fleet_ray.client.runs import RunRecord, RunState
from fleet_ray.control.state import FleetState
from fleet_ray.names import STORE_RELAY_NAME
from fleet_ray.observe.crashes import CrashRecord
from fleet_ray.observe.grouping import ErrorGroup
from fleet_ray.observe.kinds import RunResumed
from fleet_ray.spec.models import FleetSpec

from .handles import SlotCalls, WorkQueueCalls
from .metrics import FleetMetrics
from .priority import control_plane_priority, wanted_nice
from .services import FleetServices
from .store_relay import ensure_relay
from .supervisor_autoscale import PoolAutoscaler, RayResourceRequests, RayScaleSignals
from .supervisor_core import Parts, SupervisorCore
from .supervisor_events import EventJournal
from .supervisor_packages import PackageEnvs
from .supervisor_records import StoreRecords
from .supervisor_recovery import StateRecovery
from .supervisor_specs import SpecEditor
from .supervisor_store import Checkpointer, StoreGateway

__all__ = ["Supervisor", "SupervisorCore", "build_core"]


def build_core(store_url: str, namespace: str, fleet_name: str = "fleet", tick_s: float = 0.1) -> SupervisorCore:
    """The real parts (Ray, the store at ``store_url``, the wall clock), wired."""
    state = FleetState(fleet_name=fleet_name)
    journal = EventJournal()
    gateway = StoreGateway(store_url, namespace)
    calls = SlotCalls(namespace, store_url)
    workqueues = WorkQueueCalls(namespace, store_url, pool_spec=lambda name: state.desired.get(name))
    packages = PackageEnvs(calls, gateway, namespace)
    services = FleetServices(namespace, state, journal, gateway, calls)
    specs = SpecEditor(state, journal, workqueues, packages, on_applied=services.spec_applied)
    autoscaler = PoolAutoscaler(state, journal, specs, RayScaleSignals(namespace, services), RayResourceRequests())
    return SupervisorCore(Parts(
        namespace=namespace, state=state, journal=journal, gateway=gateway,
        checkpointer=Checkpointer(state, journal, gateway), calls=calls, workqueues=workqueues,
        packages=packages, specs=specs,
        recovery=StateRecovery(state, journal, gateway, calls, workqueues), services=services,
        records=StoreRecords(gateway), metrics=FleetMetrics(namespace), autoscaler=autoscaler, clock=time.time,
        pid=os.getpid(),
    ), tick_s=tick_s)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Supervisor:
    """The supervisor actor (see :class:`SupervisorCore`)."""

    async def __init__(self, store_url: str, namespace: str, fleet_name: str = "fleet", tick_s: float = 0.1):
        self.core = build_core(store_url, namespace, fleet_name, tick_s)
        # slots on other hosts reach the store through a relay beside this supervisor (actors/store_relay.py);
        # made in a thread (it checks what an existing one serves) so readiness doesn't wait for it
        self._namespace = namespace
        self._relay_started = asyncio.create_task(asyncio.to_thread(
            ensure_relay, STORE_RELAY_NAME, store_url, namespace, ray.get_runtime_context().get_node_id()))
        # Ray runs workers at nice 15; the supervisor is control plane, like the raylet (actors/priority.py)
        self.core.nice, self.core.nice_problem = control_plane_priority(wanted_nice())
        self.core.start_background()

    # -- liveness ----------------------------------------------------------------------------------
    def ping(self) -> int:
        return os.getpid()

    def is_ready(self) -> bool:
        return self.core.state.recovered

    # -- the desired state -------------------------------------------------------------------------
    # Changes are never retried by Ray (max_task_retries=0): a retry of one that was in flight when the
    # supervisor died would run on the restarted one, possibly after a later change, and undo it. The
    # caller gets the actor error instead (the client says "try again"). Before the checkpoint is
    # recovered a change waits a little, then is refused with SupervisorRecovering (retryable).
    @ray.method(max_task_retries=0)
    async def apply(self, spec: dict[str, Any]) -> ApplyResult:
        """Validate the whole spec, then make it the desired state. A bad spec changes nothing."""
        await self.core.until_recovered()
        return await self.core.specs.apply(spec, asyncio.to_thread)

    def spec(self) -> FleetSpec:
        return self.core.state.spec

    @ray.method(max_task_retries=0)
    async def scale(self, pool: str, slots: int) -> ApplyResult:
        await self.core.until_recovered()
        return self.core.specs.scale(pool, slots)  # an autoscaled pool: its size now, within its bounds

    @ray.method(max_task_retries=0)
    async def set_paused(self, pool: str, paused: bool) -> ApplyResult:
        await self.core.until_recovered()
        return self.core.specs.update_pool(pool, paused=paused)

    @ray.method(max_task_retries=0)
    async def drain(self, pool: str) -> PoolTarget:
        """Pause the pool and drain all its slots; :meth:`resume` restores the slot count."""
        await self.core.until_recovered()
        return self.core.specs.drain(pool)

    @ray.method(max_task_retries=0)
    async def resume(self, pool: str, slots: int | None = None) -> PoolTarget:
        """Unpause a pool; a drained pool gets its slots back (or ``slots`` if given)."""
        await self.core.until_recovered()
        return await self.core.resume(pool, slots)

    @ray.method(max_task_retries=0)
    async def recycle(self, slot: str) -> RecycleResult:
        await self.core.until_recovered()
        return self.core.specs.recycle(slot)

    @ray.method(max_task_retries=0)
    async def pause_rollout(self, pool: str) -> RolloutOut:
        await self.core.until_recovered()
        return self.core.specs.pause_rollout(pool)

    @ray.method(max_task_retries=0)
    async def resume_rollout(self, pool: str) -> RolloutOut:
        await self.core.until_recovered()
        return self.core.specs.resume_rollout(pool)

    @ray.method(max_task_retries=0)
    async def rollback(self, pool: str) -> RolloutOut:
        await self.core.until_recovered()
        return self.core.specs.rollback(pool)

    async def workqueue(self, pool: str) -> WorkQueueInfo:
        await self.core.until_recovered()
        return self.core.specs.workqueue(pool)

    async def shutdown(self, timeout_s: float = 30.0) -> ShutdownResult:
        """Remove every slot (gracefully, within ``timeout_s``), the work queues, the store relay and the
        checkpoint."""
        result = await self.core.shutdown(timeout_s)
        if self.core.parts.autoscaler is not None:  # a resource request of this fleet's would keep nodes up
            await asyncio.to_thread(self.core.parts.autoscaler.shutdown)
        with contextlib.suppress(Exception):
            await self._relay_started
            ray.kill(ray.get_actor(STORE_RELAY_NAME, namespace=self._namespace), no_restart=True)
        return result

    # -- what the fleet looks like -----------------------------------------------------------------
    def status(self) -> FleetStatus:
        return self.core.status()

    def nodes(self) -> list[NodeOut]:
        """Ray nodes with their tags (resources, labels) and the slots placed on each."""
        return self.core.node_list()

    def metrics_series(self) -> MetricsSeries:
        """Per-pool throughput, failure rate and running slots over the last minutes."""
        return MetricsSeries.model_validate(self.core.parts.metrics.sampler.series())

    async def events(self, query: EventQuery | None = None) -> EventBatch:
        """Events matching ``query`` (see :meth:`fleet_ray.actors.supervisor_events.EventJournal.query`)."""
        return await self.core.journal.query(query or EventQuery(), self.core.records.read_log)

    def ingest(self, events: list[dict[str, Any]]) -> int:
        """Slots ship their events here (task.failed, automation.error, stream.item_invalid, ...)."""
        return self.core.services.ingest(events)

    def error_groups(self, pool: str | None = None, since: float | None = None) -> list[ErrorGroup]:
        """Failures grouped by (exception type, first frame in user code), most recently seen first."""
        return self.core.services.error_groups(pool, since)

    async def crashes(self, pool: str | None = None, limit: int = 200) -> list[CrashRecord]:
        """Crash records (one per crashed slot generation), oldest first."""
        return await self.core.records.crashes(pool, limit)

    # -- streams -----------------------------------------------------------------------------------
    def streams(self) -> list[StreamState]:
        """Every stream: producer, consumers, depth, rates and the hub's latest stats."""
        return self.core.services.streams_state()

    def stream_info(self, stream: str) -> StreamInfo:
        return self.core.services.stream_info(stream)

    async def add_sink(self, stream: str, spec: dict[str, Any], name: str = "default") -> SinkStarted:
        """Start a sink actor copying ``stream`` to JSONL or a Redis Stream (fleet_ray.streams.sinks)."""
        return await self.core.services.add_sink(stream, spec, name)

    # -- notifiers ---------------------------------------------------------------------------------
    def configure_notifiers(self, config: dict[str, Any]) -> NotifierSummary:
        """Replace the error notifiers (fleet_ray.observe.notify.NotifyConfig; tokens stay in memory only)."""
        return self.core.services.configure_notifiers(config)

    def notifiers(self) -> NotifierState:
        return self.core.services.notifier_state()

    def notify_digest_now(self) -> None:
        self.core.services.reporter.digest_now()

    # -- campaign breakers -------------------------------------------------------------------------
    async def breakers(self) -> list[BreakerOut]:
        """Campaign reputation breakers of this namespace, tripped or not."""
        return await self.core.records.breakers()

    async def reset_breaker(self, target: str, operator: str = "api") -> BreakerOut:
        """Close a target's breaker (appends ``campaign.breaker.reset``); returns the state before."""
        return await self.core.records.reset_breaker(target, operator)

    # -- resumable runs (fleet_ray.client.runs) ----------------------------------------------------
    async def run_state(self, run_id: str) -> RunState:
        return await self.core.records.run_state(run_id)

    async def run_record(self, run_id: str, records: list[RunRecord | dict[str, Any]]) -> int:
        return await self.core.records.run_record(run_id, [RunRecord.model_validate(r) for r in records])

    async def run_mark_submitted(self, run_id: str, ids: list[str], keep_first: int | None) -> int:
        return await self.core.records.run_mark_submitted(run_id, ids, keep_first)

    async def run_results(self, run_id: str) -> list[RunRecord]:
        return await self.core.records.run_results(run_id)

    def run_resumed(self, pool: str, run_id: str, total: int, skipped: int, adopted: int, submitted: int) -> None:
        self.core.journal.emit(RunResumed, pool=pool, run_id=run_id, total=total, skipped=skipped, adopted=adopted,
                               submitted=submitted, message=f"run {run_id}: {skipped} of {total} already done")
