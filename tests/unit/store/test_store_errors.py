"""Every store failure is a StoreError at the store boundary, chained to the original (issue 15, item 2)."""

from __future__ import annotations

import sqlite3

import pytest
import redis

from fleet_ray.errors import StoreError, StoreUnavailable
from fleet_ray.store.base import LogEntry
from fleet_ray.store.redis import RedisStore
from fleet_ray.store.sqlite import SQLiteStore

SECRET = "Zq@9xLr2"


def test_a_locked_sqlite_file_is_unavailable_not_a_raw_sqlite_error(tmp_path):
    store = SQLiteStore(tmp_path / "s.db", "t")
    store.put("k", b"1")
    store._conn().execute("PRAGMA busy_timeout=20")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        for write in (lambda: store.put("k", b"2"), lambda: store.raise_to("g", 3), lambda: store.delete("k"),
                      lambda: store.log_append("events", [LogEntry("a", "1", b"x")]),
                      lambda: store.log_trim("events", 0)):
            with pytest.raises(StoreUnavailable, match="locked") as err:
                write()
            assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put("k", b"3")  # the failed transactions left nothing open on the connection
    assert store.get("k") == b"3"


def test_other_sqlite_errors_are_store_errors(tmp_path):
    store = SQLiteStore(tmp_path / "s.db", "t")
    store._conn().execute("DROP TABLE kv")
    with pytest.raises(StoreError) as err:
        store.get("k")
    assert isinstance(err.value.__cause__, sqlite3.Error)


class Refusing:
    """A redis client whose every command fails with ``exc``."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise self.exc
        return fail


@pytest.mark.parametrize(("exc", "kind"), [
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), StoreUnavailable),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), StoreUnavailable),
    (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), StoreUnavailable),
    (redis.exceptions.AuthenticationError("invalid username-password pair"), StoreUnavailable),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'set' command"), StoreError),
    (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), StoreError),
    (redis.exceptions.DataError("Invalid input of type: 'NoneType'"), StoreError),
])
def test_every_redis_error_is_a_store_error_naming_the_redacted_url(exc, kind):
    store = RedisStore(f"redis://default:{SECRET}@127.0.0.1:1/0", "t", check=False)
    store._r = Refusing(exc)
    for call in (lambda: store.put("k", b"v"), lambda: store.get("k"), lambda: store.delete("k"),
                 lambda: store.incr("k"), lambda: store.log_len("events"), lambda: store.ping()):
        with pytest.raises(kind) as err:
            call()
        assert err.value.__cause__ is exc
        assert SECRET not in str(err.value) and "127.0.0.1" in str(err.value)
