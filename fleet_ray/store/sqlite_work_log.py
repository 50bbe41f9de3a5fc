"""The work queues' write-ahead copy in the embedded SQLite file (beside :mod:`~fleet_ray.store.sqlite`).

Tables in the store's own file, rows keyed by namespace and pool: ``work_job`` (each job's meta),
``work_item`` and ``work_lease`` (by job and item), ``work_result`` (by job and sequence number).
One :meth:`SQLiteWorkLog.write` is one ``BEGIN IMMEDIATE`` transaction of ``executemany`` statements.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet_ray.store.sqlite import immediate, open_file, sqlite_errors
from fleet_ray.store.work_log import WorkSnapshot, WorkWrite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS work_job (
    ns TEXT NOT NULL, pool TEXT NOT NULL, job TEXT NOT NULL, meta BLOB NOT NULL, PRIMARY KEY (ns, pool, job)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS work_item (
    ns TEXT NOT NULL, pool TEXT NOT NULL, job TEXT NOT NULL, item TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (ns, pool, job, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS work_lease (
    ns TEXT NOT NULL, pool TEXT NOT NULL, job TEXT NOT NULL, item TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (ns, pool, job, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS work_result (
    ns TEXT NOT NULL, pool TEXT NOT NULL, job TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (ns, pool, job, seq)
) WITHOUT ROWID;
"""


class SQLiteWorkLog:
    def __init__(self, path: str | Path, namespace: str = "default"):
        self.path = Path(path).expanduser()
        self.url = f"sqlite://{self.path.resolve()}"
        self.namespace = namespace
        self._conns = open_file(self.path, _SCHEMA, f"can't open embedded store {self.url}")

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def write(self, pool: str, change: WorkWrite) -> None:
        ns = self.namespace
        with sqlite_errors(f"work queue {pool}: write to {self.url}"), immediate(self._conn()) as c:
            for job in change.dropped:
                c.execute("DELETE FROM work_job WHERE ns=? AND pool=? AND job=?", (ns, pool, job))
                c.execute("DELETE FROM work_result WHERE ns=? AND pool=? AND job=?", (ns, pool, job))
            for table, changes in (("work_item", change.items), ("work_lease", change.leases)):
                gone = [(ns, pool, j, i) for (j, i), v in changes.items() if v is None]
                put = [(ns, pool, j, i, v) for (j, i), v in changes.items() if v is not None]
                if gone:
                    c.executemany(f"DELETE FROM {table} WHERE ns=? AND pool=? AND job=? AND item=?", gone)
                if put:
                    c.executemany(f"INSERT OR REPLACE INTO {table}(ns, pool, job, item, data) VALUES (?, ?, ?, ?, ?)",
                                  put)
            rows = [(ns, pool, job, seq, v) for job, results in change.results.items() for seq, v in results.items()]
            if rows:
                c.executemany("INSERT OR REPLACE INTO work_result(ns, pool, job, seq, data) VALUES (?, ?, ?, ?, ?)",
                              rows)
            if change.trims:
                c.executemany("DELETE FROM work_result WHERE ns=? AND pool=? AND job=? AND seq<?",
                              [(ns, pool, job, below) for job, below in change.trims.items()])
            if change.jobs:
                c.executemany("INSERT OR REPLACE INTO work_job(ns, pool, job, meta) VALUES (?, ?, ?, ?)",
                              [(ns, pool, job, meta) for job, meta in change.jobs.items()])

    def load(self, pool: str) -> WorkSnapshot:
        ns, c = self.namespace, self._conn()
        snap = WorkSnapshot()
        with sqlite_errors(f"work queue {pool}: read {self.url}"):
            for job, meta in c.execute("SELECT job, meta FROM work_job WHERE ns=? AND pool=?", (ns, pool)):
                snap.jobs[job] = bytes(meta)
            for job, item, data in c.execute("SELECT job, item, data FROM work_item WHERE ns=? AND pool=?", (ns, pool)):
                snap.items[(job, item)] = bytes(data)
            for job, item, data in c.execute("SELECT job, item, data FROM work_lease WHERE ns=? AND pool=?", (ns, pool)):
                snap.leases[(job, item)] = bytes(data)
            for job, seq, data in c.execute(
                    "SELECT job, seq, data FROM work_result WHERE ns=? AND pool=? ORDER BY job, seq", (ns, pool)):
                snap.results.setdefault(job, {})[int(seq)] = bytes(data)
        return snap

    def drop(self, pool: str) -> None:
        with sqlite_errors(f"work queue {pool}: drop from {self.url}"), immediate(self._conn()) as c:
            for table in ("work_job", "work_item", "work_lease", "work_result"):
                c.execute(f"DELETE FROM {table} WHERE ns=? AND pool=?", (self.namespace, pool))

    def close(self) -> None:
        self._conns.close()
