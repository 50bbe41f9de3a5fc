"""StateRecovery: a (re)started supervisor reloads its checkpoint and adopts the slot actors still alive.

Until :meth:`StateRecovery.run` succeeds the supervisor decides nothing (it can't know the desired state).
It reads the checkpoint and the write-ahead generations through the store gateway (either failing:
try again next tick), asks the slot calls which slot actors exist, and carries out the pure plan of
:mod:`fleet_ray.control.recovery`: kill what it doesn't own, re-attach the rest. Leases that work
queues hold for slots that are gone are handed back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fleet_ray.control import recovery
from fleet_ray.control.checkpoint import Checkpoint, write_ahead_generations
from fleet_ray.control.lifecycle import SlotTable
from fleet_ray.control.state import FleetState
from fleet_ray.names import parse_slot_actor_name, slot_actor_name
from fleet_ray.store import keys

from .supervisor_events import EventJournal
from .supervisor_store import StoreGateway

log = logging.getLogger(__name__)


class StateRecovery:
    def __init__(self, state: FleetState, journal: EventJournal, gateway: StoreGateway, calls: Any,
                 workqueues: Any, clock: Callable[[], float] = time.time):
        self.state, self.journal, self.gateway = state, journal, gateway
        self.calls, self.workqueues, self.clock = calls, workqueues, clock

    def run(self) -> bool:
        """One attempt; True once the state is recovered (then never again)."""
        st = self.state
        ok, raw = self.gateway.attempt(lambda s: s.get(keys.SUPERVISOR_CHECKPOINT))
        if not ok:
            return False
        gens: dict = {}
        if raw:
            Checkpoint.decode(raw).restore_into(st)
            ok, stored = self.gateway.attempt(lambda s: {k: int(s.get(k) or 0) for k in s.keys("gen:")})
            if not ok:  # without the write-ahead generations, a restart could reuse one: try again
                st.table, st.rollouts = SlotTable(), {}
                return False
            gens = write_ahead_generations(stored or {})
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
        st.recovered = st.dirty = True
        if raw:
            self.journal.lifecycle("supervisor.recovered", "", f"{len(st.table)} slot positions")
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
