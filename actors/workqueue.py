"""A batch pool's work queue: a named, detached actor (``fleet:<pool>:work``) on the head node.

Drivers submit jobs (lists of items); slots lease items in batches and hand results back on their
next lease. An item leased by a slot that dies is handed back by the supervisor (:meth:`release`)
and retried on another slot, up to the pool's ``max_item_retries``; after that it is reported as
failed with the cause. A completion from a lessee that no longer holds the item (it was released
as dead) is ignored, so a result is reported once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray

Result = tuple[str, bool, Any, int]  # item_id, ok, value or error text, attempts


@dataclass
class _Job:
    total: int = 0
    max_retries: int = 3
    results: list[Result] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    created: float = field(default_factory=time.time)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class WorkQueueCore:
    def __init__(self, pool: str):
        self.pool = pool
        self._queue: deque[tuple[str, str, Any, int]] = deque()  # job, item, payload, attempt
        self._leases: dict[str, dict[tuple[str, str], tuple[Any, int]]] = {}
        self._lessee_seen: dict[str, float] = {}
        self._jobs: dict[str, _Job] = {}
        self._work = asyncio.Event()
        self._kicks: dict[str, asyncio.Event] = {}  # wake one lessee's pending lease (it is draining)
        # lessees declared gone: a lease call of theirs still pending here must never get work
        self._released: set[str] = set()
        self.paused = False
        self.completed = 0

    # -- drivers ---------------------------------------------------------------------------------
    def submit(self, job_id: str, items: list[tuple[str, Any]], max_retries: int = 3) -> int:
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = _Job(max_retries=max_retries)
        job.total += len(items)
        self._queue.extend((job_id, item_id, payload, 1) for item_id, payload in items)
        if items:
            self._work.set()
        return job.total

    async def fetch(self, job_id: str, cursor: int, max_n: int = 10_000, wait_s: float = 1.0) -> dict[str, Any]:
        """Results from ``cursor`` on (long-polls up to ``wait_s`` when there are none yet)."""
        job = self._jobs.get(job_id)
        if job is None:
            return {"results": [], "cursor": cursor, "progress": None}
        if cursor >= len(job.results) and job.done + job.failed < job.total and wait_s > 0:
            job.event.clear()
            try:
                await asyncio.wait_for(job.event.wait(), timeout=wait_s)
            except TimeoutError:
                pass
        chunk = job.results[cursor : cursor + max_n]
        return {"results": chunk, "cursor": cursor + len(chunk), "progress": self._progress(job_id, job)}

    def progress(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return self._progress(job_id, job) if job else None

    def _progress(self, job_id: str, job: _Job) -> dict[str, Any]:
        leased = sum(1 for ls in self._leases.values() for k in ls if k[0] == job_id)
        return {
            "job_id": job_id,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "leased": leased,
            "queued": job.total - job.done - job.failed - leased,
            "created": job.created,
        }

    def drop(self, job_id: str) -> bool:
        """Forget a job: its queued items are removed and late results ignored."""
        if self._jobs.pop(job_id, None) is None:
            return False
        self._queue = deque(x for x in self._queue if x[0] != job_id)
        return True

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused and self._queue:
            self._work.set()

    def stats(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "queued": len(self._queue),
            "leased": sum(len(v) for v in self._leases.values()),
            "jobs": len(self._jobs),
            "completed": self.completed,
            "paused": self.paused,
        }

    # -- slots -----------------------------------------------------------------------------------
    async def lease(self, lessee: str, max_n: int, wait_s: float, completed: list | None = None) -> list:
        """Hand back ``completed`` results, then lease up to ``max_n`` items (long-poll ``wait_s``)."""
        if completed:
            self.complete(lessee, completed)
        if max_n <= 0 or lessee in self._released:
            return []
        now = time.monotonic()
        self._lessee_seen[lessee] = now
        kick = self._kicks.setdefault(lessee, asyncio.Event())
        if (not self._queue or self.paused) and wait_s > 0 and not kick.is_set():
            self._work.clear()
            waiters = [asyncio.ensure_future(self._work.wait()), asyncio.ensure_future(kick.wait())]
            await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if kick.is_set() or lessee in self._released:
                kick.clear()
                return []
            now = time.monotonic()
            self._lessee_seen[lessee] = now
        if kick.is_set():
            kick.clear()
            return []
        if self.paused or not self._queue:
            return []
        active = sum(1 for t in self._lessee_seen.values() if now - t < 30.0) or 1
        n = min(max_n, max(1, math.ceil(len(self._queue) / active)))
        mine = self._leases.setdefault(lessee, {})
        out = []
        while self._queue and len(out) < n:
            job_id, item_id, payload, attempt = self._queue.popleft()
            if job_id not in self._jobs:
                continue
            mine[(job_id, item_id)] = (payload, attempt)
            out.append((job_id, item_id, payload, attempt))
        if self._queue:
            self._work.set()
        return out

    def kick(self, lessee: str) -> None:
        """Return ``lessee``'s pending (or next) lease at once, empty: the slot is draining."""
        self._kicks.setdefault(lessee, asyncio.Event()).set()

    def complete(self, lessee: str, results: list) -> int:
        mine = self._leases.get(lessee, {})
        accepted = 0
        for job_id, item_id, ok, value in results:
            held = mine.pop((job_id, item_id), None)
            job = self._jobs.get(job_id)
            if held is None or job is None:
                continue  # released (slot declared dead) or job dropped: not reported twice
            accepted += 1
            job.results.append((item_id, ok, value, held[1]))
            if ok:
                job.done += 1
            else:
                job.failed += 1
            job.event.set()
        self.completed += accepted
        return accepted

    def release(self, lessee: str, cause: str) -> dict[str, int]:
        """The lessee is gone: retry its items elsewhere, or fail those out of retries."""
        mine = self._leases.pop(lessee, {})
        self._lessee_seen.pop(lessee, None)
        self._released.add(lessee)
        kick = self._kicks.pop(lessee, None)
        if kick is not None:
            kick.set()  # wake a lease call the dead slot left pending here
        retried = failed = 0
        for (job_id, item_id), (payload, attempt) in reversed(list(mine.items())):
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if attempt > job.max_retries:
                job.results.append((item_id, False, f"slot died under it {attempt} time(s); last: {cause}", attempt))
                job.failed += 1
                job.event.set()
                failed += 1
            else:
                self._queue.appendleft((job_id, item_id, payload, attempt + 1))
                retried += 1
        if retried:
            self._work.set()
        return {"retried": retried, "failed": failed}

    def lessees(self) -> list[str]:
        return [k for k, v in self._leases.items() if v]


@ray.remote(max_restarts=0)
class WorkQueue(WorkQueueCore):
    """A batch pool's work queue actor (see :class:`WorkQueueCore`)."""
