"""The streams' write-ahead copy in the embedded SQLite file (beside :mod:`~fleet_ray.store.sqlite`).

Tables in the store's own file, rows keyed by namespace and stream: ``stream_batch`` (one row per
retained batch), ``stream_group`` (each group's :class:`~fleet_ray.store.stream_log.GroupPosition`),
``stream_producer`` (last accepted seq) and ``stream_meta`` (next index, items in). One
:meth:`SQLiteStreamLog.write` is one ``BEGIN IMMEDIATE`` transaction; retention is a ``DELETE``
below the lowest position every group acknowledged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet_ray.store.sqlite import immediate, open_file, sqlite_errors
from fleet_ray.store.stream_log import GroupPosition, StoredBatch, StreamSnapshot, StreamWrite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stream_batch (
    ns TEXT NOT NULL, stream TEXT NOT NULL, idx INTEGER NOT NULL, producer TEXT NOT NULL,
    seq INTEGER NOT NULL, n INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (ns, stream, idx)
);
CREATE TABLE IF NOT EXISTS stream_group (
    ns TEXT NOT NULL, stream TEXT NOT NULL, grp TEXT NOT NULL, position BLOB NOT NULL,
    PRIMARY KEY (ns, stream, grp)
);
CREATE TABLE IF NOT EXISTS stream_producer (
    ns TEXT NOT NULL, stream TEXT NOT NULL, producer TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (ns, stream, producer)
);
CREATE TABLE IF NOT EXISTS stream_meta (
    ns TEXT NOT NULL, stream TEXT NOT NULL, next_index INTEGER NOT NULL, items_in INTEGER NOT NULL,
    PRIMARY KEY (ns, stream)
);
"""


class SQLiteStreamLog:
    def __init__(self, path: str | Path, namespace: str = "default"):
        self.path = Path(path).expanduser()
        self.url = f"sqlite://{self.path.resolve()}"
        self.namespace = namespace
        self._conns = open_file(self.path, _SCHEMA, f"can't open embedded store {self.url}")

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def write(self, stream: str, change: StreamWrite) -> None:
        ns = self.namespace
        with sqlite_errors(f"stream {stream}: write to {self.url}"), immediate(self._conn()) as c:
            row = c.execute("SELECT next_index, items_in FROM stream_meta WHERE ns=? AND stream=?",
                            (ns, stream)).fetchone()
            nxt, items_in = (int(row[0]), int(row[1])) if row else (0, 0)
            fresh = [b for b in change.batches if b.index >= nxt]
            if fresh:
                c.executemany(
                    "INSERT OR IGNORE INTO stream_batch(ns, stream, idx, producer, seq, n, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(ns, stream, b.index, b.producer, b.seq, b.n, b.payload) for b in fresh])
                last: dict[str, int] = {}
                for b in fresh:
                    last[b.producer] = max(b.seq, last.get(b.producer, -1))
                c.executemany(
                    "INSERT INTO stream_producer(ns, stream, producer, seq) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET seq=max(seq, excluded.seq)",
                    [(ns, stream, p, s) for p, s in last.items()])
                nxt, items_in = fresh[-1].index + 1, items_in + sum(b.n for b in fresh)
                c.execute("INSERT INTO stream_meta(ns, stream, next_index, items_in) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT DO UPDATE SET next_index=excluded.next_index, items_in=excluded.items_in",
                          (ns, stream, nxt, items_in))
            for name, pos in change.groups.items():
                if pos is None:
                    c.execute("DELETE FROM stream_group WHERE ns=? AND stream=? AND grp=?", (ns, stream, name))
                else:
                    c.execute("INSERT INTO stream_group(ns, stream, grp, position) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT DO UPDATE SET position=excluded.position",
                              (ns, stream, name, pos.encode()))
            if change.forget:
                c.executemany("DELETE FROM stream_producer WHERE ns=? AND stream=? AND producer=?",
                              [(ns, stream, p) for p in change.forget])
            if change.trim_below is not None:
                c.execute("DELETE FROM stream_batch WHERE ns=? AND stream=? AND idx<?",
                          (ns, stream, change.trim_below))

    def load(self, stream: str) -> StreamSnapshot:
        ns, c = self.namespace, self._conn()
        with sqlite_errors(f"stream {stream}: load from {self.url}"):
            row = c.execute("SELECT next_index, items_in FROM stream_meta WHERE ns=? AND stream=?",
                            (ns, stream)).fetchone()
            batches = [StoredBatch(int(i), p, int(s), int(n), bytes(d)) for i, p, s, n, d in c.execute(
                "SELECT idx, producer, seq, n, payload FROM stream_batch WHERE ns=? AND stream=? ORDER BY idx",
                (ns, stream))]
            groups = {g: GroupPosition.decode(bytes(p)) for g, p in c.execute(
                "SELECT grp, position FROM stream_group WHERE ns=? AND stream=?", (ns, stream))}
            producers = {p: int(s) for p, s in c.execute(
                "SELECT producer, seq FROM stream_producer WHERE ns=? AND stream=?", (ns, stream))}
        return StreamSnapshot(batches, groups, producers, int(row[0]) if row else 0, int(row[1]) if row else 0)

    def drop(self, stream: str) -> None:
        with sqlite_errors(f"stream {stream}: drop from {self.url}"), immediate(self._conn()) as c:
            for table in ("stream_batch", "stream_group", "stream_producer", "stream_meta"):
                c.execute(f"DELETE FROM {table} WHERE ns=? AND stream=?", (self.namespace, stream))  # noqa: S608

    def close(self) -> None:
        self._conns.close()
