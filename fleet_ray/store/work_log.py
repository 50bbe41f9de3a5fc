"""The write-ahead copy of a batch pool's work queue: what a restarted queue reloads its jobs from.

A work queue (``fleet_ray.actors.workqueue``) keeps its jobs in memory and writes every change here
before it acknowledges it: a ``submit`` returns once its items are written, a slot's ``lease`` /
``complete`` call returns once the results it handed back are written, and a driver only ever sees
results that are written. A queue that was SIGKILLed, or recreated after the head node restarted,
:meth:`WorkLog.load` s the :class:`WorkSnapshot` and carries on: queued items stay queued in their
order, items leased to slots keep their lease records (lessee + deadline) until the lessee comes back
or is found gone, unread results are read on from the job's acknowledged cursor.

Per pool the log holds four collections (keys in :mod:`fleet_ray.store.keys`):

- **jobs**: job id → its meta (JSON: totals, the acknowledged cursor, when it finished);
- **items**: (job, item) → the item's record (order, attempt, payload; encoded by the queue);
- **leases**: (job, item) → the lease record (lessee and deadline);
- **results**: per job, sequence number → the result; a driver's cursor drops those below it.

One :meth:`WorkLog.write` takes a :class:`WorkWrite` — the net effect of every change since the last
write — and applies it atomically (one MULTI/EXEC on Redis, one transaction in SQLite). Each write is
idempotent (set, delete and trim by key or sequence number, nothing appended blindly), so a write
whose reply was lost can be sent again. The queue writes in batches: whatever changed while the
previous write was in flight goes in the next one (group commit), so a lease or a completion of N
items costs one round trip, shared with every other call that came in meanwhile.

Backends sit beside the key-value stores: :mod:`~fleet_ray.store.memory_work_log` (unit tests),
:mod:`~fleet_ray.store.sqlite_work_log` (the embedded file) and :mod:`~fleet_ray.store.redis_work_log`
(hashes and a sorted set per job). :func:`fleet_ray.store.open_work_log` picks one by URL. All pass
``tests/contracts/work_log.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

ItemKey = tuple[str, str]  # (job id, item id)


@dataclass
class WorkWrite:
    """One atomic write, applied in this order: ``dropped`` jobs lose their meta and results; then
    ``items`` and ``leases`` are set (bytes) or deleted (None); ``results`` are set by sequence number;
    ``trims`` drop each job's results below the given sequence number; ``jobs`` metas are set."""

    dropped: set[str] = field(default_factory=set)
    items: dict[ItemKey, bytes | None] = field(default_factory=dict)
    leases: dict[ItemKey, bytes | None] = field(default_factory=dict)
    results: dict[str, dict[int, bytes]] = field(default_factory=dict)
    trims: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, bytes] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.dropped or self.items or self.leases or self.results or self.trims or self.jobs)

    def size(self) -> int:
        return (len(self.dropped) + len(self.items) + len(self.leases) + len(self.trims) + len(self.jobs)
                + sum(len(r) for r in self.results.values()))


@dataclass
class WorkSnapshot:
    """Everything the log holds for one pool."""

    jobs: dict[str, bytes] = field(default_factory=dict)
    items: dict[ItemKey, bytes] = field(default_factory=dict)
    leases: dict[ItemKey, bytes] = field(default_factory=dict)
    results: dict[str, dict[int, bytes]] = field(default_factory=dict)


@runtime_checkable
class WorkLog(Protocol):
    url: str  # redacted: never holds a password

    def write(self, pool: str, change: WorkWrite) -> None:
        """Apply ``change`` atomically (all of it or none); applying it twice changes nothing more."""

    def load(self, pool: str) -> WorkSnapshot:
        """What the log holds for ``pool`` (empty if nothing)."""

    def drop(self, pool: str) -> None:
        """Forget everything of ``pool`` (its work queue was removed)."""

    def close(self) -> None: ...
