"""The two ends of a stream inside a Ray process: :class:`StreamProducer` and :class:`StreamReader`.

A producer encodes each validated item at once and queues the bytes; a single flusher task sends
whatever is queued as one batch (one ``put`` call) as soon as the previous batch was accepted, so
batches grow with load and each producer's order is kept. While the hub holds a ``put`` back
(the stream is full), the queue fills up to ``max_buffer`` and ``emit`` waits: back-pressure
reaches the automation without unbounded memory anywhere.

``emit(item, wait=True)`` returns only once the hub holds the item (a group commit: every emit
whose item rode in one batch is released by that batch's ``put``), so an item whose emit returned
survives the producer's death; continuous automations emit this way. Batch automations emit
without waiting and flush before a work item counts as done.

A reader leases batches for its consumer group, fetches them by object ref and yields typed
items; a batch is acknowledged with the next ``pull`` once every item of it was consumed.

Both ends ride through the death of the hub. Ray restarts a killed hub (its calls are retried
there); a hub that is gone for good (recreated by the supervisor, or after a head restart) is found
again by name through ``resolve``. A reader holding refs of a dead hub (``OwnerDiedError``) drops
them unacknowledged and pulls again: the new hub, rebuilt from the store, delivers them again, and
the reader skips a batch it already yielded (by ``(producer, seq)``), so a restart of the hub
neither loses nor repeats what one reader sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ray.exceptions import ObjectLostError, RayActorError

from fleet_ray.streams.declare import Codec
from fleet_ray.streams.delivery import SeenBatches

log = logging.getLogger(__name__)

RETRY_MAX_S = 2.0

Resolver = Callable[[], Any]


async def reresolve(stream: str, resolve: Resolver | None, hub: Any) -> Any:
    """The hub found again by name (it may have been recreated); the old handle if that fails."""
    if resolve is None:
        return hub
    try:
        found = await asyncio.to_thread(resolve)
    except Exception as exc:  # not there yet: the supervisor brings it back
        log.debug("stream %s: can't resolve the hub yet: %s", stream, exc)
        return hub
    return found if found is not None else hub


class StreamProducer:
    def __init__(self, stream: str, hub: Any, producer_id: str, codec: Codec, batch_max: int = 1000,
                 max_buffer: int | None = None, resolve: Resolver | None = None):
        self.stream = stream
        self.hub = hub
        self.resolve = resolve
        self.producer_id = producer_id
        self.codec = codec
        self.batch_max = batch_max
        self.max_buffer = max_buffer or batch_max
        self.seq = 0
        self.accepted = 0  # items the hub holds
        self._buf: list[bytes] = []
        self._inflight = 0
        self._task: asyncio.Task | None = None
        self._space = asyncio.Event()
        self._queued = 0  # items ever queued; item k (1-based) is safe once accepted >= k
        self._acked = asyncio.Event()

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._inflight

    async def emit(self, item: Any, wait: bool = False) -> None:
        """Queue one already-validated item; waits while the producer's buffer is full, and with
        ``wait`` until the hub holds it."""
        await self.emit_many([item], wait)

    async def emit_many(self, items: list[Any], wait: bool = False) -> None:
        """Queue items in order (one batch where they fit); with ``wait``, return once all are held."""
        for item in items:
            line = self.codec.encode_one(item)
            while len(self._buf) >= self.max_buffer:
                self._kick()
                self._space.clear()
                await self._space.wait()
            self._buf.append(line)
            self._queued += 1
        self._kick()
        mine = self._queued
        while wait and self.accepted < mine:
            self._kick()  # a flusher that ended (cancelled, say) is restarted; its batch was put back
            self._acked.clear()
            await self._acked.wait()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._buf:
            batch = self._buf[: self.batch_max]
            del self._buf[: self.batch_max]
            self._inflight = len(batch)
            self._space.set()
            try:
                await self._send(self.codec.join(batch), len(batch))
            except BaseException:
                self._buf[:0] = batch  # not sent: first in line again, order kept
                raise
            else:
                self.accepted += len(batch)
            finally:
                self._inflight = 0
                self._acked.set()  # waiters re-check (and restart the flusher if it ended)

    async def _send(self, payload: bytes, n: int) -> None:
        delay = 0.05
        while True:
            try:
                await self.hub.put.remote(self.producer_id, self.seq, payload, n)
                self.seq += 1
                return
            except Exception as exc:  # hub gone or failing: keep the batch, find the hub again
                log.warning("stream %s: put failed (%s); retrying", self.stream, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                if isinstance(exc, RayActorError):
                    self.hub = await reresolve(self.stream, self.resolve, self.hub)

    async def flush(self) -> None:
        """Return once every queued item was accepted by the hub."""
        while self._buf or self._inflight:
            self._kick()
            task = self._task
            if task is not None:
                await asyncio.shield(task)


@dataclass
class Delivery:
    """One batch as delivered: who produced it, its per-producer sequence number, its items."""

    producer: str
    seq: int
    items: list[Any]
    index: int = -1


class StreamReader:
    def __init__(self, stream: str, hub: Any, group: str, consumer: str, codec: Codec,
                 max_items: int = 1000, wait_s: float = 0.5, stopping: Any = None, resolve: Resolver | None = None):
        self.stream = stream
        self.hub = hub
        self.resolve = resolve
        self.seen = SeenBatches()
        self.skipped = 0  # redelivered batches this reader had yielded already
        self.group = group
        self.consumer = consumer
        self.codec = codec
        self.max_items = max_items
        self.wait_s = wait_s
        self._stopping = stopping or (lambda: False)
        self._ack: list[int] = []
        self.received = 0

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Batches as they come; a batch is acknowledged when the next one is asked for."""
        try:
            while not self._stopping():
                ack, self._ack = self._ack, []
                try:
                    entries = await self.hub.pull.remote(self.group, self.consumer, self.max_items, self.wait_s, ack)
                except RayActorError:
                    self._ack = ack + self._ack
                    await asyncio.sleep(0.2)
                    self.hub = await reresolve(self.stream, self.resolve, self.hub)
                    continue
                if not entries:
                    continue
                try:
                    payloads = await asyncio.gather(*(e[1] for e in entries))
                except (ObjectLostError, RayActorError) as exc:  # their owner, the old hub, died
                    log.info("stream %s: %s; pulling again from the restarted hub", self.stream, type(exc).__name__)
                    continue
                for (index, _ref, _n, producer, seq), payload in zip(entries, payloads, strict=True):
                    if (producer, seq) in self.seen:
                        self.skipped += 1
                        self._ack.append(index)
                        continue
                    items = self.codec.decode(payload)
                    self.received += len(items)
                    yield Delivery(producer, seq, items, index)
                    self.seen.add(producer, seq)
                    self._ack.append(index)
        finally:
            await self.close()

    async def items(self) -> AsyncIterator[Any]:
        async for d in self.deliveries():
            for item in d.items:
                yield item

    async def close(self) -> None:
        """Acknowledge what was consumed and hand back the rest (for the group's other consumers)."""
        ack, self._ack = self._ack, []
        try:
            if ack:
                await self.hub.ack.remote(self.group, self.consumer, ack)
            await self.hub.release.remote(self.group, self.consumer)
        except Exception as exc:  # the hub is gone; its lease timeout hands the batches back
            log.debug("stream %s: close: %s", self.stream, exc)
