"""The supervisor's side of :func:`~fleet_ray.control.autoscale.decide_scale`, pure: what it observes of
an autoscaled pool, what it remembers per pool, what status shows, and what it asks Ray's autoscaler for.

The Ray wrapper (``actors/supervisor_autoscale.py``) reads the signals (work queue stats, stream
consumer lag), calls :func:`observe_pool` and ``decide_scale`` once a second per autoscaled pool, acts on
the decision and sends :func:`resource_request` to Ray's autoscaler. Everything here is plain values.

- :class:`SignalReading` — one reading of a pool's signal (backlog or lag) and when it was taken;
  :func:`little_latency` estimates the item latency from two readings (Little's law).
- :func:`observe_pool` — the :class:`~fleet_ray.control.autoscale.ScaleObservation` of one pool from the
  slot table: ``current_slots`` is the pool's ``slots`` (its record, checkpointed with the spec), ready
  positions are RUNNING with a passed health check, pending ones are waiting for a node that can
  host them (``PENDING``: the supervisor holds them back until the node list has room).
- :class:`PoolScale` — per pool: the policy's :class:`~fleet_ray.control.autoscale.ScaleState`
  (checkpointed) and the last decision (for status).
- :func:`autoscale_status` — the pool's ``autoscale`` block in status.
- :func:`pool_concurrency` — items one slot of the pool works on at once: what its running slots report
  under ``concurrency_bounds`` (the target per slot follows it), else the pool's ``concurrency``.
- :func:`resource_request` — the bundles to ask Ray's autoscaler for: the placement bundle of one slot
  × the slots a pool wants, for every unpaused pool (autoscaled or fixed) that has slots pending for
  lack of resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from fleet_ray.api.status import AutoscaleStatus
from fleet_ray.spec.models import Placement, PoolSpec
from fleet_ray.spec.scaling import ScaleSignal, scale_signal

from .autoscale import ScaleDecision, ScaleObservation, ScaleState
from .lifecycle import SlotRecord, SlotState

STALE_S = 5.0  # a reading older than this is no reading: the size is held (a missing metric never scales down)


@dataclass(frozen=True)
class SignalReading:
    """One reading of a pool's signal: ``value`` (queued + leased items, or the consumer group's lag),
    taken at ``at`` (epoch s); ``item_latency_s`` when it could be estimated."""

    value: float
    at: float
    item_latency_s: float | None = None
    queued: int | None = None
    leased: int | None = None


def little_latency(leased: float, completed_delta: float, dt: float) -> float | None:
    """Mean seconds per item by Little's law (items in flight / items finished per second), or None
    when nothing finished in ``dt`` (no rate to divide by)."""
    if dt <= 0 or completed_delta <= 0 or leased < 0:
        return None
    return leased / (completed_delta / dt)


@dataclass
class PoolScale:
    """What the supervisor keeps per autoscaled pool: the policy's state (checkpointed) and, in memory,
    the last decision, the reading it was made on and why a pool could not be observed."""

    state: ScaleState
    decision: ScaleDecision | None = None
    decided_at: float | None = None
    reading: SignalReading | None = None
    signal: str = ""
    problem: str = ""  # e.g. the signal the automation's kind can't give
    pending: int = 0
    ready: int = 0


def pool_signal(pool: PoolSpec, batch: bool) -> ScaleSignal:
    """The signal ``pool`` scales on (ValueError with the reason if its kind can't give it)."""
    return scale_signal(pool, batch)


def count_positions(slots: int, records: Iterable[SlotRecord]) -> tuple[int, int]:
    """``(ready, pending)`` among a pool's first ``slots`` positions (higher ones are being retired):
    ready = RUNNING with a passed health check; pending = waiting for a node that can host it."""
    ready = pending = 0
    for r in records:
        if r.index >= slots:
            continue
        if r.state is SlotState.RUNNING and r.checks_ok > 0:
            ready += 1
        elif r.state is SlotState.PENDING:
            pending += 1
    return ready, pending


def pool_concurrency(pool: PoolSpec, records: Iterable[SlotRecord]) -> int:
    """Items one slot of ``pool`` works on at once now: with ``concurrency_bounds``, the mean of what its
    running slots among the first ``slots`` positions last reported (their concurrency moves with host
    pressure); without, or before any report, the pool's ``concurrency``."""
    if pool.concurrency_bounds is not None:
        reported = [int(r.concurrency["current"]) for r in records
                    if r.index < pool.slots and r.state is SlotState.RUNNING and r.concurrency
                    and r.concurrency.get("current")]
        if reported:
            return max(1, round(sum(reported) / len(reported)))
    return max(1, pool.concurrency)


def observe_pool(
    pool: PoolSpec,
    records: Iterable[SlotRecord],
    reading: SignalReading | None,
    now: float,
    rollout_in_progress: bool,
    signal: str,
) -> ScaleObservation:
    """The observation ``decide_scale`` reads for ``pool`` (see the module docstring). A reading older
    than :data:`STALE_S` counts as none."""
    cur = pool.slots
    records = list(records)
    ready, pending = count_positions(cur, records)
    fresh = reading is not None and now - reading.at <= STALE_S
    return ScaleObservation(
        current_slots=cur,
        backlog=reading.value if fresh and reading is not None else None,
        ready_slots=ready,
        pending_slots=min(pending, cur),
        item_latency_s=reading.item_latency_s if fresh and reading is not None else None,
        rollout_in_progress=rollout_in_progress,
        concurrency=pool_concurrency(pool, records),
        signal=signal,
    )


def operator_resized(scale: PoolScale | None, now: float) -> PoolScale:
    """An operator set the pool's size (``fleet-ray scale``): the policy goes on from the new size after
    its ``cooldown_s``, its delay windows starting afresh (the signal must ask again)."""
    state = scale.state if scale is not None else ScaleState()
    new = replace(state, changed_at=now, up_since=None, down_since=None)
    if scale is None:
        return PoolScale(new)
    return replace(scale, state=new)


def autoscale_status(pool: PoolSpec, scale: PoolScale | None, records: Iterable[SlotRecord] = ()) -> AutoscaleStatus | None:
    """The ``autoscale`` block of a pool's status (None for a pool with a fixed size); ``records`` are the
    pool's slot records (ready and pending are counted now, not at the last decision)."""
    policy = pool.autoscale
    if policy is None:
        return None
    ready, pending = count_positions(pool.slots, records)
    d = scale.decision if scale is not None else None
    reading = scale.reading if scale is not None else None
    if pool.paused:
        reason, held = "paused: the size is held until the pool is resumed", "paused"
    elif scale is not None and scale.problem:
        reason, held = scale.problem, "no_signal"
    elif d is None:
        reason, held = "no decision yet", None
    else:
        reason, held = d.reason, d.held_by
    return AutoscaleStatus(
        current=ready,
        desired=pool.slots,
        wanted=d.wanted if d is not None else None,
        min_slots=policy.min_slots,
        max_slots=policy.max_slots,
        pending=pending,
        signal=(scale.signal if scale is not None and scale.signal else policy.signal or ""),
        signal_value=round(d.signal, 3) if d is not None and d.signal is not None else None,
        reading=reading.value if reading is not None else None,
        item_latency_s=(round(reading.item_latency_s, 4)
                        if reading is not None and reading.item_latency_s is not None else None),
        reason=reason,
        held_by=held,
        last_change_at=scale.state.changed_at if scale is not None else None,
        decided_at=scale.decided_at if scale is not None else None,
    )


def slot_bundle(placement: Placement) -> dict[str, float]:
    """The resources of one slot of ``placement`` that Ray's autoscaler sizes nodes by: its actor's
    ``num_cpus`` and resource tags. Not ``memory_mb``: node types rarely declare ``memory`` (Ray detects
    it on the node), and a bundle no node type declares is infeasible, so nothing would be launched."""
    bundle: dict[str, float] = {}
    if placement.num_cpus:
        bundle["CPU"] = float(placement.num_cpus)
    for name, amount in sorted(placement.resources.items()):
        if amount:
            bundle[name] = float(amount)
    return bundle


@dataclass(frozen=True)
class ResourceRequest:
    """What to ask Ray's autoscaler for (``ray.autoscaler.sdk.request_resources``): one bundle per slot,
    with its label selector; empty clears an earlier request."""

    bundles: tuple[tuple[tuple[str, float], ...], ...] = ()
    label_selectors: tuple[tuple[tuple[str, str], ...], ...] = ()
    pools: tuple[tuple[str, int], ...] = ()  # (pool, slots asked for), for logs and status

    def bundle_dicts(self) -> list[dict[str, float]]:
        return [dict(b) for b in self.bundles]

    def selector_dicts(self) -> list[dict[str, str]] | None:
        return [dict(s) for s in self.label_selectors] if any(self.label_selectors) else None


def pending_positions(desired: Mapping[str, PoolSpec], records: Iterable[SlotRecord]) -> dict[str, int]:
    """Per pool, its positions (of the first ``slots``) waiting for a node that can host them."""
    pending: dict[str, int] = {}
    for r in records:
        pool = desired.get(r.pool)
        if pool is not None and r.index < pool.slots and r.state is SlotState.PENDING:
            pending[r.pool] = pending.get(r.pool, 0) + 1
    return pending


def resource_request(
    desired: Mapping[str, PoolSpec], scales: Mapping[str, PoolScale], pending: Mapping[str, int]
) -> ResourceRequest:
    """Bundles for every unpaused pool with slots pending for lack of resources (``pending``: per pool,
    see :func:`pending_positions`): its slot bundle × the slots it wants — an autoscaled pool the size
    it wants (not the step it is at, so nodes come up for the whole burst at once), a fixed pool its
    ``slots``. Ray's autoscaler reads the bundles as cluster capacity to have, running slots included;
    nothing pending → no bundles (the request is cleared, so idle nodes can go)."""
    bundles: list[tuple[tuple[str, float], ...]] = []
    selectors: list[tuple[tuple[str, str], ...]] = []
    pools: list[tuple[str, int]] = []
    for name, pool in sorted(desired.items()):
        if pool.paused or pending.get(name, 0) <= 0:
            continue
        if pool.autoscale is None:
            n = pool.slots
        else:
            scale = scales.get(name)
            wanted = scale.decision.wanted if scale is not None and scale.decision is not None else pool.slots
            n = min(pool.autoscale.max_slots, max(pool.slots, wanted))
        bundle = tuple(slot_bundle(pool.placement).items())
        if not bundle or n <= 0:
            continue
        selector = tuple(sorted(pool.placement.labels.items()))
        bundles.extend([bundle] * n)
        selectors.extend([selector] * n)
        pools.append((name, n))
    return ResourceRequest(tuple(bundles), tuple(selectors), tuple(pools))
