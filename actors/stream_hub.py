"""The stream hub: one named, detached actor per typed stream (``fleet:stream:<pool>.<output>``).

Producers send batches (one ``put`` call per batch, one in flight per producer, so each producer's
order holds); the hub ``ray.put``\\s every batch it accepts, so **the hub owns the object** and a
batch survives the death of the slot that emitted it (an object owned by a dead worker would be
lost with ``OwnerDiedError``). Consumers ``pull`` object refs and fetch the batches themselves.

- **Bounded**: while the items (or bytes) not yet acknowledged by every consumer group exceed the
  stream's capacity, ``put`` waits; the producer's ``emit`` waits behind it (back-pressure), so
  memory stays bounded instead of growing.
- **Consumer groups**: every group sees every batch; within a group batches are leased to one
  consumer at a time (load balancing). A batch is acknowledged on the consumer's next ``pull``;
  the leases of a consumer that died (``release``) or went quiet (``lease_timeout_s``) go to the
  group's other consumers (at-least-once).
- **Observable**: :meth:`stats` gives depth, bytes, capacity, in/out rates, blocked producers and
  per-group lag.

A batch whose ``(producer, seq)`` was seen before is ignored, so a retried ``put`` is idempotent.

**Durable** (the default; ``StreamOptions.durable``): the hub writes every batch it accepts ahead to
the fleet's store (:mod:`fleet_ray.store.stream_log`) and acknowledges the ``put`` only once the
write landed. Its :class:`~fleet_ray.actors.stream_writeahead.WriteAhead` turns whatever was
accepted meanwhile into one atomic write (a group commit, so the store costs a round trip per
flush, not per batch), together with the consumer groups' positions (what each acknowledged), the
producers to forget and the retention trim (batches every group acknowledged are deleted from the
store copy as from memory). A hub
that Ray restarts after a SIGKILL, or that the supervisor recreates (after a head restart, say),
loads that copy in ``__init__``: the unacknowledged batches are ``ray.put`` again (it owns the new
refs), each group resumes from its acknowledged position (leased-but-unacknowledged batches are
delivered again first), and the producers' last sequence numbers keep retried puts idempotent.
While the store is unreachable, writes are retried with back-off and producers wait (nothing
acknowledged is ever only in memory). ``durable: false`` keeps everything in memory only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import ray

from fleet_ray.names import HEAD_RESOURCE, hub_name
from fleet_ray.store import open_stream_log
from fleet_ray.store.stream_log import GroupPosition, StoredBatch, StreamLog, StreamSnapshot

from .stream_writeahead import WriteAhead

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 1.0
WATCH_S = 300.0


def _rss_mb() -> float:
    try:
        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # pragma: no cover - never fail stats over it
        return 0.0


@dataclass
class _Batch:
    ref: Any
    n: int
    nbytes: int
    producer: str
    seq: int
    start: int  # items in the stream before this batch


@dataclass
class _Group:
    name: str
    durable: bool
    next: int
    redeliver: deque[int] = field(default_factory=deque)
    leases: dict[str, dict[int, None]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    last_pull: float = 0.0
    delivered: int = 0

    def low(self) -> int:
        low = self.next
        if self.redeliver:
            low = min(low, min(self.redeliver))
        for mine in self.leases.values():
            if mine:
                low = min(low, min(mine))
        return low

    def position(self) -> GroupPosition:
        """What the group acknowledged, as the store keeps it: leased and handed-back batches are pending."""
        pending = set(self.redeliver)
        for mine in self.leases.values():
            pending.update(mine)
        return GroupPosition(self.next, sorted(pending), self.durable)


class _Rate:
    """Items per second over the last few whole seconds."""

    def __init__(self, clock: Callable[[], float], window: int = 5):
        self.clock = clock
        self.window = window
        self._buckets: deque[list] = deque()

    def add(self, n: int) -> None:
        sec = int(self.clock())
        if self._buckets and self._buckets[-1][0] == sec:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([sec, n])
            while len(self._buckets) > self.window + 1:
                self._buckets.popleft()

    def rate(self) -> float:
        now = int(self.clock())
        total = sum(n for sec, n in self._buckets if now - self.window <= sec < now)
        return round(total / self.window, 3)


class StreamHubCore:
    def __init__(
        self,
        stream: str,
        capacity: int = 10_000,
        max_bytes: int | None = None,
        model: str | None = None,
        lease_timeout_s: float = 60.0,
        group_idle_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        put_object: Callable[[bytes], Any] | None = None,
        store_url: str | None = None,
        namespace: str = "default",
        stream_log: StreamLog | None = None,
    ):
        self.stream = stream
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.model = model
        self.lease_timeout_s = lease_timeout_s
        self.group_idle_s = group_idle_s
        self.clock = clock
        self._put_object = put_object or ray.put
        self.incarnation = uuid.uuid4().hex[:12]
        self._batches: dict[int, _Batch] = {}
        self._base = 0  # oldest retained batch index
        self._next = 0  # index of the next batch
        self._items = 0
        self._bytes = 0
        self.items_in = 0
        self._groups: dict[str, _Group] = {}
        self._last_seq: dict[str, int] = {}
        self._producer_seen: dict[str, float] = {}
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self.blocked = 0
        self.backpressure_episodes = 0
        self.invalid_items = 0
        self._rate_in = _Rate(clock)
        self._rate_out = _Rate(clock)
        self._expired_at = 0.0
        self._assigned = 0  # index of the next batch accepted (== _next unless writes are in flight)
        self.restored: dict[str, int] = {}
        # the write-ahead copy (None: an in-memory stream)
        if stream_log is None and store_url:
            stream_log = open_stream_log(store_url, namespace)
        self.wal: WriteAhead | None = None
        if stream_log is not None:
            self.wal = WriteAhead(stream, stream_log, self._position, self._commit_written)
            self._restore(self.wal.load())

    # -- producers -------------------------------------------------------------------------------
    def _full(self, n: int, nbytes: int) -> bool:
        if self._items == 0:
            return False  # an empty stream takes any batch, so one oversized batch can't deadlock
        if self._items + n > self.capacity:
            return True
        return self.max_bytes is not None and self._bytes + nbytes > self.max_bytes

    async def put(self, producer: str, seq: int, payload: bytes, n: int) -> dict[str, Any]:
        """Append one batch of ``n`` items; waits while the stream is full. Idempotent by (producer, seq)."""
        self._producer_seen[producer] = self.clock()
        if seq <= self._last_seq.get(producer, -1):
            return {"accepted": False, "duplicate": True, "depth": self._items}
        if self._full(n, len(payload)):
            if self.blocked == 0:
                self.backpressure_episodes += 1
            self.blocked += 1
            try:
                while self._full(n, len(payload)):
                    space = self._space
                    await space.wait()
            finally:
                self.blocked -= 1
            if seq <= self._last_seq.get(producer, -1):  # a retry of this batch got in while we waited
                return {"accepted": False, "duplicate": True, "depth": self._items}
        self._last_seq[producer] = seq
        idx = self._assigned
        self._assigned += 1
        self._items += n
        self._bytes += len(payload)
        ref = self._put_object(payload)
        if self.wal is None:
            self._commit(idx, ref, n, len(payload), producer, seq)
        else:  # written ahead: acknowledged (and shown to consumers) once the store holds it
            await self.wal.append(StoredBatch(idx, producer, seq, n, payload), ref)
        return {"accepted": True, "duplicate": False, "depth": self._items}

    def _commit_written(self, b: StoredBatch, ref: Any) -> None:
        self._commit(b.index, ref, b.n, len(b.payload), b.producer, b.seq)

    def _commit(self, idx: int, ref: Any, n: int, nbytes: int, producer: str, seq: int) -> None:
        """A batch becomes visible to consumers (in index order)."""
        self._batches[idx] = _Batch(ref, n, nbytes, producer, seq, self.items_in)
        self._next = idx + 1
        self.items_in += n
        self._rate_in.add(n)
        self._data.set()
        self._data = asyncio.Event()

    def set_limits(self, capacity: int, max_bytes: int | None, model: str | None = None) -> None:
        """New bounds (a re-applied spec; or the producer's, if a consumer created the hub first);
        a larger bound releases waiting producers at once."""
        self.capacity, self.max_bytes = capacity, max_bytes
        self.model = model or self.model
        self._space.set()
        self._space = asyncio.Event()

    def note_invalid(self, n: int = 1) -> None:
        """A producer rejected ``n`` invalid items (counted for stats; they never enter the stream)."""
        self.invalid_items += n

    # -- consumer groups ---------------------------------------------------------------------------
    def add_group(self, group: str, durable: bool = True, start: str = "earliest") -> dict[str, Any]:
        """Register a consumer group; it sees every batch retained from ``start`` (earliest | latest) on."""
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _Group(group, durable, self._base if start == "earliest" else self._next)
            g.last_pull = self.clock()
            self._touch(group)
        elif durable and not g.durable:
            g.durable = True
            self._touch(group)
        return {"group": group, "next": g.next}

    def drop_group(self, group: str) -> bool:
        dropped = self._groups.pop(group, None) is not None
        if dropped:
            self._touch(group)
        self._trim()
        return dropped

    def groups(self) -> list[str]:
        return sorted(self._groups)

    async def pull(
        self, group: str, consumer: str, max_items: int = 1000, wait_s: float = 1.0, ack: list[int] | None = None
    ) -> list[tuple[int, Any, int, str, int]]:
        """Acknowledge ``ack``, then lease batches (up to ``max_items`` items, at least one batch) to
        ``consumer``; long-polls ``wait_s`` when there are none. Returns ``(index, ref, n, producer, seq)``."""
        g = self._groups.get(group)
        if g is None:
            self.add_group(group, durable=False)
            g = self._groups[group]
        now = self.clock()
        g.seen[consumer] = now
        g.last_pull = now
        if ack:
            self._ack(g, consumer, ack)
        self._expire(now)
        out = self._lease(g, consumer, max_items)
        if not out and wait_s > 0:
            data = self._data
            try:
                await asyncio.wait_for(data.wait(), timeout=wait_s)
            except TimeoutError:
                pass
            if group in self._groups:
                out = self._lease(g, consumer, max_items)
        self._trim()
        return [(i, self._batches[i].ref, self._batches[i].n, self._batches[i].producer, self._batches[i].seq)
                for i in out]

    def ack(self, group: str, consumer: str, indices: list[int]) -> None:
        g = self._groups.get(group)
        if g is not None:
            self._ack(g, consumer, indices)
            self._trim()

    def release(self, group: str, consumer: str) -> int:
        """``consumer`` is gone: its unacknowledged batches go back to its group. Returns how many."""
        g = self._groups.get(group)
        if g is None:
            return 0
        mine = g.leases.pop(consumer, {})
        g.seen.pop(consumer, None)
        if mine:
            g.redeliver = deque(sorted(set(g.redeliver) | set(mine)))
            self._touch(group)
            self._data.set()
            self._data = asyncio.Event()
        return len(mine)

    def _ack(self, g: _Group, consumer: str, indices: list[int]) -> None:
        mine = g.leases.get(consumer) or {}
        changed = False
        for i in indices:
            if mine.pop(i, 0) is None:
                changed = True
                continue
            # not this consumer's lease (any more): a restarted hub or an expired lease handed it on,
            # but it was consumed, so it needn't go out again
            if i in g.redeliver:
                g.redeliver.remove(i)
                changed = True
                continue
            for other in g.leases.values():
                if other.pop(i, 0) is None:
                    changed = True
                    break
        if changed:
            self._touch(g.name)

    def _lease(self, g: _Group, consumer: str, max_items: int) -> list[int]:
        if max_items <= 0:
            return []  # an acknowledgement only
        mine = g.leases.setdefault(consumer, {})
        out: list[int] = []
        items = 0
        while g.redeliver and (not out or items < max_items):
            i = g.redeliver.popleft()
            if i in self._batches:
                mine[i] = None
                out.append(i)
                items += self._batches[i].n
        while g.next < self._next and (not out or items < max_items):
            i = g.next
            g.next += 1
            mine[i] = None
            out.append(i)
            items += self._batches[i].n
        if items:
            g.delivered += items
            self._rate_out.add(items)
            self._touch(g.name)
        return out

    def _expire(self, now: float) -> None:
        if now - self._expired_at < EXPIRE_EVERY_S:
            return
        self._expired_at = now
        for name, g in list(self._groups.items()):
            if not g.durable and now - g.last_pull > self.group_idle_s:
                del self._groups[name]
                self._touch(name)
                continue
            for consumer, seen in list(g.seen.items()):
                if now - seen > self.lease_timeout_s:
                    self.release(name, consumer)
        for producer, seen in list(self._producer_seen.items()):
            if now - seen > 3600:
                self._producer_seen.pop(producer, None)
                self._last_seq.pop(producer, None)
                if self.wal is not None:
                    self.wal.forget(producer)
        self._trim()

    def _trim(self) -> None:
        if not self._groups:
            return  # nobody reads yet: keep everything (up to capacity) for the first group
        low = min(g.low() for g in self._groups.values())
        freed = False
        while self._base < low:
            b = self._batches.pop(self._base)
            self._items -= b.n
            self._bytes -= b.nbytes
            self._base += 1
            freed = True
        if freed:
            self._space.set()
            self._space = asyncio.Event()
            if self.wal is not None:
                self.wal.trim(self._base)

    # -- the write-ahead copy ----------------------------------------------------------------------
    def _touch(self, group: str) -> None:
        """``group``'s position changed: the next write carries it."""
        if self.wal is not None:
            self.wal.touch(group)

    def _position(self, group: str) -> GroupPosition | None:
        g = self._groups.get(group)
        return g.position() if g is not None else None

    def _restore(self, snap: StreamSnapshot) -> None:
        """Start where the last hub stopped: retained batches owned anew, groups at their positions."""
        now = self.clock()
        start = snap.items_in - sum(b.n for b in snap.batches)
        for b in snap.batches:
            self._batches[b.index] = _Batch(self._put_object(b.payload), b.n, len(b.payload), b.producer, b.seq, start)
            start += b.n
            self._items += b.n
            self._bytes += len(b.payload)
        self._base = snap.batches[0].index if snap.batches else snap.next_index
        self._next = self._assigned = snap.next_index
        self.items_in = snap.items_in
        self._last_seq = dict(snap.producers)
        self._producer_seen = dict.fromkeys(snap.producers, now)
        for name, pos in snap.groups.items():
            redeliver = deque(sorted(i for i in set(pos.pending) if i in self._batches))
            g = self._groups[name] = _Group(name, pos.durable, min(max(pos.next, self._base), self._next), redeliver)
            g.last_pull = now
        self.restored = {"batches": len(snap.batches), "items": self._items, "groups": len(snap.groups)}
        if snap.batches or snap.groups:
            log.info("stream %s: restored %d batches (%d items) and %d groups from the store",
                     self.stream, len(snap.batches), self._items, len(snap.groups))

    async def watch(self, timeout_s: float = WATCH_S) -> str:
        """Returns after ``timeout_s`` (the supervisor's long poll: the call fails if the hub dies)."""
        await asyncio.sleep(timeout_s)
        return self.incarnation

    # -- observing ---------------------------------------------------------------------------------
    def _lag(self, g: _Group) -> int:
        fresh = self.items_in - (self._batches[g.next].start if g.next < self._next else self.items_in)
        pending = sum(self._batches[i].n for i in g.redeliver if i in self._batches)
        leased = sum(self._batches[i].n for mine in g.leases.values() for i in mine if i in self._batches)
        return fresh + pending + leased

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "name": self.stream,
            "model": self.model,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "rss_mb": round(_rss_mb(), 1),
            "depth": self._items,
            "bytes": self._bytes,
            "batches": len(self._batches),
            "capacity": self.capacity,
            "max_bytes": self.max_bytes,
            "items_in": self.items_in,
            "items_out": sum(g.delivered for g in self._groups.values()),
            "in_rate": self._rate_in.rate(),
            "out_rate": self._rate_out.rate(),
            "blocked_producers": self.blocked,
            "backpressure_episodes": self.backpressure_episodes,
            "invalid_items": self.invalid_items,
            "durable": self.wal is not None,
            "store": {**self.wal.stats(), "restored": self.restored} if self.wal is not None else None,
            "producers": sorted(p for p, t in self._producer_seen.items() if now - t < 60),
            "groups": {
                name: {
                    "durable": g.durable,
                    "lag": self._lag(g),
                    "delivered": g.delivered,
                    "consumers": sorted(c for c, t in g.seen.items() if now - t < self.lease_timeout_s),
                }
                for name, g in self._groups.items()
            },
        }

    def info(self) -> dict[str, Any]:
        return {"name": self.stream, "model": self.model, "capacity": self.capacity, "incarnation": self.incarnation,
                "durable": self.wal is not None}


@ray.remote(max_restarts=-1, max_task_retries=-1)
class StreamHub(StreamHubCore):
    """A stream hub actor (see :class:`StreamHubCore`)."""


def ensure_hub(namespace: str, stream: str, capacity: int = 10_000, max_bytes: int | None = None,
               model: str | None = None, store_url: str | None = None, durable: bool = True) -> Any:
    """The stream's hub actor, created on the head node if it does not exist yet (idempotent). With a
    ``store_url`` and ``durable``, what it accepts is written ahead to that store (and reloaded from it)."""
    return StreamHub.options(
        name=hub_name(stream),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        resources={HEAD_RESOURCE: 0.001},
        max_concurrency=1000,
    ).remote(stream, capacity, max_bytes, model, store_url=store_url if durable else None, namespace=namespace)


def get_hub(namespace: str, stream: str) -> Any | None:
    try:
        return ray.get_actor(hub_name(stream), namespace=namespace)
    except ValueError:
        return None
