"""Reading a stream from a driver script: typed items, sync or async.

::

    sub = fleet.subscribe("scrape.products", group="report")      # model found by its import path
    for product in sub.iter(idle_s=5):                              # stops after 5 s without items
        print(product.sku, product.price)

    async for product in fleet.subscribe("scrape.products"):        # async iteration
        ...

A subscription is a consumer of a consumer group (its own group by default, so it sees every
item; give two drivers the same ``group`` to split the items between them). A batch is
acknowledged when the next one is requested; :meth:`Subscription.close` acknowledges what was
consumed, hands back the rest and, for a non-durable group, removes the group so it no longer
holds the stream's items.

A subscription rides through the death of the stream's hub: Ray restarts it (or the supervisor
recreates it, found again here by name), the new hub rebuilds from the store, refs of the dead one
(``OwnerDiedError``) are dropped unacknowledged and pulled again, and a batch this subscription
yielded already is skipped (:class:`~fleet_ray.streams.delivery.SeenBatches`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError

from fleet_ray.names import hub_name
from fleet_ray.streams.declare import Codec
from fleet_ray.streams.delivery import SeenBatches

RETRY_S = 0.2


@dataclass
class Batch:
    """One delivered batch: producer, its per-producer sequence number, the typed items."""

    producer: str
    seq: int
    items: list[Any]


class Subscription:
    def __init__(self, hub: Any, stream: str, group: str | None = None, model: type | None = None,
                 durable: bool = False, start: str = "earliest", max_items: int = 5_000, wait_s: float = 0.5,
                 namespace: str | None = None):
        self.hub = hub
        self.namespace = namespace  # where to find the hub again by name if it was recreated
        self.stream = stream
        self.group = group or f"driver-{uuid.uuid4().hex[:8]}"
        self.consumer = f"driver:{uuid.uuid4().hex[:8]}"
        self.durable = durable
        self.codec = Codec(stream, model)
        self.max_items = max_items
        self.wait_s = wait_s
        self._ack: list[int] = []
        self._buffer: deque[tuple[Any, tuple[int, Batch] | None]] = deque()
        self._closed = False
        self.received = 0
        self.seen = SeenBatches()
        self.skipped = 0  # redelivered batches this subscription had yielded already
        ray.get(hub.add_group.remote(self.group, durable, start))

    def _hub_lost(self, ack: list[int]) -> None:
        """A pull failed on a dead hub: keep the acks for the next one, find the hub again by name."""
        self._ack = ack + self._ack
        time.sleep(RETRY_S)
        if self.namespace is not None:
            try:
                self.hub = ray.get_actor(hub_name(self.stream), namespace=self.namespace)
            except ValueError:
                pass  # not recreated yet

    def _done(self, index: int, batch: Batch) -> None:
        """The consumer is done with ``batch``: acknowledge it with the next pull, skip it if it comes again."""
        self.seen.add(batch.producer, batch.seq)
        self._ack.append(index)

    # -- sync --------------------------------------------------------------------------------------
    def _entries(self) -> list:
        ack, self._ack = self._ack, []
        try:
            return ray.get(self.hub.pull.remote(self.group, self.consumer, self.max_items, self.wait_s, ack))
        except RayActorError:
            self._hub_lost(ack)
            return []

    def _fetch(self, entries: list) -> list[tuple[int, Batch]]:
        try:
            payloads = ray.get([e[1] for e in entries])
        except (ObjectLostError, RayActorError):
            return []  # owned by a hub that died: its successor delivers them again
        return self._decode(entries, payloads)

    def _decode(self, entries: list, payloads: list) -> list[tuple[int, Batch]]:
        out = []
        for (index, _ref, _n, producer, seq), payload in zip(entries, payloads, strict=True):
            if (producer, seq) in self.seen:
                self.skipped += 1
                self._ack.append(index)
                continue
            items = self.codec.decode(payload)
            self.received += len(items)
            out.append((index, Batch(producer, seq, items)))
        return out

    def _buffer_batches(self, decoded: list[tuple[int, Batch]]) -> None:
        for index, batch in decoded:
            last = len(batch.items) - 1
            for j, item in enumerate(batch.items):
                self._buffer.append((item, (index, batch) if j == last else None))
            if last < 0:
                self._done(index, batch)

    def _expired(self, deadline: float | None, idle_s: float | None, last: float) -> bool:
        now = time.monotonic()
        return (deadline is not None and now > deadline) or (idle_s is not None and now - last > idle_s)

    def batches(self, idle_s: float | None = None, timeout_s: float | None = None) -> Iterator[Batch]:
        """Batches as they come, until ``close()``, ``idle_s`` without any, or ``timeout_s`` in all."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = time.monotonic()
        while not self._closed and not self._expired(deadline, idle_s, last):
            entries = self._entries()
            if entries:
                for index, batch in self._fetch(entries):
                    last = time.monotonic()
                    yield batch
                    self._done(index, batch)

    def iter(self, idle_s: float | None = None, timeout_s: float | None = None) -> Iterator[Any]:
        """Typed items as they come (stops like :meth:`batches`). Leaving the loop early is fine:
        the next ``iter`` carries on with the rest of the current batch."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = time.monotonic()
        while not self._closed:
            if self._buffer:
                item, done = self._buffer.popleft()
                if done is not None:  # the batch's last item is handed out: ack with the next pull
                    self._done(*done)
                last = time.monotonic()
                yield item
                continue
            if self._expired(deadline, idle_s, last):
                return
            entries = self._entries()
            if entries:
                self._buffer_batches(self._fetch(entries))

    def __iter__(self) -> Iterator[Any]:
        return self.iter()

    def take(self, n: int, timeout_s: float = 60.0) -> list[Any]:
        """The next ``n`` items; TimeoutError if they don't come within ``timeout_s``."""
        out: list[Any] = []
        if n <= 0:
            return out
        for item in self.iter(timeout_s=timeout_s):
            out.append(item)
            if len(out) >= n:
                return out
        raise TimeoutError(f"stream {self.stream}: {len(out)}/{n} items within {timeout_s}s")

    # -- async -------------------------------------------------------------------------------------
    async def _aentries(self) -> list:
        ack, self._ack = self._ack, []
        try:
            return await self.hub.pull.remote(self.group, self.consumer, self.max_items, self.wait_s, ack)
        except RayActorError:
            await asyncio.to_thread(self._hub_lost, ack)
            return []

    async def _afetch(self, entries: list) -> list[tuple[int, Batch]]:
        try:
            payloads = await asyncio.gather(*(e[1] for e in entries))
        except (ObjectLostError, RayActorError):
            return []
        return self._decode(entries, list(payloads))

    async def abatches(self, idle_s: float | None = None, timeout_s: float | None = None) -> AsyncIterator[Batch]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = time.monotonic()
        while not self._closed and not self._expired(deadline, idle_s, last):
            entries = await self._aentries()
            if entries:
                for index, batch in await self._afetch(entries):
                    last = time.monotonic()
                    yield batch
                    self._done(index, batch)

    async def aiter(self, idle_s: float | None = None, timeout_s: float | None = None) -> AsyncIterator[Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = time.monotonic()
        while not self._closed:
            if self._buffer:
                item, done = self._buffer.popleft()
                if done is not None:
                    self._done(*done)
                last = time.monotonic()
                yield item
                continue
            if self._expired(deadline, idle_s, last):
                return
            entries = await self._aentries()
            if entries:
                self._buffer_batches(await self._afetch(entries))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.aiter()

    async def atake(self, n: int, timeout_s: float = 60.0) -> list[Any]:
        out: list[Any] = []
        if n <= 0:
            return out
        async for item in self.aiter(timeout_s=timeout_s):
            out.append(item)
            if len(out) >= n:
                return out
        raise TimeoutError(f"stream {self.stream}: {len(out)}/{n} items within {timeout_s}s")

    # -- ending ------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ack, self._ack = self._ack, []
        try:
            if ack:
                ray.get(self.hub.ack.remote(self.group, self.consumer, ack))
            ray.get(self.hub.release.remote(self.group, self.consumer))
            if not self.durable:
                ray.get(self.hub.drop_group.remote(self.group))
        except ray.exceptions.RayError:
            pass  # the hub is gone; nothing to hand back

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
