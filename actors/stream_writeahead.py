"""A durable stream hub's writer: what the hub accepts goes to its stream log before it is acknowledged.

:class:`WriteAhead` belongs to one :class:`~fleet_ray.actors.stream_hub.StreamHubCore`. The hub hands
it each accepted batch (:meth:`WriteAhead.append`, awaited by the producer's ``put``) and tells it
which groups' positions changed, which producers to forget and how far retention may trim; one
writer task turns all of that into one atomic :meth:`~fleet_ray.store.stream_log.StreamLog.write`
at a time (a group commit: whatever arrived during a write rides in the next), then makes the
written batches visible through the hub's ``commit`` callback, in index order, and releases the
waiting puts. A failed write is retried with back-off, its content first in line, so while the
store is unreachable producers wait and nothing acknowledged lives only in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fleet_ray.errors import StreamError
from fleet_ray.store.stream_log import GroupPosition, StoredBatch, StreamLog, StreamSnapshot, StreamWrite

log = logging.getLogger(__name__)

RETRY_MAX_S = 2.0
LOAD_TRIES = 8


class WriteAhead:
    def __init__(self, stream: str, stream_log: StreamLog,
                 position: Callable[[str], GroupPosition | None], commit: Callable[[StoredBatch, Any], None]):
        self.stream = stream
        self.log = stream_log
        self._position = position  # a group's position now (None: the group is gone)
        self._commit = commit  # a written batch becomes visible
        self._pending: list[tuple[StoredBatch, Any, asyncio.Future]] = []
        self._dirty: set[str] = set()
        self._forget: list[str] = []
        self._trim: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.writes = 0
        self.errors = 0
        self.error: str | None = None

    # -- what the hub tells it -----------------------------------------------------------------------
    async def append(self, batch: StoredBatch, ref: Any) -> None:
        """Write ``batch`` ahead; returns once the store holds it (and the hub shows it)."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((batch, ref, done))
        self._kick()
        await asyncio.shield(done)

    def touch(self, group: str) -> None:
        """``group``'s position changed (or it was dropped): the next write carries it."""
        self._dirty.add(group)
        self._kick()

    def forget(self, producer: str) -> None:
        self._forget.append(producer)
        self._kick()

    def trim(self, below: int) -> None:
        """Every group acknowledged the batches below ``below``: the store copy may drop them."""
        self._trim = max(below, self._trim or 0)
        self._kick()

    def load(self) -> StreamSnapshot:
        """The stream as the last hub left it (a few tries: the store may be coming up with the head)."""
        delay = 0.1
        for attempt in range(LOAD_TRIES):
            try:
                return self.log.load(self.stream)
            except Exception as exc:
                if attempt == LOAD_TRIES - 1:
                    raise StreamError(f"stream {self.stream}: can't load its write-ahead copy from "
                                      f"{self.log.url}: {exc}") from exc
                log.warning("stream %s: loading from the store failed (%s); retrying", self.stream, exc)
                time.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
        raise AssertionError("unreachable")

    def stats(self) -> dict[str, Any]:
        return {"writes": self.writes, "errors": self.errors, "error": self.error, "writing": len(self._pending)}

    @property
    def idle(self) -> bool:
        """Nothing waits to be written."""
        return not (self._pending or self._dirty or self._forget or self._trim is not None)

    # -- the writer task -----------------------------------------------------------------------------
    def _kick(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not on the loop (a unit test's sync call): the next async call starts it
            self._task = loop.create_task(self._run())

    def _take(self) -> tuple[StreamWrite, list[tuple[StoredBatch, Any, asyncio.Future]]]:
        pending, self._pending = self._pending, []
        dirty, self._dirty = self._dirty, set()
        forget, self._forget = self._forget, []
        trim, self._trim = self._trim, None
        groups = {name: self._position(name) for name in sorted(dirty)}
        return StreamWrite([b for b, _, _ in pending], groups, forget, trim), pending

    def _put_back(self, change: StreamWrite, pending: list) -> None:
        """A write failed: everything in it goes into the next one."""
        self._pending[:0] = pending
        self._dirty.update(change.groups)
        self._forget[:0] = change.forget
        if change.trim_below is not None:
            self._trim = max(change.trim_below, self._trim or 0)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            self._wake.clear()
            change, pending = self._take()
            if not change:
                await self._wake.wait()
                continue
            try:
                await asyncio.to_thread(self.log.write, self.stream, change)
            except Exception as exc:
                self._put_back(change, pending)
                self.errors += 1
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("stream %s: write-ahead to the store failed (%s); retrying in %.2fs",
                            self.stream, self.error, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            delay = 0.05
            self.writes += 1
            self.error = None
            for batch, ref, done in pending:
                self._commit(batch, ref)
                if not done.done():
                    done.set_result(None)
