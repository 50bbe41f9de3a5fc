"""decide_scale and decide_concurrency over recorded traces, with a fake clock: no Ray.

A trace is a list of ``(t, backlog)`` samples (seconds from the trace's start, items queued + leased).
:class:`TracePool` plays the supervisor: it observes the pool each sample, calls ``decide_scale`` and
resizes the pool to the decision, recording what an operator would read in the events
(``pool.scaled`` with from/to/reason) and in status (held_by, wanted).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from fleet_ray.control.autoscale import (
    PressureSnapshot,
    ScaleDecision,
    ScaleObservation,
    ScaleState,
    decide_concurrency,
    decide_scale,
)
from fleet_ray.spec.scaling import AutoscalePolicy, ConcurrencyBounds
from fleet_ray.testing import FakeClock

T0 = 1_700_000_000.0
TICK = 5.0  # the supervisor's autoscale tick in these traces


def policy(**kw) -> AutoscalePolicy:
    base = dict(min_slots=1, max_slots=20, target_backlog_per_slot=10, upscale_delay_s=30,
                downscale_delay_s=120, cooldown_s=30, smoothing_s=10)
    return AutoscalePolicy(**{**base, **kw})


Sample = tuple[float, float | None]


def trace(*segments: tuple[float, float | None], tick: float = TICK, start: float = 0.0) -> list[Sample]:
    """Samples every ``tick`` s: each segment is (duration_s, backlog)."""
    out: list[Sample] = []
    t = start
    for duration, backlog in segments:
        end = t + duration
        while t < end - 1e-9:
            out.append((t, backlog))
            t += tick
    return out


@dataclass
class Scaled:  # one pool.scaled event
    t: float
    frm: int
    to: int
    reason: str


@dataclass
class TracePool:
    config: AutoscalePolicy
    slots: int
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    state: ScaleState = field(default_factory=ScaleState)
    events: list[Scaled] = field(default_factory=list)
    decisions: list[tuple[float, ScaleDecision]] = field(default_factory=list)

    def at(self, t: float, backlog: float | None, **observed) -> ScaleDecision:
        self.clock.advance(T0 + t - self.clock())
        obs = ScaleObservation(current_slots=self.slots, backlog=backlog, **observed)
        decision, self.state = decide_scale(self.config, self.state, obs, self.clock())
        assert decision.previous == self.slots
        if decision.changed:
            self.events.append(Scaled(t, decision.previous, decision.slots, decision.reason))
            self.slots = decision.slots
        self.decisions.append((t, decision))
        return decision

    def play(self, samples: list[tuple[float, float | None]], **observed) -> TracePool:
        for t, backlog in samples:
            self.at(t, backlog, **observed)
        return self

    def sizes(self) -> list[int]:
        return [self.events[0].frm, *(e.to for e in self.events)] if self.events else [self.slots]

    def held(self, reason: str) -> list[tuple[float, ScaleDecision]]:
        return [(t, d) for t, d in self.decisions if d.held_by == reason]


# -- scaling up ------------------------------------------------------------------------------------------


def test_a_burst_reaches_max_slots_within_the_upscale_delay_and_a_few_ticks():
    pool = TracePool(policy(), slots=1).play(trace((60, 0), (300, 2000)))
    burst = 60
    assert pool.sizes() == [1, 20]  # one change, straight to the ceiling
    (up,) = pool.events
    assert burst + 30 <= up.t <= burst + 30 + 3 * TICK  # not before upscale_delay_s, soon after
    assert "backlog 2000" in up.reason and "bounded to 20" in up.reason and "1 → 20" in up.reason
    waiting = pool.held("upscale_delay")
    assert waiting and all(burst <= t < up.t for t, _ in waiting)
    assert all(d.wanted == 20 for _, d in waiting)  # status shows desired 20 while the delay runs


def test_a_burst_with_max_step_up_climbs_in_steps_spaced_by_the_cooldown():
    pool = TracePool(policy(max_step_up=5), slots=1).play(trace((60, 0), (400, 2000)))
    assert pool.sizes() == [1, 6, 11, 16, 20]
    first, *rest = pool.events
    assert 90 <= first.t <= 90 + 3 * TICK
    for a, b in zip(pool.events, rest, strict=False):
        assert b.t - a.t >= 30  # cooldown_s
    assert rest[-1].t <= first.t + 3 * 30 + 3 * TICK  # no second upscale_delay between steps of one climb
    assert "max_step_up 5" in first.reason


def test_a_short_spike_shorter_than_the_upscale_delay_adds_nothing():
    pool = TracePool(policy(), slots=2).play(trace((60, 20), (20, 3000), (300, 20)))
    assert pool.events == []
    assert pool.held("upscale_delay")  # it did ask, and said why it waited


def test_a_recorded_morning_ramp_follows_the_queue_without_overshooting_max():
    # a queue filling at 9:00, recorded every 10 s (items queued + leased)
    recorded = [(0, 0), (10, 0), (20, 40), (30, 120), (40, 260), (50, 410), (60, 520), (70, 610), (80, 690),
                (90, 740), (100, 780), (110, 800), (120, 810), (130, 805), (140, 812), (150, 808), (160, 810),
                (170, 806), (180, 811), (190, 809), (200, 810), (210, 807), (220, 812), (230, 810), (240, 808)]
    pool = TracePool(policy(max_slots=100, target_backlog_per_slot=20), slots=1).play(recorded)
    assert pool.slots == math.ceil(810 / 20)  # settles where the queue needs it: 41
    assert all(b.to > b.frm for b in pool.events)  # only ever up on a rising-then-flat queue
    assert len(pool.events) <= 4


# -- no flapping -----------------------------------------------------------------------------------------


def noisy(level: float, spread: float, seconds: float, seed: int) -> list[tuple[float, float | None]]:
    rng = random.Random(seed)
    return [(t, max(0.0, level + rng.uniform(-spread, spread))) for t, _ in trace((seconds, 0))]


def naive_changes(samples, target: float, start: int) -> int:
    """What a policy without smoothing, tolerance or delays would do: ceil(backlog / target) every tick."""
    slots, changes = start, 0
    for _, b in samples:
        want = max(1, math.ceil(b / target))
        changes += want != slots
        slots = want
    return changes


@pytest.mark.parametrize("seed", range(5))
def test_noisy_backlog_around_the_pools_size_does_not_flap(seed):
    samples = noisy(50, 25, 3600, seed)  # 5 slots' worth at target 10, ±50% every tick, for an hour
    pool = TracePool(policy(downscale_delay_s=300), slots=5).play(samples)
    assert naive_changes(samples, 10, 5) > 300  # without the policy this would resize nearly every tick
    assert len(pool.events) <= 2
    assert all(4 <= n <= 7 for n in pool.sizes())
    # a reversal (up then down, or down then up) only after the other direction's delay
    for a, b in zip(pool.events, pool.events[1:], strict=False):
        if (a.to > a.frm) != (b.to > b.frm):
            assert b.t - a.t >= (300 if b.to < b.frm else 30)


def test_a_backlog_that_flickers_to_zero_between_batches_keeps_its_slots():
    samples = [(t, 0.0 if i % 2 else 100.0) for i, (t, _) in enumerate(trace((1800, 0)))]
    pool = TracePool(policy(min_slots=0, downscale_delay_s=60), slots=5).play(samples)
    assert pool.events == []  # neither the zero samples nor the average pull it down


# -- scaling down ----------------------------------------------------------------------------------------


def test_scale_down_waits_for_the_delay_and_goes_in_steps():
    samples = trace((60, 2000), (900, 30))  # at t=60 the work drops to 3 slots' worth
    pool = TracePool(policy(max_step_down=5), slots=20).play(samples)
    assert pool.sizes() == [20, 15, 10, 5, 3]
    first = pool.events[0]
    assert first.t >= 60 + 120  # downscale_delay_s of asking for fewer, without a break
    for a, b in zip(pool.events, pool.events[1:], strict=False):
        assert b.t - a.t >= 30  # each step after the cooldown, not after another full delay
        assert b.t - a.t < 120
    assert "draining 5 slot(s)" in first.reason and "max_step_down 5" in first.reason
    assert pool.held("downscale_delay")


def test_a_dip_shorter_than_the_downscale_delay_removes_nothing():
    pool = TracePool(policy(), slots=10).play(trace((60, 100), (100, 10), (300, 100)))
    assert pool.events == []


def test_min_slots_is_never_crossed_and_a_pool_below_it_is_raised_at_once():
    pool = TracePool(policy(min_slots=3), slots=0).play(trace((1200, 0)))
    assert pool.events[0].t == 0 and pool.events[0].to == 3 and "below min_slots 3" in pool.events[0].reason
    assert pool.slots == 3 and min(pool.sizes()[1:]) == 3
    assert all(d.slots >= 3 and d.wanted >= 3 for _, d in pool.decisions)


def test_a_pool_above_a_lowered_max_slots_goes_down_to_it_at_once():
    pool = TracePool(policy(max_slots=4), slots=9)
    d = pool.at(0, 500)
    assert (d.previous, d.slots) == (9, 4) and "above max_slots 4" in d.reason


# -- cool-down, rollout, nodes ---------------------------------------------------------------------------


def test_the_cooldown_spaces_every_change_even_with_no_delays():
    rng = random.Random(3)
    samples = [(t, rng.choice([0, 40, 200])) for t, _ in trace((1800, 0))]
    pool = TracePool(policy(upscale_delay_s=0, downscale_delay_s=0, cooldown_s=60, smoothing_s=0), slots=1)
    pool.play(samples)
    assert len(pool.events) > 5  # it does follow the signal...
    for a, b in zip(pool.events, pool.events[1:], strict=False):
        assert b.t - a.t >= 60  # ...but never twice within cooldown_s
    held = pool.held("cooldown")
    assert held and all("cooling down" in d.reason for _, d in held)


def test_no_change_during_a_rollout_step_and_the_waiting_demand_acts_right_after():
    pool = TracePool(policy(), slots=2)
    pool.play(trace((60, 20), (120, 2000)), rollout_in_progress=True)
    assert pool.events == []
    held = pool.held("rollout")
    assert held and all("rollout in progress: holding 2" in d.reason and d.wanted == 20 for _, d in held)
    d = pool.at(180, 2000)  # the rollout is done; the signal has asked for more all along
    assert d.changed and d.slots == 20


def test_a_rollout_holds_even_a_size_below_min_slots():
    pool = TracePool(policy(min_slots=3), slots=1)
    d = pool.at(0, 0, rollout_in_progress=True)
    assert not d.changed and "rollout in progress" in d.reason


def test_no_more_slots_while_some_wait_for_nodes_but_the_need_is_reported():
    pool = TracePool(policy(), slots=5)
    pool.play(trace((300, 2000)), pending_slots=3)
    assert pool.events == []
    held = pool.held("waiting_for_nodes")
    assert held and all(d.wanted == 20 for _, d in held)  # what to ask Ray's autoscaler for
    assert "waiting for nodes: 3 slot(s) pending for lack of resources" in held[-1][1].reason
    d = pool.at(300, 2000)  # the nodes came: scale at once, the signal asked all along
    assert d.slots == 20


def test_while_many_slots_are_still_starting_no_more_are_added():
    pool = TracePool(policy(upscale_delay_s=0), slots=10)
    d = pool.at(0, 2000, ready_slots=5)
    assert not d.changed and d.held_by == "starting" and "5 starting slot(s)" in d.reason
    d = pool.at(5, 2000, ready_slots=9)  # 90% ready: grow
    assert d.slots == 20


# -- zero ------------------------------------------------------------------------------------------------


def test_an_idle_pool_scales_to_zero_after_the_delay_and_starts_again_at_the_first_item():
    cfg = policy(min_slots=0, downscale_delay_s=120, downscale_to_zero_delay_s=300)
    pool = TracePool(cfg, slots=4).play(trace((30, 40), (600, 0)))
    zero = pool.events[-1]
    assert pool.slots == 0 and zero.to == 0
    assert zero.t >= 30 + 300 and "scale to zero" in zero.reason
    d = pool.at(700, 35)  # work arrives: no upscale delay, no cooldown
    assert d.changed and d.slots == 4 and "cold start" in d.reason


def test_one_item_during_the_idle_window_restarts_it():
    cfg = policy(min_slots=0, downscale_to_zero_delay_s=300)
    pool = TracePool(cfg, slots=1).play(trace((200, 0), (5, 1), (250, 0)))
    assert pool.events == []  # 200 s + 250 s idle, never 300 s without a break
    assert pool.held("to_zero_delay")
    pool.play(trace((60, 0), start=455))
    assert pool.slots == 0


def test_cold_start_delay_lets_a_trickle_wait_a_little():
    pool = TracePool(policy(min_slots=0, cold_start_delay_s=20), slots=0)
    pool.play(trace((15, 3)))
    assert pool.events == [] and pool.held("cold_start_delay")
    d = pool.at(20, 3)
    assert d.slots == 1 and "cold start" in d.reason


def test_cold_start_respects_max_step_up():
    pool = TracePool(policy(min_slots=0, max_step_up=4), slots=0)
    assert pool.at(0, 2000).slots == 4


# -- signals ---------------------------------------------------------------------------------------------


def test_a_missing_reading_holds_the_size_and_breaks_the_windows():
    pool = TracePool(policy(), slots=2)
    pool.play(trace((25, 2000)))
    d = pool.at(25, None)
    assert not d.changed and d.held_by == "no_signal" and "no backlog reading" in d.reason
    pool.play(trace((25, 2000), start=30))
    assert pool.events == []  # 25 s + 25 s of asking, broken by the gap: not 30 s without a break
    pool.play(trace((10, 2000), start=55))
    assert pool.slots == 20


def test_a_missing_reading_never_scales_down():
    pool = TracePool(policy(min_slots=0, downscale_delay_s=0, downscale_to_zero_delay_s=0), slots=5)
    pool.play(trace((600, None)))
    assert pool.events == []


def test_target_defaults_to_twice_the_slots_concurrency():
    pool = TracePool(policy(target_backlog_per_slot=None, upscale_delay_s=0, smoothing_s=0), slots=1)
    d = pool.at(0, 80, concurrency=4)
    assert d.slots == 10 and "target 8/slot" in d.reason


def test_drain_within_s_sizes_slow_items_by_their_latency():
    cfg = policy(target_backlog_per_slot=100, drain_within_s=60, upscale_delay_s=0, smoothing_s=0)
    fast = TracePool(cfg, slots=1).at(0, 300, item_latency_s=0.1, concurrency=2)
    slow = TracePool(cfg, slots=1).at(0, 300, item_latency_s=4.0, concurrency=2)
    assert fast.slots == 3  # backlog / target
    assert slow.slots == 10  # 300 items × 4 s / (60 s × 2 at once)


def test_lag_reads_like_backlog_and_reasons_name_the_stream():
    pool = TracePool(policy(upscale_delay_s=0, smoothing_s=0), slots=1)
    d = pool.at(0, 90, signal="lag on scrape.products")
    assert d.slots == 9 and d.reason.startswith("lag on scrape.products 90")


def test_the_state_survives_a_checkpoint_mid_window():
    a = TracePool(policy(), slots=1).play(trace((20, 2000)))
    b = TracePool(policy(), slots=1, clock=FakeClock(a.clock()), state=ScaleState.from_json(a.state.to_json()))
    for t, backlog in trace((40, 2000), start=20):
        assert a.at(t, backlog) == b.at(t, backlog)
    assert a.slots == b.slots == 20


def test_bad_observations_are_refused():
    with pytest.raises(ValueError, match="backlog"):
        ScaleObservation(current_slots=1, backlog=-1)
    with pytest.raises(ValueError, match="pending_slots"):
        ScaleObservation(current_slots=1, backlog=0, pending_slots=2)


# -- per-slot concurrency --------------------------------------------------------------------------------


BOUNDS = ConcurrencyBounds(min=2, max=40)


def test_concurrency_steps_down_when_any_reading_is_over_its_limit_and_says_which():
    new, why = decide_concurrency(BOUNDS, PressureSnapshot(cpu_ratio=0.5, memory_ratio=0.93), 20)
    assert new == 19 and "memory 93% over 90%" in why and "20 → 19" in why
    new, why = decide_concurrency(BOUNDS, PressureSnapshot(event_loop_lag_s=0.2, chromium_memory_ratio=0.95), 20)
    assert new == 19 and "event-loop lag 200 ms over 50 ms" in why and "chromium memory 95% over 80%" in why


def test_concurrency_grows_only_when_every_reading_has_headroom_and_the_slot_uses_what_it_has():
    calm = PressureSnapshot(cpu_ratio=0.3, memory_ratio=0.4, event_loop_lag_s=0.005, in_flight=20)
    assert decide_concurrency(BOUNDS, calm, 20)[0] == 21
    new, why = decide_concurrency(BOUNDS, PressureSnapshot(cpu_ratio=0.85, in_flight=20), 20)
    assert new == 20 and "close to limits: cpu 85%" in why
    new, why = decide_concurrency(BOUNDS, PressureSnapshot(cpu_ratio=0.3, in_flight=5), 20)
    assert new == 20 and "using 5 of 20" in why
    one = ConcurrencyBounds(min=1, max=4)  # an idle slot at 1 is not using what it has (floor(0.9 × 1) is 0)
    assert decide_concurrency(one, PressureSnapshot(cpu_ratio=0.1, in_flight=0), 1) == (1, "using 0 of 1: holding")
    assert decide_concurrency(one, PressureSnapshot(cpu_ratio=0.1, in_flight=1), 1)[0] == 2


def test_concurrency_stays_within_its_bounds():
    hot = PressureSnapshot(memory_ratio=0.99)
    assert decide_concurrency(BOUNDS, hot, 2) == (2, "memory 99% over 90%: at min 2, holding")
    assert decide_concurrency(BOUNDS, PressureSnapshot(cpu_ratio=0.1), 40)[0] == 40
    assert decide_concurrency(BOUNDS, PressureSnapshot(), 60)[0] == 40
    assert decide_concurrency(BOUNDS, PressureSnapshot(), 1)[0] == 2
    assert decide_concurrency(BOUNDS, PressureSnapshot(), 10) == (10, "no pressure readings: holding 10")


def test_concurrency_under_a_memory_trace_backs_off_and_recovers_without_oscillating():
    # Chromium memory climbs while the slot runs hot, then the pages close
    chromium = [0.5, 0.6, 0.7, 0.85, 0.9, 0.9, 0.88, 0.85, 0.82, 0.7, 0.6, 0.5, 0.5, 0.5]
    current, path = 20, []
    for ratio in chromium:
        current, _ = decide_concurrency(BOUNDS, PressureSnapshot(chromium_memory_ratio=ratio, in_flight=current),
                                        current)
        path.append(current)
    trough = min(path)
    assert trough < 20  # it yielded while Chromium was over its share
    assert path[-1] > trough  # and grew back once it was not
    moves = [b > a for a, b in zip([20, *path], path, strict=False) if b != a]
    runs = 1 + sum(x != y for x, y in zip(moves, moves[1:], strict=False))
    assert runs <= 3  # up while calm, down while hot, up again: never back and forth
