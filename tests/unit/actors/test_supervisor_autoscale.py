"""Autoscaled pools through the real supervisor core: fakes for its slot calls, work queues, signals and
Ray's autoscaler (fleet_ray.testing), a clock that moves only when told."""

from __future__ import annotations

from typing import Any

import pytest

from fleet_ray.actors.supervisor_autoscale import PoolAutoscaler
from fleet_ray.control.reconcile import NodeView
from fleet_ray.errors import SpecError
from fleet_ray.names import HEAD_RESOURCE
from fleet_ray.testing import FakeResourceRequests, FakeScaleSignals, FakeSlotCalls

from .conftest import Rig, echo

POLICY = {"min_slots": 1, "max_slots": 4, "target_backlog_per_slot": 2, "smoothing_s": 0,
          "upscale_delay_s": 2, "downscale_delay_s": 5, "cooldown_s": 1}


def pool(name: str = "web", **policy: Any) -> dict[str, Any]:
    return echo(name, slots=1, autoscale={**POLICY, **policy}, health={"period_s": 0.5},
                recycle={"drain_timeout_s": 5})


class Scaled:
    """A rig with the autoscaler part: ``signals.backlog[pool]`` is what the work queue reports."""

    def __init__(self, rig: Rig, clock: Any):
        self.rig, self.clock = rig, clock
        self.signals, self.requests = FakeScaleSignals(clock), FakeResourceRequests()
        core = rig.core
        core.parts.autoscaler = PoolAutoscaler(core.state, core.journal, core.specs, self.signals, self.requests,
                                               clock=clock)
        self.autoscaler = core.parts.autoscaler

    def run(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:  # the step, and what runs beside it: checkpoint, nodes, the request
            self.rig.run(0.5)
            self.autoscaler.sync_request()

    def status(self):
        return self.rig.status().pool("web")

    def scaled(self) -> list[dict[str, Any]]:
        return [dict(e.data) for e in self.rig.core.journal.recent if e.kind == "pool.scaled"]


@pytest.fixture
def scaled(rig, clock):
    def make(calls: FakeSlotCalls | None = None) -> Scaled:
        return Scaled(rig(calls), clock)

    return make


def test_a_backlog_burst_grows_the_pool_to_max_after_the_upscale_delay(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 0
    s.run(3)
    assert s.status().counts == {"running": 1}

    s.signals.backlog["web"] = 40  # asks for 20 slots: bounded to 4
    s.run(1)
    web = s.status()
    assert web.desired == 1 and web.autoscale.held_by == "upscale_delay" and web.autoscale.wanted == 4
    assert "upscale_delay_s" in web.autoscale.reason and s.scaled() == []  # a hold is status, not an event
    s.run(4)
    web = s.status()
    assert web.desired == 4 and web.counts == {"running": 4}
    a = web.autoscale
    assert (a.current, a.desired, a.wanted, a.min_slots, a.max_slots) == (4, 4, 4, 1, 4)
    assert a.signal == "backlog" and a.reading == 40 and a.last_change_at is not None
    [event] = s.scaled()
    assert (event["from"], event["to"], event["wanted"], event["by"]) == (1, 4, 4, "autoscaler")
    assert "backlog 40" in event["reason"] and "bounded to 4" in event["reason"]


def test_idle_shrinks_the_pool_to_min_by_draining_its_highest_slots(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 40
    s.run(6)
    assert s.status().counts == {"running": 4}

    s.signals.backlog["web"] = 0
    s.run(3)
    assert s.status().autoscale.held_by == "downscale_delay"  # not yet: the signal must ask for 5 s
    assert s.rig.calls.drained == []
    s.run(6)
    web = s.status()
    assert web.desired == 1 and web.counts == {"running": 1} and [x.id for x in web.slots] == ["web:0"]
    # the highest positions went by graceful drains (in-flight items finish or go back), none killed unasked
    assert sorted(key[1] for key, _ in s.rig.calls.drained) == [1, 2, 3]
    assert s.rig.kinds().count("slot.draining") == 3
    down = s.scaled()[-1]
    assert (down["from"], down["to"], down["wanted"]) == (4, 1, 1) and "draining 3 slot(s)" in down["reason"]
    assert web.autoscale.held_by is None and "holding 1" in web.autoscale.reason
    s.run(10)
    assert s.status().desired == 1  # never below min_slots


def test_a_rollout_in_progress_freezes_the_size(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 0
    s.run(3)
    s.rig.apply({"pools": [{**pool(), "concurrency": 2}]})  # a shape change: a rollout
    s.rig.core.specs.pause_rollout("web")  # ... that stays in progress
    s.signals.backlog["web"] = 40
    s.run(10)
    web = s.status()
    assert web.rollout.state == "paused" and web.desired == 1
    assert web.autoscale.held_by == "rollout" and "rollout in progress" in web.autoscale.reason
    assert s.scaled() == []

    s.rig.core.specs.resume_rollout("web")
    s.run(10)
    web = s.status()
    assert web.rollout.state == "complete" and web.desired == 4


def test_a_restarted_supervisor_goes_on_with_the_windows_it_checkpointed(scaled, clock):
    first = scaled()
    first.rig.apply({"pools": [pool(upscale_delay_s=6)]})
    first.signals.backlog["web"] = 40
    first.run(4)  # 3-4 s into the 6 s upscale delay
    since = first.rig.core.state.autoscale["web"].state.up_since
    assert since is not None and first.status().desired == 1

    second = scaled(FakeSlotCalls(live=dict(first.rig.calls.live)))
    second.signals.backlog["web"] = 40
    second.run(1)
    assert second.rig.core.state.autoscale["web"].state.up_since == since  # not a fresh window
    second.run(3)
    assert second.status().desired == 4  # 6 s after the window began, counting the first supervisor's time


def test_scale_on_an_autoscaled_pool_sets_its_size_within_the_bounds(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool(cooldown_s=30)]})
    s.signals.backlog["web"] = 2  # what one slot is meant for
    s.run(3)
    s.rig.core.specs.scale("web", 3)
    s.run(3)
    web = s.status()
    assert web.desired == 3 and web.counts == {"running": 3}
    assert web.autoscale.held_by in ("cooldown", "downscale_delay")  # the autoscaler goes on after its cool-down
    [event] = s.scaled()
    assert (event["from"], event["to"], event["by"]) == (1, 3, "operator")
    with pytest.raises(SpecError) as err:
        s.rig.core.specs.scale("web", 9)
    assert "autoscale" in str(err.value) and "1..4" in str(err.value)


def test_a_reapplied_autoscaled_pool_keeps_its_size(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 40
    s.run(6)
    assert s.status().desired == 4
    s.rig.apply({"pools": [pool()]})  # the same file again: slots 1 there is only the starting size
    assert s.status().desired == 4
    s.rig.apply({"pools": [pool(max_slots=3)]})  # tighter bounds bring it inside at once
    assert s.status().desired == 3


def test_pending_slots_ask_ray_for_nodes_and_the_request_clears_once_they_land(scaled):
    calls = FakeSlotCalls()
    s = scaled(calls)
    spec = {**pool(), "placement": {"resources": {"burst": 1}, "num_cpus": 1}}
    s.rig.apply({"pools": [spec]})
    s.signals.backlog["web"] = 40
    s.run(3)
    web = s.status()
    assert web.state == "pending" and web.desired == 1 and web.autoscale.pending == 1
    assert web.autoscale.held_by == "waiting_for_nodes"
    req = s.requests.last
    assert req.bundle_dicts() == [{"CPU": 1.0, "burst": 1.0}] * 4 and req.pools == (("web", 4),)

    calls.nodes_seen.append(NodeView("node-2", True, {"CPU": 8.0, "burst": 8.0}))  # Ray's autoscaler added one
    s.run(6)
    web = s.status()
    assert web.desired == 4 and web.counts == {"running": 4} and web.autoscale.pending == 0
    assert s.requests.last.bundles == ()  # cleared: nothing waits for a node

    s.signals.backlog["web"] = 0
    s.run(8)
    assert s.status().desired == 1 and s.requests.last.bundles == ()


def test_a_paused_pool_keeps_its_size_and_says_so(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 0
    s.run(2)
    s.rig.core.specs.update_pool("web", paused=True)
    s.signals.backlog["web"] = 40
    s.run(6)
    web = s.status()
    assert web.desired == 1 and web.autoscale.held_by == "paused" and s.scaled() == []


def test_without_a_reading_the_size_is_held(scaled):
    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.run(3)  # no backlog reading at all (the work queue does not answer)
    a = s.status().autoscale
    assert a.held_by == "no_signal" and s.status().desired == 1


def test_no_request_is_sent_by_a_fleet_without_autoscaled_pools(scaled):
    s = scaled()
    s.rig.apply({"pools": [echo("web", 1)]})
    s.run(3)
    assert s.requests.sent == [] and s.status().autoscale is None


def test_status_nodes_are_unchanged_by_the_autoscaler(scaled):
    s = scaled(FakeSlotCalls(nodes_seen=[NodeView("node-1", True, {"CPU": 16.0, HEAD_RESOURCE: 1.0}, is_head=True)]))
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 0
    s.run(2)
    assert [n.node_id for n in s.rig.core.node_list()] == ["node-1"]


def test_fleet_ray_status_shows_the_autoscale_block_on_the_pool_line(scaled):
    from fleet_ray.cli.render import render_status

    s = scaled()
    s.rig.apply({"pools": [pool()]})
    s.signals.backlog["web"] = 0
    s.run(3)
    s.signals.backlog["web"] = 40
    s.run(1)
    lines = render_status(s.rig.status()).splitlines()
    line = next(x for x in lines if x.startswith("pool web"))
    assert "autoscale 1..4 ready=1/1 wanted=4 backlog=40 [held: upscale_delay]" in line
    assert any(x.startswith("  autoscale: backlog 40") for x in lines)


class _Queue:
    """A work queue handle as RayScaleSignals calls it (``stats.remote()`` awaited)."""

    def __init__(self):
        self.reply = {"queued": 0, "leased": 0, "completed": 0}

        class _Method:
            def remote(_self):
                async def answer():
                    return dict(self.reply)
                return answer()

        self.stats = _Method()


def test_ray_signals_read_backlog_and_latency_from_the_work_queue_and_lag_from_the_hubs(clock):
    import asyncio

    from fleet_ray.actors.supervisor_autoscale import RayScaleSignals
    from fleet_ray.spec.scaling import ScaleSignal

    class Services:
        stats: dict = {}

    services = Services()
    signals = RayScaleSignals("test", services, clock=clock)
    queue = _Queue()
    signals._queues["web"] = queue  # found by name once; here handed in
    watching = {"web": ScaleSignal("backlog"), "price": ScaleSignal("lag", "scrape.products")}

    queue.reply = {"queued": 30, "leased": 8, "completed": 100}
    services.stats = {"scrape.products": {"groups": {"price": {"lag": 17}}}}
    asyncio.run(signals.refresh(watching))
    first = signals.reading("web")
    assert (first.value, first.queued, first.leased, first.item_latency_s) == (38, 30, 8, None)
    assert signals.reading("price").value == 17

    clock.advance(2)
    queue.reply = {"queued": 10, "leased": 8, "completed": 140}  # 20 items/s with 8 in flight
    asyncio.run(signals.refresh(watching))
    assert signals.reading("web").value == 18 and signals.reading("web").item_latency_s == 0.4
    assert signals.reading("price").at == first.at  # the hub's stats did not change: the lag reading ages

    asyncio.run(signals.refresh({}))  # no longer autoscaled
    assert signals.reading("web") is None and signals.reading("price") is None


def test_a_fixed_pool_whose_slots_no_node_can_host_asks_ray_for_nodes_too(scaled):
    calls = FakeSlotCalls()
    s = scaled(calls)
    s.rig.apply({"pools": [echo("fixed", slots=3, placement={"resources": {"gpu-box": 1}, "num_cpus": 1},
                                health={"period_s": 0.5})]})
    assert s.requests.sent == []  # nothing pending yet: nothing sent
    s.run(2)
    fixed = s.rig.status().pool("fixed")
    assert fixed.state == "pending" and fixed.autoscale is None and fixed.counts == {"pending": 3}
    req = s.requests.last
    assert req.bundle_dicts() == [{"CPU": 1.0, "gpu-box": 1.0}] * 3 and req.pools == (("fixed", 3),)

    calls.nodes_seen.append(NodeView("node-2", True, {"CPU": 8.0, "gpu-box": 4.0}))  # Ray's autoscaler added one
    s.run(4)
    assert s.rig.status().pool("fixed").counts == {"running": 3}
    assert s.requests.last.bundles == ()  # cleared: nothing waits for a node
