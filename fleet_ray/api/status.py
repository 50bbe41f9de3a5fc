"""What ``status`` returns: typed, documented models shared by the client, the CLI and the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.envelope import Event


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrowserProxyStatus(_Model):
    id: str = Field(description="Proxy id within the pool.")
    proxy: str = Field(description="Where the proxy is, credentials redacted.")
    country: str | None = Field(None, description="Country the proxy declares (identities follow it).")
    health: str = Field(description="healthy | cooling | quarantined")
    uses: int = Field(0, description="Browser contexts that used this proxy.")
    failures: int = Field(0, description="Tasks that failed through this proxy.")


class BrowserSlotStatus(_Model):
    chromium: str | None = Field(None, description="Chromium version the slot drives.")
    launches: int = Field(0, description="Chromium launches by this slot (1 + browser recycles).")
    pages: int = Field(0, description="Pages (browser contexts) served by this slot.")
    pages_since_launch: int = Field(0, description="Pages served by the current Chromium.")
    crashes: int = Field(0, description="Chromium crashes seen by this slot.")
    recycles: dict[str, int] = Field(default_factory=dict, description="Chromium recycles by reason kind.")
    rss_mb: float = Field(0.0, description="Memory of Chromium's process tree, MiB (shared pages count once).")
    in_flight: int = Field(0, description="Pages open right now.")
    proxies: list[BrowserProxyStatus] = Field(default_factory=list, description="The pool's proxies as this slot sees them.")
    sessions_live: int | None = Field(None, description="Identity sessions kept alive (session mode only).")
    sessions_retired: int | None = Field(None, description="Identity sessions retired (age, uses, block signals).")
    cpus: list[int] | None = Field(
        None, description="CPUs the slot's processes run on (its share of the host's; None: not pinned)."
    )

    @classmethod
    def from_health(cls, snap: dict[str, Any]) -> BrowserSlotStatus:
        """From a browser slot's health report (``BrowserRuntime.snapshot``), which holds no secrets."""
        b = snap.get("browser") or {}
        sessions = snap.get("sessions") or {}
        return cls(
            chromium=b.get("version"), launches=int(b.get("launches") or 0), pages=int(b.get("pages") or 0),
            pages_since_launch=int(b.get("pages_since_launch") or 0), crashes=int(b.get("crashes") or 0),
            recycles={str(k): int(v) for k, v in (b.get("recycles") or {}).items()},
            rss_mb=float(snap.get("browser_rss_mb") or 0.0), in_flight=len(snap.get("in_flight") or {}),
            proxies=[BrowserProxyStatus(id=str(p.get("id")), proxy=str(p.get("proxy")), country=p.get("country"),
                                        health=str(p.get("health")), uses=int(p.get("uses") or 0),
                                        failures=int(p.get("failures") or 0))
                     for p in snap.get("proxies") or []],
            sessions_live=sessions.get("live"), sessions_retired=sessions.get("retired"),
            cpus=(snap.get("cpu") or {}).get("cpus"),
        )


class SlotConcurrencyStatus(_Model):
    """A slot of a pool with ``concurrency_bounds``: how many items it works on at once now, and why
    (fleet_ray.control.autoscale.decide_concurrency over its host pressure, last health check)."""

    current: int = Field(description="Items the slot works on at once now (its effective concurrency).")
    min: int = Field(description="concurrency_bounds.min")
    max: int = Field(description="concurrency_bounds.max")
    in_flight: int = Field(0, description="Items the slot was working on at its last health check.")
    reason: str = Field("", description="Why it has this value: the last decision (a reading over its limit, "
                        "all readings under their limits, or what holds it).")
    changes: int = Field(0, description="Changes by this slot generation.")
    changed_at: float | None = Field(None, description="When it last changed, seconds since the epoch.")
    decided_at: float | None = Field(None, description="When it was last decided, seconds since the epoch.")
    pressure: dict[str, float] = Field(default_factory=dict, description="The readings of the last decision, "
                                       "averaged over interval_s: cpu_ratio, memory_ratio, event_loop_lag_s, "
                                       "chromium_memory_ratio (browser slots), in_flight.")

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> SlotConcurrencyStatus:
        """From a slot's health report (``ConcurrencyGovernor.report()`` plus ``in_flight``)."""
        return cls(
            current=int(report.get("current") or 0), min=int(report.get("min") or 0),
            max=int(report.get("max") or 0), in_flight=int(report.get("in_flight") or 0),
            reason=str(report.get("reason") or ""), changes=int(report.get("changes") or 0),
            changed_at=report.get("changed_at"), decided_at=report.get("decided_at"),
            pressure={str(k): float(v) for k, v in (report.get("pressure") or {}).items()
                      if isinstance(v, int | float)},
        )


class SlotStatus(_Model):
    id: str = Field(description="Slot position, 'pool:index'.")
    pool: str = Field(description="Pool the slot belongs to.")
    index: int = Field(description="Position within the pool (0-based).")
    generation: int = Field(description="Monotonic per position; +1 for every replacement.")
    state: str = Field(description="pending | starting | running | draining | stopping | failed | unreachable "
                       "(its actor doesn't answer and Ray has not said it is dead: it is not replaced, and is "
                       "re-checked until it answers or Ray says it or its node died)")
    actor: str = Field(description="Ray actor name, fleet:<pool>:<index>:g<generation>.")
    node_id: str = Field("", description="Ray node the slot's actor runs on ('' until it is ready).")
    pid: int | None = Field(None, description="Process id of the slot's actor.")
    version: str | None = Field(None, description="Installed automation version on the slot.")
    uptime_s: float | None = Field(None, description="Seconds since the slot became ready.")
    tasks: int = Field(0, description="Tasks (items or runs) the current generation finished.")
    recycles: int = Field(0, description="How often this position was replaced.")
    rss_mb: float = Field(0.0, description="Resident memory of the slot's process, MiB (last health check).")
    phase: str | None = Field(None, description="The automation's current phase, if it uses phases.")
    progress: dict[str, Any] = Field(default_factory=dict, description="What the automation reported as progress.")
    reason: str = Field("", description="Why the slot is in its state (pending reason, failure cause).")
    backoff_s: float = Field(0.0, description="Seconds until a failing position is started again.")
    unreachable_s: float | None = Field(None, description="An unreachable slot: seconds since it stopped answering.")
    browser: BrowserSlotStatus | None = Field(None, description="Browser slots: Chromium, pages, proxies (last health check).")
    concurrency: SlotConcurrencyStatus | None = Field(
        None, description="Pools with concurrency_bounds: the slot's effective concurrency and why (last health "
        "check; None: a fixed concurrency, or no report yet).")


class RolloutStatus(_Model):
    state: str = Field(description="progressing | paused | complete | rolled_back")
    from_version: str | None = Field(None, description="Version pin before the rollout.")
    to_version: str | None = Field(None, description="Version pin the rollout moves to.")
    updated: int = Field(0, description="Positions running the new spec and past their health check.")
    total: int = Field(0, description="Positions to update.")
    failures: int = Field(0, description="Failures of new-spec slots so far.")
    started: float = Field(0.0, description="When the rollout began, seconds since the epoch.")
    reason: str = Field("", description="Why it was paused or rolled back.")


class AutoscaleStatus(_Model):
    """An autoscaled pool's sizing (``autoscale`` in its spec; fleet_ray.control.autoscale.decide_scale)."""

    current: int = Field(description="Slots ready now (running, past a health check) among the pool's positions.")
    desired: int = Field(description="The size the supervisor reconciles the pool to now (the pool's 'desired').")
    wanted: int | None = Field(None, description="What the signal asks for, within min_slots..max_slots, before "
                               "delays, cool-down, steps and holds (None: no decision yet).")
    min_slots: int = Field(description="Never fewer slots (autoscale.min_slots).")
    max_slots: int = Field(description="Never more slots (autoscale.max_slots).")
    pending: int = Field(0, description="Positions waiting for a node with the resources to host them (Ray's "
                         "autoscaler is asked for nodes while there are any).")
    signal: str = Field("", description="What the pool scales on: 'backlog' (its work queue's queued + leased "
                        "items) or 'lag on <stream>' (its consumer group's unacknowledged items).")
    signal_value: float | None = Field(None, description="The smoothed signal the last decision read.")
    reading: float | None = Field(None, description="The latest raw reading of the signal (None: none yet).")
    item_latency_s: float | None = Field(None, description="Estimated seconds per item (items in flight / "
                                         "items finished per second), when the work queue gives it.")
    reason: str = Field("", description="Why the pool has this size: the signal, the target per slot, what "
                        "holds a change back.")
    held_by: str | None = Field(None, description="What holds a change the signal asks for back: rollout | "
                                "no_signal | cold_start_delay | waiting_for_nodes | starting | upscale_delay | "
                                "downscale_delay | to_zero_delay | cooldown | paused (None: nothing).")
    last_change_at: float | None = Field(None, description="When the size last changed (autoscaler or operator), "
                                         "seconds since the epoch.")
    decided_at: float | None = Field(None, description="When the last decision was made, seconds since the epoch.")


class PoolStatus(_Model):
    name: str = Field(description="Pool name.")
    automation: str = Field(description="Entry-point name of the pool's automation.")
    version: str | None = Field(None, description="The pool's version pin.")
    kind: str = Field(description="Slot kind: process | browser.")
    batch: bool = Field(description="True for BatchAutomation pools (they take submitted work).")
    desired: int = Field(description="Desired number of slots.")
    paused: bool = Field(False, description="A paused pool keeps its slots but leases them no work.")
    state: str = Field(description="ok | scaling | pending | degraded | unreachable (some of its slots don't answer)")
    reason: str = Field("", description="Why the pool is not ok (pending reason, degradation).")
    counts: dict[str, int] = Field(default_factory=dict, description="Slots per state.")
    rollout: RolloutStatus | None = Field(None, description="The pool's latest rollout, if any.")
    autoscale: AutoscaleStatus | None = Field(None, description="Autoscaled pools: current/desired/min/max, "
                                              "what the signal wants and why (None: a fixed size).")
    slots: list[SlotStatus] = Field(default_factory=list, description="The pool's slot positions, by index.")


class EventStatus(_Model):
    """A recent event as status shows it: a projection of the event envelope (fleet_ray.observe.envelope):
    its kind, pool, slot, generation and message, and its wall time; no id, origin or data (from_event)."""

    kind: str = Field(description="Event kind, e.g. slot.ready.")
    at: float = Field(description="Seconds since the epoch.")
    pool: str | None = Field(None, description="Pool the event is about.")
    slot: str | None = Field(None, description="Slot position 'pool:index' the event is about.")
    generation: int | None = Field(None, description="Slot generation the event is about.")
    message: str = Field("", description="Human-readable detail.")

    @classmethod
    def from_event(cls, ev: Event) -> EventStatus:
        return cls(at=ev.epoch_s, **ev.model_dump(include=set(cls.model_fields) - {"at"}))


class FleetStatus(_Model):
    fleet: str = Field(description="Fleet name.")
    namespace: str = Field(description="Ray namespace of the fleet's named actors.")
    supervisor_pid: int = Field(description="Process id of the supervisor.")
    supervisor_started: float = Field(description="When the supervisor process started (epoch seconds).")
    store: str = Field(description="Store URL, with credentials redacted.")
    store_degraded: bool = Field(description="True while the store can't be written; state is kept in memory.")
    store_error: str | None = Field(None, description="Why the store is degraded (URLs redacted).")
    last_step_ms: float = Field(description="Duration of the last reconcile step (wall clock, ms).")
    last_step_cpu_ms: float = Field(0.0, description="CPU time of the last reconcile step (ms): its duration "
                                    "less the time the supervisor waited for a CPU or for Python's GIL.")
    step_ms_p50: float = Field(0.0, description="Median wall time of the last 200 reconcile steps (ms).")
    step_ms_p95: float = Field(0.0, description="95th percentile wall time of the last 200 reconcile steps (ms).")
    supervisor_nice: int | None = Field(None, description="The supervisor process's CPU niceness (Ray starts "
                                        "workers at 15; the supervisor asks for FLEET_SUPERVISOR_NICE, default 0).")
    supervisor_nice_problem: str | None = Field(None, description="Why the supervisor could not take that niceness.")
    steps: int = Field(description="Reconcile steps since the supervisor process started.")
    recovered: bool = Field(True, description="False until a (re)started supervisor has read its checkpoint; "
                            "until then it refuses changes (HTTP 503, retry after the Retry-After header).")
    recovery: str | None = Field(None, description="Why recovery has not succeeded ('recovery failed: <field>: "
                                 "<message>'), or what this version left out of the checkpoint.")
    pools: list[PoolStatus] = Field(description="Every pool of the desired state.")
    events: list[EventStatus] = Field(default_factory=list, description="Most recent lifecycle events.")

    def pool(self, name: str) -> PoolStatus | None:
        return next((p for p in self.pools if p.name == name), None)

    def slot(self, slot_id: str) -> SlotStatus | None:
        return next((s for p in self.pools for s in p.slots if s.id == slot_id), None)
