"""The durable work queue, driven directly on an in-memory work log: a "restart" is a new
WorkQueueCore on the same log (what a recreated actor does with the real store)."""

from __future__ import annotations

import asyncio
import time

from fleet_ray.actors.workqueue import RELEASED_TTL_S, WorkQueueCore
from fleet_ray.errors import StoreUnavailable
from fleet_ray.spec.models import WorkQueueOptions
from fleet_ray.store.memory_work_log import MemoryWorkLog

OPTS = WorkQueueOptions(lease_timeout_s=30, finished_job_ttl_s=3600)


def run(coro):
    return asyncio.run(coro)


def restarted(log: MemoryWorkLog, alive=None) -> WorkQueueCore:
    wq = WorkQueueCore("p", log, OPTS, lessee_alive=alive)
    wq.load()
    return wq


async def drain(wq: WorkQueueCore, job: str, cursor: int = 0) -> tuple[list, int]:
    reply = await wq.fetch(job, cursor, wait_s=0)
    return reply["results"], reply["cursor"]


def test_a_restarted_queue_reloads_queued_items_leases_and_unread_results():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        assert await wq.submit("j", [(str(i), {"n": i}) for i in range(10)]) == 10
        got = await wq.lease("s1", 4, 0)
        assert [g[1] for g in got] == ["0", "1", "2", "3"]
        await wq.complete("s1", [("j", "0", True, "v0"), ("j", "1", False, "boom")])
        # SIGKILL: nothing of wq survives but the log
        wq2 = restarted(log)
        assert wq2.progress("j") | {"created": 0} == {
            "job_id": "j", "total": 10, "done": 1, "failed": 1, "leased": 2, "queued": 6, "created": 0,
            "cursor": 0, "available": 2}
        results, cursor = await drain(wq2, "j")
        assert results == [("0", True, "v0", 1), ("1", False, "boom", 1)] and cursor == 2
        # the slot comes back (its lease call is sent again) and hands in what it held
        assert await wq2.complete("s1", [("j", "2", True, "v2"), ("j", "3", True, "v3")]) == 2
        rest: list = []
        while got := await wq2.lease("s2", 10, 0):  # two lessees active: each lease takes a fair share
            rest += got
        assert [(g[1], g[2]) for g in rest] == [(str(i), {"n": i}) for i in range(4, 10)]  # in order, payloads intact
        await wq2.complete("s2", [("j", g[1], True, g[1]) for g in rest])
        results, cursor = await drain(wq2, "j", cursor)
        assert sorted(r[0] for r in results) == [str(i) for i in range(2, 10)] and cursor == 10
        assert wq2.progress("j")["done"] == 9

    run(go())


def test_leases_of_a_lessee_that_does_not_come_back_are_retried():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1), ("b", 2)], max_retries=3)
        await wq.lease("gone", 1, 0)
        await wq.lease("alive-but-quiet", 1, 0)
        await wq.flush()
        wq2 = restarted(log, alive=lambda names: {n: n != "gone" for n in names})
        assert sorted(wq2.lessees()) == ["alive-but-quiet", "gone"]
        await wq2.sweep()  # the actor named "gone" no longer exists: released at once
        assert wq2.lessees() == ["alive-but-quiet"]
        (item,) = await wq2.lease("s3", 10, 0)
        assert item[1:] == ("a", 1, 2)  # second attempt
        # the other never calls: released once lease_timeout_s has passed since the restart
        await wq2.sweep(mono=time.monotonic() + 31)
        assert wq2.lessees() == ["s3"]
        (item,) = await wq2.lease("s4", 10, 0)
        assert item[1] == "b" and item[3] == 2

    run(go())


def test_a_lessee_that_calls_after_the_restart_keeps_its_leases():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1)])
        await wq.lease("s1", 1, 0)
        await wq.flush()
        wq2 = restarted(log)
        await wq2.complete("s1", [])  # a heartbeat: alive and busy
        await wq2.sweep(mono=time.monotonic() + 3600)
        assert wq2.lessees() == ["s1"]
        assert await wq2.complete("s1", [("j", "a", True, 7)]) == 1

    run(go())


def test_a_result_is_reported_once_even_when_the_item_ran_twice():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1)])
        await wq.lease("s1", 1, 0)
        await wq.release("s1", "SIGKILL")
        await wq.lease("s2", 1, 0)
        assert await wq.complete("s2", [("j", "a", True, "second")]) == 1
        assert await wq.complete("s1", [("j", "a", True, "first")]) == 0  # released: ignored
        wq2 = restarted(log)
        assert await wq2.complete("s2", [("j", "a", True, "again")]) == 0  # finished already
        results, _ = await drain(wq2, "j")
        assert results == [("a", True, "second", 2)]

    run(go())


def test_a_completion_for_an_item_queued_again_after_a_restart_is_taken():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1)])
        await wq.lease("s1", 1, 0)  # the lease record was never written (the queue died first)
        wq2 = restarted(log)
        assert wq2.progress("j")["queued"] == 1
        assert await wq2.complete("s1", [("j", "a", True, "done")]) == 1
        assert await wq2.lease("s2", 10, 0) == []  # not handed out again
        assert (await drain(wq2, "j"))[0] == [("a", True, "done", 1)]

    run(go())


def test_read_results_are_trimmed_from_memory_and_store_and_a_reattached_reader_reads_on():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [(str(i), i) for i in range(6)])
        got = await wq.lease("s1", 6, 0)
        await wq.complete("s1", [("j", g[1], True, g[2]) for g in got])
        results, cursor = await drain(wq, "j")
        assert len(results) == 6 and cursor == 6
        assert await wq.ack("j", 4) == 4
        assert sorted(log.load("p").results["j"]) == [4, 5]
        assert wq.bookkeeping()["items"] == 0
        wq2 = restarted(log)
        reply = await wq2.fetch("j", 0, wait_s=0)  # a driver that restarted: reads on from the cursor
        assert [r[0] for r in reply["results"]] == ["4", "5"] and reply["cursor"] == 6
        assert reply["progress"]["cursor"] == 4
        await wq2.ack("j", 6)
        assert "j" not in log.load("p").results

    run(go())


def test_finished_jobs_expire_after_their_ttl_and_unfinished_ones_stay():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("done", [("a", 1)])
        await wq.submit("open", [("b", 1), ("c", 2)])
        got = await wq.lease("s1", 2, 0)
        await wq.complete("s1", [(j, i, True, None) for j, i, _, _ in got])
        finished_at = wq._jobs["done"].finished_at
        await wq.sweep(wall=finished_at + 3599)
        assert wq.progress("done") is not None
        await wq.sweep(wall=finished_at + 3600)
        await wq.ack("open", 0)  # waits for the write
        assert wq.progress("done") is None and wq.progress("open")["total"] == 2
        assert set(log.load("p").jobs) == {"open"} and "done" not in log.load("p").results

    run(go())


def test_released_lessee_names_expire_and_a_new_actor_under_the_name_is_not_starved():
    async def go():
        wq = WorkQueueCore("p", MemoryWorkLog(), OPTS)
        await wq.submit("j", [(str(i), i) for i in range(4)])
        await wq.lease("fleet:p:0:g1", 1, 0, incarnation="actor-1")
        await wq.release("fleet:p:0:g1", "died")
        assert await wq.lease("fleet:p:0:g1", 1, 0, incarnation="actor-1") == []  # the dead one: refused
        got = await wq.lease("fleet:p:0:g1", 1, 0, incarnation="actor-2")  # a new actor reusing the name
        assert len(got) == 1
        await wq.release("fleet:p:0:g2", "died")  # never leased: refused by name until the entry expires
        assert await wq.lease("fleet:p:0:g2", 1, 0) == []
        await wq.sweep(mono=time.monotonic() + RELEASED_TTL_S + 1)
        assert wq.bookkeeping()["released"] == 0
        assert len(await wq.lease("fleet:p:0:g2", 1, 0)) == 1

    run(go())


def test_lessee_bookkeeping_is_pruned():
    async def go():
        wq = WorkQueueCore("p", None, WorkQueueOptions(durable=False))
        for i in range(50):
            await wq.lease(f"s{i}", 1, 0)  # nothing queued: each is only seen
            wq.kick(f"s{i}")
        assert wq.bookkeeping()["seen"] == 50
        await wq.sweep(mono=time.monotonic() + 3600)
        b = wq.bookkeeping()
        assert (b["seen"], b["kicks"], b["leases"]) == (0, 0, 0)

    run(go())


def test_an_acknowledged_submit_is_in_the_store_and_waits_while_the_store_is_down():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        log.available = False
        task = asyncio.ensure_future(wq.submit("j", [("a", 1)]))
        done, _ = await asyncio.wait([task], timeout=0.3)
        assert not done and wq.store_error is not None  # not acknowledged: not durable
        log.available = True
        assert await asyncio.wait_for(task, 10) == 1
        assert set(log.load("p").items) == {("j", "a")}
        # resubmitting the same ids (the driver's retry after a lost reply) adds nothing
        assert await wq.submit("j", [("a", 1), ("b", 2)]) == 2

    run(go())


def test_results_are_shown_only_once_written_and_writes_are_shared():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [(str(i), i) for i in range(300)])
        writes = log.writes
        leases = await asyncio.gather(*(wq.lease(f"s{k}", 100, 0) for k in range(3)))
        await asyncio.gather(*(wq.complete(f"s{k}", [("j", g[1], True, g[2]) for g in got])
                               for k, got in enumerate(leases)))
        assert log.writes - writes <= 3  # 3 leases + 3 completions of 100 items: a few shared writes
        n = sum(len(got) for got in leases)
        results, cursor = await drain(wq, "j")
        assert n >= 200 and len(results) == n and cursor == n
        assert len(log.load("p").results["j"]) == n

    run(go())


def test_the_in_memory_queue_writes_nothing_and_behaves_the_same():
    async def go():
        wq = WorkQueueCore("p", None, WorkQueueOptions(durable=False))
        await wq.submit("j", [("a", 1), ("b", 2)])
        got = await wq.lease("s1", 2, 0)
        await wq.complete("s1", [("j", i, True, p) for _, i, p, _ in got])
        results, cursor = await drain(wq, "j")
        assert [r[0] for r in results] == ["a", "b"] and cursor == 2 and not wq.durable
        assert wq.stats()["writes"] == 0

    run(go())


def test_turning_durability_on_writes_what_the_queue_holds():
    async def go():
        wq = WorkQueueCore("p", None, WorkQueueOptions(durable=False))
        await wq.submit("j", [("a", 1), ("b", 2)])
        await wq.lease("s1", 1, 0)
        log = MemoryWorkLog()
        await wq.configure({"durable": True}, opener=lambda: log)
        snap = log.load("p")
        assert set(snap.items) == {("j", "a"), ("j", "b")} and set(snap.leases) == {("j", "a")}
        await wq.configure({"durable": False})
        assert log.load("p").items == {} and not wq.durable

    run(go())


def test_dropping_a_job_removes_it_from_the_store():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1), ("b", 2)])
        await wq.lease("s1", 1, 0)
        assert await wq.drop("j") is True
        snap = log.load("p")
        assert not snap.jobs and not snap.items and not snap.leases
        assert await wq.lease("s2", 10, 0) == []
        assert await wq.complete("s1", [("j", "a", True, 1)]) == 0

    run(go())


def test_leases_whose_reply_never_reached_the_lessee_are_queued_again_when_it_says_what_it_holds():
    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1), ("b", 2), ("c", 3)])
        await wq.lease("s1", 1, 0)  # s1 got "a"
        await wq.lease("s1", 2, 0)  # the queue died before this reply ("b", "c") reached s1
        await wq.flush()
        wq2 = restarted(log)
        # s1's first call to the new queue hands in "a" and says it holds nothing else
        assert await wq2.complete("s1", [("j", "a", True, 1)], holding=[]) == 1
        got = await wq2.lease("s2", 10, 0)
        got += await wq2.lease("s2", 10, 0)  # (a fair share each time: s1 is active too)
        assert sorted((g[1], g[3]) for g in got) == [("b", 1), ("c", 1)]  # same attempt: they never ran
        assert wq2.lessees() == ["s2"]

    run(go())


def test_a_store_down_past_the_grace_period_degrades_to_memory_and_everything_is_written_when_it_is_back(monkeypatch):
    from fleet_ray.actors import workqueue

    monkeypatch.setattr(workqueue, "STORE_GRACE_S", 0.2)

    async def go():
        log = MemoryWorkLog()
        wq = WorkQueueCore("p", log, OPTS)
        await wq.submit("j", [("a", 1)])
        log.available = False
        log._pools.clear()  # and it comes back empty (a Redis without persistence, restarted)
        assert await asyncio.wait_for(wq.submit("j", [("b", 2)]), 10) == 2  # acknowledged in memory
        assert wq.stats()["store_degraded"] is True
        got = await wq.lease("s1", 10, 0)
        await asyncio.wait_for(wq.complete("s1", [("j", "a", True, "A")]), 10)
        log.available = True
        deadline = time.monotonic() + 10
        while wq.store_degraded and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await wq.flush()
        assert not wq.store_degraded and wq.store_error is None
        wq2 = restarted(log)  # the store holds everything again
        assert wq2.progress("j")["total"] == 2 and wq2.progress("j")["done"] == 1
        assert {g[1] for g in got} == {"a", "b"} and wq2.lessees() == ["s1"]

    run(go())


class _DownLog:
    """A work log whose store is down until ``up`` is set (what a queue recreated mid-outage meets)."""

    def __init__(self, inner: MemoryWorkLog):
        self.inner, self.up, self.url = inner, False, "memory://"

    def load(self, pool):
        if not self.up:
            raise StoreUnavailable("memory://", "the store is down")
        return self.inner.load(pool)

    def write(self, pool, change):
        if not self.up:
            raise StoreUnavailable("memory://", "the store is down")
        self.inner.write(pool, change)


def test_a_queue_started_while_the_store_is_down_takes_work_then_reloads_the_stored_jobs():
    async def go():
        inner = MemoryWorkLog()
        old = WorkQueueCore("p", inner, OPTS)
        await old.submit("old", [(str(i), i) for i in range(3)])
        # the queue dies and is recreated while the store is down: it starts (no error) and is empty
        down = _DownLog(inner)
        wq = WorkQueueCore("p", down, OPTS)
        assert wq.load_or_defer() == 0 and wq.progress("old") is None
        wq._failing_since -= 10  # past the grace period: acknowledging in memory
        assert await asyncio.wait_for(wq.submit("new", [("x", 1)]), 10) == 1
        assert wq.progress("new")["queued"] == 1
        down.up = True  # the store is back: the next write first takes in what it held
        await wq.flush()
        assert wq.progress("old")["queued"] == 3 and wq.progress("new")["queued"] == 1
        leased = []
        while got := await wq.lease("s", 10, 0):
            leased += got
        assert sorted((g[0], g[1]) for g in leased) == [("new", "x"), ("old", "0"), ("old", "1"), ("old", "2")]
        # and the new job is in the store too: a queue started now finds both
        again = WorkQueueCore("p", inner, OPTS)
        assert again.load() == 2

    run(go())
