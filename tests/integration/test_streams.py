"""Typed streams on a real Ray cluster: pools wired into pipelines, back-pressure, producer death,
invalid items, driver subscriptions (sync and async) and sinks to JSONL and a real Redis Stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import psutil
import pytest
import ray

from fleet_ray.builtins.streams import Doubled, Number
from fleet_ray.errors import SpecError
from fleet_ray.ray_boundary import get
from fleet_ray.streams.sinks import JsonlSinkSpec, RedisSinkSpec, replay_redis

from .conftest import make_cluster, sigkill, wait_for

HEALTH = {"period_s": 0.3, "timeout_s": 5}


@pytest.fixture(scope="module")
def cluster():
    """Head plus one worker tagged ``producer``: producers run on another node than the stream hub."""
    import ray

    cluster, nodes = make_cluster(workers=[{"num_cpus": 2, "resources": {"producer": 8}}])
    cluster.worker_nodes_list = nodes
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def source(name="src", count=100, **extra):
    pool = {"name": name, "automation": "builtin.numbers", "config": {"count": count}, "health": HEALTH,
            "placement": {"resources": {"producer": 1}}}
    pool.update(extra)
    return pool


def relay(name, slots=1, stream="src.numbers"):
    return {"name": name, "automation": "builtin.relay", "slots": slots, "inputs": {"numbers": stream}, "health": HEALTH}


def stream_stats(fleet, name):
    return next((s for s in fleet.streams() if s["name"] == name and "depth" in s), None)


def take_batches(sub, n, timeout_s=90, producer=None):
    """Batches until ``n`` items (of ``producer``, if given) arrived."""
    out, count = [], 0
    for batch in sub.batches(timeout_s=timeout_s):
        if producer is None or batch.producer == producer:
            out.append(batch)
            count += len(batch.items)
        if count >= n:
            return out
    raise TimeoutError(f"{count}/{n} items within {timeout_s}s")


def test_two_downstream_pools_each_get_every_item_in_each_producers_order(fleet):
    fleet.apply({"pools": [source(count=400), relay("one", slots=2), relay("two")]})
    fleet.wait_ready(120)
    with fleet.subscribe("one.doubled") as one, fleet.subscribe("two.doubled") as two:
        items_one = [d for b in take_batches(one, 400) for d in b.items]
        got_two = two.take(400, timeout_s=90)
    assert all(isinstance(d, Doubled) for d in items_one)
    assert sorted(d.n for d in items_one) == list(range(400))  # pool one's group: each item once
    assert [d.n for d in got_two] == list(range(400))  # pool two, one slot: every item, in order
    assert all(d.doubled == 2 * d.n for d in got_two)
    for relay_slot in {d.relay for d in items_one}:  # per producer, order is kept
        ns = [d.n for d in items_one if d.relay == relay_slot]
        assert ns == sorted(ns)
    src = wait_for(lambda: (s := stream_stats(fleet, "src.numbers")) and s["items_in"] == 400 and s, 10)  # polled 1/s
    assert set(src["groups"]) == {"one", "two"}
    api = {s.name: s.model_dump() for s in ray.get(fleet.supervisor.streams.remote())}
    assert api["src.numbers"]["producers"] == ["src"] and api["src.numbers"]["consumers"] == ["one", "two"]
    assert api["src.numbers"]["items_emitted"] == 400


def test_items_outlive_the_slot_that_emitted_them(fleet):
    fleet.apply({"pools": [source(count=1000)]})
    st = fleet.wait_ready(120)
    victim = st.pool("src").slots[0]
    wait_for(lambda: (s := stream_stats(fleet, "src.numbers")) and s["items_in"] >= 1000, 60)
    sigkill(victim.pid)
    wait_for(lambda: not psutil.pid_exists(victim.pid), 30)
    # the producer's process is gone; its batches were ray.put by the hub, which owns them
    first_generation = f"fleet:src:0:g{victim.generation}"
    with fleet.subscribe("src.numbers") as sub:
        got = [x.n for b in take_batches(sub, 1000, producer=first_generation) for x in b.items]
    assert got == list(range(1000))


def test_every_emit_that_returned_survives_a_sigkill_of_the_producer_mid_stream(fleet, tmp_path):
    log = tmp_path / "acked.txt"
    fleet.apply({"pools": [source(count=100_000, config={"count": 100_000, "log_path": str(log)})]})
    st = fleet.wait_ready(120)
    victim = st.pool("src").slots[0]
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 300, 60)
    sigkill(victim.pid)  # mid-stream: emits in flight, nothing flushed on purpose
    wait_for(lambda: not psutil.pid_exists(victim.pid), 30)
    acked = [int(x) for x in log.read_text().split()]
    first_generation = f"fleet:src:0:g{victim.generation}"
    got = []
    with fleet.subscribe("src.numbers") as sub:
        for batch in sub.batches(idle_s=3.0, timeout_s=120):
            if batch.producer == first_generation:
                got += [x.n for x in batch.items]
            elif len(got) >= len(acked):
                break  # the next generation is emitting: the first one's items were all delivered
    assert got[: len(acked)] == acked == list(range(len(acked)))  # every acknowledged emit, in order
    assert got == list(range(len(got)))  # and nothing else but the next ones in line


def test_a_full_stream_holds_its_producer_back_with_bounded_memory(fleet):
    fleet.apply({"pools": [source(count=3000, streams={"numbers": {"capacity": 300, "batch_max": 50}})]})
    fleet.wait_ready(120)
    hub = ray.get_actor("fleet:stream:src.numbers", namespace=fleet.namespace)
    wait_for(lambda: ray.get(hub.stats.remote())["blocked_producers"] >= 1, 60)
    # held back: for a while, nothing beyond the bound enters the stream or leaves the producer's buffer
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        st = ray.get(hub.stats.remote())
        assert st["items_in"] <= 300 and st["depth"] <= 300 and st["bytes"] <= 300 * 64
    emitted = fleet.status().pool("src").slots[0].progress.get("emitted", 0)
    assert emitted <= 300 + 100  # the stream's bound plus the producer's own bounded buffer
    wait_for(lambda: any(e["kind"] == "stream.backpressure" for e in fleet.events()), 30)
    got, depths = [], []
    with fleet.subscribe("src.numbers") as sub:
        for batch in sub.batches(timeout_s=120):
            got += [x.n for x in batch.items]
            depths.append(ray.get(hub.stats.remote())["depth"])
            if len(got) >= 3000:
                break
    assert got == list(range(3000)) and max(depths) <= 300


def test_invalid_items_are_stopped_at_the_producer(fleet):
    fleet.apply({"pools": [source(count=100, config={"count": 100, "invalid_every": 10})]})
    fleet.wait_ready(120)
    with fleet.subscribe("src.numbers") as sub:
        got = sub.take(100, timeout_s=60)
        assert list(sub.iter(idle_s=1.0)) == []  # nothing else came through
    assert [x.n for x in got] == list(range(100))
    rejected = wait_for(lambda: [e for e in fleet.events(500) if e["kind"] == "stream.item_invalid"] or None, 30)
    assert rejected[0]["data"]["stream"] == "src.numbers" and rejected[0]["data"]["errors"][0]["loc"] == "n"
    wait_for(lambda: len([e for e in fleet.events(500) if e["kind"] == "stream.item_invalid"]) == 10, 30)


def test_async_iteration_and_sinks_to_jsonl_and_a_redis_stream(fleet, tmp_path, redis_url):
    import redis

    key = f"fleet-test:{uuid.uuid4().hex[:8]}:numbers"
    fleet.apply({"pools": [source(count=250)]})
    fleet.add_sink("src.numbers", JsonlSinkSpec(path=str(tmp_path / "numbers.jsonl")), name="file")
    fleet.add_sink("src.numbers", RedisSinkSpec(url=redis_url, key=key), name="redis")
    fleet.wait_ready(120)

    async def consume():
        sub = fleet.subscribe("src.numbers")
        out = []
        async for n in sub:
            out.append(n)
            if len(out) == 250:
                break
        sub.close()
        return out

    got = asyncio.run(consume())
    assert [x.n for x in got] == list(range(250)) and all(isinstance(x, Number) for x in got)
    path = tmp_path / "numbers.jsonl"
    wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= 250, 60)
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == list(range(250))
    r = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: r.xlen(key) >= 250, 60)
        replayed = list(replay_redis(redis_url, key, Number))
        assert [x.n for x in replayed] == list(range(250))
    finally:
        r.delete(key)
        r.close()


def test_a_wiring_error_changes_nothing(fleet):
    fleet.apply({"pools": [source(count=10), relay("one")]})
    before = fleet.wait_ready(120)
    bad = {"pools": [source(count=10), relay("one", stream="src.prices")]}
    with pytest.raises(SpecError):
        fleet.apply(bad)  # the client checks first
    with pytest.raises(SpecError) as info:
        get(fleet.supervisor.apply.remote(bad))  # and so does the supervisor
    assert info.value.errors[0]["loc"] == "pools.one.inputs.numbers"
    assert "pool 'src' has no output 'prices'" in info.value.errors[0]["msg"]
    after = fleet.status()
    assert [(s.id, s.generation, s.pid) for p in after.pools for s in p.slots] == \
        [(s.id, s.generation, s.pid) for p in before.pools for s in p.slots]
    assert ray.get(fleet.supervisor.spec.remote()).pools[1].inputs == {"numbers": "src.numbers"}
