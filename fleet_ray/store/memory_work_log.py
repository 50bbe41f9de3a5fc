"""The work log in memory, for unit tests: a restarted queue built on the same object reloads from it."""

from __future__ import annotations

import threading

from fleet_ray.errors import StoreUnavailable
from fleet_ray.store.work_log import WorkSnapshot, WorkWrite


class MemoryWorkLog:
    def __init__(self, url: str = "memory://"):
        self.url = url
        self._pools: dict[str, WorkSnapshot] = {}
        self._lock = threading.Lock()
        self.available = True  # tests flip this to simulate an outage
        self.writes = 0

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable(self.url, "simulated outage")

    def write(self, pool: str, change: WorkWrite) -> None:
        self._check()
        with self._lock:
            snap = self._pools.setdefault(pool, WorkSnapshot())
            for job in change.dropped:
                snap.jobs.pop(job, None)
                snap.results.pop(job, None)
            for into, changes in ((snap.items, change.items), (snap.leases, change.leases)):
                for key, value in changes.items():
                    if value is None:
                        into.pop(key, None)
                    else:
                        into[key] = bytes(value)
            for job, results in change.results.items():
                snap.results.setdefault(job, {}).update({seq: bytes(v) for seq, v in results.items()})
            for job, below in change.trims.items():
                kept = {s: v for s, v in snap.results.get(job, {}).items() if s >= below}
                if kept:
                    snap.results[job] = kept
                else:
                    snap.results.pop(job, None)
            snap.jobs.update({job: bytes(v) for job, v in change.jobs.items()})
            self.writes += 1

    def load(self, pool: str) -> WorkSnapshot:
        self._check()
        with self._lock:
            snap = self._pools.get(pool, WorkSnapshot())
            return WorkSnapshot(dict(snap.jobs), dict(snap.items), dict(snap.leases),
                                {job: dict(r) for job, r in snap.results.items()})

    def drop(self, pool: str) -> None:
        self._check()
        with self._lock:
            self._pools.pop(pool, None)

    def close(self) -> None:
        pass
