"""The supervisor's pure side of autoscaling: observations, status, the resource request, the checkpoint."""

from __future__ import annotations

from fleet_ray.control.autoscale import ScaleDecision, ScaleState
from fleet_ray.control.checkpoint import Checkpoint
from fleet_ray.control.lifecycle import SlotRecord, SlotState
from fleet_ray.control.pool_scaling import (
    PoolScale,
    SignalReading,
    autoscale_status,
    little_latency,
    observe_pool,
    operator_resized,
    pending_positions,
    pool_concurrency,
    resource_request,
    slot_bundle,
)
from fleet_ray.control.state import FleetState
from fleet_ray.observe.hlc import HLC
from fleet_ray.observe.kinds import PoolScaled, typed
from fleet_ray.spec.models import FleetSpec, PoolSpec

NOW = 1_700_000_000.0


def spec(slots: int = 3, **extra) -> PoolSpec:
    return PoolSpec.model_validate({"name": "web", "automation": "builtin.echo", "slots": slots,
                                    "autoscale": {"min_slots": 1, "max_slots": 6}, **extra})


def rec(index: int, state: SlotState, checks_ok: int = 1) -> SlotRecord:
    r = SlotRecord("web", index)
    r.state, r.checks_ok = state, checks_ok
    return r


def test_the_observation_counts_ready_and_pending_positions_of_the_current_size():
    recs = [rec(0, SlotState.RUNNING), rec(1, SlotState.RUNNING, checks_ok=0), rec(2, SlotState.PENDING),
            rec(3, SlotState.DRAINING)]  # position 3 is being retired
    obs = observe_pool(spec(3), recs, SignalReading(12, NOW - 1), NOW, False, "backlog")
    assert (obs.current_slots, obs.ready_slots, obs.pending_slots, obs.backlog) == (3, 1, 1, 12)


def test_a_stale_reading_is_no_reading():
    obs = observe_pool(spec(), [], SignalReading(12, NOW - 60, item_latency_s=0.5), NOW, True, "backlog")
    assert obs.backlog is None and obs.item_latency_s is None and obs.rollout_in_progress


def test_item_latency_by_littles_law():
    assert little_latency(leased=8, completed_delta=40, dt=2.0) == 0.4  # 20 items/s, 8 in flight
    assert little_latency(8, 0, 2.0) is None and little_latency(8, 5, 0) is None


def test_pending_pools_ask_for_their_slot_bundle_times_what_they_want():
    web = spec(2, placement={"resources": {"burst": 1}, "num_cpus": 0.5, "memory_mb": 64, "labels": {"zone": "a"}})
    assert slot_bundle(web.placement) == {"CPU": 0.5, "burst": 1.0}  # memory: node types rarely declare it
    waiting = PoolScale(ScaleState(), pending=2)
    waiting.decision = ScaleDecision(2, 2, 5, "waiting for nodes", "waiting_for_nodes")
    req = resource_request({"web": web}, {"web": waiting}, {"web": 2})
    assert len(req.bundles) == 5 and req.pools == (("web", 5),)  # what it wants, not the step it is at
    assert req.selector_dicts() == [{"zone": "a"}] * 5
    assert resource_request({"web": web}, {"web": waiting}, {"web": 0}).bundles == ()


def fixed(slots: int = 3, **extra) -> PoolSpec:
    return PoolSpec.model_validate({"name": "fixed", "automation": "builtin.echo", "slots": slots,
                                    "placement": {"resources": {"gpu-box": 1}}, **extra})


def test_a_fixed_pool_with_pending_slots_asks_for_its_size_and_clears_once_none_wait():
    pool = fixed(3)
    recs = [SlotRecord("fixed", i) for i in range(3)]
    for r in recs:
        r.state = SlotState.PENDING
    pending = pending_positions({"fixed": pool}, recs)
    assert pending == {"fixed": 3}
    req = resource_request({"fixed": pool}, {}, pending)  # a fixed pool has no PoolScale
    assert req.bundle_dicts() == [{"gpu-box": 1.0}] * 3 and req.pools == (("fixed", 3),)
    assert req.selector_dicts() is None

    recs[0].state = recs[1].state = SlotState.RUNNING  # a node came; one position still waits
    req = resource_request({"fixed": pool}, {}, pending_positions({"fixed": pool}, recs))
    assert req.pools == (("fixed", 3),)  # the whole pool's capacity: running slots count too
    recs[2].state = SlotState.STARTING
    assert resource_request({"fixed": pool}, {}, pending_positions({"fixed": pool}, recs)).bundles == ()


def test_paused_pools_and_positions_being_retired_ask_for_nothing():
    paused = fixed(2, paused=True)
    recs = [SlotRecord("fixed", i) for i in range(4)]  # positions 2 and 3 are above the size
    assert pending_positions({"fixed": fixed(2)}, recs) == {"fixed": 2}
    assert pending_positions({"fixed": fixed(0)}, recs) == {}
    assert resource_request({"fixed": paused}, {}, {"fixed": 2}).bundles == ()
    assert pending_positions({}, recs) == {}  # a pool no longer in the spec


def test_the_target_per_slot_follows_the_concurrency_the_slots_report():
    pool = spec(2, concurrency_bounds={"min": 2, "max": 16})
    recs = [rec(0, SlotState.RUNNING), rec(1, SlotState.RUNNING), rec(2, SlotState.RUNNING)]
    assert pool_concurrency(pool, recs) == 2  # no report yet: the starting concurrency
    recs[0].concurrency, recs[1].concurrency = {"current": 8}, {"current": 5}
    recs[2].concurrency = {"current": 16}  # position 2 is being retired: not counted
    assert pool_concurrency(pool, recs) == 6  # round(6.5) by banker's rounding
    obs = observe_pool(pool, recs, SignalReading(12, NOW), NOW, False, "backlog")
    assert obs.concurrency == 6
    assert pool_concurrency(spec(2, concurrency=3), recs) == 3  # without bounds: the pool's concurrency


def test_status_shows_what_holds_the_size_and_an_operator_change_restarts_the_cooldown():
    scale = PoolScale(ScaleState(changed_at=NOW - 5), decision=ScaleDecision(3, 3, 5, "backlog 9 ...", "upscale_delay", 9.0),
                      decided_at=NOW, reading=SignalReading(10, NOW), signal="backlog")
    st = autoscale_status(spec(3), scale, [rec(0, SlotState.RUNNING), rec(1, SlotState.STARTING)])
    assert (st.current, st.desired, st.wanted, st.min_slots, st.max_slots) == (1, 3, 5, 1, 6)
    assert st.held_by == "upscale_delay" and st.signal_value == 9.0 and st.reading == 10
    assert st.last_change_at == NOW - 5
    assert autoscale_status(spec(3, paused=True), scale).held_by == "paused"
    assert autoscale_status(PoolSpec.model_validate({"name": "f", "automation": "builtin.echo"}), None) is None
    again = operator_resized(scale, NOW)
    assert again.state.changed_at == NOW and again.state.up_since is None


def test_the_scale_state_survives_a_checkpoint():
    state = FleetState()
    state.set_desired(FleetSpec(pools=[spec(3)]))
    state.autoscale["web"] = PoolScale(ScaleState(smoothed=4.0, up_since=NOW - 3, changed_at=NOW - 40))
    back = FleetState()
    Checkpoint.decode(Checkpoint.of(state, NOW).encode()).restore_into(back)
    assert back.autoscale["web"].state == state.autoscale["web"].state
    assert back.desired["web"].slots == 3


def test_pool_scaled_events_carry_from_and_to():
    ev = PoolScaled.stamp(HLC(), pool="web", from_=1, to=4, wanted=4, reason="backlog 40").to_event()
    assert ev.kind == "pool.scaled" and ev.data["from"] == 1 and ev.data["to"] == 4
    back = typed(ev)
    assert isinstance(back, PoolScaled) and back.from_ == 1 and back.by == "autoscaler"
