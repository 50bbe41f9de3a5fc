"""The supervisor's event journal: stamps, keeps and answers for the fleet's events.

Every event the supervisor records (its own lifecycle events, typed events of its services, the
events slots ship to it) is stamped by its hybrid logical clock, kept in memory (the latest
``RECENT``) and queued until the checkpointer appends it to the durable event log. :meth:`query`
answers one :class:`~fleet_ray.api.supervisor.EventQuery`: the newest matches from memory, a range
from the log merged with what is not persisted yet, or a long-poll for the next new ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fleet_ray.api.supervisor import Cursor, EventBatch, EventQuery
from fleet_ray.control.lifecycle import LifecycleEvent
from fleet_ray.observe.events import Event, matches
from fleet_ray.observe.hlc import HLC
from fleet_ray.observe.kinds import TypedEvent

log = logging.getLogger(__name__)

RECENT = 200
WAIT_POLL_S = 0.05
#: the durable log's oldest matches of a query (its filters and limit applied there), or None (store down)
ReadLog = Callable[[EventQuery], Awaitable[list[Event] | None]]


def cursor_of(e: Event) -> Cursor:
    return (e.physical, e.counter, e.id)


class EventJournal:
    def __init__(self, hlc: HLC | None = None, origin: str = "supervisor",
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        self.hlc = hlc or HLC()
        self.origin = origin
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.recent: deque[Event] = deque(maxlen=RECENT)
        self._unsaved: list[Event] = []

    # -- recording ---------------------------------------------------------------------------------
    def add(self, ev: Event) -> Event:
        self._unsaved.append(ev)
        self.recent.append(ev)
        return ev

    def record(self, events: Iterable[LifecycleEvent]) -> None:
        for e in events:
            ts = self.hlc.tick()
            ev = self.add(Event(kind=e.kind, physical=ts.physical, counter=ts.counter, origin=self.origin,
                                pool=e.pool, slot=f"{e.pool}:{e.index}", generation=e.generation,
                                message=e.message, data=e.data))
            log.info("%s %s g%s %s", ev.kind, ev.slot, ev.generation, ev.message)

    def lifecycle(self, kind: str, pool: str, message: str = "", data: dict[str, Any] | None = None,
                  index: int = -1, generation: int = 0) -> None:
        self.record([LifecycleEvent(kind, pool, index, generation, message, data or {})])

    def emit(self, cls: type[TypedEvent], **fields: Any) -> Event:
        return self.add(cls.stamp(self.hlc, origin=self.origin, **fields).to_event())

    def ingest(self, ev: Event) -> Event:
        """An event from a slot: merged into this clock (a peer clock past wall + max skew is clamped)."""
        merged = self.hlc.merge((ev.physical, ev.counter))
        if ev.physical > merged.physical:
            ev = ev.model_copy(update={"physical": merged.physical, "counter": merged.counter})
        return self.add(ev)

    # -- persisting (the checkpointer) -------------------------------------------------------------
    def take_unsaved(self) -> list[Event]:
        batch, self._unsaved = self._unsaved, []
        return batch

    def put_back_unsaved(self, batch: list[Event]) -> None:
        self._unsaved = batch + self._unsaved

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    # -- answering ---------------------------------------------------------------------------------
    def newest(self) -> Cursor | None:
        return cursor_of(self.recent[-1]) if self.recent else None

    async def query(self, q: EventQuery, read_log: ReadLog | None = None) -> EventBatch:
        """With ``after`` or ``since_ms``: the oldest ``limit`` matches from there on (reading the
        durable log through ``read_log`` when given, merged with the events not yet persisted, so events
        other writers append are included); otherwise the newest ``limit``. With ``wait_s``: the
        events after ``after`` (default: after the newest now), waiting up to ``wait_s`` for the first."""
        if q.wait_s is not None:
            return await self._wait(q)
        recent = list(self.recent)
        cursor = tuple(q.after) if q.after else None
        start = cursor[0] if cursor else q.since_ms
        events, source = recent, "memory"
        if start is not None and read_log is not None:
            stored = await read_log(q)
            if stored is not None:
                ids = {e.id for e in stored}
                events = sorted(stored + [e for e in recent if e.id not in ids], key=cursor_of)
                source = "log"
        matched = [e for e in events if self._keeps(q, e, cursor)]
        matched = matched[: q.limit] if start is not None else matched[-q.limit:] if q.limit else []
        newest = self.newest() or (int(self.clock() * 1000), 0, "")
        return EventBatch(events=matched, source=source, newest=newest,
                          cursor=cursor_of(matched[-1]) if matched else cursor)

    async def _wait(self, q: EventQuery) -> EventBatch:
        cursor = tuple(q.after) if q.after else self.newest()
        deadline = self.monotonic() + (q.wait_s or 0.0)
        while True:
            found = [e for e in list(self.recent) if self._keeps(q, e, cursor)]
            if found or self.monotonic() >= deadline:
                break
            await self.sleep(WAIT_POLL_S)
        found.sort(key=cursor_of)
        found = found[: q.limit] if q.limit else found
        return EventBatch(events=found, source="memory", newest=self.newest(),
                          cursor=cursor_of(found[-1]) if found else cursor)

    @staticmethod
    def _keeps(q: EventQuery, e: Event, cursor: tuple | None) -> bool:
        return matches(e, kinds=q.kinds, pool=q.pool, slot=q.slot, since_ms=q.since_ms, until_ms=q.until_ms,
                       after=cursor)
