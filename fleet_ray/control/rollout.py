"""Rollouts: what happens when a spec change needs fresh slots (a new version, package, placement…).

The rolling itself is in :func:`fleet_ray.control.reconcile.decide` (at most ``rollout.max_unavailable``
positions at a time, each replacement gated on a passed health check). This module keeps the
rollout's record — from where to where, progress, failures — and decides when it is complete or
must be rolled back. Pure: no Ray, time passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from fleet_ray.api.status import RolloutStatus
from fleet_ray.control.lifecycle import SlotRecord, SlotState
from fleet_ray.spec.models import PoolSpec

PROGRESSING, PAUSED, COMPLETE, ROLLED_BACK = "progressing", "paused", "complete", "rolled_back"


@dataclass
class Rollout:
    pool: str
    from_spec: dict[str, Any]  # the pool's spec before the change (what a rollback restores)
    to_shape: str  # slot_shape_hash of the new spec
    to_config: str  # config_hash of the new spec
    from_version: str | None
    to_version: str | None
    started: float
    state: str = PROGRESSING
    failures: int = 0
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in (PROGRESSING, PAUSED)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rollout:
        return cls(**data)


def needs_rollout(old: PoolSpec | None, new: PoolSpec) -> bool:
    return old is not None and old.slot_shape_hash() != new.slot_shape_hash()


def begin(old: PoolSpec, new: PoolSpec, now: float) -> Rollout:
    return Rollout(
        pool=new.name,
        from_spec=old.model_dump(mode="json"),
        to_shape=new.slot_shape_hash(),
        to_config=new.config_hash(),
        from_version=old.version,
        to_version=new.version,
        started=now,
    )


def is_new(rollout: Rollout, rec: SlotRecord) -> bool:
    return rec.shape_hash == rollout.to_shape


def updated_count(rollout: Rollout, records: Iterable[SlotRecord], slots: int) -> int:
    return sum(
        1
        for r in records
        if r.index < slots and r.state is SlotState.RUNNING and is_new(rollout, r) and r.checks_ok > 0
    )


def is_complete(rollout: Rollout, records: list[SlotRecord], pool: PoolSpec) -> bool:
    return updated_count(rollout, records, pool.slots) == pool.slots and not any(
        r.index < pool.slots and not is_new(rollout, r) for r in records
    )


def record_failure(rollout: Rollout, pool: PoolSpec, cause: str) -> bool:
    """Count a failed new-spec slot; True when the rollout must be rolled back."""
    rollout.failures += 1
    if rollout.active and rollout.failures >= pool.rollout.failure_threshold:
        rollout.state = ROLLED_BACK
        rollout.reason = (
            f"{rollout.failures} new-version slot failure(s) (threshold {pool.rollout.failure_threshold}); "
            f"last: {cause}"
        )
        return True
    return False


def status(rollout: Rollout, records: list[SlotRecord], pool: PoolSpec | None) -> RolloutStatus:
    slots = pool.slots if pool else 0
    return RolloutStatus(
        state=rollout.state,
        from_version=rollout.from_version,
        to_version=rollout.to_version,
        updated=updated_count(rollout, records, slots) if rollout.state != ROLLED_BACK else 0,
        total=slots,
        failures=rollout.failures,
        started=rollout.started,
        reason=rollout.reason,
    )
