"""What ``status`` returns: typed, documented models shared by the client, the CLI and the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlotStatus(_Model):
    id: str = Field(description="Slot position, 'pool:index'.")
    pool: str
    index: int
    generation: int = Field(description="Monotonic per position; +1 for every replacement.")
    state: str = Field(description="pending | starting | running | draining | stopping | failed")
    actor: str = Field(description="Ray actor name, fleet:<pool>:<index>:g<generation>.")
    node_id: str = ""
    pid: int | None = None
    version: str | None = Field(None, description="Installed automation version on the slot.")
    uptime_s: float | None = Field(None, description="Seconds since the slot became ready.")
    tasks: int = Field(0, description="Tasks (items or runs) the current generation finished.")
    recycles: int = Field(0, description="How often this position was replaced.")
    rss_mb: float = 0.0
    phase: str | None = Field(None, description="The automation's current phase, if it uses phases.")
    progress: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field("", description="Why the slot is in its state (pending reason, failure cause).")
    backoff_s: float = Field(0.0, description="Seconds until a failing position is started again.")


class PoolStatus(_Model):
    name: str
    automation: str
    version: str | None = Field(None, description="The pool's version pin.")
    kind: str
    batch: bool = Field(description="True for BatchAutomation pools (they take submitted work).")
    desired: int
    paused: bool = False
    state: str = Field(description="ok | scaling | pending | degraded")
    reason: str = ""
    counts: dict[str, int] = Field(default_factory=dict, description="Slots per state.")
    slots: list[SlotStatus] = Field(default_factory=list)


class EventStatus(_Model):
    kind: str
    at: float
    pool: str | None = None
    slot: str | None = None
    generation: int | None = None
    message: str = ""


class FleetStatus(_Model):
    fleet: str
    namespace: str
    supervisor_pid: int
    supervisor_started: float
    store: str = Field(description="Store URL, with credentials redacted.")
    store_degraded: bool = Field(description="True while the store can't be written; state is kept in memory.")
    store_error: str | None = None
    last_step_ms: float = Field(description="Duration of the last reconcile step.")
    steps: int
    pools: list[PoolStatus]
    events: list[EventStatus] = Field(default_factory=list, description="Most recent lifecycle events.")

    def pool(self, name: str) -> PoolStatus | None:
        return next((p for p in self.pools if p.name == name), None)

    def slot(self, slot_id: str) -> SlotStatus | None:
        return next((s for p in self.pools for s in p.slots if s.id == slot_id), None)
