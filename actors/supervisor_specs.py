"""The desired state's edits: apply, scale, pause, drain and resume, recycle, and rollouts.

:class:`SpecEditor` is the one place the supervisor's desired state changes. A new spec is validated
as a whole first (a bad one changes nothing); scaling or pausing a pool validates only that pool. Before
the checkpoint was recovered every change is refused (:class:`~fleet_ray.errors.SupervisorRecovering`).
A pool whose slot shape changed starts a rollout
(:mod:`fleet_ray.control.rollout`), which the reconcile step then carries out and
:meth:`SpecEditor.track_rollouts` completes or rolls back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from fleet_ray.api.models import ApplyResult, RecycleResult
from fleet_ray.api.supervisor import PoolTarget, RolloutOut, WorkQueueInfo
from fleet_ray.control import pool_scaling, rollout
from fleet_ray.control.lifecycle import SlotRecord, SlotState, parse_slot_id
from fleet_ray.control.rollout import Rollout
from fleet_ray.control.state import FleetState
from fleet_ray.errors import FleetError, JobError, SpecError, SupervisorRecovering, UnknownPool, UnknownSlot
from fleet_ray.names import workqueue_name
from fleet_ray.observe.kinds import PoolScaled
from fleet_ray.spec.environments import keep_masked
from fleet_ray.spec.models import USER_SPEC, FleetSpec, PoolSpec, ResolvedPool, validate_spec

from .supervisor_events import EventJournal
from .supervisor_packages import PackageEnvs

SpecHook = Callable[[FleetSpec, dict[str, ResolvedPool]], None]


def keep_autoscaled_sizes(current: dict[str, PoolSpec], spec: FleetSpec) -> FleetSpec:
    """A re-applied autoscaled pool keeps the size its autoscaler gave it (brought within the new
    bounds): its spec's ``slots`` is only the starting size, for a pool new to autoscaling or resumed."""
    pools, changed = [], False
    for pool in spec.pools:
        old = current.get(pool.name)
        if (pool.autoscale is not None and old is not None and old.autoscale is not None
                and not pool.paused and not old.paused):
            keep = max(pool.autoscale.min_slots, min(pool.autoscale.max_slots, old.slots))
            if keep != pool.slots:
                pool, changed = pool.model_copy(update={"slots": keep}), True
        pools.append(pool)
    return spec.model_copy(update={"pools": pools}) if changed else spec


class SpecEditor:
    def __init__(self, state: FleetState, journal: EventJournal, workqueues: Any, packages: PackageEnvs,
                 on_applied: SpecHook = lambda spec, resolved: None, clock: Callable[[], float] = time.time):
        self.state, self.journal, self.workqueues, self.packages = state, journal, workqueues, packages
        self.on_applied = on_applied
        self.clock = clock

    # -- the desired state -------------------------------------------------------------------------
    def ready(self) -> None:
        """Refuse a change before the checkpoint was recovered: recovery would overwrite it (and a
        change answered with success must never be undone)."""
        st = self.state
        if not st.recovered:
            retry = max(1.0, round(st.recovery_retry_at - self.clock(), 1)) if st.recovery_error else 1.0
            raise SupervisorRecovering(st.recovery_error or "its checkpoint is not read yet", retry)

    def pool(self, name: str) -> PoolSpec:
        pool = self.state.desired.get(name)
        if pool is None:
            raise UnknownPool(name)
        return pool

    async def apply(self, spec: dict[str, Any], to_thread: Callable[..., Any]) -> ApplyResult:
        """Validate the whole spec, then make it the desired state. A bad spec changes nothing. A pool
        with a ``package`` is validated by a task running in that package's runtime env."""
        self.ready()
        spec = keep_masked(spec, self.state.spec)  # a masked secret sent back means "keep the current one"
        remote = await self.packages.resolve_packaged(spec, to_thread)
        new_spec, resolved = validate_spec(spec, resolve=self.packages.resolver(self.state, remote))
        self.state.unrecovered_pools.clear()  # the new spec is the whole desired state
        return self.set_spec(new_spec, resolved)

    def set_spec(self, new_spec: FleetSpec, resolved: dict[str, ResolvedPool]) -> ApplyResult:
        st = self.state
        new_spec = keep_autoscaled_sizes(st.desired, new_spec)
        old, new = st.desired, {p.name: p for p in new_spec.pools}
        summary = ApplyResult(
            added=sorted(set(new) - set(old)),
            removed=sorted(set(old) - set(new)),
            changed=sorted(n for n in set(new) & set(old) if new[n] != old[n]),
        )
        now = self.clock()
        for name in summary.changed:
            if rollout.needs_rollout(old.get(name), new[name]):
                st.rollouts[name] = rollout.begin(old[name], new[name], now)
                self.journal.lifecycle("rollout.started", name,
                                       f"{old[name].version or '-'} -> {new[name].version or '-'}")
        for name in summary.removed:
            st.rollouts.pop(name, None)
        for name in [n for n in st.autoscale if new.get(n) is None or new[n].autoscale is None]:
            del st.autoscale[name]  # removed, or no longer autoscaled
        st.set_desired(new_spec)
        for name, r in resolved.items():
            st.batch[name] = r.batch
        self.on_applied(new_spec, resolved)
        for name in summary.removed:
            st.batch.pop(name, None)
        for name, pool in new.items():
            if st.batch.get(name):
                self.workqueues.ensure(name)
                self.workqueues.set_paused(name, pool.paused)
        for name in summary.removed:
            self.workqueues.remove(name)
        for name in summary.added + summary.changed:
            self.journal.lifecycle("pool.applied", name, f"{new[name].slots} slots")
        st.dirty = True
        return summary

    def update_pool(self, name: str, **changes: Any) -> ApplyResult:
        """Change one pool's ``slots`` and/or ``paused``. Only that pool is validated again, and
        nothing is resolved: neither changes the automation, its config or the streams, and another
        pool whose automation no longer resolves must not block scaling or pausing this one."""
        self.ready()
        unknown = set(changes) - {"slots", "paused"}
        if unknown:
            raise ValueError(f"update_pool changes only slots and paused, not {sorted(unknown)}")
        st = self.state
        old = self.pool(name)
        raw = old.model_dump(mode="json") | changes
        try:
            new = PoolSpec.model_validate(raw, context={USER_SPEC: True})
        except ValidationError as exc:
            raise SpecError([{"loc": f"pools.{name}.{'.'.join(str(p) for p in e['loc'])}".rstrip("."),
                              "msg": e["msg"]} for e in exc.errors(include_input=False)]) from None
        if new == old:
            return ApplyResult(added=[], removed=[], changed=[])
        st.set_desired(st.spec.model_copy(update={"pools": [new if p.name == name else p for p in st.spec.pools]}))
        if st.batch.get(name):
            self.workqueues.ensure(name)
            self.workqueues.set_paused(name, new.paused)
        self.journal.lifecycle("pool.applied", name, f"{new.slots} slots")
        st.dirty = True
        return ApplyResult(added=[], removed=[], changed=[name])

    def scale(self, name: str, slots: int) -> ApplyResult:
        """``fleet-ray scale``. An autoscaled pool takes ``slots`` as its size now, within its
        ``min_slots..max_slots`` (outside: a SpecError naming ``autoscale``); its autoscaler goes on
        from there after ``cooldown_s``, its delay windows starting afresh (a ``pool.scaled`` event,
        ``by: operator``). To move the bounds, apply a spec with another ``autoscale``."""
        self.ready()
        spec = self.pool(name)
        policy = spec.autoscale
        if policy is not None and not spec.paused and not policy.min_slots <= slots <= policy.max_slots:
            raise SpecError([{"loc": f"pools.{name}.slots", "msg": (
                f"pool {name!r} is autoscaled (autoscale: min_slots {policy.min_slots}, max_slots "
                f"{policy.max_slots}): scale sets its size now within {policy.min_slots}..{policy.max_slots} "
                f"and the autoscaler goes on from there; apply a spec with other autoscale bounds to move them")}])
        before = spec.slots
        result = self.update_pool(name, slots=slots)
        if policy is not None and not spec.paused and slots != before:
            now = self.clock()
            scale = pool_scaling.operator_resized(self.state.autoscale.get(name), now)
            self.state.autoscale[name] = scale
            wanted = scale.decision.wanted if scale.decision is not None else slots
            self.journal.emit(PoolScaled, pool=name, from_=before, to=slots, wanted=wanted, by="operator",
                              signal=scale.signal, reason=f"set by an operator: {before} → {slots}; the autoscaler "
                              f"goes on after cooldown_s ({policy.cooldown_s:g}s)",
                              message=f"{before} → {slots} slot(s), set by an operator")
        return result

    def resize(self, name: str, slots: int) -> None:
        """The autoscaler's change of a pool's size (``slots`` within its bounds: decide_scale keeps it
        there). Only ``slots`` changes, so nothing is validated or resolved again; decide() then starts
        the new positions or drains the highest ones."""
        st = self.state
        old = self.pool(name)
        if old.slots == slots:
            return
        new = old.model_copy(update={"slots": slots})
        st.set_desired(st.spec.model_copy(update={"pools": [new if p.name == name else p for p in st.spec.pools]}))
        st.dirty = True

    def clear(self) -> ApplyResult:
        self.state.unrecovered_pools.clear()
        return self.set_spec(FleetSpec(name=self.state.fleet_name), {})

    # -- pools and slots ---------------------------------------------------------------------------
    def drain(self, pool: str) -> PoolTarget:
        """Pause the pool and drain all its slots; the slot count is remembered for :meth:`resume`
        (in memory and in the ``pool.drained`` event)."""
        self.ready()
        spec = self.pool(pool)
        if spec.slots:
            self.state.drained_from[pool] = spec.slots
        previous = self.state.drained_from.get(pool, 0)
        self.update_pool(pool, slots=0, paused=True)
        self.journal.lifecycle("pool.drained", pool, f"draining {spec.slots} slot(s)", {"previous_slots": previous})
        return PoolTarget(pool=pool, desired=0, paused=True, previous_slots=previous)

    def resume(self, pool: str, slots: int | None, logged_previous: Callable[[], int]) -> PoolTarget:
        """Unpause a pool; a drained pool gets its slots back (or ``slots`` if given).
        ``logged_previous`` reads the count from the event log (drained before a restart)."""
        self.ready()
        spec = self.pool(pool)
        target = slots if slots is not None else (spec.slots or self.state.drained_from.get(pool))
        if target is None:
            target = logged_previous()
        self.update_pool(pool, slots=target, paused=False)
        self.state.drained_from.pop(pool, None)
        self.journal.lifecycle("pool.resumed", pool, f"{target} slot(s)")
        return PoolTarget(pool=pool, desired=target, paused=False)

    def recycle(self, slot: str) -> RecycleResult:
        self.ready()
        try:
            key = parse_slot_id(slot)
        except ValueError:
            raise UnknownSlot(slot) from None
        rec = self.state.table.get(key)
        if rec is None:
            raise UnknownSlot(slot)
        rec.recycle_requested = "recycled by operator"
        if rec.state in (SlotState.PENDING, SlotState.FAILED):
            rec.backoff_until = 0.0
        return RecycleResult(slot=slot, generation=rec.generation, state=rec.state.value)

    def workqueue(self, pool: str) -> WorkQueueInfo:
        self.ready()
        spec = self.pool(pool)
        if not self.state.batch.get(pool):
            raise JobError(f"pool {pool!r} runs a continuous automation; only batch pools take items")
        self.workqueues.ensure(pool)
        return WorkQueueInfo(name=workqueue_name(pool), max_item_retries=spec.max_item_retries)

    # -- rollouts ----------------------------------------------------------------------------------
    def paused_pools(self) -> frozenset[str]:
        return frozenset(n for n, r in self.state.rollouts.items() if r.state == rollout.PAUSED)

    def track_rollouts(self) -> None:
        st = self.state
        for name, r in st.rollouts.items():
            pool = st.desired.get(name)
            if pool is not None and r.active and rollout.is_complete(r, st.table.of_pool(name), pool):
                r.state = rollout.COMPLETE
                st.dirty = True
                self.journal.lifecycle("rollout.completed", name, f"now at {r.to_version or '-'}")

    def rollout_failure(self, rec: SlotRecord | None, cause: str) -> None:
        r = self.state.rollouts.get(rec.pool) if rec is not None else None
        pool = self.state.desired.get(rec.pool) if rec is not None else None
        if r is None or pool is None or not r.active or not rollout.is_new(r, rec):
            return
        if rollout.record_failure(r, pool, cause):
            self._roll_back(r, automatic=True)

    def _roll_back(self, r: Rollout, automatic: bool) -> None:
        """Make the pool's pre-rollout spec desired again; decide() then replaces the new slots."""
        st = self.state
        previous = PoolSpec.model_validate(r.from_spec)
        st.spec = st.spec.model_copy(update={"pools": [previous if p.name == r.pool else p for p in st.spec.pools]})
        st.desired[r.pool] = previous
        r.state = rollout.ROLLED_BACK
        if not automatic:
            r.reason = "rolled back by operator"
        st.dirty = True
        self.journal.lifecycle("rollout.rolled_back", r.pool, r.reason,
                               {"automatic": automatic, "to_version": r.from_version})

    def _active_rollout(self, pool: str) -> Rollout:
        self.ready()
        self.pool(pool)
        r = self.state.rollouts.get(pool)
        if r is None or not r.active:
            raise FleetError(f"pool {pool!r} has no rollout in progress")
        return r

    def pause_rollout(self, pool: str) -> RolloutOut:
        r = self._active_rollout(pool)
        r.state, r.reason, self.state.dirty = rollout.PAUSED, "paused by operator", True
        self.journal.lifecycle("rollout.paused", pool)
        return RolloutOut(**r.to_json())

    def resume_rollout(self, pool: str) -> RolloutOut:
        r = self._active_rollout(pool)
        r.state, r.reason, self.state.dirty = rollout.PROGRESSING, "", True
        self.journal.lifecycle("rollout.resumed", pool)
        return RolloutOut(**r.to_json())

    def rollback(self, pool: str) -> RolloutOut:
        r = self._active_rollout(pool)
        self._roll_back(r, automatic=False)
        return RolloutOut(**r.to_json())
