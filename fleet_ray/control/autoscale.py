"""Autoscaling decisions, pure and clock-injected: how many slots a pool should have, and how many
items one slot should work on at once.

:func:`decide_scale` is modelled on Ray Serve's ``replica_queue_length_autoscaling_policy`` (desired =
signal / target per slot, bounded, applied only after the decision held for a delay, a cold-start fast
path from zero); :func:`decide_concurrency` on Crawlee's ``AutoscaledPool`` over ``SystemStatus`` (a
step down when a resource is overloaded, a step up when the system is idle and the pool uses what it
has). Both are plain functions over plain values: no Ray, no I/O, time passed in.

How the supervisor calls :func:`decide_scale`, each reconcile tick, for each pool with ``autoscale``
that is not paused (a paused pool leases no work, so its backlog says nothing; keep its state as is):

1. Gather a :class:`ScaleObservation`:

   - ``current_slots`` — the size the supervisor reconciles the pool to now: its own record, checkpointed,
     which starts at the spec's ``slots`` (the starting size; a re-apply that leaves ``autoscale`` alone
     should not reset it) and afterwards is the last decision's ``slots``;
   - ``ready_slots`` — positions RUNNING with a passed health check;
   - ``pending_slots`` — positions marked pending because no node has the resources (not for other reasons);
   - ``backlog`` — for ``signal: backlog`` the work queue's queued + leased items, for ``signal: lag`` the
     consumer group's (the pool's) unacknowledged items on the stream
     (:func:`fleet_ray.spec.scaling.scale_signal` says which); ``None`` when it could not be read this tick
     (the size is then held: a missing metric never scales a pool down);
   - ``item_latency_s`` — recent mean seconds per item, if known (used with ``drain_within_s``);
   - ``rollout_in_progress`` — the pool's rollout is active (no size change happens during one);
   - ``concurrency`` — items one slot works on at once now (the pool's ``concurrency``, or with
     ``concurrency_bounds`` the mean its running slots report: :func:`~fleet_ray.control.pool_scaling.pool_concurrency`);
   - ``signal`` — ``ScaleSignal.describe()``, for the reasons.

2. Call ``decision, state = decide_scale(pool.autoscale, state, observation, now)`` and keep ``state``
   (a :class:`ScaleState`, per pool) in the checkpoint (``to_json`` / ``from_json``), so a recovered
   supervisor keeps its delay windows and cool-down.

3. Act on the :class:`ScaleDecision`:

   - ``decision.changed``: reconcile the pool to ``decision.slots`` and emit a ``pool.scaled`` event with
     ``pool``, ``from`` (``decision.previous``), ``to`` (``decision.slots``), ``wanted`` and ``reason``.
     Scaling up starts new positions. Scaling down retires the highest positions (a pool's positions are
     ``0..slots-1``, and a position's index is part of its slot's identity and actor name, so a running
     slot can't take over a lower position that is pending or restarting), each through a graceful drain
     (``Drain(retire=True)`` with the pool's ``recycle.drain_timeout_s``): in-flight items finish or their
     leases are handed back, so nothing is lost or done twice; positions above the size that are pending
     or still starting are dropped or killed at once.
   - while positions are pending for lack of resources: ask Ray's autoscaler for the resources of
     ``wanted`` slots (:func:`fleet_ray.control.pool_scaling.resource_request`; a fixed pool asks for its
     ``slots``), so nodes come up for what the pool needs rather than one step at a time.
   - status, the API, the CLI and the dashboard show ``current`` (``previous``/``slots``), ``desired``
     (``wanted``), ``min_slots``/``max_slots`` and ``reason``; ``held_by`` says what holds a change back.

Batch slots of a pool with ``concurrency_bounds`` call :func:`decide_concurrency` every
``concurrency_bounds.interval_s`` with a :class:`PressureSnapshot` averaged over that interval, and lease
and start up to the returned number of items (:class:`fleet_ray.control.concurrency.ConcurrencyGovernor`
is that loop's pure part; the slot actor samples the host).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from fleet_ray.spec.scaling import AutoscalePolicy, ConcurrencyBounds

# grow a pool only while at least this share of its slots are ready (Crawlee's desired-concurrency ratio):
# slots still starting are capacity already on its way
READY_RATIO_TO_GROW = 0.9

Hold = Literal[
    "rollout",  # a rollout step is in progress
    "no_signal",  # the signal could not be read this tick
    "cold_start_delay",  # work waits at zero slots, for less than cold_start_delay_s yet
    "waiting_for_nodes",  # slots already pending for lack of resources
    "starting",  # too many slots not ready yet to add more
    "upscale_delay",  # asking for more for less than upscale_delay_s
    "downscale_delay",  # asking for fewer for less than downscale_delay_s
    "to_zero_delay",  # signal at 0 for less than downscale_to_zero_delay_s
    "cooldown",  # within cooldown_s of the last change
]


@dataclass(frozen=True)
class ScaleObservation:
    """What the supervisor saw of one autoscaled pool this tick (see the module docstring)."""

    current_slots: int
    backlog: float | None
    ready_slots: int | None = None  # None: all but the pending ones
    pending_slots: int = 0
    item_latency_s: float | None = None
    rollout_in_progress: bool = False
    concurrency: int = 1
    signal: str = "backlog"  # how reasons name the signal ("backlog", "lag on scrape.products")

    def __post_init__(self) -> None:
        if self.current_slots < 0 or self.pending_slots < 0 or self.pending_slots > self.current_slots:
            raise ValueError(f"need 0 <= pending_slots ({self.pending_slots}) <= current_slots ({self.current_slots})")
        if self.ready_slots is not None and not 0 <= self.ready_slots <= self.current_slots:
            raise ValueError(f"ready_slots ({self.ready_slots}) must lie within 0..current_slots ({self.current_slots})")
        if self.backlog is not None and not self.backlog >= 0:  # also refuses NaN
            raise ValueError(f"backlog must be a count >= 0 or None, got {self.backlog}")
        if self.item_latency_s is not None and not self.item_latency_s >= 0:
            raise ValueError(f"item_latency_s must be >= 0 or None, got {self.item_latency_s}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    @property
    def ready(self) -> int:
        return self.current_slots - self.pending_slots if self.ready_slots is None else self.ready_slots


@dataclass(frozen=True)
class ScaleState:
    """What :func:`decide_scale` remembers between ticks (per pool; checkpoint it). Times are epoch seconds."""

    smoothed: float | None = None  # the signal's moving average
    observed_at: float | None = None  # when the signal was last read
    up_since: float | None = None  # since when the signal has asked for more slots, continuously
    down_since: float | None = None  # ... for fewer
    idle_since: float | None = None  # since when the signal has been 0 (scale to zero)
    busy_since: float | None = None  # since when it has been above 0 (cold start)
    changed_at: float | None = None  # the last change (cool-down)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ScaleState:
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ScaleDecision:
    """The size to reconcile a pool to, and why."""

    slots: int  # reconcile the pool to this many slots
    previous: int  # the observation's current_slots
    wanted: int  # what the signal asks for now, within min..max (before delays, steps and holds)
    reason: str  # for people: the signal, the target, what holds a change back
    held_by: Hold | None = None  # set when wanted != slots because something holds the change back
    signal: float | None = None  # the smoothed signal the decision read

    @property
    def changed(self) -> bool:
        return self.slots != self.previous

    @property
    def direction(self) -> Literal["up", "down"] | None:
        return "up" if self.slots > self.previous else "down" if self.slots < self.previous else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def decide_scale(
    config: AutoscalePolicy, state: ScaleState, observation: ScaleObservation, now: float
) -> tuple[ScaleDecision, ScaleState]:
    """The size ``observation``'s pool should have at ``now``, and the state to pass next time.

    In order: a rollout step holds the size; a size outside ``min_slots..max_slots`` is brought inside at
    once; without a reading the size is held; a pool at zero slots starts as soon as work has waited
    ``cold_start_delay_s``; otherwise desired = ceil(smoothed signal / target per slot) (or what drains the
    backlog within ``drain_within_s``), within ``tolerance`` of the current size counting as no change,
    bounded by min/max. More slots come once the signal (its average and its latest reading alike) has
    asked for them for ``upscale_delay_s`` without a break, none while slots are pending for lack of nodes
    or too many are still starting; fewer once it has asked for ``downscale_delay_s`` (the last one once
    the signal has been 0 for
    ``downscale_to_zero_delay_s``); each change at most ``max_step_up``/``max_step_down`` slots and
    ``cooldown_s`` after the previous one.
    """
    obs = observation
    cur, lo, hi = obs.current_slots, config.min_slots, config.max_slots
    target = config.target_per_slot(obs.concurrency)
    raw = obs.backlog

    if raw is None:  # continuity is broken: no window may claim the signal asked for anything meanwhile
        state = replace(state, up_since=None, down_since=None, idle_since=None, busy_since=None)
        smoothed = state.smoothed
        need = wanted = now_wanted = _clamp(cur, lo, hi)
    else:
        smoothed = _smooth(state.smoothed, state.observed_at, raw, now, config.smoothing_s)
        if cur == 0 and raw > 0:
            smoothed = max(smoothed, raw)  # a cold pool reads the work waiting as it is
        need = _need(config, obs, raw, smoothed, target)
        wanted = _clamp(need, lo, hi)
        # a window runs while the average and the reading itself agree: the average's tail after a
        # short spike (or dip) is not the signal asking
        now_wanted = _clamp(_need(config, obs, raw, raw, target), lo, hi)
        state = replace(
            state,
            smoothed=smoothed,
            observed_at=now,
            idle_since=_since(state.idle_since, raw == 0, now),
            busy_since=_since(state.busy_since, raw > 0, now),
            up_since=_since(state.up_since, wanted > cur and now_wanted > cur, now),
            down_since=_since(state.down_since, wanted < cur and now_wanted < cur, now),
        )

    def decide(slots: int, reason: str, held_by: Hold | None = None) -> tuple[ScaleDecision, ScaleState]:
        new_state = state
        if slots != cur:  # a window survives a change only if the signal still asks the same way of the new size
            new_state = replace(
                state,
                changed_at=now,
                up_since=state.up_since if wanted > slots else None,
                down_since=state.down_since if wanted < slots else None,
            )
        return ScaleDecision(slots, cur, wanted, reason, held_by, smoothed), new_state

    why = "" if raw is None else _why(obs, raw, smoothed, target, need, wanted)
    if obs.rollout_in_progress:
        return decide(cur, f"rollout in progress: holding {cur} slot(s)" + (f" ({why})" if why else ""),
                      "rollout" if wanted != cur else None)
    if cur < lo:
        return decide(lo, f"below min_slots {lo}: {cur} → {lo}")
    if cur > hi:
        return decide(hi, f"above max_slots {hi}: {cur} → {hi}")
    if raw is None:
        return decide(cur, f"no {obs.signal} reading: holding {cur} slot(s)", "no_signal")
    assert smoothed is not None

    cooling = state.changed_at is not None and now - state.changed_at < config.cooldown_s
    cooldown_note = "" if state.changed_at is None else (
        f"; cooling down ({config.cooldown_s - (now - state.changed_at):.0f}s left of cooldown_s {config.cooldown_s:g})"
    )

    if cur == 0:
        if wanted == 0:
            return decide(0, f"{why}: holding 0 slots")
        waited = now - (state.busy_since if state.busy_since is not None else now)
        if waited < config.cold_start_delay_s:
            return decide(0, f"{why}; cold start after cold_start_delay_s ({waited:.0f}s of "
                             f"{config.cold_start_delay_s:g}s)", "cold_start_delay")
        new = _step_up(config, 0, wanted)
        return decide(new, f"cold start: {obs.signal} {raw:g} waiting with no slots: 0 → {new}")

    if wanted > cur:
        if obs.pending_slots:
            return decide(cur, f"waiting for nodes: {obs.pending_slots} slot(s) pending for lack of resources; "
                               f"holding {cur} ({why})", "waiting_for_nodes")
        if obs.ready < math.floor(READY_RATIO_TO_GROW * cur):
            return decide(cur, f"waiting for {cur - obs.ready} starting slot(s) before adding more; holding "
                               f"{cur} ({why})", "starting")
        if state.up_since is None:  # the average asks, the latest reading doesn't
            return decide(cur, f"{why}; the latest reading alone asks for {now_wanted}: holding {cur}",
                          "upscale_delay")
        asked = now - state.up_since
        if asked < config.upscale_delay_s:
            return decide(cur, f"{why}; adding after upscale_delay_s ({asked:.0f}s of {config.upscale_delay_s:g}s)",
                          "upscale_delay")
        if cooling:
            return decide(cur, f"{why}{cooldown_note}", "cooldown")
        new = _step_up(config, cur, wanted)
        step_note = f" (max_step_up {config.max_step_up})" if new < wanted else ""
        return decide(new, f"{why}: {cur} → {new}{step_note}")

    if wanted < cur:
        new = max(wanted, cur - config.max_step_down) if config.max_step_down else wanted
        note = f" (max_step_down {config.max_step_down})" if new > wanted else ""
        if new == 0:
            assert state.idle_since is not None  # wanted 0 needs min_slots 0 and a reading of 0
            idle, delay = now - state.idle_since, config.to_zero_delay_s()
            if idle < delay:
                wait = (f"the last slot goes after {obs.signal} 0 for downscale_to_zero_delay_s "
                        f"({idle:.0f}s of {delay:g}s)")
                if cur == 1:
                    return decide(cur, f"{why}; {wait}", "to_zero_delay")
                new, note = 1, f"; {wait}"
        if new > 0:
            if state.down_since is None:  # the average asks, the latest reading doesn't
                return decide(cur, f"{why}; the latest reading alone asks for {now_wanted}: holding {cur}",
                              "downscale_delay")
            asked = now - state.down_since
            if asked < config.downscale_delay_s:
                return decide(cur, f"{why}; removing after downscale_delay_s ({asked:.0f}s of "
                                   f"{config.downscale_delay_s:g}s)", "downscale_delay")
        if cooling:
            return decide(cur, f"{why}{cooldown_note}", "cooldown")
        if new == 0:
            return decide(0, f"{obs.signal} 0 for {now - state.idle_since:.0f}s: {cur} → 0, draining "
                             f"{cur} slot(s) (scale to zero)")
        return decide(new, f"{why}: {cur} → {new}, draining {cur - new} slot(s){note}")

    return decide(cur, f"{why}: holding {cur} slot(s)")


def _clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def _since(since: float | None, holds: bool, now: float) -> float | None:
    """The start of a condition's current unbroken stretch (None while it does not hold)."""
    if not holds:
        return None
    return now if since is None else since


def _smooth(prev: float | None, prev_t: float | None, raw: float, now: float, tau: float) -> float:
    """Exponential moving average with time constant ``tau``, correct for uneven ticks."""
    if prev is None or prev_t is None or tau <= 0:
        return raw
    alpha = 1.0 - math.exp(-max(0.0, now - prev_t) / tau)
    return prev + alpha * (raw - prev)


def _need(config: AutoscalePolicy, obs: ScaleObservation, raw: float, smoothed: float, target: float) -> int:
    """Slots the signal asks for (not yet bounded by min/max)."""
    if raw == 0:
        return 0  # nothing queued, leased or unread: the pool needs no slot, whatever the average says
    load = smoothed / target
    if config.drain_within_s is not None and obs.item_latency_s:
        load = max(load, smoothed * obs.item_latency_s / (config.drain_within_s * obs.concurrency))
    cur = obs.current_slots
    if cur > 0 and abs(load / cur - 1.0) <= config.tolerance:
        return cur
    return max(1, math.ceil(load - 0.01))  # a hundredth of a slot's worth (an average's tail) is no demand


def _step_up(config: AutoscalePolicy, cur: int, wanted: int) -> int:
    return min(wanted, cur + config.max_step_up) if config.max_step_up else wanted


def _why(obs: ScaleObservation, raw: float, smoothed: float | None, target: float, need: int, wanted: int) -> str:
    text = f"{obs.signal} {raw:g} (smoothed {smoothed or 0:.1f}, target {target:g}/slot) asks for {need} slot(s)"
    if wanted != need:
        text += f", bounded to {wanted}"
    return text


# -- per-slot concurrency under host pressure ------------------------------------------------------------


@dataclass(frozen=True)
class PressureSnapshot:
    """A slot's host pressure, each reading averaged over the last interval; None = not measured."""

    cpu_ratio: float | None = None  # host CPU in use, 0..1
    memory_ratio: float | None = None  # memory in use, 0..1 (of the host, or of the slot's budget)
    event_loop_lag_s: float | None = None  # how late the slot's event loop runs a timer
    chromium_memory_ratio: float | None = None  # browser slots: Chromium's memory / the slot's memory budget
    in_flight: int | None = None  # items the slot works on now


def decide_concurrency(bounds: ConcurrencyBounds, pressure: PressureSnapshot, current: int) -> tuple[int, str]:
    """The concurrency a slot should run at next, and why (Crawlee's AutoscaledPool rules).

    Outside ``bounds.min..max``: brought inside. A reading over its limit: a step down (``step_ratio`` of
    the current value, at least 1). Every reading below ``grow_below`` × its limit and the slot using at
    least 90% of its concurrency (``in_flight``, when given): a step up. Anything else holds.
    """
    lo, hi = bounds.min, bounds.max
    if current < lo:
        return lo, f"below min {lo}: {current} → {lo}"
    if current > hi:
        return hi, f"above max {hi}: {current} → {hi}"
    readings = [
        (name, value, limit, show)
        for name, value, limit, show in (
            ("cpu", pressure.cpu_ratio, bounds.max_cpu_ratio, _percent),
            ("memory", pressure.memory_ratio, bounds.max_memory_ratio, _percent),
            ("event-loop lag", pressure.event_loop_lag_s, bounds.max_event_loop_lag_s, _millis),
            ("chromium memory", pressure.chromium_memory_ratio, bounds.max_chromium_memory_ratio, _percent),
        )
        if value is not None
    ]
    if not readings:
        return current, f"no pressure readings: holding {current}"
    step = max(1, math.ceil(bounds.step_ratio * current))
    over = [f"{name} {show(value)} over {show(limit)}" for name, value, limit, show in readings if value > limit]
    if over:
        if current == lo:
            return current, f"{', '.join(over)}: at min {lo}, holding"
        new = max(lo, current - step)
        return new, f"{', '.join(over)}: {current} → {new}"
    if current == hi:
        return current, f"at max {hi}: holding"
    near = [f"{name} {show(value)} (grows below {show(bounds.grow_below * limit)})"
            for name, value, limit, show in readings if value >= bounds.grow_below * limit]
    if near:
        return current, f"close to limits: {', '.join(near)}: holding {current}"
    # at least one item, so an idle slot at 1 doesn't count as using what it has (floor(0.9) is 0)
    if pressure.in_flight is not None and pressure.in_flight < max(1, math.floor(READY_RATIO_TO_GROW * current)):
        return current, f"using {pressure.in_flight} of {current}: holding"
    new = min(hi, current + step)
    calm = ", ".join(f"{name} {show(value)}" for name, value, _, show in readings)
    return new, f"{calm} under limits: {current} → {new}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def _millis(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
