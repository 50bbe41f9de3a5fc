"""A batch job as the driver follows it: made by ``FleetClient.submit``, or ``FleetClient.job`` to re-attach.

::

    job = fleet.submit("titles", urls)
    for r in job.results():          # rides through a work-queue restart
        ...
    # another driver, later (this one crashed):
    for r in fleet.job("titles", job.id).results():   # reads on from the last acknowledged result
        ...

**Cursor.** A job's results are numbered 0, 1, 2, … in the order they finished; :attr:`Job.cursor`
is the number of results this driver has been handed. The work queue learns it with every call that
fetches more, and when :meth:`Job.results` ends or its generator is closed (:meth:`Job.ack` does it
at once): results below it are *acknowledged* — dropped from the queue and the store for good. A
driver that re-attaches without a cursor of its own reads on from the last acknowledged one, so after
a crash it may see again the results it was handed since its last acknowledgement (pass the cursor
it saved to ``fleet.job(..., cursor=...)`` to read on exactly; or use a resumable run, ``run_id``,
whose results are recorded by item id). One reader per job.

**Restarts.** When the work queue dies (the supervisor recreates it, and it reloads its jobs from the
store), every call here finds the new queue by name and is sent again, for up to
``reattach_timeout_s``; submitting again is safe (an item id already in the job is ignored).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from fleet_ray.client.items import ItemResult
from fleet_ray.errors import JobError
from fleet_ray.ray_boundary import get as _get

REATTACH_TIMEOUT_S = 120.0


class Job:
    """A batch of items submitted to a pool. Iterate :meth:`results` or call :meth:`wait`."""

    def __init__(self, pool: str, job_id: str, workqueue: Any, total: int, resolve: Callable[[], Any] | None = None,
                 cursor: int = 0, reattach_timeout_s: float = REATTACH_TIMEOUT_S):
        self.pool = pool
        self.id = job_id
        self._wq = workqueue
        self._resolve = resolve  # finds the pool's work queue again (by name, through the supervisor)
        self.total = total
        self.cursor = cursor
        self._acked = cursor
        self.reattach_timeout_s = reattach_timeout_s
        self.done = 0
        self.failed = 0

    # -- calls to the work queue, through its restarts ---------------------------------------------
    def _call(self, method: str, *args: Any, timeout: float | None = 60) -> Any:
        deadline: float | None = None
        while True:
            try:
                return _get(getattr(self._wq, method).remote(*args), timeout=timeout)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if isinstance(exc, ray.exceptions.RayTaskError) or self._resolve is None:
                    raise
                if deadline is None:
                    deadline = time.monotonic() + self.reattach_timeout_s
                self._reattach(deadline, exc)

    def _reattach(self, deadline: float, cause: BaseException) -> None:
        delay = 0.1
        while True:
            try:
                self._wq = self._resolve()
                return
            except Exception as exc:  # not recreated yet (no such actor), or the supervisor restarting
                if time.monotonic() > deadline:
                    raise JobError(f"job {self.id}: the work queue of pool {self.pool!r} did not come back within "
                                   f"{self.reattach_timeout_s:g}s ({type(exc).__name__}: {exc})") from cause
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def submit(self, items: list[tuple[str, Any]], max_retries: int) -> int:
        """Queue ``(item_id, payload)`` pairs (written to the store before this returns); the job's total."""
        self.total = self._call("submit", self.id, items, max_retries)
        return self.total

    # -- following it ------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        return self._call("progress", self.id) or {}

    def results(self, timeout_s: float | None = None, poll_s: float = 1.0) -> Iterator[ItemResult]:
        """Yield each item's result as it lands, until every item has one (or the timeout passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while self.cursor < self.total:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id}: {self.cursor}/{self.total} results after {timeout_s}s")
                reply = self._call("fetch", self.id, self.cursor, 10_000, poll_s, timeout=poll_s + 60)
                if reply["progress"] is None:
                    raise JobError(f"job {self.id} is unknown to pool {self.pool!r} (dropped, or finished more "
                                   "than the pool's work_queue.finished_job_ttl_s ago)")
                self._acked = max(self._acked, min(self.cursor, reply["progress"]["cursor"]))
                start = reply["cursor"] - len(reply["results"])
                for n, (item_id, ok, value, attempts) in enumerate(reply["results"], start + 1):
                    self.cursor = n
                    if ok:
                        self.done += 1
                        yield ItemResult(item_id=item_id, ok=True, value=value, attempts=attempts)
                    else:
                        self.failed += 1
                        yield ItemResult(item_id=item_id, ok=False, error=str(value), attempts=attempts)
        finally:
            self._ack_quietly()

    def ack(self) -> int:
        """Acknowledge every result handed out so far (the queue drops them); returns the cursor."""
        if self.cursor > self._acked:
            self._call("ack", self.id, self.cursor, timeout=30)
            self._acked = self.cursor
        return self.cursor

    def _ack_quietly(self) -> None:
        try:
            self.ack()
        except Exception:  # the queue is gone for now: it keeps the results, a re-attached reader gets them
            pass

    def wait(self, timeout_s: float | None = None) -> list[ItemResult]:
        return list(self.results(timeout_s=timeout_s))

    def drop(self) -> None:
        self._call("drop", self.id)
