"""The embedded default store: one SQLite file (WAL mode), no server to run.

Good for a laptop or a single head node: every process of the fleet's user on that host can open the
same file (0600 in a 0700 directory: :func:`private_location`; it holds proxy passwords).
Writers serialise with ``BEGIN IMMEDIATE``, so read-modify-write updates (``incr``, ``raise_to``)
are atomic across processes. For multi-host fleets use Redis.

The connection setup (:func:`connect`, :class:`ThreadConnections`, :func:`open_file`), the transaction
(:func:`immediate`) and the error translator (:func:`sqlite_errors`) are shared with the campaign
guardrail state on the same file (:mod:`fleet_ray.store.sqlite_guardrails`).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fleet_ray.errors import StoreError, StoreUnavailable
from fleet_ray.private_files import private_dir, private_file
from fleet_ray.settings import DEFAULT_HOME
from fleet_ray.store.base import LogEntry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    log TEXT NOT NULL, id TEXT NOT NULL, sort_key TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (log, id)
);
CREATE INDEX IF NOT EXISTS log_order ON log (log, sort_key, id);
"""
T = TypeVar("T")


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the embedded file as every user of it opens one: WAL, explicit transactions
    only (autocommit otherwise), and up to 30 s of waiting for another writer's lock."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class ThreadConnections:
    """One :func:`connect` connection per thread (a transaction belongs to the connection that began it)."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def close(self) -> None:
        """Close the calling thread's connection (the others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


@contextmanager
def sqlite_errors(what: str, url: str | None = None) -> Iterator[None]:
    """The SQLite backends' error translator, chained to the original: an ``OperationalError`` (the
    file is locked by another writer past the busy timeout, the disk is full, the file can't be
    opened or read) becomes :class:`~fleet_ray.errors.StoreUnavailable` naming ``url`` when given (the
    store can't be used right now; callers run degraded and retry); every other ``sqlite3`` error
    and file-system error becomes :class:`~fleet_ray.errors.StoreError` (``"<what>: <error>"``)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if url is not None:
            raise StoreUnavailable(url, f"{what}: {exc}") from exc
        raise StoreError(f"{what}: {exc}") from exc
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{what}: {exc}") from exc


def _translated(fn: Callable[..., T]) -> Callable[..., T]:
    """A :class:`SQLiteStore` method whose every failure is translated by :func:`sqlite_errors`."""

    @functools.wraps(fn)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> T:
        with sqlite_errors(f"embedded store {fn.__name__.lstrip('_')}", self.url):
            return fn(self, *args, **kwargs)

    return wrapper


def open_file(path: Path, schema: str, what: str) -> ThreadConnections:
    """Per-thread connections to ``path`` once its directory exists and ``schema`` is applied; failing
    that, :class:`~fleet_ray.errors.StoreError` (``"<what>: <error>"``)."""
    conns = ThreadConnections(path)
    with sqlite_errors(what):
        private_location(path)
        conns.get().executescript(schema)
    return conns


def private_location(path: Path) -> None:
    """Make the store file private before SQLite opens it: it holds proxy passwords and automation
    configs. A missing directory is created 0700 (``~/.fleet-ray`` is tightened to 0700 too; another
    existing directory is the operator's choice); the file is created, or tightened, 0600 without
    following a symlink, and so are its ``-wal``/``-shm`` files when they exist (SQLite creates them
    with the database file's mode). A file or ``~/.fleet-ray`` owned by another user is refused
    (:class:`~fleet_ray.private_files.UnsafePath`, a ``StoreError`` here)."""
    if str(path) in ("", ":memory:"):
        return
    parent = path.parent
    if not parent.exists() or parent.absolute() == DEFAULT_HOME.absolute():
        private_dir(parent)
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists() or side.is_symlink():
            private_file(side)


@contextmanager
def immediate(conn: sqlite3.Connection, begin_error: str | None = None) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction (writers serialise): committed when the block ends, rolled
    back when it raises. With ``begin_error``, failing to begin is translated by :func:`sqlite_errors`."""
    if begin_error is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        with sqlite_errors(begin_error):
            conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # a failed COMMIT (disk full, locked) leaves the transaction open: roll it back, or every later
        # BEGIN on this connection fails; SQLite may already have rolled back (then this is a no-op)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class SQLiteStore:
    def __init__(self, path: str | Path, namespace: str = "default"):
        self.path = Path(path).expanduser()
        self.url = f"sqlite://{self.path.resolve()}"
        self.namespace = namespace
        self._conns = open_file(self.path, _SCHEMA, f"can't open embedded store {self.url}")

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn())

    def _k(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    @_translated
    def ping(self) -> None:
        self._conn().execute("SELECT 1")

    @_translated
    def get(self, key: str) -> bytes | None:
        row = self._conn().execute("SELECT value FROM kv WHERE key=?", (self._k(key),)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    @_translated
    def put_many(self, items: Mapping[str, bytes]) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(self._k(k), bytes(v)) for k, v in items.items()],
            )

    @_translated
    def delete(self, *keys: str) -> int:
        with self._tx() as c:
            return sum(c.execute("DELETE FROM kv WHERE key=?", (self._k(k),)).rowcount for k in keys)

    @_translated
    def _update_int(self, key: str, fn) -> int:
        with self._tx() as c:
            row = c.execute("SELECT value FROM kv WHERE key=?", (self._k(key),)).fetchone()
            value = fn(int(row[0]) if row else 0)
            c.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (self._k(key), str(value).encode()),
            )
            return value

    def incr(self, key: str, amount: int = 1) -> int:
        return self._update_int(key, lambda v: v + amount)

    def raise_to(self, key: str, value: int) -> int:
        return self._update_int(key, lambda v: max(v, value))

    @_translated
    def keys(self, prefix: str = "") -> list[str]:
        base = self._k("")
        rows = self._conn().execute(
            "SELECT key FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(base) + len(prefix), base + prefix),
        )
        return [r[0][len(base):] for r in rows]

    @_translated
    def log_append(self, log: str, entries: list[LogEntry]) -> int:
        with self._tx() as c:
            return sum(
                c.execute(
                    "INSERT INTO log(log, id, sort_key, data) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (self._k(log), e.id, e.sort_key, bytes(e.data)),
                ).rowcount
                for e in entries
            )

    @_translated
    def log_range(self, log, start=None, end=None, limit=None) -> list[LogEntry]:
        sql = "SELECT id, sort_key, data FROM log WHERE log=?"
        args: list = [self._k(log)]
        if start is not None:
            sql += " AND sort_key >= ?"
            args.append(start)
        if end is not None:
            sql += " AND sort_key < ?"
            args.append(end)
        sql += " ORDER BY sort_key, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [LogEntry(i, k, bytes(d)) for i, k, d in self._conn().execute(sql, args)]

    @_translated
    def log_len(self, log: str) -> int:
        return self._conn().execute("SELECT count(*) FROM log WHERE log=?", (self._k(log),)).fetchone()[0]

    @_translated
    def log_trim(self, log: str, max_len: int) -> int:
        with self._tx() as c:
            return c.execute(
                "DELETE FROM log WHERE log=? AND id IN (SELECT id FROM log WHERE log=? "
                "ORDER BY sort_key DESC, id DESC LIMIT -1 OFFSET ?)",
                (self._k(log), self._k(log), max_len),
            ).rowcount

    def close(self) -> None:
        self._conns.close()
