"""What a slot adds around its automation for streams, events and the crash bridge.

:class:`SlotServices` is attached to the automation's context when the slot starts:

- ``ctx.emit`` / ``ctx.read`` / ``ctx.flush`` go to per-stream :class:`StreamProducer`\\s and
  :class:`StreamReader`\\s (the pool's consumer group, this slot's actor name as the consumer);
- typed events (``task.failed`` always, ``task.started/finished`` with ``task_events: true``,
  ``automation.error``, ``stream.item_invalid``) are stamped with the slot's HLC and shipped to the
  supervisor in batches, which merges them into the event log and groups the failures;
- the slot's half of the crash bridge: its tasks in flight and current phase are written to the
  store as they change (coalesced), and a fatal error (the automation's ``run()`` raising, or an
  uncaught exception in a thread via ``threading.excepthook`` / ``sys.excepthook``) is written at
  once, so the supervisor can complete the record even after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

import ray

from fleet_ray.automation import BatchAutomation
from fleet_ray.errors import StreamError, StreamItemInvalid
from fleet_ray.names import STORE_RELAY_NAME, SUPERVISOR_NAME
from fleet_ray.observe.crashes import CrashError, SlotContext
from fleet_ray.observe.grouping import fingerprint, short_message, user_modules_of
from fleet_ray.observe.hlc import HLC
from fleet_ray.observe.kinds import (
    AutomationErrored,
    StreamItemRejected,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    TypedEvent,
)
from fleet_ray.redact import redact_text, redact_url
from fleet_ray.streams.declare import Codec, StreamOptions, declared, model_path, stream_name

from .store_relay import RelayedStore, open_store_near
from .stream_hub import ensure_hub, get_hub
from .stream_io import StreamProducer, StreamReader

log = logging.getLogger(__name__)

CONTEXT_EVERY_S = 0.1
CONTEXT_BACKOFF_MAX_S = 5.0
# a slot on another host than the store writes through the store relay: a busy batch slot's context
# changes with every item, and ten relay calls a second per slot would load the head's relay
CONTEXT_RELAYED_EVERY_S = 0.5
EVENTS_EVERY_S = 0.2
MAX_PENDING_EVENTS = 10_000


class SlotServices:
    def __init__(self, slot: Any, automation_cls: type):
        self.slot = slot
        self.pool = slot.pool
        self.ident = slot.identity
        self.origin = slot.lessee
        self.namespace = slot.namespace
        self.hlc = HLC()
        self.user_modules = user_modules_of(automation_cls)
        self.outputs = declared(automation_cls, "outputs")
        self.inputs = declared(automation_cls, "inputs")
        self.continuous = not issubclass(automation_cls, BatchAutomation)
        self.codecs = {n: Codec(stream_name(self.pool.name, n), m) for n, m in self.outputs.items()}
        self.ctx: Any = None
        self._producers: dict[str, StreamProducer] = {}
        self._events: list[dict[str, Any]] = []
        self.inflight: dict[str, float] = {}
        self.error: CrashError | None = None
        self._ctx_written: tuple | None = None
        self._store: Any = None
        self._store_lock = threading.Lock()
        self._ctx_backoff, self._ctx_retry_at = 0.0, 0.0  # after a failed write: wait, doubling up to 5 s
        self._sup: Any = None
        self._loop_task: asyncio.Task | None = None
        self._prev_hooks: tuple[Any, Any] | None = None

    @classmethod
    def attach(cls, slot: Any, automation_cls: type, ctx: Any) -> SlotServices:
        svc = cls(slot, automation_cls)
        svc.ctx = ctx
        ctx.stream_io = svc
        svc._install_hooks()
        svc._loop_task = asyncio.get_running_loop().create_task(svc._loop())
        return svc

    # -- streams -----------------------------------------------------------------------------------
    async def emit(self, name: str, items: list[Any]) -> None:
        """Validate every item (all or none go out), then queue them. A continuous automation's emit
        returns once the stream holds its items; a batch automation's are flushed before its work
        item counts as done, so emits there don't wait (a retried item emits again)."""
        codec = self.codecs.get(name)
        if codec is None:
            raise StreamError(f"automation {self.pool.automation!r} declares no output {name!r} "
                              f"(outputs: {sorted(self.codecs) or 'none'})")
        try:
            valid = [codec.validate(item) for item in items]
        except StreamItemInvalid as exc:
            self.event(StreamItemRejected, stream=codec.stream, model=exc.model, errors=exc.errors,
                       message=short_message(str(exc)))
            raise
        producer = self._producers.get(name) or self._producer(name)
        await producer.emit_many(valid, wait=self.continuous)

    def _producer(self, name: str) -> StreamProducer:
        opts = self.pool.streams.get(name) or StreamOptions()
        stream = stream_name(self.pool.name, name)
        model = model_path(self.outputs[name])

        def find() -> Any:  # the hub, found again by name (or made again) if it went away
            return ensure_hub(self.namespace, stream, opts.capacity, opts.max_bytes, model,
                              store_url=self.slot.store_url, durable=opts.durable)

        hub = find()
        hub.set_limits.remote(opts.capacity, opts.max_bytes, model)  # if made by a consumer
        producer = StreamProducer(stream, hub, self.origin, self.codecs[name], min(opts.batch_max, opts.capacity),
                                  resolve=find)
        self._producers[name] = producer
        return producer

    def read(self, name: str) -> Any:
        model = self.inputs.get(name)
        ref = self.pool.inputs.get(name)
        if model is None or ref is None:
            raise StreamError(f"pool {self.pool.name!r} has no wired input {name!r} "
                              f"(declared: {sorted(self.inputs) or 'none'}, wired: {sorted(self.pool.inputs) or 'none'})")
        def find() -> Any:  # made here only if the supervisor hasn't yet (it makes every wired stream's hub)
            return get_hub(self.namespace, ref) or ensure_hub(self.namespace, ref, store_url=self.slot.store_url)

        reader = StreamReader(ref, find(), self.pool.name, self.origin, Codec(ref, model),
                              stopping=lambda: self.ctx is not None and self.ctx.stopping, resolve=find)
        return reader.items()

    async def flush(self) -> None:
        for p in list(self._producers.values()):
            await p.flush()

    def stream_stats(self) -> dict[str, Any]:
        return {p.stream: {"accepted": p.accepted, "buffered": p.buffered} for p in self._producers.values()}

    # -- tasks and events --------------------------------------------------------------------------
    def event(self, cls: type[TypedEvent], **fields: Any) -> None:
        ev = cls.stamp(self.hlc, origin=self.origin, pool=self.pool.name, slot=self.ident.slot_id,
                       generation=self.ident.generation, **fields)
        if len(self._events) >= MAX_PENDING_EVENTS:
            del self._events[: len(self._events) // 10]
        self._events.append(ev.to_event().model_dump(mode="json"))

    def task_started(self, task: str, attempt: int = 1) -> None:
        self.inflight[task] = time.monotonic()
        if self.pool.task_events:
            self.event(TaskStarted, task=task, attempt=attempt)

    def task_finished(self, task: str) -> None:
        started = self.inflight.pop(task, None)
        if self.pool.task_events:
            self.event(TaskFinished, task=task, duration_s=round(time.monotonic() - (started or time.monotonic()), 6))

    def task_failed(self, task: str, exc: BaseException, attempt: int = 1) -> None:
        self.inflight.pop(task, None)
        fp = fingerprint(exc, self.user_modules)
        phase = getattr(exc, "fleet_phase", None) or getattr(exc, "phase", None)
        self.event(TaskFailed, task=task, phase=phase if isinstance(phase, str) else None,
                   step=getattr(exc, "fleet_step", None), error_type=fp.error_type, frame=fp.frame,
                   error=short_message(exc), attempt=attempt, message=short_message(exc))

    async def automation_crashed(self, exc: BaseException, source: str = "automation") -> None:
        """The automation itself failed: write the error for the crash bridge now, and report it."""
        err = self._crash_error(exc, source)
        self.event(AutomationErrored, phase=err.phase, error_type=err.error_type, frame=err.frame,
                   error=err.message, message=err.message)
        await asyncio.to_thread(self._write_context, True)

    def _crash_error(self, exc: BaseException, source: str) -> CrashError:
        fp = fingerprint(exc, self.user_modules)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
        phase = getattr(exc, "fleet_phase", None) or (self.ctx.phase_name if self.ctx else None)
        self.error = CrashError(error_type=fp.error_type, frame=fp.frame, message=short_message(exc),
                                traceback=redact_url(tb)[-4000:], source=source, phase=phase,
                                step=getattr(exc, "fleet_step", None))
        return self.error

    # -- the crash bridge's slot half --------------------------------------------------------------
    def _snapshot(self) -> SlotContext:
        ctx = self.ctx
        return SlotContext(pool=self.pool.name, index=self.ident.index, generation=self.ident.generation,
                           pid=os.getpid(), node_id=self.ident.node_id, tasks=self._tasks(),
                           phase=ctx.phase_name if ctx else None, step=ctx.phase_step if ctx else None,
                           error=self.error)

    def _tasks(self) -> list[str]:
        return list(self.inflight)[-20:] or (["run"] if self.slot._workqueue_name is None else [])

    def _signature(self) -> tuple:
        """What the written context depends on, cheap enough to compare on the event loop."""
        ctx = self.ctx
        return (tuple(self._tasks()), ctx.phase_name if ctx else None, ctx.phase_step if ctx else None,
                self.error is not None)

    def _write_context(self, force: bool = False) -> None:
        """Write what this slot is doing (if it changed); runs in a thread or an excepthook."""
        if not self.slot.store_url:
            return
        sig = self._signature()
        if not force and sig == self._ctx_written:
            return
        if not force and time.monotonic() < self._ctx_retry_at:
            return  # the store failed lately, or writes go through the relay and one went lately
        snap = self._snapshot()
        try:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store_near(self.slot.store_url, self.namespace, STORE_RELAY_NAME)
                self._store.put(snap.key(), snap.model_dump_json().encode())
            self._ctx_written = sig
            if isinstance(self._store, RelayedStore):  # through the head: at most 2 a second per slot
                self._ctx_retry_at = time.monotonic() + CONTEXT_RELAYED_EVERY_S
            if self._ctx_backoff:
                log.info("slot %s: writes its context to the store again", self.origin)
            self._ctx_backoff = 0.0
        except Exception as exc:  # the supervisor's half still reports the crash
            if not self._ctx_backoff:
                log.warning("slot %s: can't write its context (its crash record would lack it), retrying "
                            "with back-off: %s", self.origin, redact_text(str(exc)))
            self._ctx_backoff = min(CONTEXT_BACKOFF_MAX_S, max(CONTEXT_EVERY_S * 5, self._ctx_backoff * 2))
            self._ctx_retry_at = time.monotonic() + self._ctx_backoff

    def _clear_context(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception), self._store_lock:
                self._store.delete(self._snapshot().key())
                self._store.close()

    def _install_hooks(self) -> None:
        prev_sys, prev_thread = sys.excepthook, threading.excepthook

        def sys_hook(et, ev, tb):
            self._last_resort(ev, "excepthook")
            prev_sys(et, ev, tb)

        def thread_hook(args):
            if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
                self._last_resort(args.exc_value, "thread")
            prev_thread(args)

        self._prev_hooks = (prev_sys, prev_thread)
        sys.excepthook, threading.excepthook = sys_hook, thread_hook

    def _last_resort(self, exc: BaseException, source: str) -> None:
        try:
            self._crash_error(exc, source)
            self._write_context(force=True)
        except Exception:  # pragma: no cover - nothing may escape an excepthook
            pass

    # -- background --------------------------------------------------------------------------------
    async def _loop(self) -> None:
        last_events = 0.0
        while True:
            try:
                # an idle slot's context doesn't change: compare here, and only hop to a thread to
                # write (ten thread hops a second cost 1% of a core per slot, 2 cores at 200 slots)
                if self.slot.store_url and self._signature() != self._ctx_written:
                    await asyncio.to_thread(self._write_context)
                if self._events and time.monotonic() - last_events >= EVENTS_EVERY_S:
                    last_events = time.monotonic()
                    await self._ship_events()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("slot %s: background: %s", self.origin, exc)
            await asyncio.sleep(CONTEXT_EVERY_S)

    async def _ship_events(self) -> None:
        batch, self._events = self._events, []
        try:
            if self._sup is None:
                self._sup = ray.get_actor(SUPERVISOR_NAME, namespace=self.namespace)
            await asyncio.wait_for(self._sup.ingest.remote(batch), timeout=30)
        except Exception as exc:  # keep them for the next try (bounded)
            self._events = (batch + self._events)[-MAX_PENDING_EVENTS:]
            self._sup = None
            log.debug("slot %s: can't ship events yet: %s", self.origin, exc)

    async def close(self, timeout_s: float = 10.0) -> None:
        """A clean stop: flush outputs and events, drop the crash context, restore the hooks."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout_s)
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._events:
            with contextlib.suppress(Exception):
                await self._ship_events()
        if self.error is None:
            await asyncio.to_thread(self._clear_context)
        if self._prev_hooks is not None:
            sys.excepthook, threading.excepthook = self._prev_hooks
