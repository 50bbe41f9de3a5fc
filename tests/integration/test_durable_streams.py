"""Durable streams on a real Ray cluster: what ``emit`` acknowledged survives a SIGKILL of the stream
hub, its removal for good, and a restart of the whole head (Ray and supervisor) on the Redis store
and on the embedded one; readers and sinks ride through, in order per producer, every item once.

One single-node cluster per module (the head carries the ``producer`` tag); the head-restart tests
replace it with a fresh one on the same store, so they run last.
"""

from __future__ import annotations

import json
import uuid

import psutil
import pytest
import ray

from fleet_ray.streams.sinks import JsonlSinkSpec

from .conftest import REDIS_URL, sigkill, wait_for
from .stream_fixtures import single_node_cluster

HEALTH = {"period_s": 0.3, "timeout_s": 5}
STREAM = "src.numbers"


class Head:
    """The module's cluster, which a test may restart (a head-node restart: every actor dies)."""

    def __init__(self):
        self.cluster = single_node_cluster({"producer": 8}, num_cpus=4)

    def restart(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()
        self.cluster = single_node_cluster({"producer": 8}, num_cpus=4)

    def shutdown(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def head():
    h = Head()
    yield h
    h.shutdown()


def start_fleet(store_url: str, namespace: str):
    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    client = FleetClient(start_supervisor(store_url, namespace=namespace, tick_s=0.05), namespace)
    client.store_url = store_url
    return client


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path, redis_url):
    return f"sqlite://{tmp_path}/store.db" if request.param == "sqlite" else redis_url


def drop_redis_keys(namespace: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        found = list(r.scan_iter(match=f"fleet:{namespace}:*"))
        if found:
            r.delete(*found)
    finally:
        r.close()


@pytest.fixture
def fleet(head, store_url):
    ns = f"t-{uuid.uuid4().hex[:8]}"
    client = start_fleet(store_url, ns)
    yield client
    try:
        client.down(timeout_s=5)
    except Exception:
        pass
    if store_url.startswith("redis"):
        drop_redis_keys(ns)


def source(count: int, log_path=None, every_s: float = 0.0, **extra) -> dict:
    config = {"count": count, "every_s": every_s}
    if log_path is not None:
        config["log_path"] = str(log_path)
    return {"name": "src", "automation": "builtin.numbers", "config": config, "health": HEALTH,
            "placement": {"resources": {"producer": 1}}, **extra}


def hub_of(fleet):
    return ray.get_actor(f"fleet:stream:{STREAM}", namespace=fleet.namespace)


def hub_stats(fleet) -> dict:
    return ray.get(hub_of(fleet).stats.remote(), timeout=10)


def acked(log) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def first_producer(fleet) -> str:
    slot = fleet.wait_ready(120).pool("src").slots[0]
    return f"fleet:src:0:g{slot.generation}"


def read_producer(sub, producer: str, n: int, timeout_s: float = 120) -> list[int]:
    """The numbers of ``producer`` in delivery order, until ``n`` of them arrived."""
    got: list[int] = []
    for batch in sub.batches(idle_s=15.0, timeout_s=timeout_s):
        if batch.producer == producer:
            got += [x.n for x in batch.items]
            if len(got) >= n:
                break
    return got


def kill_hub(fleet) -> int:
    st = hub_stats(fleet)
    sigkill(st["pid"])
    wait_for(lambda: not psutil.pid_exists(st["pid"]), 30)
    return st["pid"]


def test_every_acknowledged_emit_survives_a_sigkill_of_the_hub(fleet, tmp_path):
    """3,000 numbers into a stream nobody reads yet; the hub is SIGKILLed after some hundreds were
    acknowledged; a reader that subscribes afterwards from the earliest item gets all 3,000, in order."""
    log = tmp_path / "acked.txt"
    fleet.apply({"pools": [source(3000, log, every_s=0.001)]})
    producer = first_producer(fleet)
    wait_for(lambda: len(acked(log)) >= 300, 60)
    before = hub_stats(fleet)
    kill_hub(fleet)
    at_kill = len(acked(log))
    assert 300 <= at_kill < 3000, at_kill  # killed mid-stream
    after = wait_for(lambda: (s := _try_stats(fleet)) and s["incarnation"] != before["incarnation"] and s, 60)
    assert after["durable"] and after["store"]["restored"]["items"] >= at_kill  # rebuilt from the store
    wait_for(lambda: len(acked(log)) == 3000, 120)  # the producer carried on into the new hub
    with fleet.subscribe(STREAM, start="earliest") as sub:
        got = read_producer(sub, producer, 3000)
    assert got == list(range(3000))  # every acknowledged emit, once, in the producer's order
    assert wait_for(lambda: (s := _try_stats(fleet)) and s["items_in"] == 3000 and s, 30)["items_in"] == 3000


def _try_stats(fleet) -> dict | None:
    try:
        return hub_stats(fleet)
    except Exception:
        return None


def test_a_live_reader_and_a_sink_ride_through_a_hub_sigkill(fleet, tmp_path):
    path = tmp_path / "numbers.jsonl"
    fleet.apply({"pools": [source(2000, every_s=0.002)]})
    fleet.wait_ready(120)
    fleet.add_sink(STREAM, JsonlSinkSpec(path=str(path), fsync=False), name="file")
    with fleet.subscribe(STREAM, group="live", durable=True) as sub:
        got = [x.n for x in sub.take(400, timeout_s=60)]
        wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= 200, 60)
        kill_hub(fleet)  # the reader holds refs the dead hub owned; the sink is mid-stream
        got += [x.n for x in sub.take(1600, timeout_s=120)]
    assert got == list(range(2000))  # no OwnerDiedError, nothing lost, nothing twice, in order
    wait_for(lambda: len(path.read_text().splitlines()) >= 2000, 120)
    written = [json.loads(line)["n"] for line in path.read_text().splitlines()]
    assert written == list(range(2000))  # the sink resumed from its group's acknowledged position
    sink = ray.get_actor(f"fleet:sink:{STREAM}:file", namespace=fleet.namespace)
    assert ray.get(sink.stats.remote())["written"] == 2000


def test_a_hub_gone_for_good_is_made_again_with_what_it_held(fleet, tmp_path):
    log = tmp_path / "acked.txt"
    fleet.apply({"pools": [source(1500, log, every_s=0.001, streams={"numbers": {"capacity": 5000}})]})
    producer = first_producer(fleet)
    wait_for(lambda: len(acked(log)) >= 200, 60)
    old = hub_stats(fleet)
    ray.kill(hub_of(fleet), no_restart=True)  # not restarted by Ray: the supervisor (or producer) makes it again
    new = wait_for(lambda: (s := _try_stats(fleet)) and s["pid"] != old["pid"] and s, 60)
    assert new["capacity"] == 5000 and new["durable"]  # made with the stream's options
    wait_for(lambda: len(acked(log)) == 1500, 120)
    with fleet.subscribe(STREAM) as sub:
        assert read_producer(sub, producer, 1500) == list(range(1500))


def test_an_in_memory_stream_keeps_todays_path(fleet):
    fleet.apply({"pools": [source(300, streams={"numbers": {"durable": False}})]})
    fleet.wait_ready(120)
    wait_for(lambda: (s := _try_stats(fleet)) and s["items_in"] == 300, 60)
    st = hub_stats(fleet)
    assert st["durable"] is False and st["store"] is None
    with fleet.subscribe(STREAM) as sub:
        assert [x.n for x in sub.take(300, timeout_s=60)] == list(range(300))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_a_stream_flows_on_after_the_whole_head_restarts(head, tmp_path, redis_url, backend):
    """The head restarts (Ray and supervisor, every actor dies) while a stream flows: the supervisor
    recovers on the same store, the hub rebuilds from it, a durable reader group reads on from what
    it acknowledged, and the sink is started again."""
    url = redis_url if backend == "redis" else f"sqlite://{tmp_path}/store.db"
    ns = f"t-{uuid.uuid4().hex[:8]}"
    log, path = tmp_path / "acked.txt", tmp_path / "numbers.jsonl"
    fleet = start_fleet(url, ns)
    fleet.apply({"pools": [source(100_000, log, every_s=0.002)]})
    producer = first_producer(fleet)
    fleet.add_sink(STREAM, JsonlSinkSpec(path=str(path), fsync=False), name="file")
    with fleet.subscribe(STREAM, group="reader", durable=True) as sub:
        first = [x.n for x in sub.take(200, timeout_s=60)]
    assert first == list(range(200))
    wait_for(lambda: len(acked(log)) >= 600, 60)

    head.restart()  # every actor of the old head dies with it, mid-stream
    k = len(acked(log))
    fleet = start_fleet(url, ns)
    try:
        assert fleet.wait_ready(120).pool("src").slots[0].generation > int(producer.rsplit("g", 1)[1])
        with fleet.subscribe(STREAM, group="reader", durable=True) as sub:
            rest = read_producer(sub, producer, k - 200)
        assert rest[: k - 200] == list(range(200, k))  # every acknowledged emit, from where the group was
        assert rest == list(range(200, 200 + len(rest)))  # in order, nothing twice
        wait_for(lambda: path.exists() and set(range(k)) <= {json.loads(x)["n"] for x in path.read_text().split()},
                 120)  # the sink was started again and caught up (at-least-once across the restart)
    finally:
        fleet.down(timeout_s=5)
        if backend == "redis":
            drop_redis_keys(ns)
