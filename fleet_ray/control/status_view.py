"""Status projection: the supervisor's state → the :class:`~fleet_ray.api.status.FleetStatus` users read.

Pure: the supervisor passes its state, its recent events, what it knows of itself
(:class:`SupervisorFacts`) and the time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet_ray.api.models import NodeOut
from fleet_ray.api.status import (
    BrowserSlotStatus,
    EventStatus,
    FleetStatus,
    PoolStatus,
    SlotConcurrencyStatus,
    SlotStatus,
)
from fleet_ray.names import slot_actor_name

from . import rollout
from .lifecycle import SlotRecord, SlotState, awaiting_death
from .pool_scaling import autoscale_status
from .reconcile import NodeView
from .state import FleetState

if TYPE_CHECKING:
    from fleet_ray.observe.events import Event

RECENT_EVENTS = 50  # status carries this many of the latest events


@dataclass
class SupervisorFacts:
    namespace: str
    pid: int
    started: float
    store: str  # URL, redacted
    store_degraded: bool = False
    store_error: str | None = None
    steps: int = 0
    last_step_ms: float = 0.0
    last_step_cpu_ms: float = 0.0
    step_ms: Sequence[float] = ()
    nice: int | None = None
    nice_problem: str | None = None


def quantile(values: Iterable[float], q: float) -> float:
    """Nearest-rank quantile (0.0 when there are no values yet)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def pool_state(recs: list[SlotRecord], desired: int, now: float) -> tuple[str, str]:
    running = sum(1 for r in recs if r.state is SlotState.RUNNING)
    pending = [r for r in recs if r.state is SlotState.PENDING and r.reason]
    degraded = [r for r in recs if r.backoff_until > now or (r.escalated and r.state is SlotState.FAILED)]
    unreachable = [r for r in recs if r.state is SlotState.UNREACHABLE]
    killed = [r for r in recs if awaiting_death(r)]  # their positions wait for Ray's confirmation
    if unreachable or killed:  # first: the slots may be alive, but nothing they do reaches the fleet
        nodes = sorted({r.node_id[:12] for r in unreachable + killed if r.node_id})
        where = f" (node {', '.join(nodes)})" if nodes else ""
        parts = []
        if unreachable:
            shown = ", ".join(r.slot_id for r in unreachable[:10]) + (", ..." if len(unreachable) > 10 else "")
            parts.append(f"{len(unreachable)} slot(s) not answering{where}: {shown}")
        if killed:
            shown = ", ".join(r.slot_id for r in killed[:10]) + (", ..." if len(killed) > 10 else "")
            parts.append(f"{len(killed)} killed while unreachable, not replaced until Ray confirms their "
                         f"processes are gone{where if not unreachable else ''}: {shown}")
        return "unreachable", "; ".join(parts)
    if degraded:
        return "degraded", f"{len(degraded)} slot(s) failing repeatedly; backing off"
    if pending:
        return "pending", pending[0].reason
    if running == desired and len(recs) == desired:
        return "ok", ""
    return "scaling", f"{running}/{desired} running"


def slot_status(r: SlotRecord, now: float) -> SlotStatus:
    waiting = (f"waiting for Ray to start its process ({now - r.created_at:.0f}s)"
               if r.state is SlotState.STARTING and r.alive_at is None and r.created_at else "")
    reason = r.reason or waiting
    if awaiting_death(r) and r.kill_sent_at is not None:
        reason = f"{reason}; killed {now - r.kill_sent_at:.0f}s ago, waiting for Ray to confirm its process is gone"
    return SlotStatus(
        id=r.slot_id,
        pool=r.pool,
        index=r.index,
        generation=r.generation,
        state=r.state.value,
        actor=slot_actor_name(r.pool, r.index, r.generation),
        node_id=r.node_id,
        pid=r.pid,
        version=r.version,
        uptime_s=round(now - r.ready_at, 3) if r.ready_at and r.state is SlotState.RUNNING else None,
        tasks=r.tasks,
        recycles=r.recycles,
        rss_mb=round(r.rss_mb, 1),
        phase=r.phase,
        progress=r.progress,
        reason=reason,
        backoff_s=round(max(0.0, r.backoff_until - now), 3),
        unreachable_s=(round(now - r.unreachable_since, 3)
                       if r.state is SlotState.UNREACHABLE and r.unreachable_since is not None else None),
        browser=BrowserSlotStatus.from_health(r.browser) if r.browser else None,
        concurrency=SlotConcurrencyStatus.from_report(r.concurrency) if r.concurrency else None,
    )


def fleet_status(state: FleetState, recent: Sequence[Event], facts: SupervisorFacts, now: float) -> FleetStatus:
    pools = []
    for name, spec in state.desired.items():
        recs = state.table.of_pool(name)
        counts: dict[str, int] = {}
        for r in recs:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        st, reason = pool_state(recs, spec.slots, now)
        pools.append(PoolStatus(
            name=name,
            automation=spec.automation,
            version=spec.version,
            kind=spec.kind,
            batch=state.batch.get(name, False),
            desired=spec.slots,
            paused=spec.paused,
            state=st,
            reason=reason,
            counts=counts,
            rollout=rollout.status(state.rollouts[name], recs, spec) if name in state.rollouts else None,
            autoscale=autoscale_status(spec, state.autoscale.get(name), recs),
            slots=[slot_status(r, now) for r in recs],
        ))
    return FleetStatus(
        fleet=state.fleet_name,
        namespace=facts.namespace,
        supervisor_pid=facts.pid,
        supervisor_started=facts.started,
        store=facts.store,
        store_degraded=facts.store_degraded,
        store_error=facts.store_error,
        last_step_ms=round(facts.last_step_ms, 3),
        last_step_cpu_ms=round(facts.last_step_cpu_ms, 3),
        step_ms_p50=round(quantile(facts.step_ms, 0.5), 3),
        step_ms_p95=round(quantile(facts.step_ms, 0.95), 3),
        supervisor_nice=facts.nice,
        supervisor_nice_problem=facts.nice_problem,
        steps=facts.steps,
        recovered=state.recovered,
        recovery=state.recovery_error if not state.recovered else (
            "recovered without: " + "; ".join(state.recovery_problems[:10]) if state.recovery_problems else None),
        pools=pools,
        events=[
            EventStatus(kind=e.kind, at=e.physical / 1000, pool=e.pool, slot=e.slot, generation=e.generation,
                        message=e.message)
            for e in list(recent)[-RECENT_EVENTS:]
        ],
    )


def node_views(nodes: Iterable[NodeView], state: FleetState) -> list[NodeOut]:
    """Ray nodes with their tags (resources, labels) and the slots placed on each."""
    on: dict[str, list[str]] = {}
    for r in state.table:
        if r.node_id and r.state in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING, SlotState.UNREACHABLE):
            on.setdefault(r.node_id, []).append(r.slot_id)
    return [
        NodeOut(
            node_id=n.node_id,
            alive=n.alive,
            is_head=n.is_head,
            resources={k: float(v) for k, v in n.resources.items() if not k.startswith("node:")},
            labels=dict(n.labels),
            slots=sorted(on.get(n.node_id, [])),
        )
        for n in nodes
    ]
