"""The streams' write-ahead copy on Redis (beside :mod:`~fleet_ray.store.redis`).

Per fleet stream, under the store's ``fleet:<namespace>:`` prefix (names in :mod:`fleet_ray.store.keys`):

- a **Redis Stream** of the retained batches, ``XADD`` with the batch index as the entry id
  (``<index>-1``, fields ``p`` producer, ``s`` seq, ``n`` items, ``d`` the encoded batch), so other
  tools can ``XRANGE`` it too; retention is ``XTRIM MINID`` below the lowest position every
  consumer group acknowledged;
- a hash of the consumer groups' acknowledged positions, a hash of the producers' last sequence
  numbers, and a hash with the next index and the items ever accepted.

One :meth:`RedisStreamLog.write` is one Lua script: the new batches, the positions, the producers
and the trim land together or not at all, and a retried write skips what it already added.
"""

from __future__ import annotations

from fleet_ray.redact import redact_url
from fleet_ray.store import keys
from fleet_ray.store.redis import connect, redis_errors
from fleet_ray.store.stream_log import GroupPosition, StoredBatch, StreamSnapshot, StreamWrite

# KEYS: batches stream, groups hash, producers hash, meta hash
# ARGV: nb, nb × (index, producer, seq, n, payload), ng, ng × (group, position or ''), nf, nf × producer, trim or ''
_WRITE = """
local pos = 1
local nb = tonumber(ARGV[pos]); pos = pos + 1
local nxt = tonumber(redis.call('HGET', KEYS[4], 'next') or '0')
local items = tonumber(redis.call('HGET', KEYS[4], 'items_in') or '0')
local wrote = 0
for b = 1, nb do
  local idx = tonumber(ARGV[pos])
  if idx >= nxt then
    redis.call('XADD', KEYS[1], ARGV[pos] .. '-1', 'p', ARGV[pos + 1], 's', ARGV[pos + 2], 'n', ARGV[pos + 3],
               'd', ARGV[pos + 4])
    nxt = idx + 1
    items = items + tonumber(ARGV[pos + 3])
    local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[pos + 1]) or '-1')
    if tonumber(ARGV[pos + 2]) > cur then redis.call('HSET', KEYS[3], ARGV[pos + 1], ARGV[pos + 2]) end
    wrote = wrote + 1
  end
  pos = pos + 5
end
if wrote > 0 then
  redis.call('HSET', KEYS[4], 'next', string.format('%d', nxt), 'items_in', string.format('%d', items))
end
local ng = tonumber(ARGV[pos]); pos = pos + 1
for g = 1, ng do
  if ARGV[pos + 1] == '' then redis.call('HDEL', KEYS[2], ARGV[pos])
  else redis.call('HSET', KEYS[2], ARGV[pos], ARGV[pos + 1]) end
  pos = pos + 2
end
local nf = tonumber(ARGV[pos]); pos = pos + 1
for f = 1, nf do
  redis.call('HDEL', KEYS[3], ARGV[pos]); pos = pos + 1
end
if ARGV[pos] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', ARGV[pos] .. '-0') end
return wrote
"""


class RedisStreamLog:
    def __init__(self, url: str, namespace: str = "default", timeout_s: float = 5.0):
        self.url = redact_url(url)
        self._prefix = f"fleet:{namespace}:"
        self._r = connect(url, timeout_s)
        self._write = self._r.register_script(_WRITE)

    def _keys(self, stream: str) -> list[str]:
        return [self._prefix + k for k in (keys.stream_batches(stream), keys.stream_groups(stream),
                                           keys.stream_producers(stream), keys.stream_meta(stream))]

    @redis_errors
    def write(self, stream: str, change: StreamWrite) -> None:
        args: list = [len(change.batches)]
        for b in change.batches:
            args += [b.index, b.producer, b.seq, b.n, b.payload]
        args.append(len(change.groups))
        for name, pos in change.groups.items():
            args += [name, pos.encode() if pos is not None else b""]
        args += [len(change.forget), *change.forget]
        args.append("" if change.trim_below is None else int(change.trim_below))
        self._write(keys=self._keys(stream), args=args)

    @redis_errors
    def load(self, stream: str) -> StreamSnapshot:
        batches_key, groups_key, producers_key, meta_key = self._keys(stream)
        with self._r.pipeline(transaction=True) as p:
            p.hgetall(meta_key)
            p.xrange(batches_key, "-", "+")
            p.hgetall(groups_key)
            p.hgetall(producers_key)
            meta, entries, groups, producers = p.execute()
        return StreamSnapshot(
            batches=[StoredBatch(int(eid.split(b"-")[0]), f[b"p"].decode(), int(f[b"s"]), int(f[b"n"]), f[b"d"])
                     for eid, f in entries],
            groups={g.decode(): GroupPosition.decode(v) for g, v in groups.items()},
            producers={p.decode(): int(s) for p, s in producers.items()},
            next_index=int(meta.get(b"next", 0)),
            items_in=int(meta.get(b"items_in", 0)),
        )

    @redis_errors
    def drop(self, stream: str) -> None:
        self._r.delete(*self._keys(stream))

    def close(self) -> None:
        self._r.close()

