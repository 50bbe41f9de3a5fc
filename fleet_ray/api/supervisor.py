"""What the supervisor actor's remote methods take and return (besides :mod:`fleet_ray.api.status` and
the HTTP models in :mod:`fleet_ray.api.models` it reuses).

One model per question: the driver client (:mod:`fleet_ray.client.fleet`), the CLI and the HTTP API
(:mod:`fleet_ray.serve`) read these, and they cross Ray by pickling. Every model forbids unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.events import Event

Cursor = tuple[int, int, str]


class SupervisorModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- events ----------------------------------------------------------------------------------------
class EventQuery(SupervisorModel):
    kinds: list[str] | None = Field(None, description="Event kinds; 'slot.*' matches a prefix.")
    pool: str | None = Field(None, description="Only events about this pool.")
    slot: str | None = Field(None, description="Only events about this slot position 'pool:index'.")
    since_ms: int | None = Field(None, description="From this HLC physical time (ms since the epoch).")
    until_ms: int | None = Field(None, description="Before this HLC physical time (ms since the epoch).")
    after: Cursor | None = Field(None, description="Only events after this cursor (physical, counter, id).")
    limit: int = Field(200, ge=0, description="At most this many events.")
    wait_s: float | None = Field(
        None, ge=0, description="Long-poll: wait up to this long for the first event newer than `after` "
        "(default: newer than the newest event now). Reads the supervisor's memory only.")


class EventBatch(SupervisorModel):
    events: list[Event] = Field(description="Matching events, oldest first.")
    source: Literal["memory", "log"] = Field(
        description="memory: the supervisor's recent events; log: the durable event log was read.")
    newest: Cursor | None = Field(None, description="Cursor of the newest event the supervisor holds.")
    cursor: Cursor | None = Field(
        None, description="Cursor of the last event returned (else the query's): pass as `after` next time.")


# -- rollouts ---------------------------------------------------------------------------------------
class RolloutOut(SupervisorModel):
    pool: str = Field(description="Pool being rolled out.")
    from_spec: dict[str, Any] = Field(description="The pool's spec before the change (what a rollback restores).")
    to_shape: str = Field(description="Slot shape hash of the new spec.")
    to_config: str = Field(description="Config hash of the new spec.")
    from_version: str | None = Field(None, description="Version before the rollout.")
    to_version: str | None = Field(None, description="Version the rollout goes to.")
    started: float = Field(description="When it started (epoch seconds).")
    state: str = Field(description="progressing | paused | complete | rolled_back")
    failures: int = Field(0, description="Failures of new-version slots so far.")
    reason: str = Field("", description="Why it is paused or was rolled back.")


# -- pools ------------------------------------------------------------------------------------------
class PoolTarget(SupervisorModel):
    pool: str = Field(description="Pool name.")
    desired: int = Field(description="Desired slots after the change.")
    paused: bool = Field(description="Whether the pool is paused after the change.")
    previous_slots: int | None = Field(None, description="Slots before the drain (what resume restores).")


class WorkQueueInfo(SupervisorModel):
    name: str = Field(description="Ray actor name of the pool's work queue.")
    max_item_retries: int = Field(description="Attempts an item gets after its first.")


class ShutdownResult(SupervisorModel):
    killed_after_timeout: int = Field(description="Slots that did not stop within the timeout and were killed.")


# -- streams ----------------------------------------------------------------------------------------
class StreamState(SupervisorModel):
    name: str = Field(description="Stream name '<pool>.<output>'.")
    producer_pool: str = Field(description="Pool whose slots emit into it.")
    consumer_pools: list[str] = Field(default_factory=list, description="Pools wired to read it.")
    depth: int = Field(0, description="Items queued now.")
    capacity: int | None = Field(None, description="Bound of the queue (back-pressure above it).")
    in_rate: float = Field(0.0, description="Items put per second (recent).")
    out_rate: float = Field(0.0, description="Items taken per second (recent).")
    items_emitted: int = Field(0, description="Items emitted since the stream was created.")
    producers: list[str] = Field(default_factory=list, description="Pools emitting into it.")
    consumers: list[str] = Field(default_factory=list, description="Pools or groups reading it.")
    hub: dict[str, Any] | None = Field(
        None, description="The hub's latest stats (bytes, blocked producers, per-group lag); None before the first.")


class StreamInfo(SupervisorModel):
    stream: str = Field(description="Stream name.")
    hub: str = Field(description="Ray actor name of the stream's hub.")
    model: str = Field(description="Import path of the item model ('' when unknown).")
    pool: str = Field(description="Producer pool.")
    consumers: list[str] = Field(default_factory=list, description="Consumer pools.")
    options: dict[str, Any] = Field(default_factory=dict, description="The stream's StreamOptions.")


class SinkStarted(SupervisorModel):
    stream: str = Field(description="Stream copied.")
    sink: str = Field(description="Ray actor name of the sink.")
    group: str = Field(description="Consumer group the sink reads as.")


# -- notifiers --------------------------------------------------------------------------------------
class NotifierSummary(SupervisorModel):
    webhook: str | None = Field(None, description="Webhook as scheme://host (no path, no secrets).")
    telegram: str | None = Field(None, description="Telegram API host, when configured.")
    window_s: float = Field(description="A new group waits this long to gather alike failures.")
    digest_s: float = Field(description="Seconds between digests.")
    max_per_minute: int = Field(description="Notifications per minute at most.")


class NotifierState(SupervisorModel):
    config: NotifierSummary = Field(description="What is configured.")
    sent: list[dict[str, Any]] = Field(default_factory=list, description="The latest notifications sent.")
    failures: int = Field(0, description="Notifications that could not be delivered.")
