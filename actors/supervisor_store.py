"""The supervisor's store access: one gateway that notices outages, and the checkpointer.

:class:`StoreGateway` runs every store call; when the store raises (``StoreError`` / ``OSError``) the
call answers ``(False, None)``, the fleet runs on in memory and reports itself degraded, and the
gateway remembers that the store is *behind*. :class:`Checkpointer` writes, once per persist tick and
off the reconcile step: the write-ahead generations again after an outage (the store may be a fresh,
empty one), the checkpoint when something changed, and the events not yet in the log. The store
counts as healthy again only once all of it was written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

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


class StoreGateway:
    def __init__(self, url: str, namespace: str, store: Store | None = None,
                 opener: Callable[[str, str], Store] = open_store):
        self.url, self.namespace = url, namespace
        self.store = store
        self._open = opener
        self.degraded = False
        self.error: str | None = None
        # set when a call failed: what was written meanwhile must be written again before the store
        # counts as healthy (it may be a fresh, empty one)
        self.behind = False

    @property
    def shown_url(self) -> str:
        return self.store.url if self.store is not None else self.url

    def attempt(self, fn: Callable[[Store], T]) -> tuple[bool, T | None]:
        """Run ``fn(store)``; ``(False, None)`` when the store is unreachable (the fleet runs degraded)."""
        try:
            if self.store is None:
                self.store = self._open(self.url, self.namespace)
            return True, fn(self.store)
        except (StoreError, OSError) as exc:
            if not self.degraded:
                log.warning("store unavailable, running degraded: %s", exc)
            self.degraded, self.error, self.behind = True, str(exc), True
            return False, None

    def call(self, fn: Callable[[Store], T]) -> T | None:
        return self.attempt(fn)[1]

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
        st, gw = self.state, self.gateway
        if not st.recovered:
            return  # until the checkpoint was read, an empty state must never overwrite it
        if st.routine_dirty and self.monotonic() - self._written_at >= ROUTINE_CHECKPOINT_S:
            st.dirty = True
        ok = True
        if gw.behind:
            # catching up after an outage: the store may have lost everything (a fresh Redis), so
            # write the generations (never lowering one) and the checkpoint again whatever changed
            gw.behind, st.dirty = False, True
            gens = {keys.generation(*k): g for k, g in st.table.floors().items()}
            gens.update({keys.generation(r.pool, r.index): r.generation for r in st.table if r.generation})
            if gens and not gw.attempt(lambda s: [s.raise_to(k, g) for k, g in gens.items()])[0]:
                return
        if st.dirty:
            st.dirty = st.routine_dirty = False  # before the snapshot: later changes make it dirty again
            snap = self.snapshot().encode()
            self._written_at = self.monotonic()
            if not gw.attempt(lambda s: s.put(keys.SUPERVISOR_CHECKPOINT, snap))[0]:
                st.dirty, ok = True, False
        batch = self.journal.take_unsaved()
        if batch and not gw.attempt(lambda s: EventLog(s).append(batch))[0]:
            self.journal.put_back_unsaved(batch)
            ok = False
        if ok:
            gw.healthy_again()

    def write_ahead(self, generations: dict[str, int]) -> Any:
        """Make slot generations durable before their actors exist (a failed write degrades the store)."""
        return self.gateway.call(lambda s: s.put_many({k: str(g).encode() for k, g in generations.items()}))
