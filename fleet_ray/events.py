"""Lifecycle events: typed, HLC-stamped, appended idempotently to the store's event log."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.hlc import HLCTimestamp
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

    def append(self, events: list[Event]) -> int:
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
    ) -> list[Event]:
        start = HLCTimestamp(since_ms, 0).key() if since_ms is not None else None
        end = HLCTimestamp(until_ms, 0).key() if until_ms is not None else None
        out = []
        for entry in self.store.log_range(keys.EVENT_LOG, start, end):
            ev = Event.model_validate(json.loads(entry.data))
            if (kind and ev.kind != kind) or (pool and ev.pool != pool) or (origin and ev.origin != origin):
                continue
            out.append(ev)
            if limit is not None and len(out) >= limit:
                break
        return out
