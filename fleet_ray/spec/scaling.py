"""Pools that size themselves: a pool's ``autoscale`` and ``concurrency_bounds``, validated.

A pool either has a fixed ``slots`` count or declares how to size itself, and a batch pool's slots may
also adapt how many items each works on at once::

    pools:
      - name: sweep                         # a batch pool: scales on its work queue's backlog
        automation: acme.prices
        autoscale: {min_slots: 0, max_slots: 20, target_backlog_per_slot: 8}
        concurrency_bounds: {min: 2, max: 16}   # each slot: 2..16 items at once, by host pressure
      - name: price                         # a continuous consumer: scales on its consumer lag
        automation: acme.price
        inputs: {products: scrape.products}
        autoscale: {min_slots: 1, max_slots: 6, signal: lag, stream: products}

The field names follow Ray Serve's ``autoscaling_config`` where one has a counterpart
(``min_replicas`` → ``min_slots``, ``target_ongoing_requests`` → ``target_backlog_per_slot``,
``upscale_delay_s``, ``downscale_delay_s``, ``downscale_to_zero_delay_s``); the pure policy that reads
them is :func:`fleet_ray.control.autoscale.decide_scale`.

Rules (each violation is an error naming its field, e.g. ``pools.sweep.autoscale.max_slots``):

- ``0 <= min_slots <= max_slots``, ``max_slots >= 1``; ``max_slots`` has no default (the ceiling is what
  an operator pays for, so the spec says it).
- ``slots`` given together with ``autoscale`` is the **starting size** and must lie within
  ``[min_slots, max_slots]``; without it the pool starts at ``min_slots`` (as Serve's ``initial_replicas``
  defaults to ``min_replicas``). A spec is normalised so: after validation ``slots`` always holds the
  starting size, and validating the dump again gives the same spec. A paused pool may hold fewer than
  ``min_slots`` (``fleet-ray drain`` pauses a pool and sets its slots to 0).
- ``signal``: ``backlog`` (a batch pool: its work queue's queued + leased items) or ``lag`` (a continuous
  pool that consumes a stream: its consumer group's unacknowledged items on ``stream``). ``stream`` names
  one of the pool's ``inputs`` (by input name or by the stream ``<pool>.<output>`` wired to it) and is
  normalised to the stream name; it may be left out when the pool has exactly one input. ``stream``
  alone implies ``signal: lag``; ``stream`` with ``signal: backlog`` is an error. Whether the automation
  is batch or continuous is known once it is resolved: :func:`signal_errors` (run by
  :func:`~fleet_ray.spec.models.validate_spec`) rejects ``lag`` on a batch pool and ``backlog`` on a
  continuous one; a ``signal`` left out means ``backlog`` for batch pools and ``lag`` on the only input
  for continuous ones (:func:`scale_signal`).
- ``downscale_to_zero_delay_s`` needs ``min_slots: 0``.
- ``concurrency_bounds``: ``1 <= min <= max``; the pool's ``concurrency`` is the starting value and must
  lie within them (without it: ``min``). Batch pools only (:func:`signal_errors` rejects it on a
  continuous pool: its ``run()`` has no items to bound). Each slot then samples its host every
  ``interval_s`` / 5 (at most 1 s apart) — host CPU and memory in use, how late a timer on its event loop
  fires, for browser slots Chromium's memory over ``browser.max_browser_rss_mb``, the items it works
  on — and every ``interval_s`` asks :func:`fleet_ray.control.autoscale.decide_concurrency` for its
  next value on the interval's averages (:class:`fleet_ray.control.concurrency.ConcurrencyGovernor`): a
  step down when a reading is over its limit, a step up when every reading is below ``grow_below`` of
  its limit and the slot uses what it has. The slot leases and starts that many items at once (items
  above a lowered value finish; none is cancelled); each change is a ``slot.concurrency`` event, and
  status shows each slot's value and the last decision's reason. An autoscaled pool's default target
  per slot (2 × concurrency) follows what its slots report.

Changing ``autoscale`` or ``concurrency_bounds`` needs no new slots (neither is in the slot shape hash):
the supervisor reads a new ``autoscale`` at once; running slots keep the ``concurrency_bounds`` they
started with, and slots started afterwards (scale-up, recycle, rollout) take the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from fleet_ray.spec.browser_options import _Strict  # the spec's strict base

if TYPE_CHECKING:  # models builds PoolSpec on this module; nothing from models is needed at run time
    from fleet_ray.spec.models import PoolSpec

ScaleSignalKind = Literal["backlog", "lag"]


class AutoscalePolicy(_Strict):
    """How a pool sizes itself between ``min_slots`` and ``max_slots`` (``PoolSpec.autoscale``)."""

    min_slots: int = Field(
        1, ge=0, le=10_000, description="Never fewer slots than this. 0 lets an idle pool scale to zero."
    )
    max_slots: int = Field(ge=1, le=10_000, description="Never more slots than this (required).")
    signal: ScaleSignalKind | None = Field(
        None,
        description="What the pool scales on: 'backlog' (batch pools: queued + leased work items) or 'lag' "
        "(continuous pools: unacknowledged items of the consumed stream). Default: by the automation's kind.",
    )
    stream: str | None = Field(
        None,
        description="signal 'lag': the input the lag is read on (an input name or its '<pool>.<output>' "
        "stream); normalised to the stream name. May be left out when the pool has one input.",
    )
    target_backlog_per_slot: float | None = Field(
        None,
        gt=0,
        description="Items waiting per slot the pool is sized for (Serve's target_ongoing_requests): "
        "desired slots = ceil(smoothed signal / target). Default: 2 × the slot's concurrency.",
    )
    drain_within_s: float | None = Field(
        None,
        gt=0,
        description="Also size the pool so its backlog would be worked off within this many seconds at the "
        "observed item latency (slots ≥ backlog × latency / (drain_within_s × concurrency)). Unset: off.",
    )
    smoothing_s: float = Field(
        10.0, ge=0, description="Time constant of the exponential moving average over the signal (0: raw)."
    )
    tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="The signal must be this fraction away from what the current size is meant for before "
        "it counts as asking for more or fewer slots (like Kubernetes HPA's tolerance).",
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, description="The signal must ask for more slots this long, continuously, before they are added."
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, description="The signal must ask for fewer slots this long, continuously, before any go."
    )
    downscale_to_zero_delay_s: float | None = Field(
        None,
        ge=0,
        description="min_slots 0: the signal must be 0 this long before the last slot goes. "
        "Default: downscale_delay_s.",
    )
    cold_start_delay_s: float = Field(
        0.0,
        ge=0,
        description="A pool at zero slots starts as soon as work has been waiting this long (0: at once); "
        "neither upscale_delay_s nor cooldown_s apply to it.",
    )
    cooldown_s: float = Field(
        30.0,
        ge=0,
        description="After any change, no other for this long; it also spaces the steps of one movement.",
    )
    max_step_up: int | None = Field(None, ge=1, description="Most slots added by one change (unset: any).")
    max_step_down: int | None = Field(None, ge=1, description="Most slots removed by one change (unset: any).")

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalePolicy:
        problems: list[tuple[tuple[str, ...], str, Any]] = []
        if self.max_slots < self.min_slots:
            problems.append((("max_slots",), f"max_slots ({self.max_slots}) is below min_slots ({self.min_slots})",
                             self.max_slots))
        if self.stream is not None and self.signal == "backlog":
            problems.append((("stream",), "a stream is read only by signal 'lag'; signal 'backlog' scales on the "
                             "pool's work queue", self.stream))
        if self.downscale_to_zero_delay_s is not None and self.min_slots > 0:
            problems.append((("downscale_to_zero_delay_s",), f"scaling to zero needs min_slots: 0 "
                             f"(min_slots is {self.min_slots})", self.downscale_to_zero_delay_s))
        raise_problems(type(self).__name__, problems)
        if self.stream is not None:
            self.signal = "lag"
        return self

    def to_zero_delay_s(self) -> float:
        return self.downscale_delay_s if self.downscale_to_zero_delay_s is None else self.downscale_to_zero_delay_s

    def target_per_slot(self, concurrency: int) -> float:
        """Items waiting per slot the pool is sized for, given the slot's concurrency now."""
        return self.target_backlog_per_slot if self.target_backlog_per_slot is not None else 2.0 * max(1, concurrency)


class ConcurrencyBounds(_Strict):
    """How far a batch slot's concurrency moves with host pressure (``PoolSpec.concurrency_bounds``; see
    the module docstring for what a slot samples and when it decides).

    Read by :func:`fleet_ray.control.autoscale.decide_concurrency` (Crawlee's AutoscaledPool and
    SystemStatus, as a pure function): a reading above its limit lowers concurrency a step; all readings
    below ``grow_below`` × their limits, with the slot using what it has, raise it a step.
    """

    min: int = Field(1, ge=1, le=1000, description="Never fewer items at once than this.")
    max: int = Field(ge=1, le=1000, description="Never more items at once than this (required).")
    max_cpu_ratio: float = Field(0.95, gt=0, le=1, description="Host CPU in use (0-1) above which the slot yields.")
    max_memory_ratio: float = Field(0.9, gt=0, le=1, description="Memory in use (0-1) above which the slot yields.")
    max_event_loop_lag_s: float = Field(0.05, gt=0, description="Event-loop delay above which the slot yields.")
    max_chromium_memory_ratio: float = Field(
        0.8, gt=0, le=1,
        description="Browser slots: Chromium's memory / the slot's memory budget above which the slot yields.",
    )
    grow_below: float = Field(
        0.8, gt=0, le=1, description="Grow only while every reading is below this fraction of its limit."
    )
    step_ratio: float = Field(
        0.05, gt=0, le=1, description="A step is this fraction of the current concurrency (at least 1)."
    )
    interval_s: float = Field(10.0, gt=0, description="Seconds between concurrency decisions.")

    @model_validator(mode="after")
    def _ordered(self) -> ConcurrencyBounds:
        if self.max < self.min:
            raise_problems(type(self).__name__, [(("max",), f"max ({self.max}) is below min ({self.min})", self.max)])
        return self


# -- fitting a pool's own fields -----------------------------------------------------------------------


def raise_problems(title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise one ValidationError whose errors carry their own locations (relative to the model being
    validated), so a check across fields still names the field at fault (``pools.web.slots``)."""
    if problems:
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=PydanticCustomError("value_error", "{msg}", {"msg": msg}), loc=loc, input=value)
            for loc, msg, value in problems
        ])


def fit_to_pool(pool: PoolSpec) -> None:
    """Check ``autoscale`` and ``concurrency_bounds`` against the rest of the pool and normalise the
    starting ``slots``, ``concurrency`` and the lag ``stream`` (see the module docstring)."""
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    scale = pool.autoscale
    if scale is not None:
        if "slots" in pool.model_fields_set:
            lowest = 0 if pool.paused else scale.min_slots  # a drained pool is paused with 0 slots
            if not lowest <= pool.slots <= scale.max_slots:
                problems.append((("slots",), f"slots ({pool.slots}) is an autoscaled pool's starting size and must "
                                 f"lie within autoscale's min_slots..max_slots ({scale.min_slots}..{scale.max_slots})",
                                 pool.slots))
        else:
            pool.slots = scale.min_slots
        if scale.signal == "lag":
            problems.extend(_fit_stream(pool, scale))
    bounds = pool.concurrency_bounds
    if bounds is not None:
        if "concurrency" in pool.model_fields_set:
            if not bounds.min <= pool.concurrency <= bounds.max:
                problems.append((("concurrency",), f"concurrency ({pool.concurrency}) is the starting value and must "
                                 f"lie within concurrency_bounds min..max ({bounds.min}..{bounds.max})",
                                 pool.concurrency))
        else:
            pool.concurrency = bounds.min
    raise_problems("PoolSpec", problems)


def _fit_stream(pool: PoolSpec, scale: AutoscalePolicy) -> list[tuple[tuple[str | int, ...], str, Any]]:
    wired = pool.inputs
    if not wired:
        return [(("autoscale", "signal"), "signal 'lag' scales on a stream the pool consumes, and this pool has "
                 "no inputs (wire one: inputs: {name: <pool>.<output>})", scale.signal)]
    if scale.stream is None:
        if len(wired) > 1:
            return [(("autoscale", "stream"), f"name the input to scale on: one of {sorted(wired)}", None)]
        pool.autoscale = scale.model_copy(update={"stream": next(iter(wired.values()))})  # not the caller's
        return []
    if scale.stream in wired:
        pool.autoscale = scale.model_copy(update={"stream": wired[scale.stream]})
        return []
    if scale.stream in wired.values():
        return []
    return [(("autoscale", "stream"), f"{scale.stream!r} is not one of this pool's inputs "
             f"({', '.join(f'{k}: {v}' for k, v in sorted(wired.items()))})", scale.stream)]


# -- the signal, once the automation's kind is known ------------------------------------------------------


@dataclass(frozen=True)
class ScaleSignal:
    """What an autoscaled pool scales on: ``backlog`` of its work queue, or ``lag`` of its consumer group
    (named after the pool) on ``stream`` (``<pool>.<output>``)."""

    kind: ScaleSignalKind
    stream: str | None = None

    def describe(self) -> str:
        return f"lag on {self.stream}" if self.kind == "lag" else "backlog"


def scale_signal(pool: PoolSpec, batch: bool) -> ScaleSignal:
    """The signal ``pool`` scales on, its automation being batch (``batch``) or continuous. Raises
    ValueError (its message fit for ``pools.<name>.autoscale.<field>``) for a signal the kind can't give."""
    scale = pool.autoscale
    if scale is None:
        raise ValueError(f"pool {pool.name!r} has no autoscale")
    if batch:
        if scale.signal == "lag":
            raise ValueError("signal 'lag' is for continuous pools that consume a stream; a batch pool scales on "
                             "its work queue: signal 'backlog'")
        return ScaleSignal("backlog")
    if scale.signal == "backlog":
        raise ValueError("a continuous pool has no work queue to scale on; scale it on the lag of a stream "
                         "it consumes: signal 'lag'")
    if scale.stream is not None:  # the model checked it against the inputs and made it the stream name
        return ScaleSignal("lag", scale.stream)
    if len(pool.inputs) == 1:  # signal left out (the model can't know the kind): the only input
        return ScaleSignal("lag", next(iter(pool.inputs.values())))
    if not pool.inputs:
        raise ValueError("a continuous pool that consumes no stream has nothing to scale on: give it a "
                         "fixed 'slots', or wire an input and scale on its lag")
    raise ValueError(f"name the input to scale on (autoscale.stream): one of {sorted(pool.inputs)}")


def signal_errors(pool: PoolSpec, batch: bool | None) -> list[dict[str, Any]]:
    """``validate_spec``'s check of an autoscaled pool's signal, and of ``concurrency_bounds``, against its
    automation's kind (``batch`` None: not known here, e.g. a packaged pool resolved on the driver;
    checked where it is)."""
    if batch is None:
        return []
    errors: list[dict[str, Any]] = []
    if pool.concurrency_bounds is not None and not batch:
        errors.append({"loc": f"pools.{pool.name}.concurrency_bounds",
                       "msg": "concurrency_bounds adapts how many batch items a slot works on at once; a "
                              "continuous automation's run() has none (leave concurrency_bounds out, or size the "
                              "pool with autoscale)"})
    if pool.autoscale is None:
        return errors
    try:
        scale_signal(pool, batch)
    except ValueError as exc:
        field = "stream" if len(pool.inputs) > 1 and not batch and pool.autoscale.signal != "backlog" else "signal"
        errors.append({"loc": f"pools.{pool.name}.autoscale.{field}", "msg": str(exc)})
    return errors
