"""Benchmark: typed items end to end through a stream vs a single-item ``ray.util.queue.Queue``.

    python -m bench.streams [--items 200000] [--queue-items 4000] [--acked-items 8000] [--capacity 100000]
                            [--store sqlite:///path/bench.db | redis://127.0.0.1:6379/15]

1. items/s from K producer actors (K = 1 and 4) through a stream hub to a driver that iterates
   typed models: each item is built and validated as a Pydantic model at the producer
   (``Codec.validate``, as ``ctx.emit`` does), batched by :class:`StreamProducer`, ``ray.put`` by
   the hub, fetched by object ref and validated back into models by :class:`Subscription`. The
   streams are **durable** (every batch written ahead to the store before the put is acknowledged;
   the embedded SQLite store in a temporary directory unless ``--store``), and with 4 producers
   also in memory only (``durable: false``) → ``ratio_durable_memory``;
2. the same with ``ray.util.queue.Queue``: K producer actors ``put`` one model at a time, the
   driver ``get``\\s one at a time, same run → ``ratio`` (durable stream / queue, 4 producers each)
   and ``ratio_memory`` (in-memory stream / queue);
3. acknowledged emits, as continuous automations make them (``emit`` returns once the hub holds
   the item): 4 producers emitting one item at a time (``stream_4p_acked1_items_per_s``) and lists of
   100 (``stream_4p_acked100_items_per_s``, ``ctx.emit_many``);
4. a full stream: producers fill a stream of ``--capacity`` items that nobody reads until they
   are held back; peak RSS of the hub process and the bytes it holds.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time

import ray
from pydantic import BaseModel
from ray.util.queue import Queue

from fleet_ray.actors.stream_hub import ensure_hub, get_hub
from fleet_ray.actors.stream_io import StreamProducer
from fleet_ray.client.subscription import Subscription
from fleet_ray.store import open_stream_log
from fleet_ray.streams.declare import Codec, model_path

NS = "bench-streams"
DURABLE_GOAL = 20_000  # items/s, 4 producers, durable
STORE: dict[str, str | None] = {"url": None}  # the store durable streams write ahead to (set in main)


class Tick(BaseModel):
    i: int
    producer: str
    value: float


@ray.remote(num_cpus=0)
class StreamSource:
    def __init__(self, stream: str, producer_id: str):
        self.stream = stream
        self.producer_id = producer_id
        self.codec = Codec(stream, Tick)
        self.producer = StreamProducer(stream, get_hub(NS, stream), producer_id, self.codec, batch_max=2000)

    async def produce(self, start: int, n: int, acked_batch: int = 0) -> int:
        codec, producer, pid = self.codec, self.producer, self.producer_id
        if acked_batch:  # each emit returns once the hub holds its items
            for lo in range(start, start + n, acked_batch):
                items = [codec.validate(Tick(i=i, producer=pid, value=i * 0.5))
                         for i in range(lo, min(lo + acked_batch, start + n))]
                await producer.emit_many(items, wait=True)
            return n
        for i in range(start, start + n):
            await producer.emit(codec.validate(Tick(i=i, producer=pid, value=i * 0.5)))
        await producer.flush()
        return n

    def ready(self) -> bool:
        return True


@ray.remote(num_cpus=0)
class QueueSource:
    def __init__(self, queue: Queue, producer_id: str):
        self.queue = queue
        self.producer_id = producer_id

    async def produce(self, start: int, n: int) -> int:
        for i in range(start, start + n):
            await self.queue.put_async(Tick(i=i, producer=self.producer_id, value=i * 0.5))
        return n

    def ready(self) -> bool:
        return True


def stream_rate(producers: int, items: int, tag: str, acked_batch: int = 0, durable: bool = True) -> float:
    stream = f"bench.{tag}"
    hub = ensure_hub(NS, stream, capacity=200_000, max_bytes=None, model=model_path(Tick),
                     store_url=STORE["url"], durable=durable)
    sub = Subscription(hub, stream, group="reader", model=Tick, durable=True)
    sources = [StreamSource.remote(stream, f"p{k}") for k in range(producers)]
    ray.get([s.ready.remote() for s in sources])
    per = items // producers
    t0 = time.perf_counter()
    refs = [s.produce.remote(k * per, per, acked_batch) for k, s in enumerate(sources)]
    got = 0
    last_seen: dict[str, int] = {}
    for batch in sub.batches(timeout_s=600):
        for t in batch.items:  # typed, and in order per producer
            assert isinstance(t, Tick) and t.i > last_seen.get(t.producer, -1)
            last_seen[t.producer] = t.i
        got += len(batch.items)
        if got >= per * producers:
            break
    dt = time.perf_counter() - t0
    ray.get(refs)
    sub.close()
    for s in sources:
        ray.kill(s)
    ray.kill(hub)
    _drop(stream)
    return got / dt


def _drop(stream: str) -> None:
    """Forget a benchmark stream's write-ahead copy (a rerun starts empty)."""
    if STORE["url"]:
        log = open_stream_log(STORE["url"], NS)
        log.drop(stream)
        log.close()


def queue_rate(producers: int, items: int) -> float:
    queue = Queue(maxsize=10_000)
    sources = [QueueSource.remote(queue, f"q{k}") for k in range(producers)]
    ray.get([s.ready.remote() for s in sources])
    per = items // producers
    t0 = time.perf_counter()
    refs = [s.produce.remote(k * per, per) for k, s in enumerate(sources)]
    got = [queue.get(timeout=600) for _ in range(per * producers)]
    dt = time.perf_counter() - t0
    ray.get(refs)
    assert all(isinstance(t, Tick) for t in got)
    for s in sources:
        ray.kill(s)
    queue.shutdown()
    return len(got) / dt


def full_stream(capacity: int, producers: int = 2) -> dict:
    stream = "bench.full"
    hub = ensure_hub(NS, stream, capacity=capacity, max_bytes=None, model=model_path(Tick),
                     store_url=STORE["url"])
    base = ray.get(hub.stats.remote())
    sources = [StreamSource.remote(stream, f"f{k}") for k in range(producers)]
    ray.get([s.ready.remote() for s in sources])
    refs = [s.produce.remote(k * capacity, capacity) for k, s in enumerate(sources)]  # 2x what fits
    peak_rss, st = base["rss_mb"], base
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        st = ray.get(hub.stats.remote())
        peak_rss = max(peak_rss, st["rss_mb"])
        if st["blocked_producers"] >= producers and st["depth"] >= capacity * 0.9:
            break
        time.sleep(0.05)
    for _ in range(20):  # held back: sample a little longer
        st = ray.get(hub.stats.remote())
        peak_rss = max(peak_rss, st["rss_mb"])
        time.sleep(0.05)
    out = {
        "full_stream_object_store_mb": _plasma_mb(),
        "full_stream_capacity": capacity,
        "full_stream_depth": st["depth"],
        "full_stream_payload_mb": round(st["bytes"] / 2**20, 2),
        "full_stream_blocked_producers": st["blocked_producers"],
        "full_stream_hub_rss_mb_empty": base["rss_mb"],
        "full_stream_hub_rss_mb_peak": peak_rss,
    }
    for s in sources:
        ray.kill(s)
    ray.kill(hub)
    _drop(stream)
    del refs  # still held back; killed with their actors
    return out


def _plasma_mb() -> float | None:
    """Object-store memory in use (the stream's batches live there, owned by the hub)."""
    try:
        from ray._private.internal_api import memory_summary

        m = re.search(r"Plasma memory usage ([\d.]+) MiB", memory_summary(stats_only=True))
        return float(m.group(1)) if m else None
    except Exception:  # a private API: report nothing rather than fail the benchmark
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--queue-items", type=int, default=4_000)
    ap.add_argument("--acked-items", type=int, default=8_000)
    ap.add_argument("--capacity", type=int, default=100_000)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--store", default=None, help="store URL durable streams write ahead to "
                    "(default: an embedded SQLite file in a temporary directory)")
    ap.add_argument("--skip-full", action="store_true", help="leave out the full-stream measurement")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="fleet-bench-streams-")
    STORE["url"] = args.store or f"sqlite://{tmp.name}/store.db"
    ray.init(address="local", num_cpus=args.num_cpus, namespace=NS, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    backend = STORE["url"].split(":", 1)[0]
    result: dict = {"bench": "streams", "cpus": args.num_cpus, "items": args.items, "queue_items": args.queue_items,
                    "store": backend}
    try:
        s1 = stream_rate(1, args.items // 2, "one")
        print(f"durable stream ({backend}), 1 producer: {s1:,.0f} items/s")
        s4 = stream_rate(4, args.items, "four")
        print(f"durable stream ({backend}), 4 producers: {s4:,.0f} items/s")
        m4 = stream_rate(4, args.items, "four-memory", durable=False)
        print(f"in-memory stream (durable: false), 4 producers: {m4:,.0f} items/s")
        q1 = queue_rate(1, args.queue_items // 2)
        print(f"ray.util.queue.Queue, 1 producer: {q1:,.0f} items/s")
        q4 = queue_rate(4, args.queue_items)
        print(f"ray.util.queue.Queue, 4 producers: {q4:,.0f} items/s")
        result.update(stream_1p_items_per_s=round(s1), stream_4p_items_per_s=round(s4),
                      stream_4p_durable_items_per_s=round(s4), stream_4p_memory_items_per_s=round(m4),
                      queue_1p_items_per_s=round(q1), queue_4p_items_per_s=round(q4),
                      ratio=round(s4 / q4, 2), ratio_1p=round(s1 / q1, 2), ratio_memory=round(m4 / q4, 2),
                      ratio_durable_memory=round(s4 / m4, 3),
                      durable_goal_items_per_s=DURABLE_GOAL, durable_goal_met=s4 >= DURABLE_GOAL)
        a1 = stream_rate(4, args.acked_items, "acked1", acked_batch=1)
        a100 = stream_rate(4, args.acked_items * 10, "acked100", acked_batch=100)
        print(f"stream, 4 producers, acknowledged emits: {a1:,.0f} items/s one at a time, {a100:,.0f} in lists of 100")
        result.update(stream_4p_acked1_items_per_s=round(a1), stream_4p_acked100_items_per_s=round(a100),
                      ratio_acked1=round(a1 / q4, 2))
        if not args.skip_full:
            full = full_stream(args.capacity)
            print(f"full stream: {full}")
            result.update(full)
    finally:
        ray.shutdown()
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
