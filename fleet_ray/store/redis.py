"""The production store on Redis.

Every key lives under ``fleet:<namespace>:`` (names in :mod:`fleet_ray.store.keys`). Multi-key
writes run in one MULTI/EXEC transaction; read-modify-write updates and idempotent log appends are
Lua scripts, so they are atomic however many supervisors, slots and drivers share the server.
Connection failures (and a server refusing writes for now) surface as
:class:`~fleet_ray.errors.StoreUnavailable` naming the (redacted) URL, every other Redis error as
:class:`~fleet_ray.errors.StoreError`.
The connection setup (:func:`connect`) and that translator (:func:`redis_errors`) are shared with the
campaign guardrail state on the same server (:mod:`fleet_ray.store.redis_guardrails`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

import redis as redis_lib

from fleet_ray.errors import StoreError, StoreUnavailable
from fleet_ray.redact import redact_url
from fleet_ray.store.base import LogEntry

T = TypeVar("T")

# KEYS[1] = key; ARGV[1] = value → max(current, value)
_RAISE_TO = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v > cur then redis.call('SET', KEYS[1], ARGV[1]); return v end
return cur
"""

# KEYS[1] = data hash, KEYS[2] = order zset, KEYS[3] = Redis Stream; ARGV[1] = the stream's approximate
# cap, then id1, sort1, data1, id2, ... New entries only (idempotent by id) go to all three: the hash
# and the zset answer queries in causal (HLC) order, the stream is for live tailing (XREAD) and
# replay by other tools, in arrival order.
_LOG_APPEND = """
local new = 0
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[2], 0, ARGV[i + 1] .. '\\0' .. ARGV[i])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'id', ARGV[i], 'data', ARGV[i + 2])
    new = new + 1
  end
end
return new
"""
LOG_STREAM_MAXLEN = 100_000

# KEYS[1] = data hash, KEYS[2] = order zset; ARGV[1] = max_len
_LOG_TRIM = """
local n = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if n <= 0 then return 0 end
local members = redis.call('ZRANGE', KEYS[2], 0, n - 1)
for _, m in ipairs(members) do
  local sep = string.find(m, '\\0', 1, true)
  redis.call('HDEL', KEYS[1], string.sub(m, sep + 1))
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - 1)
return n
"""


PASSWORD_FILE_ENV = "FLEET_STORE_PASSWORD_FILE"


def password_from_file() -> str | None:
    """The password in the file that ``FLEET_STORE_PASSWORD_FILE`` names (first line), or None when
    the variable is unset. A store URL handed to actors never carries a password (see
    :func:`fleet_ray.store.url_for_actors`); each host that opens the server reads it from this file."""
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.readline().strip() or None
    except OSError as exc:
        raise StoreError(f"{PASSWORD_FILE_ENV}={path}: can't read the store password: {exc.strerror}") from None


def connect(url: str, timeout_s: float) -> redis_lib.Redis:
    """A client as every user of the server opens one: connect and socket timeouts, idle health checks;
    the password from the URL, else from ``FLEET_STORE_PASSWORD_FILE``."""
    extra = {}
    if not urlsplit(url).password:
        password = password_from_file()
        if password:
            extra["password"] = password
    return redis_lib.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, health_check_interval=10, **extra
    )


# the server refuses writes for now (a replica, out of memory, a cluster moving, a script busy): the
# store is unavailable (callers run degraded and retry), not broken
_UNAVAILABLE = (
    redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.exceptions.ReadOnlyError,
    redis_lib.exceptions.OutOfMemoryError, redis_lib.exceptions.BusyLoadingError,
    redis_lib.exceptions.TryAgainError, redis_lib.exceptions.ClusterDownError,
)


def _reply_text(exc: redis_lib.RedisError) -> str:
    """The server's reply, first line, short: its error text names no password (the URL is redacted apart)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {redact_url(text[0])[:200]}" if text and text[0] else type(exc).__name__


def redis_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """The Redis backends' error translator, for methods of an object with a redacted ``url``, chained
    to the original: a connection error, a timeout, or a server that refuses writes for now
    (``READONLY``, ``OOM``, ``LOADING``, ``TRYAGAIN``, ``CLUSTERDOWN``; also an ``AuthenticationError``,
    a connection error) becomes :class:`~fleet_ray.errors.StoreUnavailable`; every other Redis error
    (``NOPERM``, a ``ResponseError``, a failed script, a bad reply) :class:`~fleet_ray.errors.StoreError`."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(self.url, _reply_text(exc)) from exc
        except redis_lib.RedisError as exc:
            raise StoreError(f"store at {self.url}: {fn.__name__}: {_reply_text(exc)}") from exc

    return wrapper


class RedisStore:
    def __init__(self, url: str, namespace: str = "default", timeout_s: float = 2.0, check: bool = True):
        self.url = redact_url(url)
        self._prefix = f"fleet:{namespace}:"
        self._r = connect(url, timeout_s)
        self._raise_to = self._r.register_script(_RAISE_TO)
        self._append = self._r.register_script(_LOG_APPEND)
        self._trim = self._r.register_script(_LOG_TRIM)
        if check:
            self.ping()

    def _k(self, key: str) -> str:
        return self._prefix + key

    @redis_errors
    def ping(self) -> None:
        self._r.ping()

    @redis_errors
    def get(self, key: str) -> bytes | None:
        return self._r.get(self._k(key))

    @redis_errors
    def put(self, key: str, value: bytes) -> None:
        self._r.set(self._k(key), value)

    @redis_errors
    def put_many(self, items: Mapping[str, bytes]) -> None:
        with self._r.pipeline(transaction=True) as p:
            for k, v in items.items():
                p.set(self._k(k), v)
            p.execute()

    @redis_errors
    def delete(self, *keys: str) -> int:
        return self._r.delete(*(self._k(k) for k in keys)) if keys else 0

    @redis_errors
    def incr(self, key: str, amount: int = 1) -> int:
        return int(self._r.incrby(self._k(key), amount))

    @redis_errors
    def raise_to(self, key: str, value: int) -> int:
        return int(self._raise_to(keys=[self._k(key)], args=[int(value)]))

    @redis_errors
    def keys(self, prefix: str = "") -> list[str]:
        n = len(self._prefix)
        found = self._r.scan_iter(match=self._k(prefix).replace("*", r"\*") + "*", count=1000)
        return sorted(k.decode()[n:] for k in found)

    def _log_keys(self, log: str) -> list[str]:
        return [self._k(f"log:{log}:data"), self._k(f"log:{log}:order")]

    def log_stream_key(self, log: str) -> str:
        """The Redis Stream that mirrors ``log`` in arrival order (``XREAD`` it to tail the log live)."""
        return self._k(f"log:{log}:stream")

    @redis_errors
    def log_append(self, log: str, entries: list[LogEntry]) -> int:
        if not entries:
            return 0
        args: list = [LOG_STREAM_MAXLEN]
        for e in entries:
            args += [e.id, e.sort_key, bytes(e.data)]
        return int(self._append(keys=[*self._log_keys(log), self.log_stream_key(log)], args=args))

    @redis_errors
    def log_range(self, log, start=None, end=None, limit=None) -> list[LogEntry]:
        data_key, order_key = self._log_keys(log)
        lo = b"[" + start.encode() if start is not None else b"-"
        hi = b"(" + end.encode() if end is not None else b"+"
        members = self._r.zrangebylex(order_key, lo, hi, start=0 if limit else None, num=limit)
        if not members:
            return []
        pairs = [m.split(b"\0", 1) for m in members]
        datas = self._r.hmget(data_key, [i for _, i in pairs])
        return [
            LogEntry(i.decode(), k.decode(), d) for (k, i), d in zip(pairs, datas, strict=True) if d is not None
        ]

    @redis_errors
    def log_len(self, log: str) -> int:
        return int(self._r.zcard(self._log_keys(log)[1]))

    @redis_errors
    def log_trim(self, log: str, max_len: int) -> int:
        return int(self._trim(keys=self._log_keys(log), args=[max_len]))

    def close(self) -> None:
        self._r.close()
