"""The event envelope: the one shape every lifecycle event has, in the log, in memory and on the wire.

:class:`Event` is the home of that shape (``kind`` + HLC stamp + what it is about + free ``data``).
The typed model of each kind (:mod:`fleet_ray.observe.kinds`) converts to and from it, the event log
(:mod:`fleet_ray.observe.events`) stores it, and the views of it are projections declared next to
their users: the HTTP API's ``EventOut`` (this envelope plus ``at`` and ``cursor``,
:mod:`fleet_ray.api.models`) and ``FleetStatus.events``' ``EventStatus`` (:mod:`fleet_ray.api.status`).

Imports only Pydantic, the HLC and the store's log entry, so every other event module can import it.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.hlc import HLCTimestamp
from fleet_ray.store.base import LogEntry


class Event(BaseModel):
    """One lifecycle event (the log's JSON is this model's, field for field)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Unique event id; appends are idempotent by it.")
    kind: str = Field(description="e.g. slot.started, slot.ready, slot.died, slot.recycled, pool.applied")
    physical: int = Field(description="Hybrid logical clock, physical part (ms since the epoch).")
    counter: int = Field(0, description="Hybrid logical clock, logical counter.")
    origin: str = Field("supervisor", description="Who emitted it (supervisor, a slot, ...).")
    pool: str | None = Field(None, description="Pool the event is about.")
    slot: str | None = Field(None, description="Slot position 'pool:index' the event is about.")
    generation: int | None = Field(None, description="Slot generation the event is about.")
    message: str = Field("", description="Human-readable detail.")
    data: dict[str, Any] = Field(default_factory=dict, description="Kind-specific structured detail.")

    @property
    def hlc(self) -> HLCTimestamp:
        return HLCTimestamp(self.physical, self.counter)

    @property
    def epoch_s(self) -> float:
        """Wall time of the event, seconds since the epoch (the HLC's physical part)."""
        return self.physical / 1000

    @property
    def position(self) -> tuple[int, int, str]:
        """``(physical, counter, id)``: the event's place in causal order (what cursors compare)."""
        return (self.physical, self.counter, self.id)

    def to_entry(self) -> LogEntry:
        return LogEntry(self.id, self.hlc.key(), self.model_dump_json(include=set(Event.model_fields)).encode())
