"""The work queue's records and what it writes: jobs and items as the queue holds them, their encodings
in the work log (:mod:`fleet_ray.store.work_log`), and the pending write that collects changes between
two writes (group commit). No Ray calls, no I/O: :mod:`fleet_ray.actors.workqueue` drives them.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

from ray import cloudpickle

from fleet_ray.store.work_log import ItemKey, WorkWrite

Result = tuple[str, bool, Any, int]  # item_id, ok, value or error text, attempts


def dumps(obj: Any) -> bytes:
    """Pickle an item or result for the log: plain pickle (fast), cloudpickle for what it can't do (a
    class a driver defined in ``__main__`` arrives here as a dynamic class)."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj, protocol=5)


def loads(raw: bytes) -> Any:
    return pickle.loads(raw)


@dataclass
class WorkItem:
    """An item without a result yet: queued (``lessee`` None) or leased."""

    payload: Any
    attempt: int
    order: int  # its place in the queue (smaller: sooner); items handed back go to the front
    lessee: str | None = None
    ticket: int = 0  # the queue's entry for it is live only while the ticket matches

    def record(self) -> tuple[int, int, Any]:
        return (self.order, self.attempt, self.payload)


@dataclass
class WorkJob:
    """A job's bookkeeping. Results are numbered from 0 (the sequence number, the driver's cursor);
    ``results`` holds those from ``base`` on (below it the driver has read them: trimmed), and the
    driver sees only those below ``durable`` (written to the log; all of them when in memory)."""

    max_retries: int = 3
    created: float = field(default_factory=time.time)
    total: int = 0
    done: int = 0
    failed: int = 0
    leased: int = 0
    base: int = 0
    durable: int = 0
    results: list[Result] = field(default_factory=list)
    finished_at: float | None = None
    ids: set[str] = field(default_factory=set)  # every item id submitted (a resubmitted id is ignored)
    event: asyncio.Event = field(default_factory=asyncio.Event)  # set when results become visible

    @property
    def next_seq(self) -> int:
        return self.base + len(self.results)

    @property
    def finished(self) -> bool:
        return self.done + self.failed >= self.total

    def meta(self) -> dict[str, Any]:
        return {"max_retries": self.max_retries, "created": self.created, "total": self.total, "done": self.done,
                "failed": self.failed, "base": self.base, "next": self.next_seq, "finished_at": self.finished_at}

    @classmethod
    def from_meta(cls, raw: bytes) -> WorkJob:
        m = json.loads(raw)
        return cls(max_retries=int(m["max_retries"]), created=float(m["created"]), total=int(m["total"]),
                   done=int(m["done"]), failed=int(m["failed"]), base=int(m["base"]), finished_at=m.get("finished_at"))


def lessee_of(raw: bytes) -> str:
    return str(json.loads(raw)["lessee"])


@dataclass
class PendingWrite:
    """The changes since the last write, net (a later change of a key replaces an earlier one).
    Values are kept as objects here and encoded in :meth:`encode`, off the event loop."""

    dropped: set[str] = field(default_factory=set)
    items: dict[ItemKey, tuple | None] = field(default_factory=dict)
    leases: dict[ItemKey, tuple | None] = field(default_factory=dict)
    results: dict[str, dict[int, Result]] = field(default_factory=dict)
    trims: dict[str, int] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)  # jobs whose meta changed (read when the write is taken)

    def item(self, key: ItemKey, record: tuple | None) -> None:
        self.items[key] = record

    def lease(self, key: ItemKey, record: tuple | None) -> None:
        self.leases[key] = record

    def result(self, job_id: str, seq: int, result: Result) -> None:
        self.results.setdefault(job_id, {})[seq] = result
        self.jobs.add(job_id)

    def trim(self, job_id: str, below: int) -> None:
        self.trims[job_id] = below
        self.jobs.add(job_id)

    def job(self, job_id: str) -> None:
        self.jobs.add(job_id)

    def drop(self, job_id: str) -> None:
        self.dropped.add(job_id)
        self.results.pop(job_id, None)
        self.trims.pop(job_id, None)
        self.jobs.discard(job_id)

    def __bool__(self) -> bool:
        return bool(self.dropped or self.items or self.leases or self.results or self.trims or self.jobs)

    def then(self, later: PendingWrite) -> PendingWrite:
        """This write followed by ``later``, as one (a failed write is sent again with what came after)."""
        for job_id in later.dropped:
            self.results.pop(job_id, None)
            self.trims.pop(job_id, None)
            self.jobs.discard(job_id)
        self.dropped |= later.dropped
        self.items.update(later.items)
        self.leases.update(later.leases)
        for job_id, results in later.results.items():
            self.results.setdefault(job_id, {}).update(results)
        for job_id, below in later.trims.items():
            self.trims[job_id] = max(self.trims.get(job_id, 0), below)
        self.jobs |= later.jobs
        return self

    def encode(self, metas: dict[str, dict[str, Any]]) -> WorkWrite:
        """The work log's write: every value encoded, with the job metas read when it was taken."""
        p = self
        return WorkWrite(
            dropped=set(p.dropped),
            items={k: None if v is None else dumps(v) for k, v in p.items.items()},
            leases={k: None if v is None else json.dumps({"lessee": v[0], "deadline": v[1]}).encode()
                    for k, v in p.leases.items()},
            results={j: {s: dumps(r) for s, r in rs.items()} for j, rs in p.results.items()},
            trims=dict(p.trims),
            jobs={j: json.dumps(m).encode() for j, m in metas.items()},
        )


class NoWrite(PendingWrite):
    """The pending write of a queue kept in memory only (``work_queue: {durable: false}``): records nothing."""

    def item(self, key: ItemKey, record: tuple | None) -> None:
        pass

    def lease(self, key: ItemKey, record: tuple | None) -> None:
        pass

    def result(self, job_id: str, seq: int, result: Result) -> None:
        pass

    def trim(self, job_id: str, below: int) -> None:
        pass

    def job(self, job_id: str) -> None:
        pass

    def drop(self, job_id: str) -> None:
        pass
