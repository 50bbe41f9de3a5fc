"""The supervisor recreates a batch pool's work queue that died (fakes: no Ray)."""

from __future__ import annotations

from .conftest import echo


def test_a_dead_work_queue_is_recreated_and_the_event_says_why(rig):
    r = rig()
    r.apply({"pools": [echo("web", 1)]})
    r.run(1)
    assert "web" in r.workqueues.queues
    r.workqueues.died("web", "ActorDiedError: SIGKILL")
    r.run(0.5)
    assert "workqueue.recreated" in r.kinds()
    recreated = [e for e in r.core.journal.recent if e.kind == "workqueue.recreated"]
    assert len(recreated) == 1 and recreated[0].pool == "web" and "SIGKILL" in recreated[0].message
