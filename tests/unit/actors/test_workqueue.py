"""The work queue's bookkeeping, driven directly (its Ray actor wrapper adds nothing to it)."""

import asyncio

from fleet_ray.actors.workqueue import WorkQueueCore


def test_a_dead_slots_pending_lease_never_takes_work_after_its_release():
    async def go():
        wq = WorkQueueCore("p")
        # the slot's lease long-polls on an empty queue, then the slot is SIGKILLed and released
        pending = asyncio.ensure_future(wq.lease("fleet:p:0:g1", 10, 30.0))
        await asyncio.sleep(0)
        await wq.release("fleet:p:0:g1", "died")
        await wq.submit("job", [(str(i), i) for i in range(5)])
        assert await asyncio.wait_for(pending, 1) == []  # woken, and given nothing
        assert await wq.lease("fleet:p:0:g1", 10, 0) == []
        got = await wq.lease("fleet:p:0:g2", 10, 0)
        assert [item_id for _, item_id, _, _ in got] == ["0", "1", "2", "3", "4"]

    asyncio.run(go())


def test_items_of_a_released_lessee_are_retried_then_failed_with_the_cause():
    async def go():
        wq = WorkQueueCore("p")
        await wq.submit("job", [("a", 1)], max_retries=1)
        assert len(await wq.lease("s1", 10, 0)) == 1
        assert await wq.release("s1", "SIGKILL") == {"retried": 1, "failed": 0}
        assert len(await wq.lease("s2", 10, 0)) == 1
        assert await wq.release("s2", "SIGKILL again") == {"retried": 0, "failed": 1}
        reply = await wq.fetch("job", 0, wait_s=0)
        (item_id, ok, error, attempts), = reply["results"]
        assert (item_id, ok, attempts) == ("a", False, 2) and "SIGKILL again" in error
        # a late completion from the first lessee is ignored: no duplicate result
        assert await wq.complete("s1", [("job", "a", True, 1)]) == 0

    asyncio.run(go())
