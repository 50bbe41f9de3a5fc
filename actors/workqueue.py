"""A batch pool's work queue: a named, detached actor (``fleet:<pool>:work``) on the head node.

Drivers submit jobs (lists of items); slots lease items in batches and hand results back on their
next lease. An item leased by a slot that dies is handed back by the supervisor (:meth:`release`)
and retried on another slot, up to the pool's ``max_item_retries``; after that it is reported as
failed with the cause. A completion from a lessee that no longer holds the item (it was released
as dead) is ignored, so a result is reported once.

**Durable** (the default, ``work_queue: {durable: true}``): every change is written to the fleet's
store (:mod:`fleet_ray.store.work_log`) before it is acknowledged — ``submit`` returns once its items
are written, a slot's ``lease``/``complete`` returns once the results it handed back are written, a
driver sees only written results. Writes are batched: whatever changed while one write was in flight
goes in the next (group commit), so a lease or a completion of N items is one round trip, shared by
every call that came in meanwhile. A queue that was SIGKILLed (the supervisor recreates it) or
recreated after a head restart reloads its jobs: queued items keep their order, results not yet read
are read on from the job's cursor, and items leased to a slot keep their lease until the slot comes
back — a slot whose actor is gone, or that doesn't call within ``lease_timeout_s``, is treated as
released. Items may run more than once (at-least-once); each gets one result.

**Cursor**: a job's results are numbered 0, 1, 2, … in the order they finished. ``fetch(job, cursor)``
returns results from ``cursor`` on and *acknowledges* everything below it: those are dropped from
memory and from the store, for good. A driver that re-attaches with no cursor of its own reads on
from the job's acknowledged cursor. Finished jobs are forgotten ``finished_job_ttl_s`` after their
last result, read or not.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from fleet_ray.errors import StoreError
from fleet_ray.spec.models import WorkQueueOptions
from fleet_ray.store import open_work_log
from fleet_ray.store.work_log import ItemKey, WorkLog, WorkSnapshot

from .workqueue_records import NoWrite, PendingWrite, Result, WorkItem, WorkJob, lessee_of, loads

log = logging.getLogger(__name__)

ACTIVE_WINDOW_S = 30.0  # lessees seen this recently share the queue (a lease takes its share)
RELEASED_TTL_S = 600.0  # a released lessee's name is refused this long (its calls still pending die out)
SEEN_TTL_S = 600.0  # bookkeeping of a lessee without leases, silent this long, is dropped
SWEEP_S = 1.0
STORE_GRACE_S = 5.0  # a store down this long: the queue goes on in memory (degraded) instead of stalling

LesseeCheck = Callable[[list[str]], dict[str, bool]]  # actor names → alive?


class WorkQueueCore:
    def __init__(self, pool: str, work_log: WorkLog | None = None, options: WorkQueueOptions | None = None,
                 lessee_alive: LesseeCheck | None = None, paused: bool = False):
        self.pool = pool
        self.options = options or WorkQueueOptions(durable=work_log is not None)
        self._log = work_log
        self._lessee_alive = lessee_alive
        self._jobs: dict[str, WorkJob] = {}
        self._items: dict[ItemKey, WorkItem] = {}
        self._queue: deque[tuple[ItemKey, int]] = deque()  # (item, ticket); stale entries are skipped
        self._queued = 0
        self._front, self._back = 0, 1  # the orders of the next item to the front / the back
        self._leases: dict[str, set[ItemKey]] = {}
        self._lessee_seen: dict[str, float] = {}
        self._incarnation: dict[str, str] = {}  # lessee name → the actor id that last called under it
        self._work = asyncio.Event()
        self._kicks: dict[str, asyncio.Event] = {}  # wake one lessee's pending lease (it is draining)
        # lessees declared gone (name → when, and which actor it was): a lease call of theirs still
        # pending here must never get work; a new actor under the same name is not refused
        self._released: dict[str, tuple[float, str | None]] = {}
        # lessees holding leases loaded from the log, not heard from since → deadline to come back
        self._unconfirmed: dict[str, float] = {}
        self._checked_alive = False
        self.paused = paused
        self.completed = 0
        self.restored = False
        # the write-behind machinery (durable only)
        self._pending: PendingWrite = PendingWrite() if work_log is not None else NoWrite()
        self._batch_no = 0  # the number of the pending write
        self._committed = -1  # the last write that is in the store
        self._committed_event = asyncio.Event()
        self._dirty = asyncio.Event()
        self._inflight: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []
        self._closed = asyncio.Event()
        self.store_error: str | None = None
        self.store_degraded = False  # the store has been down past STORE_GRACE_S: acknowledging in memory
        self._failing_since: float | None = None
        self._rewrite = False
        self._retry_delay = 0.025
        self.writes = 0
        self._needs_load = False  # the store was down when this queue started: load once it is back

    @property
    def durable(self) -> bool:
        return self._log is not None

    # -- loading -----------------------------------------------------------------------------------
    def load(self) -> int:
        """Reload the pool's jobs from the log (a restarted queue); returns how many jobs came back."""
        if self._log is None:
            return 0
        self.restore(self._log.load(self.pool))
        return len(self._jobs)

    def load_or_defer(self) -> int:
        """:meth:`load`, or — the store being down as the queue starts — start empty and load what the
        store holds once it is back (before the first write that reaches it), so a queue recreated
        during an outage takes new work at once and loses none of the old."""
        try:
            return self.load()
        except StoreError as exc:
            self.store_error = f"{type(exc).__name__}: {exc}"[:300]
            self._failing_since, self._needs_load, self._rewrite = time.monotonic(), True, True
            log.warning("work queue %s: the store is down (%s); starting empty, its jobs load when it is back",
                        self.pool, self.store_error)
            return 0

    def _merge_loaded(self, snap: WorkSnapshot) -> None:
        """Fold what the store held into a queue that started without it: jobs this queue took while
        the store was down win over a stored job of the same id (which is reported)."""
        clash = sorted(j for j in snap.jobs if j in self._jobs)
        if clash:
            log.error("work queue %s: job(s) %s were submitted again while the store was down; "
                      "their earlier stored results are not reloaded", self.pool, clash)
        keep = {j for j in snap.jobs if j not in self._jobs}
        self.restore(WorkSnapshot(
            jobs={j: v for j, v in snap.jobs.items() if j in keep},
            items={k: v for k, v in snap.items.items() if k[0] in keep},
            leases={k: v for k, v in snap.leases.items() if k[0] in keep},
            results={j: v for j, v in snap.results.items() if j in keep},
        ))
        self._needs_load = False

    def restore(self, snap: WorkSnapshot) -> None:
        now = time.monotonic()
        for job_id, raw in snap.jobs.items():
            job = WorkJob.from_meta(raw)
            stored = snap.results.get(job_id, {})
            seqs = sorted(s for s in stored if s >= job.base)
            if seqs and seqs != list(range(job.base, job.base + len(seqs))):
                log.error("work queue %s: job %s has gaps in its results %s..%s", self.pool, job_id, seqs[0], seqs[-1])
            job.results = [tuple(loads(stored[s])) for s in seqs]  # type: ignore[misc]
            job.durable = job.next_seq
            job.ids = {r[0] for r in job.results}
            job.event.set()
            self._jobs[job_id] = job
        queued: list[tuple[int, ItemKey, WorkItem]] = []
        for key, raw in snap.items.items():
            job = self._jobs.get(key[0])
            if job is None:  # its job was dropped: the write that dropped it missed this one
                self._pending.item(key, None)
                continue
            order, attempt, payload = loads(raw)
            item = self._items[key] = WorkItem(payload, attempt, order)
            job.ids.add(key[1])
            lease = snap.leases.get(key)
            if lease is not None:
                item.lessee = lessee_of(lease)
                self._leases.setdefault(item.lessee, set()).add(key)
                job.leased += 1
                self._unconfirmed[item.lessee] = now + self.options.lease_timeout_s
            else:
                queued.append((order, key, item))
        for key in snap.leases:
            if key not in self._items:
                self._pending.lease(key, None)
        queued.sort(key=lambda q: q[0])
        for _, key, item in queued:
            self._queue.append((key, item.ticket))
        self._queued += len(queued)
        orders = [it.order for it in self._items.values()]
        if orders:
            self._front, self._back = min(min(orders) - 1, 0), max(max(orders) + 1, 1)
        self.restored = self.restored or bool(snap.jobs)
        if self._queue:
            self._work.set()

    # -- the write-behind log ----------------------------------------------------------------------
    def _start(self) -> None:
        """Start the writer and the sweeper (on the first call: they need the actor's event loop)."""
        if not self._tasks and not self._closed.is_set():
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._write_loop()), loop.create_task(self._sweep_loop())]

    async def _durable(self) -> None:
        """Return once every change made so far is in the store (at once when in memory)."""
        if self._log is None:
            return
        self._start()
        mine = self._batch_no
        self._dirty.set()
        while self._committed < mine and self._log is not None and not self._closed.is_set():
            await self._committed_event.wait()

    async def flush(self) -> None:
        """Write every change made so far (leases and acknowledgements are otherwise written a moment later)."""
        await self._durable()

    async def _write_loop(self) -> None:
        while not self._closed.is_set():
            await self._dirty.wait()
            self._dirty.clear()
            if self._log is None or self._closed.is_set():
                continue
            await self._write_once()

    def _take(self) -> tuple[PendingWrite, dict[str, dict[str, Any]], list[tuple[WorkJob, int]], int]:
        pending, self._pending = self._pending, PendingWrite()
        no, self._batch_no = self._batch_no, self._batch_no + 1
        metas = {j: self._jobs[j].meta() for j in pending.jobs if j in self._jobs}
        upto = [(self._jobs[j], self._jobs[j].next_seq) for j in pending.results if j in self._jobs]
        return pending, metas, upto, no

    async def _write_once(self) -> None:
        if self._rewrite:  # after a failed write: the store may have come back empty, write all we hold
            self._pending = self._pending.then(self._everything())
        pending, metas, upto, no = self._take()
        if (not pending and not self._needs_load) or self._log is None or self._closed.is_set():
            self._commit(no, upto)
            return
        try:
            if self._needs_load:  # started while the store was down: take in what it holds first
                self._merge_loaded(await asyncio.to_thread(self._log.load, self.pool))
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._write, self._log, pending, metas))
            await self._inflight
        except Exception as exc:  # the store is down: nothing is acknowledged until it is back ...
            self.store_error = f"{type(exc).__name__}: {exc}"[:300]
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            self._pending = pending.then(self._pending)  # sent again with what changed meanwhile
            self._rewrite = True
            if now - self._failing_since >= STORE_GRACE_S:
                # ... unless it stays down: then the queue goes on in memory (degraded) rather than
                # stall the pool, and writes everything once the store is back
                if not self.store_degraded:
                    log.warning("work queue %s: store down for %.0fs (%s); going on in memory until it is back",
                                self.pool, now - self._failing_since, self.store_error)
                self.store_degraded = True
                self._commit(no, upto)
            self._retry_delay = min(self._retry_delay * 2, 2.0)
            await asyncio.sleep(self._retry_delay)
            self._dirty.set()
            return
        finally:
            self._inflight = None
        self.writes += 1
        if self.store_degraded:
            log.warning("work queue %s: store back; everything it holds is written again", self.pool)
        self.store_error, self.store_degraded, self._failing_since = None, False, None
        self._rewrite, self._retry_delay = False, 0.025
        self._commit(no, upto)

    def _write(self, work_log: WorkLog, pending: PendingWrite, metas: dict[str, dict[str, Any]]) -> None:
        work_log.write(self.pool, pending.encode(metas))  # in a thread: encoding and I/O off the event loop

    def _commit(self, no: int, upto: list[tuple[WorkJob, int]]) -> None:
        self._committed = max(self._committed, no)
        for job, n in upto:
            if n > job.durable:
                job.durable = n
                job.event.set()
        done, self._committed_event = self._committed_event, asyncio.Event()
        done.set()

    # -- drivers ---------------------------------------------------------------------------------
    async def submit(self, job_id: str, items: list[tuple[str, Any]], max_retries: int = 3) -> int:
        """Queue items (an id already in the job is ignored, so a retried submit adds nothing twice);
        returns the job's total once they are written."""
        self._start()
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = WorkJob(max_retries=max_retries)
        new = 0
        for item_id, payload in items:
            item_id = str(item_id)
            if item_id in job.ids:
                continue
            job.ids.add(item_id)
            key = (job_id, item_id)
            item = self._items[key] = WorkItem(payload, 1, self._back)
            self._back += 1
            self._queue.append((key, item.ticket))
            self._pending.item(key, item.record())
            new += 1
        self._queued += new
        job.total += new
        if new:
            job.finished_at = None
        self._pending.job(job_id)
        await self._durable()
        if new:
            self._work.set()
        return job.total

    async def fetch(self, job_id: str, cursor: int, max_n: int = 10_000, wait_s: float = 1.0) -> dict[str, Any]:
        """Results from ``cursor`` on (long-polls up to ``wait_s`` when there are none yet); everything
        below ``cursor`` is acknowledged (dropped). ``cursor`` in the reply: where to ask next."""
        job = self._jobs.get(job_id)
        if job is None:
            return {"results": [], "cursor": cursor, "progress": None}
        self._start()
        self._ack(job_id, job, cursor)
        start = max(min(cursor, job.durable), job.base)  # a cursor past what was ever shown is clamped
        more_coming = not job.finished or job.durable < job.next_seq
        if start >= job.durable and more_coming and wait_s > 0:
            job.event.clear()
            try:
                await asyncio.wait_for(job.event.wait(), timeout=wait_s)
            except TimeoutError:
                pass
            if self._jobs.get(job_id) is not job:
                return {"results": [], "cursor": cursor, "progress": None}
            start = max(start, job.base)
        lo, hi = start - job.base, min(job.durable, start + max_n) - job.base
        chunk = job.results[lo:hi] if hi > lo else []
        return {"results": chunk, "cursor": start + len(chunk), "progress": self._progress(job_id, job)}

    async def ack(self, job_id: str, cursor: int) -> int:
        """Acknowledge every result below ``cursor`` (written before this returns); returns the job's cursor."""
        job = self._jobs.get(job_id)
        if job is None:
            return cursor
        self._start()
        self._ack(job_id, job, cursor)
        await self._durable()
        return job.base

    def _ack(self, job_id: str, job: WorkJob, cursor: int) -> None:
        n = min(cursor, job.durable) - job.base
        if n > 0:
            del job.results[:n]
            job.base += n
            self._pending.trim(job_id, job.base)
            self._dirty.set()

    def progress(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return self._progress(job_id, job) if job else None

    def _progress(self, job_id: str, job: WorkJob) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "leased": job.leased,
            "queued": job.total - job.done - job.failed - job.leased,
            "created": job.created,
            "cursor": job.base,  # acknowledged: results below it were read and are gone
            "available": job.durable,  # results below it can be fetched
        }

    async def drop(self, job_id: str) -> bool:
        """Forget a job: its queued items are removed and late results ignored."""
        self._start()
        if not self._drop(job_id):
            return False
        await self._durable()
        return True

    def _drop(self, job_id: str) -> bool:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        for item_id in job.ids:
            key = (job_id, item_id)
            item = self._items.pop(key, None)
            if item is None:
                continue
            if item.lessee is not None:
                self._leases.get(item.lessee, set()).discard(key)
                self._pending.lease(key, None)
            else:
                self._queued -= 1
            self._pending.item(key, None)
        self._pending.drop(job_id)
        self._dirty.set()
        job.event.set()
        return True

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused and self._queued:
            self._work.set()

    def stats(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "pid": os.getpid(),
            "queued": self._queued,
            "leased": sum(len(v) for v in self._leases.values()),
            "jobs": len(self._jobs),
            "completed": self.completed,
            "paused": self.paused,
            "durable": self.durable,
            "writes": self.writes,
            "store_error": self.store_error,
            "store_degraded": self.store_degraded,
        }

    # -- slots -----------------------------------------------------------------------------------
    async def lease(self, lessee: str, max_n: int, wait_s: float, completed: list | None = None,
                    incarnation: str | None = None, holding: list | None = None) -> list:
        """Hand back ``completed`` results, then lease up to ``max_n`` items (long-poll ``wait_s``).
        Returns once the results handed back are written (the lessee sends them again otherwise).
        ``holding``: every (job, item) the lessee holds, sent once to a queue it found anew."""
        self._start()
        if completed:
            self._complete(lessee, completed, incarnation)
        if holding is not None and not self._is_released(lessee, incarnation):
            self._resync(lessee, holding)
        out = await self._lease(lessee, max_n, wait_s, incarnation)
        if completed:
            await self._durable()
        return out

    async def _lease(self, lessee: str, max_n: int, wait_s: float, incarnation: str | None) -> list:
        if max_n <= 0 or self._is_released(lessee, incarnation):
            return []
        now = self._touch(lessee, incarnation)
        kick = self._kicks.setdefault(lessee, asyncio.Event())
        if (not self._queued or self.paused) and wait_s > 0 and not kick.is_set():
            self._work.clear()
            waiters = [asyncio.ensure_future(self._work.wait()), asyncio.ensure_future(kick.wait())]
            await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if kick.is_set() or self._is_released(lessee, incarnation):
                kick.clear()
                return []
            now = self._touch(lessee, incarnation)
        if kick.is_set():
            kick.clear()
            return []
        if self.paused or not self._queued:
            return []
        active = sum(1 for t in self._lessee_seen.values() if now - t < ACTIVE_WINDOW_S) or 1
        n = min(max_n, max(1, math.ceil(self._queued / active)))
        mine = self._leases.setdefault(lessee, set())
        deadline = time.time() + self.options.lease_timeout_s
        out = []
        while self._queue and len(out) < n:
            key, ticket = self._queue.popleft()
            item = self._items.get(key)
            if item is None or item.ticket != ticket or item.lessee is not None:
                continue  # finished, dropped or handed back meanwhile (its live entry is elsewhere)
            self._queued -= 1
            item.lessee = lessee
            mine.add(key)
            self._jobs[key[0]].leased += 1
            self._pending.lease(key, (lessee, deadline))
            out.append((key[0], key[1], item.payload, item.attempt))
        if out:
            self._dirty.set()
        if self._queued:
            self._work.set()
        return out

    def kick(self, lessee: str) -> None:
        """Return ``lessee``'s pending (or next) lease at once, empty: the slot is draining."""
        self._kicks.setdefault(lessee, asyncio.Event()).set()

    async def complete(self, lessee: str, results: list, incarnation: str | None = None,
                       holding: list | None = None) -> int:
        """Hand back results (an empty list: the lessee is alive and busy); returns once they are written.
        ``holding``: as for :meth:`lease`."""
        self._start()
        accepted = self._complete(lessee, results, incarnation)
        if holding is not None and not self._is_released(lessee, incarnation):
            self._resync(lessee, holding)
        if results:
            await self._durable()
        return accepted

    def _complete(self, lessee: str, results: list, incarnation: str | None = None) -> int:
        released = self._is_released(lessee, incarnation)
        if not released:
            self._touch(lessee, incarnation)
        mine = self._leases.get(lessee, set())
        accepted = 0
        for job_id, item_id, ok, value in results:
            key = (job_id, item_id)
            item = self._items.get(key)
            job = self._jobs.get(job_id)
            if item is None or job is None:
                continue  # finished already, or the job was dropped: not reported twice
            if item.lessee == lessee and not released:
                mine.discard(key)
                job.leased -= 1
                self._pending.lease(key, None)
            elif item.lessee is None and not released:
                # queued again (a restarted queue lost this lease): the work is done, take it
                item.ticket += 1
                self._queued -= 1
            else:
                continue  # released (slot declared dead) or leased to another: not reported twice
            del self._items[key]
            self._pending.item(key, None)
            self._add_result(job_id, job, (item_id, ok, value, item.attempt))
            accepted += 1
        self.completed += accepted
        if accepted:
            self._dirty.set()
        return accepted

    def _add_result(self, job_id: str, job: WorkJob, result: Result) -> None:
        job.results.append(result)
        if result[1]:
            job.done += 1
        else:
            job.failed += 1
        if job.finished:
            job.finished_at = time.time()
        self._pending.result(job_id, job.next_seq - 1, result)
        if self._log is None:
            job.durable = job.next_seq
            job.event.set()

    async def release(self, lessee: str, cause: str) -> dict[str, int]:
        """The lessee is gone: retry its items elsewhere, or fail those out of retries."""
        self._start()
        out = self._release(lessee, cause)
        await self._durable()
        return out

    def _release(self, lessee: str, cause: str) -> dict[str, int]:
        mine = self._leases.pop(lessee, set())
        self._lessee_seen.pop(lessee, None)
        self._unconfirmed.pop(lessee, None)
        self._released[lessee] = (time.monotonic(), self._incarnation.pop(lessee, None))
        kick = self._kicks.pop(lessee, None)
        if kick is not None:
            kick.set()  # wake a lease call the dead slot left pending here
        retried = failed = 0
        held = sorted(((self._items[k].order, k) for k in mine if k in self._items), reverse=True)
        for _, key in held:  # back to the front, in their order
            item, job = self._items[key], self._jobs[key[0]]
            job.leased -= 1
            item.lessee = None
            self._pending.lease(key, None)
            if item.attempt > job.max_retries:
                del self._items[key]
                self._pending.item(key, None)
                self._add_result(key[0], job, (key[1], False,
                                               f"slot died under it {item.attempt} time(s); last: {cause}", item.attempt))
                failed += 1
            else:
                item.attempt += 1
                self._to_front(key, item)
                retried += 1
        if retried:
            self._work.set()
        if retried or failed:
            self._dirty.set()
        return {"retried": retried, "failed": failed}

    def _to_front(self, key: ItemKey, item: WorkItem) -> None:
        item.order, self._front = self._front, self._front - 1
        item.ticket += 1
        self._queue.appendleft((key, item.ticket))
        self._queued += 1
        self._pending.item(key, item.record())

    def _resync(self, lessee: str, holding: list) -> int:
        """The lessee says which items it holds (its first call to a restarted queue): items leased to
        it that it doesn't hold were leased by a reply it never got — queued again, same attempt."""
        held = {(str(j), str(i)) for j, i in holding}
        mine = self._leases.get(lessee, set())
        lost = sorted(((self._items[k].order, k) for k in mine if k not in held and k in self._items), reverse=True)
        for _, key in lost:
            item = self._items[key]
            mine.discard(key)
            self._jobs[key[0]].leased -= 1
            item.lessee = None
            self._pending.lease(key, None)
            self._to_front(key, item)
        if lost:
            self._work.set()
            self._dirty.set()
        return len(lost)

    def _is_released(self, lessee: str, incarnation: str | None) -> bool:
        entry = self._released.get(lessee)
        if entry is None:
            return False
        if incarnation is not None and entry[1] is not None and incarnation != entry[1]:
            del self._released[lessee]  # a new actor under a reused name: not the one that died
            return False
        return True

    def _touch(self, lessee: str, incarnation: str | None) -> float:
        now = time.monotonic()
        self._lessee_seen[lessee] = now
        self._unconfirmed.pop(lessee, None)  # it came back after a restart: its leases stand
        if incarnation is not None:
            self._incarnation[lessee] = incarnation
        return now

    def lessees(self) -> list[str]:
        return [k for k, v in self._leases.items() if v]

    # -- chores ------------------------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while not self._closed.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("work queue %s: sweep failed; will retry", self.pool)
            if self._needs_load:  # an idle queue started during an outage: try the store again
                self._dirty.set()
            await asyncio.sleep(SWEEP_S)

    async def sweep(self, wall: float | None = None, mono: float | None = None) -> None:
        """Release leases of lessees that didn't come back after a restart, forget finished jobs past
        their TTL, prune lessee bookkeeping."""
        if self._unconfirmed and self._lessee_alive is not None and not self._checked_alive:
            self._checked_alive = True
            names = list(self._unconfirmed)
            try:
                alive = await asyncio.to_thread(self._lessee_alive, names)
            except Exception as exc:
                log.warning("work queue %s: could not check lessees: %s", self.pool, exc)
                alive = {}
            for name in names:
                if name in self._unconfirmed and not alive.get(name, True):
                    self._release(name, "its slot was gone when the work queue restarted")
        wall = time.time() if wall is None else wall
        mono = time.monotonic() if mono is None else mono
        for name, deadline in list(self._unconfirmed.items()):
            if mono >= deadline:
                self._release(name, f"its slot did not come back within {self.options.lease_timeout_s:g}s "
                                    "of the work queue restarting")
        ttl = self.options.finished_job_ttl_s
        for job_id, job in list(self._jobs.items()):
            if job.finished and job.finished_at is not None and wall - job.finished_at >= ttl:
                self._drop(job_id)
        for name, (at, _) in list(self._released.items()):
            if mono - at >= RELEASED_TTL_S:
                del self._released[name]
        for name, seen in list(self._lessee_seen.items()):
            if mono - seen >= SEEN_TTL_S and not self._leases.get(name):
                del self._lessee_seen[name]
                self._kicks.pop(name, None)
                self._incarnation.pop(name, None)
                self._leases.pop(name, None)

    def bookkeeping(self) -> dict[str, int]:
        """Sizes of the per-lessee and per-job bookkeeping (to check that it stays bounded)."""
        return {"released": len(self._released), "seen": len(self._lessee_seen), "kicks": len(self._kicks),
                "leases": len(self._leases), "jobs": len(self._jobs), "items": len(self._items),
                "queue_entries": len(self._queue), "unconfirmed": len(self._unconfirmed)}

    # -- lifecycle ---------------------------------------------------------------------------------
    async def watch(self) -> None:
        """Returns only when the queue was closed on purpose; fails at once if the actor dies. (The
        supervisor keeps one outstanding, so it is also the call that starts a reloaded queue's chores.)"""
        self._start()
        await self._closed.wait()

    async def configure(self, options: dict[str, Any], paused: bool | None = None,
                        opener: Callable[[], WorkLog] | None = None) -> dict[str, Any]:
        """New work-queue options; turning ``durable`` on writes everything held now, off drops the copy."""
        opts = WorkQueueOptions.model_validate(options)
        if opts.durable and self._log is None and opener is not None:
            self._log = await asyncio.to_thread(opener)
            self._pending = self._everything()
            self._start()
            await self._durable()
        elif not opts.durable and self._log is not None:
            work_log, self._log = self._log, None
            if self._inflight is not None:
                await asyncio.wait([self._inflight])
            self._pending = NoWrite()
            for job in self._jobs.values():
                job.durable = job.next_seq
                job.event.set()
            self._commit(self._batch_no, [])
            await asyncio.to_thread(work_log.drop, self.pool)
        self.options = opts
        if paused is not None:
            self.set_paused(paused)
        return self.stats()

    def _everything(self) -> PendingWrite:
        p = PendingWrite()
        for job_id, job in self._jobs.items():
            p.drop(job_id)
            for i, r in enumerate(job.results):
                p.result(job_id, job.base + i, r)
            p.job(job_id)
        deadline = time.time() + self.options.lease_timeout_s
        for key, item in self._items.items():
            p.item(key, item.record())
            if item.lessee is not None:
                p.lease(key, (item.lessee, deadline))
        return p

    async def purge(self) -> bool:
        """Close the queue and delete its copy in the store (its pool was removed)."""
        self._closed.set()
        for t in self._tasks:
            t.cancel()
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
        if self._log is not None:
            await asyncio.to_thread(self._log.drop, self.pool)
        for job in self._jobs.values():
            job.event.set()
        done, self._committed_event = self._committed_event, asyncio.Event()
        done.set()
        return True


def _actors_exist(namespace: str) -> LesseeCheck:
    def check(names: list[str]) -> dict[str, bool]:
        out = {}
        for name in names:
            try:
                ray.get_actor(name, namespace=namespace)
                out[name] = True
            except ValueError:
                out[name] = False
            except Exception:  # can't tell: the lease timeout decides
                out[name] = True
        return out

    return check


@ray.remote(max_restarts=0)
class WorkQueue(WorkQueueCore):
    """A batch pool's work queue actor (see :class:`WorkQueueCore`); reloads its jobs from the store."""

    def __init__(self, pool: str, store_url: str | None = None, namespace: str = "fleet",
                 options: dict[str, Any] | None = None, paused: bool = False):
        opts = WorkQueueOptions.model_validate(options or {})
        self._store_url, self._namespace = store_url, namespace
        work_log = open_work_log(store_url, namespace) if store_url and opts.durable else None
        WorkQueueCore.__init__(self, pool, work_log, opts, lessee_alive=_actors_exist(namespace), paused=paused)
        jobs = self.load_or_defer()
        if jobs:
            log.warning("work queue %s: reloaded %d job(s), %d item(s) without a result, %d lessee(s) to hear from",
                        pool, jobs, len(self._items), len(self._unconfirmed))

    async def configure(self, options: dict[str, Any], paused: bool | None = None,
                        opener: Callable[[], WorkLog] | None = None) -> dict[str, Any]:
        url, ns = self._store_url, self._namespace
        opener = opener or ((lambda: open_work_log(url, ns)) if url else None)
        return await WorkQueueCore.configure(self, options, paused, opener)
