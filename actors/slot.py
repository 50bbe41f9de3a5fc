"""The slot actor: a named, detached Ray actor that runs one automation for one slot position.

The supervisor creates it (``fleet:<pool>:<index>:g<generation>``), calls :meth:`start` (load the
automation by entry point, check the version pin, validate the config, run ``setup``), keeps a
:meth:`watch` call outstanding so it learns of the slot's death at once, health-checks it, pushes
config changes, and drains it before a recycle.

A batch slot pulls items from its pool's work queue (``lease`` long-polls, and each lease call also
hands back the previous batch's results, so a batch costs one round trip). A continuous slot runs
``automation.run()`` until it is drained.

A batch slot of a pool with ``concurrency_bounds`` adapts how many items it works on at once to its
host's pressure: :meth:`SlotCore._pressure_loop` samples host CPU and memory, the lag of a timer on
the slot's own event loop (and, in browser slots, Chromium's memory) and feeds a
:class:`~fleet_ray.control.concurrency.ConcurrencyGovernor`, whose value the batch loop reads each
round; each change is a ``slot.concurrency`` event, and the health report carries the value and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
import ray

from fleet_ray.automation import Context, SlotIdentity
from fleet_ray.control.concurrency import ConcurrencyChange, ConcurrencyGovernor, cpu_busy_ratio
from fleet_ray.errors import AutomationError, SpecError
from fleet_ray.observe.kinds import SlotConcurrencyChanged
from fleet_ray.redact import redact_url
from fleet_ray.spec.discovery import find, validate_config
from fleet_ray.spec.models import PoolSpec

from .slot_io import SlotServices

log = logging.getLogger(__name__)

FAST_ITEM_S = 0.05  # items finishing faster than this on average are prefetched (see _batch_loop)
LEASE_WAIT_S = 10.0  # long-poll: returns as soon as work arrives, or at once when the slot drains
HEARTBEAT_S = 5.0  # a slot busy with long items tells its work queue it is alive this often


class HostPressure:
    """This host's CPU (the busy share of all its CPUs since the previous reading) and memory in use
    (total less available, of total), read from /proc through psutil: cheap enough for the loop."""

    def __init__(self) -> None:
        self._cpu = psutil.cpu_times()._asdict()

    def read(self) -> dict[str, float | None]:
        try:
            cpu = psutil.cpu_times()._asdict()
            ratio, self._cpu = cpu_busy_ratio(self._cpu, cpu), cpu
            mem = psutil.virtual_memory()
        except psutil.Error:
            return {}
        return {"cpu_ratio": ratio, "memory_ratio": 1.0 - mem.available / mem.total if mem.total else None}


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


async def start_redacted(start: Callable[[], Awaitable[dict[str, Any]]], lessee: str) -> dict[str, Any]:
    """``start()``, but a failure crosses the Ray boundary as an :class:`AutomationError` whose text is
    the error's, secrets redacted, and no traceback: Ray keeps a failed call's error in its task records
    (``ray list tasks --detail``, the Ray dashboard), where other users of the cluster can read it. The
    traceback goes to this slot's log (redacted there too)."""
    try:
        return await start()
    except Exception as exc:
        log.warning("slot %s: start failed", lessee, exc_info=True)
        raise AutomationError(redact_url(error_text(exc))) from None


class SlotCore:
    """The slot's behaviour, independent of Ray's actor decorator (the browser slot extends it)."""

    def __init__(
        self,
        pool: dict[str, Any],
        index: int,
        generation: int,
        workqueue: str | None,
        namespace: str,
        store_url: str | None = None,
    ):
        self.pool = PoolSpec.model_validate(pool)
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.identity = SlotIdentity(self.pool.name, index, generation, node_id)
        self.lessee = self.identity.actor_name
        self.namespace = namespace
        self.store_url = store_url
        self._workqueue_name = workqueue
        self._wq: Any = None
        self._started: dict[str, Any] | None = None
        self._start_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._crash: str | None = None
        self.tasks = 0
        self.failed_items = 0
        self.automation: Any = None
        self.ctx: Context | None = None
        self.version: str | None = None
        self.created = time.time()
        self.services: Any = None  # streams, events and the crash bridge (actors/slot_io.py)
        # concurrency_bounds: the governor of this slot's concurrency, and what the batch loop shares
        self.governor: ConcurrencyGovernor | None = None
        self._pressure_task: asyncio.Task | None = None
        self._running_items: dict[Any, Any] = {}  # the batch loop's items running now
        self._batch_wake: asyncio.Event | None = None
        self._host: HostPressure | None = None

    # -- supervisor-facing API -----------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Load and set up the automation; idempotent (an adopting supervisor calls it again)."""
        async with self._start_lock:
            if self._started is None:
                found = find(self.pool.automation, self.pool.version)
                config = validate_config(self.pool, found.cls)
                self.version = found.version
                self.ctx = self.make_context(config)
                self.services = SlotServices.attach(self, found.cls, self.ctx)
                self.automation = self.make_automation(found.cls, self.ctx)
                await _maybe_await(self.automation.setup())
                loop = asyncio.get_running_loop()
                bounds = self.pool.concurrency_bounds
                if bounds is not None and self._workqueue_name is not None:  # batch items only
                    self.governor = ConcurrencyGovernor(bounds, self.pool.concurrency, time.time())
                    self._pressure_task = loop.create_task(self._pressure_loop())
                self._loop_task = loop.create_task(self._main())
                self._started = {
                    "pid": os.getpid(),
                    "node_id": self.identity.node_id,
                    "version": self.version,
                }
            return self._started

    def make_context(self, config: Any) -> Context:
        """Hook: the context handed to the automation (the browser slot returns its own subclass)."""
        return Context(self.identity, config, logger=logging.getLogger(f"fleet_ray.automation.{self.pool.name}"))

    def make_automation(self, cls: type, ctx: Context) -> Any:
        return cls(ctx)

    async def process_item(self, payload: Any, job_id: str, item_id: str, attempt: int) -> Any:
        """Hook: process one batch item (the browser slot wraps it with the item's task name)."""
        return await _maybe_await(self.automation.process(payload))

    async def watch(self) -> None:
        """Returns only when the slot stopped on purpose; fails at once if the actor dies."""
        await self._stopped.wait()

    async def health(self) -> dict[str, Any]:
        ctx = self.ctx
        report: dict[str, Any] = {
            "ok": True,
            "tasks": self.tasks,
            "rss_mb": self.rss_mb(),
            "phase": ctx.phase_name if ctx else None,
            "progress": dict(ctx.progress) if ctx else {},
            "recycle_requested": ctx.recycle_reason if ctx else None,
        }
        if self.governor is not None:
            report["concurrency"] = {**self.governor.report(), "in_flight": self.in_flight()}
        if self._crash is not None:
            report.update(ok=False, error=self._crash)
        elif self.automation is not None:
            try:
                ok = await _maybe_await(self.automation.check_health())
            except Exception as exc:
                report.update(ok=False, error=f"health probe raised {error_text(exc)}")
            else:
                if not ok:
                    report.update(ok=False, error="automation health probe returned False")
        return report

    async def reconfigure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Validate a new config here, on the slot's node, and apply it in place if the automation can."""
        pool = self.pool.model_copy(update={"config": config})
        try:
            validated = validate_config(pool, type(self.automation))
        except SpecError as exc:
            return {"applied": False, "error": str(exc)}
        applied = bool(await _maybe_await(self.automation.reconfigure(validated)))
        if applied and self.ctx is not None:
            self.ctx.config = validated
            self.pool = pool
        return {"applied": applied}

    async def drain(self) -> dict[str, Any]:
        """Stop taking work, let in-flight work finish, tear down. The supervisor bounds the wait."""
        if self.ctx is not None:
            self.ctx.stop()
        if self._pressure_task is not None:
            self._pressure_task.cancel()
        if self._wq is not None:  # wake our pending lease instead of waiting it out
            with contextlib.suppress(Exception):
                self._wq.kick.remote(self.lessee)
        if self._loop_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._loop_task
        await self._teardown()
        if self.services is not None:
            await self.services.close()
        self._stopped.set()
        return {"tasks": self.tasks}

    async def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": self.identity.node_id, "lessee": self.lessee}

    def rss_mb(self) -> float:
        try:
            return psutil.Process().memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    # -- concurrency ---------------------------------------------------------------------------
    def concurrency(self) -> int:
        """Items this slot works on at once now: the governor's value with ``concurrency_bounds``,
        else the pool's ``concurrency``."""
        return self.governor.current if self.governor is not None else self.pool.concurrency

    def in_flight(self) -> int:
        return len(self._running_items)

    async def pressure_readings(self) -> dict[str, float | None]:
        """Hook: this host's pressure now (the browser slot adds Chromium's memory)."""
        if self._host is None:
            self._host = HostPressure()  # the first CPU reading covers the time since here
        return self._host.read()

    async def _pressure_loop(self) -> None:
        """Sample the host for the governor (a timer on this loop: how late it fires is the event-loop
        lag) and apply what it decides; a failed reading is logged and the loop goes on."""
        gov = self.governor
        assert gov is not None
        with contextlib.suppress(Exception):
            await self.pressure_readings()  # the first CPU reading counts from here
        period, failing = gov.sample_every(), False
        while self.ctx is None or not self.ctx.stopping:
            t0 = time.monotonic()
            await asyncio.sleep(period)
            lag = max(0.0, time.monotonic() - t0 - period)
            try:
                readings = await self.pressure_readings()
                change = gov.tick(time.time(), event_loop_lag_s=lag, in_flight=self.in_flight(), **readings)
            except asyncio.CancelledError:
                raise
            except Exception:  # said once, not every sample
                log.log(logging.DEBUG if failing else logging.WARNING, "slot %s: pressure reading failed",
                        self.lessee, exc_info=True)
                failing = True
                continue
            failing = False
            if change is not None:
                self._concurrency_changed(change)

    def _concurrency_changed(self, change: ConcurrencyChange) -> None:
        log.info("slot %s: concurrency %d -> %d: %s", self.lessee, change.previous, change.current, change.reason)
        if self.services is not None:
            self.services.event(SlotConcurrencyChanged, from_=change.previous, to=change.current,
                                reason=change.reason, message=f"concurrency {change.previous} → "
                                f"{change.current}: {change.reason}", **change.readings())
        if self._batch_wake is not None:  # start buffered items, lease for the new places
            self._batch_wake.set()

    # -- running -------------------------------------------------------------------------------
    async def _main(self) -> None:
        try:
            if self._workqueue_name is not None:
                await self._batch_loop()
            else:
                await _maybe_await(self.automation.run())
                if not self.ctx.stopping:
                    self._crash = "automation run() returned while the slot was not stopping"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._crash = f"automation crashed: {error_text(exc)}"
            log.error("slot %s: %s\n%s", self.lessee, self._crash, traceback.format_exc())
            if self.services is not None:
                await self.services.automation_crashed(exc)

    async def _batch_loop(self) -> None:
        """Keep up to ``concurrency`` items running, leasing for free places.

        Leasing what fits (rather than a batch run to its end) keeps every place busy: no batch
        tail where a slot waits for its slowest item, and no slot sitting on queued items while
        another is idle. Only items that finish in under FAST_ITEM_S on average are prefetched
        (up to 7 × concurrency more), where a lease round trip per place would cost more than the
        item. Results go back with the next lease, or in a ``complete`` call of their own while a
        lease is long-polling, so none waits for work to arrive.

        ``concurrency`` is read each round (:meth:`concurrency`: it moves with host pressure under
        ``concurrency_bounds``); items running above a lowered value finish, none is cancelled.
        """
        wq = self._wq = await self._resolve_workqueue()
        me = ray.get_runtime_context().get_actor_id()  # tells this actor from another under our name
        bounds = self.pool.concurrency_bounds
        conc = self.concurrency()
        sem = asyncio.Semaphore(max(conc, bounds.max if bounds is not None else conc))
        wake = self._batch_wake = asyncio.Event()
        running: dict[asyncio.Task, tuple[float, tuple]] = {}  # task → when it started, its (job, item)
        self._running_items = running
        buffered: deque[tuple] = deque()  # prefetched items not started yet
        avg_s = [FAST_ITEM_S * 10]  # moving average of item durations (slow until measured)
        results: list[tuple] = []
        calls: dict[str, tuple[asyncio.Future, list]] = {}  # "lease" / "complete" → (call, results sent)
        resync = [False]  # the queue was found anew: the next call says what this slot holds

        def finished(t: asyncio.Task) -> None:
            started = running.pop(t, None)
            if not t.cancelled():
                results.append(t.result())  # _run_item returns a failure as a result
                if started is not None:
                    avg_s[0] += 0.1 * (time.monotonic() - started[0] - avg_s[0])
            wake.set()

        def fill() -> None:
            while buffered and len(running) < conc:
                item = buffered.popleft()
                t = asyncio.ensure_future(self._run_item(sem, item))
                running[t] = (time.monotonic(), (item[0], item[1]))
                t.add_done_callback(finished)

        def holding() -> list | None:
            """Once after the queue was replaced: every item this slot holds (running, prefetched, or
            finished with the result not yet acknowledged), so the new queue requeues leases it never got."""
            if not resync[0]:
                return None
            resync[0] = False
            held = [key for _, key in running.values()] + [(i[0], i[1]) for i in buffered]
            held += [(r[0], r[1]) for r in results]
            held += [(r[0], r[1]) for _, sent in calls.values() for r in sent]
            return held

        def send(kind: str, ref: Any, sent: list) -> None:
            fut = asyncio.ensure_future(ref)
            fut.add_done_callback(lambda _f: wake.set())
            calls[kind] = (fut, sent)

        while True:
            stopping = self.ctx.stopping
            conc = self.concurrency()
            fill()
            prefetch = conc * 7 if avg_s[0] < FAST_ITEM_S else 0
            room = 0 if stopping else conc + prefetch - len(running) - len(buffered)
            if "lease" not in calls and (room > 0 or results):
                # long-poll unless there is something to report: it returns as soon as work arrives
                # (at once, empty, when the slot drains: see kick); what finishes meanwhile goes back
                # by complete()
                wait = 0 if (stopping or results) else LEASE_WAIT_S
                sent, results = results, []
                send("lease", wq.lease.remote(self.lessee, max(room, 0), wait, sent, me, holding()), sent)
            elif results and "complete" not in calls:
                sent, results = results, []
                send("complete", wq.complete.remote(self.lessee, sent, me, holding()), sent)
            if stopping and not calls and not running and not results and not buffered:
                return
            try:
                await asyncio.wait_for(wake.wait(), HEARTBEAT_S)
            except TimeoutError:
                if not calls:  # busy with long items: say we're alive (a restarted queue waits for us)
                    send("complete", wq.complete.remote(self.lessee, [], me, holding()), [])
            wake.clear()
            for kind, (fut, sent) in list(calls.items()):
                if not fut.done():
                    continue
                del calls[kind]
                try:
                    value = fut.result()
                except ray.exceptions.RayActorError:  # the work queue is being replaced: send again
                    if self.ctx.stopping:
                        return  # the supervisor hands what this slot held to other slots
                    results = sent + results  # (another call to the dead queue fails too, and is sent again)
                    wq = self._wq = await self._resolve_workqueue(wait_s=0.2)
                    resync[0] = True
                    continue
                if kind == "lease":
                    buffered.extend(value)

    async def _resolve_workqueue(self, wait_s: float = 0.0) -> Any:
        """The pool's work queue by name, waiting while the supervisor recreates it (never gives up
        while the slot runs: the items it finished are kept and sent once the queue is back)."""
        delay = wait_s
        while True:
            if delay:
                await asyncio.sleep(delay)
            try:
                return ray.get_actor(self._workqueue_name, namespace=self.namespace)
            except ValueError:
                if self.ctx is not None and self.ctx.stopping and self._wq is not None:
                    return self._wq  # draining: the next call fails and the loop ends
                delay = min(max(delay * 2, 0.2), 2.0)

    async def _run_item(self, sem: asyncio.Semaphore, item: tuple) -> tuple:
        job_id, item_id, payload, _attempt = item
        svc, task = self.services, f"{job_id}:{item_id}"
        async with sem:
            if svc is not None:
                svc.task_started(task, _attempt)
            try:
                value = await self.process_item(payload, job_id, item_id, _attempt)
                if svc is not None:
                    await svc.flush()  # the item's outputs are held by their streams before it counts as done
            except Exception as exc:
                self.failed_items += 1
                if svc is not None:
                    svc.task_failed(task, exc, _attempt)
                return (job_id, item_id, False, error_text(exc))
            finally:
                self.tasks += 1
        if svc is not None:
            svc.task_finished(task)
        return (job_id, item_id, True, value)

    async def _teardown(self) -> None:
        if self.automation is not None:
            try:
                await _maybe_await(self.automation.teardown())
            except Exception as exc:
                log.warning("slot %s: teardown raised %s", self.lessee, error_text(exc))
            self.automation = None


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


@ray.remote(max_restarts=0)
class SlotActor(SlotCore):
    """A process slot (see :class:`SlotCore`)."""

    async def start(self) -> dict[str, Any]:
        return await start_redacted(super().start, self.lessee)
