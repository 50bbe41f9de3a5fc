"""Guardrail state on Redis (beside :mod:`~fleet_ray.store.redis`): every read-modify-write is one Lua
script, atomic on the server.

Time comes from the Redis server (``TIME``) so members on nodes whose clocks disagree still share
one bucket timeline; tests may inject a clock instead, which is then passed in as an argument.
The arithmetic mirrors :mod:`fleet_ray.store.guardrails` (token bucket, breaker window). Keys live
under ``fleet:<namespace>:campaign:`` (names from :mod:`fleet_ray.store.guardrails`). The connection
setup and the error translator are the store's own (:func:`~fleet_ray.store.redis.connect`,
:func:`~fleet_ray.store.redis.redis_errors`): an unreachable server is
:class:`~fleet_ray.errors.StoreUnavailable` naming the redacted URL.
"""

from __future__ import annotations

from collections.abc import Callable

from fleet_ray.redact import redact_url
from fleet_ray.store.guardrails import (
    DEFAULT_WINDOW,
    BreakerState,
    BreakerWindow,
    Bucket,
    Reservation,
    k_breaker,
    k_bucket,
    k_lease,
    k_shared,
    window_counts,
)
from fleet_ray.store.redis import connect, redis_errors

_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
"""

# KEYS[1] bucket; ARGV: now, rate, burst, max_wait → {granted, wait, tokens, ts}
_RESERVE = _NOW + """
local rate, burst, max_wait = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate) - 1
local wait = 0
if tokens < 0 then wait = -tokens / rate end
if wait > max_wait then
  return {0, string.format('%.6f', wait), '', ''}
end
if now > ts then ts = now end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'ts', string.format('%.6f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(((burst - tokens) / rate + 60) * 1000))
return {1, string.format('%.6f', wait), string.format('%.9f', tokens), string.format('%.6f', ts)}
"""

# KEYS[1] state hash, KEYS[2] window hash; ARGV: now, ok, window_s, bucket_s, failure_rate, min_samples
# → {tripped, just_tripped, samples, failures, tripped_at_ms, trip_samples, trip_failures}
_BREAKER_RECORD = _NOW + """
local ok, window_s, bucket_s = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rate, min_samples = tonumber(ARGV[5]), tonumber(ARGV[6])
local b = math.floor(now / bucket_s)
local n = math.max(1, math.ceil(window_s / bucket_s))
local oldest = b - n + 1
local bs = string.format('%d', b)
redis.call('HINCRBY', KEYS[2], 's:' .. bs, 1)
if ok == 0 then redis.call('HINCRBY', KEYS[2], 'f:' .. bs, 1) end
local all = redis.call('HGETALL', KEYS[2])
local s, f = 0, 0
for i = 1, #all, 2 do
  local bk = tonumber(string.sub(all[i], 3))
  if bk < oldest then
    redis.call('HDEL', KEYS[2], all[i])
  elseif bk <= b then
    if string.sub(all[i], 1, 1) == 's' then s = s + tonumber(all[i + 1]) else f = f + tonumber(all[i + 1]) end
  end
end
redis.call('PEXPIRE', KEYS[2], math.ceil(window_s * 1000) + 60000)
local st = redis.call('HMGET', KEYS[1], 'tripped', 'tripped_at_ms', 'trip_samples', 'trip_failures')
local just = 0
if st[1] ~= '1' then
  if s >= min_samples and f > rate * s then
    st = {'1', string.format('%d', math.floor(now * 1000)), tostring(s), tostring(f)}
    redis.call('HSET', KEYS[1], 'tripped', '1', 'tripped_at_ms', st[2], 'trip_samples', st[3], 'trip_failures', st[4])
    just = 1
  else
    redis.call('HSET', KEYS[1], 'tripped', '0')
  end
end
return {st[1] == '1' and 1 or 0, just, s, f, st[2] or '', st[3] or '', st[4] or ''}
"""

# KEYS[1] state, KEYS[2] window → was it tripped (then both are gone)
_BREAKER_RESET = """
local t = redis.call('HGET', KEYS[1], 'tripped')
redis.call('DEL', KEYS[1], KEYS[2])
if t == '1' then return 1 end
return 0
"""

# KEYS[1] lease; ARGV: now, owner, ttl → '0' when held by owner, else seconds left
_CLAIM = _NOW + """
local o = redis.call('HMGET', KEYS[1], 'owner', 'until')
if o[1] and o[1] ~= ARGV[2] and tonumber(o[2]) > now then
  return string.format('%.6f', tonumber(o[2]) - now)
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'until', string.format('%.6f', now + ttl))
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 60000)
return '0'
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def _opt_int(v: bytes | str | None) -> int | None:
    if v in (None, b"", ""):
        return None
    return int(v)


class RedisGuardrails:
    """Guardrail state on the Redis server at ``url``, under ``fleet:<namespace>:campaign:``."""

    def __init__(self, url: str, namespace: str = "default", clock: Callable[[], float] | None = None,
                 timeout_s: float = 5.0):
        self.url = redact_url(url)
        self._prefix = f"fleet:{namespace}:campaign:"
        self._clock = clock
        self._r = connect(url, timeout_s)
        self._reserve = self._r.register_script(_RESERVE)
        self._record = self._r.register_script(_BREAKER_RECORD)
        self._reset = self._r.register_script(_BREAKER_RESET)
        self._claim = self._r.register_script(_CLAIM)
        self._release = self._r.register_script(_RELEASE)

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        sec, usec = self._r.time()
        return sec + usec / 1e6

    def _k(self, key: str) -> str:
        return self._prefix + key

    def _breaker_keys(self, host: str) -> list[str]:
        return [self._k(k_breaker(host)), self._k("brw:" + host)]

    @redis_errors
    def reserve(self, host: str, rate: float, burst: int, max_wait_s: float) -> Reservation:
        max_wait = min(max_wait_s, 1e9)
        granted, wait, tokens, ts = self._reserve(
            keys=[self._k(k_bucket(host))], args=[self._now_arg(), repr(rate), burst, repr(max_wait)]
        )
        bucket = Bucket(float(tokens), float(ts)) if granted else Bucket(0.0, 0.0)
        return Reservation(bool(granted), float(wait), bucket)

    @redis_errors
    def breaker_record(self, host: str, ok: bool, cfg: BreakerWindow) -> tuple[BreakerState, bool]:
        tripped, just, s, f, at, ts, tf = self._record(
            keys=self._breaker_keys(host),
            args=[self._now_arg(), 1 if ok else 0, repr(cfg.window_s), repr(cfg.bucket_s),
                  repr(cfg.failure_rate), cfg.min_samples],
        )
        state = BreakerState(
            target=host, tripped=bool(tripped), samples=int(s), failures=int(f),
            tripped_at_ms=_opt_int(at), trip_samples=_opt_int(ts), trip_failures=_opt_int(tf),
        )
        return state, bool(just)

    def _state(self, host: str, raw: dict, window: dict, now: float, cfg: BreakerWindow) -> BreakerState:
        buckets: dict[int, tuple[int, int]] = {}
        for field, value in window.items():
            name = field.decode()
            bk = int(float(name[2:]))
            s, f = buckets.get(bk, (0, 0))
            buckets[bk] = (s + int(value), f) if name[0] == "s" else (s, f + int(value))
        counts = window_counts(buckets, now, cfg.window_s, cfg.bucket_s)
        return BreakerState(
            target=host, tripped=raw.get(b"tripped") == b"1", samples=counts.samples, failures=counts.failures,
            tripped_at_ms=_opt_int(raw.get(b"tripped_at_ms")), trip_samples=_opt_int(raw.get(b"trip_samples")),
            trip_failures=_opt_int(raw.get(b"trip_failures")),
        )

    @redis_errors
    def breaker_state(self, host: str, cfg: BreakerWindow | None = None) -> BreakerState:
        state_key, window_key = self._breaker_keys(host)
        with self._r.pipeline(transaction=True) as p:
            p.hgetall(state_key)
            p.hgetall(window_key)
            raw, window = p.execute()
        return self._state(host, raw, window, self._now(), cfg or DEFAULT_WINDOW)

    @redis_errors
    def breaker_states(self, cfg: BreakerWindow | None = None) -> list[BreakerState]:
        base = self._k(k_breaker(""))
        hosts = sorted({k.decode()[len(base):] for k in self._r.scan_iter(match=base + "*", count=1000)})
        return [self.breaker_state(h, cfg) for h in hosts]

    @redis_errors
    def breaker_reset(self, host: str) -> bool:
        return bool(self._reset(keys=self._breaker_keys(host)))

    @redis_errors
    def claim(self, name: str, owner: str, ttl_s: float) -> float:
        left = self._claim(keys=[self._k(k_lease(name))], args=[self._now_arg(), owner, repr(ttl_s)])
        return float(left)

    @redis_errors
    def release(self, name: str, owner: str) -> None:
        self._release(keys=[self._k(k_lease(name))], args=[owner])

    @redis_errors
    def shared_get(self, name: str) -> bytes | None:
        return self._r.get(self._k(k_shared(name)))

    @redis_errors
    def shared_put(self, name: str, value: bytes, ttl_s: float) -> None:
        self._r.set(self._k(k_shared(name)), value, px=max(1, int(ttl_s * 1000)))

    def close(self) -> None:
        self._r.close()
