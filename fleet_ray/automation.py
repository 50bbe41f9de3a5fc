"""What users write: automations, their config models, and the context a slot hands them.

A **batch** automation processes finite work items::

    class FetchTitle(BatchAutomation):
        class Config(BaseModel):
            timeout_s: float = 10

        async def process(self, item):
            ...
            return {"url": item, "title": title}

A **continuous** automation runs until its slot is stopped::

    class Watch(ContinuousAutomation):
        class Config(BaseModel):
            every_s: float = 60

        async def run(self):
            while await self.ctx.sleep(self.config.every_s):
                ...

Both are registered under the entry-point group ``fleet_ray.automations`` and named by a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from fleet_ray.errors import AutomationError, StreamError
from fleet_ray.names import slot_actor_name


class NoConfig(BaseModel):
    """The config model of an automation that takes none (and rejects any field)."""

    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass(frozen=True)
class SlotIdentity:
    """Which slot an automation runs in."""

    pool: str
    index: int
    generation: int
    node_id: str = ""

    @property
    def slot_id(self) -> str:
        return f"{self.pool}:{self.index}"

    @property
    def actor_name(self) -> str:
        return slot_actor_name(self.pool, self.index, self.generation)


class PhaseTimeout(AutomationError, TimeoutError):
    """A named phase ran past its timeout."""

    def __init__(self, phase: str, timeout: float, slot_id: str = ""):
        self.phase = phase
        self.timeout = timeout
        self.slot_id = slot_id
        where = f" in slot {slot_id}" if slot_id else ""
        super().__init__(f"phase {phase!r}{where} timed out after {timeout:g}s")

    def __reduce__(self):
        return (type(self), (self.phase, self.timeout, self.slot_id))


class Context:
    """What a slot gives its automation: config, identity, logger, and hooks back to the fleet."""

    def __init__(
        self,
        slot: SlotIdentity,
        config: BaseModel,
        *,
        logger: logging.Logger | None = None,
        on_recycle: Callable[[str], None] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.slot = slot
        self.config = config
        self.log = logging.LoggerAdapter(
            logger or logging.getLogger(f"fleet_ray.automation.{slot.pool}"),
            {"slot": slot.slot_id, "generation": slot.generation},
        )
        self._on_recycle = on_recycle
        self._on_progress = on_progress
        self._stop = asyncio.Event()
        self.recycle_reason: str | None = None
        # the phase (and step) of each task in flight: concurrent items each have their own
        self._phase: contextvars.ContextVar[_Phase | None] = contextvars.ContextVar(f"fleet_phase_{id(self)}",
                                                                                   default=None)
        self._phases: dict[int, _Phase] = {}  # every phase open now, in the order they were entered
        self._loose_step: str | None = None  # a step recorded outside any phase
        self.progress: dict[str, Any] = {}

    # -- lifecycle hooks ---------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """True once the slot asked the automation to stop (drain, recycle, shutdown)."""
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the slot stops. Returns False if the slot is stopping."""
        if self._stop.is_set():
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return not self._stop.is_set()

    def request_recycle(self, reason: str = "requested by automation") -> None:
        """Ask the supervisor to replace this slot with a fresh one (graceful drain first)."""
        self.recycle_reason = reason
        if self._on_recycle:
            self._on_recycle(reason)

    def report_progress(self, message: str | None = None, **fields: Any) -> None:
        """Publish progress (shown by ``fleet-ray status``); later calls update earlier fields."""
        if message is not None:
            fields["message"] = message
        fields["at"] = time.time()
        self.progress.update(fields)
        if self._on_progress:
            self._on_progress(dict(self.progress))

    # -- phases ------------------------------------------------------------------------------
    @property
    def phase_name(self) -> str | None:
        """The current phase: this task's, or (asked from outside any phase, as a health check
        does) the phase entered last among those still open."""
        state = self._current_phase()
        return state.name if state else None

    @property
    def phase_step(self) -> str | None:
        """The current sub-step of :attr:`phase_name`'s phase."""
        state = self._current_phase()
        return state.step if state else self._loose_step

    def _current_phase(self) -> _Phase | None:
        state = self._phase.get()
        if state is None and self._phases:
            state = next(reversed(self._phases.values()))
        return state

    @contextlib.asynccontextmanager
    async def phase(self, name: str, timeout: float | None = None) -> AsyncIterator[Context]:
        """Run a named step with an optional timeout; the slot always knows the current phase.

        A timeout raises :class:`PhaseTimeout` naming the phase and the slot. Items processed
        concurrently each have their own phase and step.
        """
        state = _Phase(name)
        token = self._phase.set(state)
        self._phases[id(state)] = state
        try:
            if timeout is None:
                yield self
            else:
                try:
                    async with asyncio.timeout(timeout):
                        yield self
                except TimeoutError as exc:
                    if isinstance(exc, PhaseTimeout):
                        raise
                    raise PhaseTimeout(name, timeout, self.slot.slot_id) from exc
        except BaseException as exc:
            mark_phase(exc, name, state.step)
            raise
        finally:
            self._phases.pop(id(state), None)
            with contextlib.suppress(ValueError):  # closed from another context (a finalizer)
                self._phase.reset(token)

    def step(self, description: str) -> None:
        """Record the current sub-step of this task's current phase."""
        state = self._phase.get()
        if state is not None:
            state.step = description
        else:
            self._loose_step = description

    # -- typed output streams (see fleet_ray.streams.declare) ------------------------------------------
    async def emit(self, stream: str, item: Any) -> None:
        """Send ``item`` to the declared output ``stream``, validated against its model here.

        An invalid item raises :class:`~fleet_ray.errors.StreamItemInvalid` (and is reported as a
        ``stream.item_invalid`` event); it never reaches a consumer. A full stream makes this wait
        (back-pressure). In a continuous automation this returns once the stream holds the item,
        so nothing emitted is lost if the slot dies right after (concurrent emits share one
        round trip; :meth:`emit_many` sends a list in one). In a batch automation items are
        batched and flushed before the work item counts as done (a retried item emits again).
        """
        await self._streams().emit(stream, [item])

    async def emit_many(self, stream: str, items: list[Any]) -> None:
        """Like :meth:`emit` for a list: all are validated first (one invalid item → none sent)."""
        await self._streams().emit(stream, list(items))

    def read(self, stream: str) -> AsyncIterator[Any]:
        """Iterate the typed items of the declared input ``stream`` (``async for x in ctx.read(...)``).

        Items of one batch are acknowledged once the loop asks for the next batch; items a dead
        consumer did not acknowledge go to another slot of the pool (at-least-once).
        """
        return self._streams().read(stream)

    async def flush(self) -> None:
        """Wait until every item emitted so far is held by its stream (safe from this slot's death)."""
        await self._streams().flush()

    def _streams(self) -> Any:
        io = getattr(self, "stream_io", None)
        if io is None:
            raise StreamError("this context has no streams (it runs outside a slot; see fleet_ray.streams.declare.InProcessStreams)")
        return io


class _Phase:
    __slots__ = ("name", "step")

    def __init__(self, name: str):
        self.name = name
        self.step: str | None = None


def mark_phase(exc: BaseException, phase: str, step: str | None) -> None:
    """Remember on an exception the innermost phase (and step) it escaped from, for crash reports."""
    if getattr(exc, "fleet_phase", None) is None:
        try:
            exc.fleet_phase = phase  # type: ignore[attr-defined]
            exc.fleet_step = step  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass


class Automation(Generic[ConfigT]):
    """Base of all automations. Subclass :class:`BatchAutomation` or :class:`ContinuousAutomation`.

    Declare the config as a nested ``Config`` Pydantic model (or assign ``Config = MyModel``).
    """

    Config: ClassVar[type[BaseModel]] = NoConfig
    #: typed output streams, name → model (``await ctx.emit(name, item)``); see fleet_ray.streams.declare
    outputs: ClassVar[dict[str, type[BaseModel]]] = {}
    #: typed input streams, name → model (``async for x in ctx.read(name)``), wired by the spec
    inputs: ClassVar[dict[str, type[BaseModel]]] = {}

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def config(self) -> ConfigT:
        return self.ctx.config  # type: ignore[return-value]

    async def setup(self) -> None:
        """Called once in the slot before any work."""

    async def teardown(self) -> None:
        """Called once when the slot stops (drain, recycle, shutdown), whatever happened."""

    async def check_health(self) -> bool:
        """Optional health probe, called by the supervisor's health check. False → unhealthy."""
        return True

    def reconfigure(self, config: ConfigT) -> bool:
        """Take a new, already validated config in place. Return False to get a fresh slot instead."""
        return False

    @classmethod
    def config_model(cls) -> type[BaseModel]:
        model = getattr(cls, "Config", NoConfig)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise AutomationError(f"{cls.__qualname__}.Config must be a pydantic BaseModel subclass")
        return model


class BatchAutomation(Automation[ConfigT]):
    """Processes finite work items submitted to its pool; each item's return value is its result."""

    async def process(self, item: Any) -> Any:
        raise NotImplementedError


class ContinuousAutomation(Automation[ConfigT]):
    """Runs until its slot stops: loop while ``await self.ctx.sleep(...)`` or ``not ctx.stopping``."""

    async def run(self) -> None:
        raise NotImplementedError


def is_batch(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, BatchAutomation)
