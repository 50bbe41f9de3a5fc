"""One Pydantic model per event kind, around the generic :class:`~fleet_ray.observe.envelope.Event` envelope.

The log stores the envelope (``kind`` + ``data``); a typed model is the same event with its
``data`` as checked fields::

    ev = SlotDied.stamp(hlc, pool="web", slot="web:0", generation=3, message=cause)
    log.append([ev])                      # typed or generic, both go in
    for e in log.query_typed(kind="slot.died"):
        e.draining                         # a typed field

:func:`typed` turns any envelope into its model (unknown kinds stay generic :class:`Event`);
:data:`EVENT_TYPES` lists every kind fleet-ray emits.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.envelope import Event
from fleet_ray.observe.hlc import HLC, HLCTimestamp

#: the envelope fields a typed event carries itself (all of :class:`Event`'s but ``kind``, its class's
#: :attr:`TypedEvent.KIND`, and ``data``, its own fields)
ENVELOPE = tuple(f for f in Event.model_fields if f not in ("kind", "data"))


class TypedEvent(BaseModel):
    """Envelope fields shared by every typed event (:data:`ENVELOPE`, as :class:`Event` declares them);
    subclasses add their kind's fields."""

    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str] = ""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Unique; appends are idempotent by it.")
    physical: int = Field(description="HLC physical part, ms since the epoch")
    counter: int = Field(0, description="HLC logical counter")
    origin: str = "supervisor"
    pool: str | None = None
    slot: str | None = None
    generation: int | None = None
    message: str = ""

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def hlc(self) -> HLCTimestamp:
        return HLCTimestamp(self.physical, self.counter)

    @classmethod
    def stamp(cls, hlc: HLC, **fields: Any) -> TypedEvent:
        """A new event of this kind, stamped with ``hlc.tick()``."""
        ts = hlc.tick()
        return cls(physical=ts.physical, counter=ts.counter, **fields)

    def to_event(self) -> Event:
        data = self.model_dump(mode="json", exclude=set(ENVELOPE))
        return Event(kind=self.KIND, data=data, **self.model_dump(include=set(ENVELOPE)))

    @classmethod
    def from_event(cls, ev: Event) -> TypedEvent:
        known = {k: v for k, v in ev.data.items() if k in cls.model_fields and k not in ENVELOPE}
        return cls(**ev.model_dump(include=set(ENVELOPE)), **known)


# -- slots ------------------------------------------------------------------------------------------
class SlotStarted(TypedEvent):
    KIND = "slot.started"


class SlotPending(TypedEvent):
    KIND = "slot.pending"


class SlotReady(TypedEvent):
    KIND = "slot.ready"
    pid: int | None = None


class SlotStartFailed(TypedEvent):
    KIND = "slot.start_failed"


class SlotUnhealthy(TypedEvent):
    KIND = "slot.unhealthy"
    failures: int = 0


class SlotDraining(TypedEvent):
    KIND = "slot.draining"


class SlotDied(TypedEvent):
    KIND = "slot.died"
    draining: bool = False


class SlotRecycled(TypedEvent):
    KIND = "slot.recycled"
    failure: bool = False


class SlotRemoved(TypedEvent):
    KIND = "slot.removed"


class SlotHealed(TypedEvent):
    """A position that had failed is running again."""

    KIND = "slot.healed"
    failures: int = Field(0, description="Failures of the position within the heal window before it healed.")


class SlotHealEscalated(TypedEvent):
    KIND = "slot.heal_escalated"
    failures: int = 0
    backoff_s: float = 0.0


class SlotCrashed(TypedEvent):
    """The one crash record of a dead slot generation (see fleet_ray.observe.crashes)."""

    KIND = "slot.crashed"
    crash_id: str
    task: str | None = None
    phase: str | None = None
    cause: str = ""
    error_type: str | None = None
    frame: str | None = None
    sources: list[str] = Field(default_factory=list)


# -- tasks and automations --------------------------------------------------------------------------
class TaskStarted(TypedEvent):
    KIND = "task.started"
    task: str
    attempt: int = 1


class TaskFinished(TypedEvent):
    KIND = "task.finished"
    task: str
    duration_s: float = 0.0


class TaskFailed(TypedEvent):
    KIND = "task.failed"
    task: str
    phase: str | None = None
    step: str | None = None
    error_type: str
    frame: str
    error: str = ""
    attempt: int = 1


class AutomationErrored(TypedEvent):
    """The automation itself crashed (``run()`` or a thread raised), not one task."""

    KIND = "automation.error"
    phase: str | None = None
    error_type: str
    frame: str
    error: str = ""


# -- config, pools, supervisor ----------------------------------------------------------------------
class ConfigApplied(TypedEvent):
    KIND = "config.applied"
    config_hash: str = ""


class ConfigRejected(TypedEvent):
    KIND = "config.rejected"


class ConfigNeedsRestart(TypedEvent):
    KIND = "config.needs_restart"


class PoolApplied(TypedEvent):
    KIND = "pool.applied"


class PoolDrained(TypedEvent):
    KIND = "pool.drained"
    previous_slots: int = 0


class PoolResumed(TypedEvent):
    KIND = "pool.resumed"


class _FromTo(TypedEvent):
    """An event with a ``from`` in its data (a Python keyword, so the field is ``from_``)."""

    def to_event(self) -> Event:
        ev = super().to_event()
        data = dict(ev.data)
        data["from"] = data.pop("from_")
        return ev.model_copy(update={"data": data})

    @classmethod
    def from_event(cls, ev: Event) -> TypedEvent:
        data = dict(ev.data)
        if "from" in data:
            data["from_"] = data.pop("from")
        return super().from_event(ev.model_copy(update={"data": data}))


class PoolScaled(_FromTo):
    """An autoscaled pool's size changed: by its autoscaler (``by: autoscaler``, after
    :func:`fleet_ray.control.autoscale.decide_scale`) or by ``fleet-ray scale`` (``by: operator``). Its
    data carries ``from`` and ``to`` (slots before and after), ``wanted`` and ``reason``."""

    KIND = "pool.scaled"
    from_: int = Field(description="Slots before the change (data key 'from').")
    to: int = Field(description="Slots after the change.")
    wanted: int = Field(description="What the signal asked for, within min_slots..max_slots.")
    reason: str = Field("", description="Why: the signal, its target per slot, a step or a bound.")
    signal: str = Field("", description="What the pool scales on ('backlog', 'lag on <stream>').")
    signal_value: float | None = Field(None, description="The smoothed signal the decision read.")
    by: str = Field("autoscaler", description="autoscaler | operator")


class SlotConcurrencyChanged(_FromTo):
    """A slot of a pool with ``concurrency_bounds`` changed how many items it works on at once, after
    :func:`fleet_ray.control.autoscale.decide_concurrency` read its host pressure (averaged over
    ``interval_s``). Its data carries ``from`` and ``to``, the ``reason`` and the readings."""

    KIND = "slot.concurrency"
    from_: int = Field(description="Items at once before the change (data key 'from').")
    to: int = Field(description="Items at once after the change.")
    reason: str = Field("", description="Why: the reading over its limit, or every reading under its limits.")
    cpu_ratio: float | None = Field(None, description="Host CPU in use, 0-1 (None: not measured).")
    memory_ratio: float | None = Field(None, description="Host memory in use, 0-1.")
    event_loop_lag_s: float | None = Field(None, description="How late the slot's event loop ran a timer, s.")
    chromium_memory_ratio: float | None = Field(
        None, description="Browser slots: Chromium's memory / browser.max_browser_rss_mb.")
    in_flight: int | None = Field(None, description="Items the slot worked on, on average over the interval.")


class SupervisorRecovered(TypedEvent):
    KIND = "supervisor.recovered"


# -- streams and runs -------------------------------------------------------------------------------
class StreamBackpressure(TypedEvent):
    """A stream was full and held its producers back."""

    KIND = "stream.backpressure"
    stream: str
    depth: int
    capacity: int
    blocked_producers: int = 0


class StreamItemRejected(TypedEvent):
    """A producer emitted an item that failed the stream's model (it never entered the stream)."""

    KIND = "stream.item_invalid"
    stream: str
    model: str
    errors: list[dict[str, str]] = Field(default_factory=list)


class RunResumed(TypedEvent):
    KIND = "run.resumed"
    run_id: str
    total: int
    skipped: int
    adopted: int = 0
    submitted: int = 0


EVENT_TYPES: dict[str, type[TypedEvent]] = {
    cls.KIND: cls
    for cls in (
        SlotStarted, SlotPending, SlotReady, SlotStartFailed, SlotUnhealthy, SlotDraining, SlotDied,
        SlotRecycled, SlotRemoved, SlotHealed, SlotHealEscalated, SlotCrashed, TaskStarted, TaskFinished,
        TaskFailed, AutomationErrored, ConfigApplied, ConfigRejected, ConfigNeedsRestart, PoolApplied,
        PoolDrained, PoolResumed, PoolScaled, SlotConcurrencyChanged, SupervisorRecovered, StreamBackpressure,
        StreamItemRejected, RunResumed,
    )
}


def typed(ev: Event | dict[str, Any]) -> TypedEvent | Event:
    """The event as its kind's model (a generic :class:`Event` for kinds not in :data:`EVENT_TYPES`)."""
    env = ev if isinstance(ev, Event) else Event.model_validate(ev)
    cls = EVENT_TYPES.get(env.kind)
    return cls.from_event(env) if cls is not None else env


def as_event(ev: TypedEvent | Event | BaseModel) -> Event:
    return ev.to_event() if isinstance(ev, TypedEvent) else ev  # type: ignore[return-value]
