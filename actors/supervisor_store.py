"""The supervisor's store access: one gateway that notices outages, and the checkpointer.

:class:`StoreGateway` runs every store call; when the store raises (``StoreError``, which the backends
translate every failure to, or ``OSError``) the call answers ``(False, None)``, the fleet runs on in
memory and reports itself degraded, and the gateway remembers that the store is *behind*. With nothing
to write it pings the store every :data:`PING_S`, so an idle fleet's status still says degraded.
:class:`Checkpointer` writes, once per persist tick and off the reconcile step: the write-ahead
generations again after an outage (the store may be a fresh, empty one), the checkpoint when
something changed, and the events not yet in the log; a write that fails leaves its marks and its
batch as they were. The store counts as healthy again only once all of it was written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from fleet_ray.control.checkpoint import Checkpoint
from fleet_ray.control.state import FleetState
from fleet_ray.errors import StoreError
from fleet_ray.observe.events import EventLog
from fleet_ray.store import keys, open_store
from fleet_ray.store.base import Store

from .supervisor_events import EventJournal

log = logging.getLogger(__name__)

T = TypeVar("T")
# health checks and their reports change nothing a restart needs but task counts: such changes are
# checkpointed at most this often (every other change is written on the next persist tick)
ROUTINE_CHECKPOINT_S = 5.0


# with nothing to write, the gateway still pings the store this often, so status says degraded while
# it is unreachable even when the fleet is idle
PING_S = 2.0


class StoreGateway:
    def __init__(self, url: str, namespace: str, store: Store | None = None,
                 opener: Callable[[str, str], Store] = open_store,
                 monotonic: Callable[[], float] = time.monotonic):
        self.url, self.namespace = url, namespace
        self.store = store
        self._open = opener
        self.monotonic = monotonic
        self.degraded = False
        self.error: str | None = None
        # set when a call failed: what was written meanwhile must be written again before the store
        # counts as healthy (it may be a fresh, empty one)
        self.behind = False
        self._answered_at = float("-inf")  # monotonic time the store last answered a call

    @property
    def shown_url(self) -> str:
        return self.store.url if self.store is not None else self.url

    def attempt(self, fn: Callable[[Store], T]) -> tuple[bool, T | None]:
        """Run ``fn(store)``; ``(False, None)`` when the store is unreachable (the fleet runs degraded)."""
        try:
            if self.store is None:
                self.store = self._open(self.url, self.namespace)
            out = fn(self.store)
        except (StoreError, OSError) as exc:  # the backends translate every store failure to StoreError
            if not self.degraded:
                log.warning("store unavailable, running degraded: %s", exc)
            self.degraded, self.error, self.behind = True, str(exc), True
            return False, None
        self._answered_at = self.monotonic()
        return True, out

    def call(self, fn: Callable[[Store], T]) -> T | None:
        return self.attempt(fn)[1]

    def ping_if_quiet(self) -> None:
        """Ping the store when no call reached it for :data:`PING_S` (an idle fleet writes nothing,
        and an outage would go unnoticed in status); a failed ping makes the gateway degraded."""
        if self.monotonic() - self._answered_at >= PING_S:
            self.attempt(lambda s: s.ping())

    def healthy_again(self) -> None:
        if self.degraded and not self.behind:
            log.warning("store is back; caught up")
            self.degraded, self.error = False, None


class Checkpointer:
    def __init__(self, state: FleetState, journal: EventJournal, gateway: StoreGateway,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.state, self.journal, self.gateway = state, journal, gateway
        self.clock, self.monotonic = clock, monotonic
        self._written_at = float("-inf")

    def snapshot(self) -> Checkpoint:
        return Checkpoint.of(self.state, self.clock())

    def persist_once(self) -> None:
        """One persist tick. A write that fails (the store answers with an error, or anything else
        raises) leaves what it was writing as it was: the catch-up mark, the dirty marks, the events."""
        st, gw = self.state, self.gateway
        if not st.recovered:
            gw.ping_if_quiet()
            return  # until the checkpoint was read, an empty state must never overwrite it
        if st.routine_dirty and self.monotonic() - self._written_at >= ROUTINE_CHECKPOINT_S:
            st.dirty = True
        if gw.behind and not self._catch_up():
            return
        ok = self._write_checkpoint() if st.dirty else True
        ok = self._write_events() and ok
        if ok:
            gw.ping_if_quiet()
        if ok and not gw.behind:
            gw.healthy_again()

    def _catch_up(self) -> bool:
        """After an outage the store may have lost everything (a fresh Redis): write the generations
        and the epoch again (never lowering one) and mark the checkpoint to be written whatever changed."""
        st, gw = self.state, self.gateway
        gens = {keys.generation(*k): g for k, g in st.table.floors().items()}
        gens.update({keys.generation(r.pool, r.index): r.generation for r in st.table if r.generation})
        if st.epoch:  # and the epoch, or the next supervisor's outage range could be this one's again
            gens[keys.SUPERVISOR_EPOCH] = st.epoch
        if gens and not gw.attempt(lambda s: [s.raise_to(k, g) for k, g in gens.items()])[0]:
            return False
        gw.behind, st.dirty = False, True
        return True

    def _write_checkpoint(self) -> bool:
        st, gw = self.state, self.gateway
        routine = st.routine_dirty
        st.dirty = st.routine_dirty = False  # before the snapshot: later changes make it dirty again
        written = False
        try:
            snap = self.snapshot().encode()
            written = gw.attempt(lambda s: s.put(keys.SUPERVISOR_CHECKPOINT, snap))[0]
        finally:
            if written:
                self._written_at = self.monotonic()
            else:  # not written (or raised): still to write
                st.dirty, st.routine_dirty = True, st.routine_dirty or routine
        return written

    def _write_events(self) -> bool:
        batch = self.journal.take_unsaved()
        if not batch:
            return True
        written = False
        try:
            written = self.gateway.attempt(lambda s: EventLog(s).append(batch))[0]
        finally:
            if not written:  # kept for the next tick, still in order
                self.journal.put_back_unsaved(batch)
        return written

    def write_ahead(self, generations: dict[str, int]) -> bool:
        """Make slot generations durable before their actors exist; True once they are. While the
        store is degraded nothing is tried (the persist tick finds out when it is back, without
        stalling the reconcile step on timeouts) and the answer is False: the caller then numbers
        those slots from its epoch range, which a restarted supervisor never hands out."""
        if self.gateway.degraded:
            return False
        items = {k: str(g).encode() for k, g in generations.items()}
        return self.gateway.attempt(lambda s: s.put_many(items))[0]
