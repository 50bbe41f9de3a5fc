"""Sinks: write a stream to a JSONL file or to a Redis Stream (for durable replay).

A sink runs as its own consumer group of the stream, so it sees every item whatever else reads
the stream. Started with ``fleet.add_sink("scrape.products", JsonlSinkSpec(path=...))`` it runs in a
detached sink actor (it outlives the driver); :func:`drain_to` runs one in the calling process.
Delivery is at-least-once: a batch is acknowledged after it was written (and fsynced / stored),
so a sink that dies mid-batch may write that batch again. Redis entries carry the item's id
(``<producer>:<seq>:<n>``) and :func:`replay_redis` skips repeats, so a replay yields each item once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from fleet_ray.errors import StoreUnavailable, StreamError
from fleet_ray.redact import redact_url


class JsonlSinkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(description="File the items are appended to, one JSON object per line.")
    fsync: bool = Field(True, description="fsync after every batch (durable, slower).")


class RedisSinkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["redis"] = "redis"
    url: str = Field(description="redis://[user:password@]host:port/db (the password is never shown).")
    key: str = Field(min_length=1, description="The Redis Stream key (XADD).")
    maxlen: int | None = Field(None, ge=1, description="Approximate cap of the Redis Stream (XADD MAXLEN ~).")

    def shown(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": redact_url(self.url), "key": self.key, "maxlen": self.maxlen}


SinkSpec = Annotated[JsonlSinkSpec | RedisSinkSpec, Field(discriminator="kind")]
_SINK_SPEC: TypeAdapter[Any] = TypeAdapter(SinkSpec)


def parse_sink_spec(data: Any) -> JsonlSinkSpec | RedisSinkSpec:
    return data if isinstance(data, JsonlSinkSpec | RedisSinkSpec) else _SINK_SPEC.validate_python(data)


def item_id(producer: str, seq: int, n: int) -> str:
    return f"{producer}:{seq}:{n}"


class Sink(Protocol):
    def write(self, producer: str, seq: int, items: list[Any]) -> None: ...
    def close(self) -> None: ...


def _json_bytes(item: Any) -> bytes:
    if isinstance(item, BaseModel):
        return item.__pydantic_serializer__.to_json(item)
    return json.dumps(item, separators=(",", ":")).encode()


class JsonlSink:
    def __init__(self, spec: JsonlSinkSpec):
        self.path = Path(spec.path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = spec.fsync
        self._f = open(self.path, "ab")  # noqa: SIM115 - held open for the sink's life
        self.written = 0

    def write(self, producer: str, seq: int, items: list[Any]) -> None:
        self._f.write(b"".join(_json_bytes(i) + b"\n" for i in items))
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.written += len(items)

    def close(self) -> None:
        self._f.close()


class RedisStreamSink:
    def __init__(self, spec: RedisSinkSpec):
        import redis

        self.spec = spec
        self._r = redis.Redis.from_url(spec.url, socket_connect_timeout=5, socket_timeout=10)
        self.written = 0

    def write(self, producer: str, seq: int, items: list[Any]) -> None:
        import redis

        try:
            with self._r.pipeline(transaction=False) as p:
                for n, item in enumerate(items):
                    p.xadd(self.spec.key, {"id": item_id(producer, seq, n), "data": _json_bytes(item)},
                           maxlen=self.spec.maxlen, approximate=True)
                p.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(redact_url(self.spec.url), type(exc).__name__) from exc
        self.written += len(items)

    def close(self) -> None:
        self._r.close()


def open_sink(spec: Any) -> Sink:
    spec = parse_sink_spec(spec)
    return JsonlSink(spec) if isinstance(spec, JsonlSinkSpec) else RedisStreamSink(spec)


def drain_to(subscription: Any, sink: Sink, idle_s: float | None = None, timeout_s: float | None = None) -> int:
    """Copy a subscription's batches into ``sink`` (acknowledging each after it was written)."""
    n = 0
    for batch in subscription.batches(idle_s=idle_s, timeout_s=timeout_s):
        sink.write(batch.producer, batch.seq, batch.items)
        n += len(batch.items)
    return n


def replay_redis(url: str, key: str, model: type[BaseModel] | None = None, count: int = 1000) -> Iterator[Any]:
    """Every item a :class:`RedisStreamSink` wrote to ``key``, oldest first, each once, typed if ``model``."""
    import redis

    r = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    seen: set[str] = set()
    start = "-"
    try:
        while True:
            try:
                entries = r.xrange(key, min=start, max="+", count=count)
            except redis.RedisError as exc:
                raise StoreUnavailable(redact_url(url), type(exc).__name__) from exc
            if not entries:
                return
            for entry_id, fields in entries:
                iid = fields.get(b"id", b"").decode()
                if iid in seen:
                    continue
                seen.add(iid)
                data = fields.get(b"data")
                if data is None:
                    raise StreamError(f"redis stream {key!r} entry {entry_id!r} has no data field")
                yield model.model_validate_json(data) if model is not None else json.loads(data)
            start = "(" + entries[-1][0].decode()
    finally:
        r.close()
