"""Lifecycle events: typed, HLC-stamped, appended idempotently to the store's event log.

:class:`Event` is the envelope every event travels in (``kind`` + free ``data``); the typed model of
each kind lives in :mod:`fleet_ray.observe.kinds` (``SlotDied``, ``TaskFailed``, ``StreamBackpressure``,
...). :class:`EventLog` takes either, dedupes by ``id``, answers queries in causal (HLC) order by
kind, origin, pool, slot and time range, caps its size, and can be followed live (:meth:`EventLog.follow`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.hlc import HLCTimestamp
from fleet_ray.store import keys
from fleet_ray.store.base import LogEntry, Store


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Unique; appends are idempotent by it.")
    kind: str = Field(description="e.g. slot.ready, slot.died, slot.heal_escalated")
    physical: int = Field(description="HLC physical part, ms since the epoch")
    counter: int = Field(0, description="HLC logical counter")
    origin: str = Field("supervisor", description="Who emitted it")
    pool: str | None = None
    slot: str | None = None
    generation: int | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def hlc(self) -> HLCTimestamp:
        return HLCTimestamp(self.physical, self.counter)

    def to_entry(self) -> LogEntry:
        return LogEntry(self.id, self.hlc.key(), self.model_dump_json().encode())


class EventLog:
    """The durable event log on a :class:`Store` (query in causal order, optional size cap)."""

    def __init__(self, store: Store, max_len: int | None = 100_000):
        self.store = store
        self.max_len = max_len

    def append(self, events: list[Any]) -> int:
        """Append events (generic or typed) not seen before; returns how many were new."""
        events = [e if isinstance(e, Event) else e.to_event() for e in events]
        new = self.store.log_append(keys.EVENT_LOG, [e.to_entry() for e in events])
        if self.max_len is not None and new:
            self.store.log_trim(keys.EVENT_LOG, self.max_len)
        return new

    def query(
        self,
        kind: str | None = None,
        pool: str | None = None,
        origin: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
        slot: str | None = None,
        kinds: list[str] | None = None,
        after: tuple[int, int, str] | None = None,
    ) -> list[Event]:
        """Matching events in causal (HLC) order. ``kinds`` match exactly or by prefix (``"slot.*"``);
        ``after`` is an exclusive cursor ``(physical, counter, id)`` (see :meth:`follow`)."""
        if after is not None:
            since_ms = after[0] if since_ms is None else max(since_ms, after[0])
        start = HLCTimestamp(since_ms, 0).key() if since_ms is not None else None
        end = HLCTimestamp(until_ms, 0).key() if until_ms is not None else None
        out = []
        for entry in self.store.log_range(keys.EVENT_LOG, start, end):
            ev = Event.model_validate(json.loads(entry.data))
            if (kind and ev.kind != kind) or (pool and ev.pool != pool) or (origin and ev.origin != origin):
                continue
            if (slot and ev.slot != slot) or (kinds and not _kind_matches(ev.kind, kinds)):
                continue
            if after is not None and (ev.physical, ev.counter, ev.id) <= tuple(after):
                continue
            out.append(ev)
            if limit is not None and len(out) >= limit:
                break
        return out

    def query_typed(self, **filters: Any) -> list[Any]:
        """Like :meth:`query`, each event as its kind's model (:func:`fleet_ray.observe.kinds.typed`)."""
        from fleet_ray.observe.kinds import typed

        return [typed(e) for e in self.query(**filters)]

    def size(self) -> int:
        return self.store.log_len(keys.EVENT_LOG)

    def follow(
        self,
        after: tuple[int, int, str] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        sleep: Any = time.sleep,
        **filters: Any,
    ) -> Iterator[Event]:
        """Live tail: yield matching events appended after ``after`` (default: from now on), in
        causal order, polling every ``poll_s``, until ``timeout_s`` passes (None: forever)."""
        if after is None:
            after = (int(time.time() * 1000), 0, "")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            for ev in self.query(after=after, **filters):
                after = (ev.physical, ev.counter, ev.id)
                yield ev
            sleep(poll_s)


def _kind_matches(kind: str, kinds: list[str]) -> bool:
    return any(kind == k or (k.endswith("*") and kind.startswith(k[:-1])) for k in kinds)
