"""The write-ahead copy of durable streams: what a restarted stream hub rebuilds itself from.

A stream hub (``fleet_ray.actors.stream_hub``) writes every batch it accepts here *before* it
acknowledges the producer's ``put``, together with each consumer group's position; a hub that
was SIGKILLed, or recreated after the head node restarted, loads the :class:`StreamSnapshot` and
carries on: the unacknowledged batches are ``ray.put`` again (the new hub owns them), each group
resumes where it had acknowledged, and the producers' last sequence numbers keep retries
idempotent. The store is only the hub's memory, never a second delivery path: consumers still get
object refs from the hub.

One :meth:`StreamLog.write` is atomic (one Lua script on Redis, one transaction in SQLite), so a
snapshot never holds a group position without the batches it points at.

Backends sit beside the key-value stores: :mod:`~fleet_ray.store.memory_stream_log` (unit tests),
:mod:`~fleet_ray.store.sqlite_stream_log` (the embedded file) and
:mod:`~fleet_ray.store.redis_stream_log` (a Redis Stream per fleet stream, ``XADD`` with the batch
index as the entry id, ``XTRIM MINID`` for retention). :func:`fleet_ray.store.open_stream_log` picks
one by URL. All pass ``tests/contracts/stream_log.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class StoredBatch:
    """One accepted batch: its place in the stream, who sent it and the encoded items."""

    index: int
    producer: str
    seq: int
    n: int
    payload: bytes


@dataclass
class GroupPosition:
    """How far a consumer group got: every batch below ``next`` was acknowledged except ``pending``
    (leased or handed back, not yet acknowledged); a restarted hub delivers ``pending`` again first."""

    next: int
    pending: list[int] = field(default_factory=list)
    durable: bool = True

    def low(self) -> int:
        return min([self.next, *self.pending])

    def encode(self) -> bytes:
        return json.dumps({"next": self.next, "pending": sorted(self.pending), "durable": self.durable},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> GroupPosition:
        d = json.loads(raw)
        return cls(int(d["next"]), [int(i) for i in d.get("pending", [])], bool(d.get("durable", True)))


@dataclass
class StreamWrite:
    """What one atomic write changes: new batches (in index order), group positions (``None`` drops
    a group), producers to forget, and the index below which every batch may be trimmed."""

    batches: list[StoredBatch] = field(default_factory=list)
    groups: dict[str, GroupPosition | None] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    trim_below: int | None = None

    def __bool__(self) -> bool:
        return bool(self.batches or self.groups or self.forget or self.trim_below is not None)


@dataclass
class StreamSnapshot:
    """Everything a hub needs to start where the last one stopped."""

    batches: list[StoredBatch] = field(default_factory=list)  # retained, in index order
    groups: dict[str, GroupPosition] = field(default_factory=dict)
    producers: dict[str, int] = field(default_factory=dict)  # producer → last accepted seq
    next_index: int = 0
    items_in: int = 0


@runtime_checkable
class StreamLog(Protocol):
    url: str  # redacted

    def write(self, stream: str, change: StreamWrite) -> None:
        """Apply ``change`` atomically. Batches whose index is below the stream's next index are
        skipped (a retried write is a no-op); producers' last seqs only rise."""

    def load(self, stream: str) -> StreamSnapshot: ...

    def drop(self, stream: str) -> None:
        """Forget the stream entirely."""

    def close(self) -> None: ...


def apply_write(snap: StreamSnapshot, change: StreamWrite) -> None:
    """``change`` applied to ``snap`` in place, as every backend must (the in-memory backend is this)."""
    for b in change.batches:
        if b.index < snap.next_index:
            continue
        snap.batches.append(b)
        snap.next_index = b.index + 1
        snap.items_in += b.n
        if b.seq > snap.producers.get(b.producer, -1):
            snap.producers[b.producer] = b.seq
    for name, pos in change.groups.items():
        if pos is None:
            snap.groups.pop(name, None)
        else:
            snap.groups[name] = GroupPosition(pos.next, list(pos.pending), pos.durable)
    for producer in change.forget:
        snap.producers.pop(producer, None)
    if change.trim_below is not None:
        snap.batches = [b for b in snap.batches if b.index >= change.trim_below]
