"""The work queues' write-ahead copy on Redis (beside :mod:`~fleet_ray.store.redis`).

Per pool, under the fleet's ``fleet:<namespace>:`` prefix (names in :mod:`fleet_ray.store.keys`): a
hash of job metas, a hash of item records and a hash of lease records (fields ``<job>\\0<item>``),
and per job a sorted set of results scored by sequence number (each member is the 8-byte sequence
number followed by the encoded result, so setting one twice is a no-op). One
:meth:`RedisWorkLog.write` is one MULTI/EXEC transaction: ``HSET``/``HDEL`` with many fields at once,
``ZADD`` of every new result of a job, ``ZREMRANGEBYSCORE`` for what drivers have read.
"""

from __future__ import annotations

from fleet_ray.redact import redact_url
from fleet_ray.store import keys
from fleet_ray.store.redis import connect, redis_errors
from fleet_ray.store.work_log import ItemKey, WorkSnapshot, WorkWrite

_CHUNK = 5_000  # fields per HSET/HDEL command


def _field(key: ItemKey) -> bytes:
    return f"{key[0]}\0{key[1]}".encode()


def _key_of(field: bytes) -> ItemKey:
    job, _, item = field.decode().partition("\0")
    return job, item


class RedisWorkLog:
    def __init__(self, url: str, namespace: str = "default", timeout_s: float = 5.0):
        self.url = redact_url(url)
        self._prefix = f"fleet:{namespace}:"
        self._r = connect(url, timeout_s)

    def _k(self, key: str) -> str:
        return self._prefix + key

    @redis_errors
    def write(self, pool: str, change: WorkWrite) -> None:
        jobs_key = self._k(keys.work_jobs(pool))
        with self._r.pipeline(transaction=True) as p:
            for job in change.dropped:
                p.delete(self._k(keys.work_results(pool, job)))
                p.hdel(jobs_key, job)
            for key, changes in ((keys.work_items(pool), change.items), (keys.work_leases(pool), change.leases)):
                gone = [_field(k) for k, v in changes.items() if v is None]
                put = [(_field(k), v) for k, v in changes.items() if v is not None]
                for i in range(0, len(gone), _CHUNK):
                    p.hdel(self._k(key), *gone[i:i + _CHUNK])
                for i in range(0, len(put), _CHUNK):
                    p.hset(self._k(key), mapping=dict(put[i:i + _CHUNK]))
            for job, results in change.results.items():
                members = {seq.to_bytes(8, "big") + data: seq for seq, data in results.items()}
                if members:
                    p.zadd(self._k(keys.work_results(pool, job)), members)
            for job, below in change.trims.items():
                p.zremrangebyscore(self._k(keys.work_results(pool, job)), "-inf", f"({below}")
            if change.jobs:
                p.hset(jobs_key, mapping=change.jobs)
            p.execute()

    @redis_errors
    def load(self, pool: str) -> WorkSnapshot:
        with self._r.pipeline(transaction=True) as p:
            p.hgetall(self._k(keys.work_jobs(pool)))
            p.hgetall(self._k(keys.work_items(pool)))
            p.hgetall(self._k(keys.work_leases(pool)))
            jobs, items, leases = p.execute()
        snap = WorkSnapshot(
            jobs={j.decode(): bytes(v) for j, v in jobs.items()},
            items={_key_of(f): bytes(v) for f, v in items.items()},
            leases={_key_of(f): bytes(v) for f, v in leases.items()},
        )
        names = list(snap.jobs)
        with self._r.pipeline(transaction=False) as p:
            for job in names:
                p.zrange(self._k(keys.work_results(pool, job)), 0, -1)
            for job, members in zip(names, p.execute(), strict=True):
                if members:
                    snap.results[job] = {int.from_bytes(m[:8], "big"): bytes(m[8:]) for m in members}
        return snap

    @redis_errors
    def drop(self, pool: str) -> None:
        pattern = self._k(keys.work_results(pool, "")).replace("*", r"\*") + "*"
        found = list(self._r.scan_iter(match=pattern, count=1000))
        names = [self._k(keys.work_jobs(pool)), self._k(keys.work_items(pool)), self._k(keys.work_leases(pool))]
        self._r.delete(*names, *found)

    def close(self) -> None:
        self._r.close()
