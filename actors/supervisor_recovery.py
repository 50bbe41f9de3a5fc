"""StateRecovery: a (re)started supervisor reloads its checkpoint and adopts the slot actors still alive.

Until :meth:`StateRecovery.run` succeeds the supervisor decides nothing (it can't know the desired state)
and refuses every change (:class:`~fleet_ray.errors.SupervisorRecovering`). It reads the checkpoint and
the write-ahead generations through the store gateway (either failing: try again next tick; a
checkpoint this version rejects: report it in status, try again every :data:`RECOVERY_RETRY_S`), asks
the slot calls which slot actors exist, and carries out the pure plan of :mod:`fleet_ray.control.recovery`: kill what it doesn't own, re-attach the rest. Leases that work
queues hold for slots that are gone are handed back.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fleet_ray.control import recovery
from fleet_ray.control.checkpoint import Checkpoint, CheckpointRejected, write_ahead_generations
from fleet_ray.control.lifecycle import SlotTable
from fleet_ray.control.state import FleetState
from fleet_ray.names import parse_slot_actor_name, slot_actor_name
from fleet_ray.spec.models import FleetSpec
from fleet_ray.store import keys

from .supervisor_events import EventJournal
from .supervisor_store import StoreGateway

log = logging.getLogger(__name__)


# a checkpoint this version rejects doesn't fix itself: try again this rarely (the store may be
# repaired, or a supervisor of another version writes it), not on every tick
RECOVERY_RETRY_S = 30.0


class StateRecovery:
    def __init__(self, state: FleetState, journal: EventJournal, gateway: StoreGateway, calls: Any,
                 workqueues: Any, clock: Callable[[], float] = time.time):
        self.state, self.journal, self.gateway = state, journal, gateway
        self.calls, self.workqueues, self.clock = calls, workqueues, clock
        self._reported: str | None = None

    def run(self) -> bool:
        """One attempt; True once the state is recovered (then never again). A checkpoint this version
        rejects as a whole is reported in status ("recovery failed: <field>: <message>") and tried again
        every :data:`RECOVERY_RETRY_S`; a pool, slot or rollout it rejects is left out (status lists it)."""
        st = self.state
        if self.clock() < st.recovery_retry_at:
            return False
        try:
            return self._attempt()
        except CheckpointRejected as exc:
            self._failed(str(exc), None)
        except Exception as exc:  # a bug, not the checkpoint: its traceback, logged once
            self._failed(f"recovery failed: {type(exc).__name__}", exc)
        self._forget()
        return False

    def _forget(self) -> None:
        """Back to knowing nothing (a half-restored state must not show, nor be written)."""
        st = self.state
        st.set_desired(FleetSpec(name=st.fleet_name))
        st.table, st.rollouts, st.batch, st.unrecovered_pools = SlotTable(), {}, {}, {}

    def _failed(self, error: str, exc: Exception | None) -> None:
        st = self.state
        st.recovery_error, st.recovery_retry_at = error, self.clock() + RECOVERY_RETRY_S
        if error != self._reported:  # once per distinct problem, never with the checkpoint's values
            self._reported = error
            log.error("%s; the supervisor changes nothing until it recovers (next attempt in %gs; "
                      "`fleet-ray down` discards the checkpoint)", error, RECOVERY_RETRY_S, exc_info=exc)

    def _attempt(self) -> bool:
        st = self.state
        ok, raw = self.gateway.attempt(lambda s: s.get(keys.SUPERVISOR_CHECKPOINT))
        if not ok:
            return False
        gens: dict = {}
        problems: list[str] = []
        if raw:
            problems = Checkpoint.decode(raw).restore_into(st)
            ok, stored = self.gateway.attempt(lambda s: {k: s.get(k) for k in s.keys("gen:")})
            if not ok:  # without the write-ahead generations, a restart could reuse one: try again
                self._forget()
                return False
            gens = write_ahead_generations(stored or {})
        ok, epoch = self.gateway.attempt(lambda s: s.incr(keys.SUPERVISOR_EPOCH))
        if not ok:  # without a durable epoch, generations handed out during an outage could repeat
            self._forget()
            return False
        st.epoch = int(epoch or 0)
        st.run_id = st.run_id or uuid.uuid4().hex[:12]  # a new fleet run (or a checkpoint without one)
        live = self.calls.live_slot_actors()
        names = {name: parse_slot_actor_name(name) for name in live}
        plan = recovery.plan_adoption(st.table, st.desired, names, self.clock())
        for name in plan.kill:
            self.calls.kill_by_name(name)
        for a in plan.adopt:
            self.calls.attach(a.key, a.generation, live[a.name], start=a.how == "start")
            if a.how == "drain":
                self.calls.drain(a.key, a.generation)
        recovery.settle(st.table, gens, {r.key for r in st.table if self.calls.handle(r.key) is not None})
        for name, is_batch in st.batch.items():
            if is_batch and name in st.desired:
                self.workqueues.ensure(name)
        self._release_orphan_leases()
        st.recovery_error, st.recovery_problems = None, problems
        st.recovered = st.dirty = True
        if problems:
            log.warning("recovered without what this version rejects: %s", "; ".join(problems[:10]))
        if raw:
            self.journal.lifecycle("supervisor.recovered", "", f"{len(st.table)} slot positions"
                                   + (f"; left out: {'; '.join(problems[:5])}" if problems else ""),
                                   {"left_out": problems} if problems else None)
        return True

    def _release_orphan_leases(self) -> None:
        owned = {slot_actor_name(r.pool, r.index, r.generation)
                 for r in self.state.table if self.calls.handle(r.key) is not None}
        for pool in self.workqueues.pools():
            try:
                for lessee in self.workqueues.lessees(pool):
                    if lessee not in owned:
                        self.workqueues.release(pool, lessee, "slot lost while the supervisor was down")
            except Exception as exc:
                log.warning("could not check leases of pool %s: %s", pool, exc)
