"""Recovery after a supervisor restart, as a plan: which live slot actors to adopt, how, and which to kill.

:func:`plan_adoption` reads the restored slot table, the desired pools and the slot actors that are
alive now (by name: ``(pool, index, generation)``), updates the records, and returns what the
supervisor must do through its Ray wrapper: kill older or foreign actors, re-attach the newest
generation of each owned position (restarting its start call, resuming its drain, or only
watching it). :func:`settle` then applies the write-ahead generations and marks every position whose
actor is gone as lost. :func:`undurable_generation` numbers a slot started while the store is down so
that no later supervisor reuses it. Nothing here calls anything; time comes in as ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fleet_ray.spec.models import PoolSpec

from .lifecycle import LIVE, SlotKey, SlotRecord, SlotState, SlotTable

LOST = "lost while the supervisor was down"
# generations a supervisor hands out while it can't write them ahead (the store is degraded) come from
# a range of its own: epoch × stride upwards. The epoch is a durable counter each recovery increments,
# so a later supervisor that never learnt of them can't hand them out again (its own durable
# generations stay far below, its own outage range is above)
OUTAGE_STRIDE = 1_000_000


def undurable_generation(planned: int, epoch: int) -> int:
    """The generation to start a slot with when ``planned`` can't be written ahead: one from this
    supervisor's epoch range (which ``planned`` already is in after the first outage start)."""
    return max(planned, epoch * OUTAGE_STRIDE + 1)
LIVE_STATES = LIVE  # a position whose actor may be alive (unreachable included: Ray hasn't said it's dead)


@dataclass(frozen=True)
class Adopt:
    key: SlotKey
    generation: int
    name: str
    how: Literal["start", "drain", "watch"]  # start: re-issue its start call; drain: resume draining


@dataclass
class RecoveryPlan:
    kill: list[str] = field(default_factory=list)  # actor names
    adopt: list[Adopt] = field(default_factory=list)


def plan_adoption(
    table: SlotTable, desired: dict[str, PoolSpec], live: dict[str, tuple[str, int, int]], now: float
) -> RecoveryPlan:
    """``live``: actor name → (pool, index, generation) of every slot actor alive now."""
    plan = RecoveryPlan()
    by_key: dict[SlotKey, list[tuple[int, str]]] = {}
    for name, (pool, idx, gen) in live.items():
        by_key.setdefault((pool, idx), []).append((gen, name))
    for key, actors in by_key.items():
        actors.sort(reverse=True)
        (gen, name), older = actors[0], actors[1:]
        plan.kill.extend(old_name for _, old_name in older)
        pool = desired.get(key[0])
        rec = table.get(key)
        if pool is None or key[1] >= pool.slots or (rec is not None and gen < rec.generation):
            plan.kill.append(name)  # not ours (any more)
            continue
        if rec is None:
            rec = SlotRecord(key[0], key[1], generation=gen)
            table.add(rec)
        if gen > rec.generation or rec.state not in (SlotState.RUNNING, SlotState.DRAINING):
            rec.generation, rec.created_at = gen, now
            rec.shape_hash = rec.shape_hash or pool.slot_shape_hash()
            table.transition(key, SlotState.STARTING)
            plan.adopt.append(Adopt(key, gen, name, "start"))
        elif rec.state is SlotState.DRAINING:
            rec.drain_deadline = now + pool.recycle.drain_timeout_s
            plan.adopt.append(Adopt(key, gen, name, "drain"))
        else:
            rec.next_check_at = now
            plan.adopt.append(Adopt(key, gen, name, "watch"))
    return plan


def settle(table: SlotTable, generations: dict[SlotKey, int], attached: set[SlotKey]) -> None:
    """Apply the write-ahead ``generations`` (a generation never goes back) and stop every position
    that should have an actor but has none in ``attached``."""
    for key, gen in generations.items():  # write-ahead generations of positions without a record
        if table.get(key) is None:
            table.raise_floor(key, gen)
    for rec in table:
        rec.generation = max(rec.generation, generations.get(rec.key, 0))
        rec.health_inflight = rec.config_inflight = False
        if rec.kill_sent_at is not None and rec.state is SlotState.STOPPING:
            continue  # killed while unreachable: still waits for Ray to confirm its process is gone
        if rec.state in LIVE_STATES and rec.key not in attached:
            table.transition(rec.key, SlotState.STOPPING, LOST)
