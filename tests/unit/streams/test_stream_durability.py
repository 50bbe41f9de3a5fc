"""Durable streams without Ray: the hub writes what it accepts ahead to its stream log before it
acknowledges, and a new hub on the same log (a restart) starts where the old one stopped."""

from __future__ import annotations

import asyncio

from fleet_ray.actors.stream_hub import StreamHubCore
from fleet_ray.builtins.streams import Number
from fleet_ray.store.memory_stream_log import MemoryStreamLog
from fleet_ray.streams.declare import Codec, StreamOptions
from fleet_ray.testing import FakeClock

CODEC = Codec("a.numbers", Number)


def hub(log, capacity=1000, **kw) -> StreamHubCore:
    return StreamHubCore("a.numbers", capacity=capacity, clock=kw.pop("clock", FakeClock()), put_object=lambda b: b,
                         stream_log=log, **kw)


def batch(*ns: int) -> bytes:
    return CODEC.encode([Number(n=n) for n in ns])


def items_of(entries) -> list[int]:
    return [x.n for e in entries for x in CODEC.decode(e[1])]


async def settle(h: StreamHubCore) -> None:
    """Let the hub's writer flush what is dirty (acks, trims) — a put already waits for its own write."""
    for _ in range(20):
        await asyncio.sleep(0)
        if h.wal is None or h.wal.idle:
            await asyncio.sleep(0.01)
            return
    await asyncio.sleep(0.02)


def test_a_put_is_acknowledged_only_once_the_store_holds_the_batch():
    async def go():
        log = MemoryStreamLog()
        h = hub(log)
        log.available = False
        put = asyncio.create_task(h.put("p", 0, batch(1, 2), 2))
        await asyncio.sleep(0.1)
        assert not put.done() and h.stats()["store"]["errors"] >= 1  # retried, not acknowledged
        h.add_group("g")
        assert await h.pull("g", "c", wait_s=0) == []  # not visible before it is durable either
        log.available = True
        assert (await asyncio.wait_for(put, 5))["accepted"]
        assert [b.index for b in log.load("a.numbers").batches] == [0]
        assert items_of(await h.pull("g", "c", wait_s=0)) == [1, 2]

    asyncio.run(go())


def test_a_restarted_hub_reloads_unacknowledged_batches_and_each_group_resumes():
    async def go():
        log = MemoryStreamLog()
        h = hub(log)
        h.add_group("fast")
        h.add_group("slow")
        for seq in range(6):
            await h.put("p", seq, batch(seq), 1)
        got = await h.pull("fast", "f", max_items=4, wait_s=0)
        await h.pull("fast", "f", max_items=0, wait_s=0, ack=[e[0] for e in got])  # fast acked 0..3
        held = await h.pull("slow", "s", max_items=2, wait_s=0)  # slow leased 0..1, never acked
        assert items_of(held) == [0, 1]
        await settle(h)

        again = hub(log)  # the old hub died (SIGKILL): a new one on the same log
        assert again.stats()["depth"] == 6 and again.stats()["items_in"] == 6
        assert sorted(again.groups()) == ["fast", "slow"]
        assert items_of(await again.pull("fast", "f2", max_items=100, wait_s=0)) == [4, 5]
        assert items_of(await again.pull("slow", "s2", max_items=100, wait_s=0)) == [0, 1, 2, 3, 4, 5]
        assert (await again.put("p", 5, batch(99), 1))["duplicate"]  # the producer's retry of seq 5
        assert (await again.put("p", 6, batch(6), 1))["accepted"]
        assert items_of(await again.pull("fast", "f2", max_items=100, wait_s=0)) == [6]

    asyncio.run(go())


def test_acknowledged_batches_are_trimmed_from_the_store_copy_and_capacity_still_holds():
    async def go():
        log = MemoryStreamLog()
        h = hub(log, capacity=4)
        h.add_group("g")
        for seq in range(4):
            await h.put("p", seq, batch(seq), 1)
        blocked = asyncio.create_task(h.put("p", 4, batch(4), 1))
        await asyncio.sleep(0.02)
        assert not blocked.done() and h.stats()["blocked_producers"] == 1
        got = await h.pull("g", "c", max_items=3, wait_s=0)
        await h.pull("g", "c", max_items=0, wait_s=0, ack=[e[0] for e in got])
        await asyncio.wait_for(blocked, 2)
        await settle(h)
        snap = log.load("a.numbers")
        assert [b.index for b in snap.batches] == [3, 4]  # 0..2 were acknowledged by every group
        assert snap.groups["g"].next == 3 and snap.groups["g"].pending == [] and snap.next_index == 5

        again = hub(log, capacity=4)
        assert items_of(await again.pull("g", "c", max_items=10, wait_s=0)) == [3, 4]

    asyncio.run(go())


def test_a_stream_with_no_group_yet_keeps_everything_across_a_restart():
    async def go():
        log = MemoryStreamLog()
        h = hub(log)
        for seq in range(300):
            await h.put("p", seq, batch(seq), 1)
        again = hub(log)  # killed before anyone read
        again.add_group("late", start="earliest")
        got = await again.pull("late", "c", max_items=10_000, wait_s=0)
        assert items_of(got) == list(range(300))

    asyncio.run(go())


def test_many_concurrent_puts_share_writes_and_keep_each_producers_order():
    async def go():
        log = MemoryStreamLog()
        h = hub(log, capacity=100_000)

        async def produce(p: str):
            for seq in range(50):
                await h.put(p, seq, batch(seq), 1)

        await asyncio.gather(*(produce(f"p{k}") for k in range(4)))
        assert log.writes < 200  # group commit: fewer writes than puts
        h.add_group("g")
        again = hub(log, capacity=100_000)
        got = await again.pull("g", "c", max_items=10_000, wait_s=0)
        by: dict[str, list[int]] = {}
        for e in got:
            by.setdefault(e[3], []).append(e[4])
        assert by == {f"p{k}": list(range(50)) for k in range(4)}

    asyncio.run(go())


def test_dropped_groups_and_in_memory_streams():
    async def go():
        log = MemoryStreamLog()
        h = hub(log)
        h.add_group("gone", durable=False)
        await h.put("p", 0, batch(0), 1)
        h.drop_group("gone")
        await settle(h)
        assert log.load("a.numbers").groups == {}
        plain = StreamHubCore("a.numbers", put_object=lambda b: b)
        assert plain.wal is None and plain.stats()["durable"] is False and plain.stats()["store"] is None
        await plain.put("p", 0, batch(0), 1)

    asyncio.run(go())
    assert StreamOptions().durable is True and StreamOptions(durable=False).durable is False


def test_an_ack_for_a_batch_a_restart_handed_on_still_counts():
    async def go():
        log = MemoryStreamLog()
        h = hub(log)
        h.add_group("g")
        for seq in range(3):
            await h.put("p", seq, batch(seq), 1)
        got = await h.pull("g", "c", max_items=10, wait_s=0)  # leased from the old hub, consumed
        await settle(h)
        again = hub(log)  # the reader's next pull (with its acks) lands on the restarted hub
        assert await again.pull("g", "c", max_items=10, wait_s=0, ack=[e[0] for e in got]) == []
        await settle(again)
        assert log.load("a.numbers").batches == []  # acknowledged by every group: trimmed

    asyncio.run(go())


class FlakyRefHub:
    """A hub stand-in whose first delivery's refs belong to a hub that died (``OwnerDiedError``),
    then delivers the same batches again, as a hub rebuilt from the store does."""

    def __init__(self, entries):
        self.entries = entries
        self.pulls: list[list[int]] = []
        self.pull = self
        self.ack = self.release = self

    def remote(self, *args):
        async def call():
            if len(args) == 5:  # pull(group, consumer, max_items, wait_s, ack)
                self.pulls.append(list(args[4]))
                n = len(self.pulls)
                if n == 1:
                    return [(i, dead(), 1, p, s) for i, _, p, s in self.entries]
                if n <= 3:  # delivered again, twice (the second time after a lost ack)
                    return [(i, alive(payload), 1, p, s) for i, payload, p, s in self.entries]
                return []
            return None
        return call()


async def dead():
    from ray.exceptions import OwnerDiedError

    raise OwnerDiedError("ab" * 14, None, "test")


async def alive(payload: bytes) -> bytes:
    return payload


def test_a_reader_pulls_again_when_its_refs_died_with_the_hub_and_skips_what_it_yielded():
    from fleet_ray.actors.stream_io import StreamReader

    async def go():
        fake = FlakyRefHub([(0, batch(0), "p", 0), (1, batch(1), "p", 1)])
        reader = StreamReader("a.numbers", fake, "g", "c", CODEC, wait_s=0, stopping=lambda: len(fake.pulls) >= 4)

        async def read():
            return [item.n async for item in reader.items()]

        return await asyncio.wait_for(read(), 5), reader, fake

    got, reader, fake = asyncio.run(go())
    assert got == [0, 1]  # nothing lost to the dead refs, nothing twice
    assert reader.skipped == 2 and fake.pulls[2] == [0, 1]


def test_seen_batches_are_bounded_and_exact():
    from fleet_ray.streams.delivery import SeenBatches

    seen = SeenBatches(limit=3)
    for seq in range(5):
        seen.add("p", seq)
    assert ("p", 0) not in seen and ("p", 4) in seen and len(seen) == 3
    assert ("q", 4) not in seen  # only exact repeats
