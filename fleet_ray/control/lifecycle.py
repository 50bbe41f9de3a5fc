"""Slot lifecycle: states, the per-position record, and how observations move a slot between states.

A *slot position* is ``(pool, index)``; each actor that fills it has a **generation**, monotonic per
position, persisted, never regressing. A record's state lives in a :class:`SlotTable` keyed by state,
so "all draining slots" is a lookup and a transition is pop-then-add.

Nothing here imports Ray: the supervisor's Ray wrapper turns call results into :class:`Observation`
values, and :func:`observe` applies them. Time is always passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fleet_ray.observe.grouping import short_message


class SlotState(enum.StrEnum):
    PENDING = "pending"  # wanted, not created: no node can host it, or waiting to be started
    STARTING = "starting"  # actor created, its start() has not answered yet
    RUNNING = "running"  # started and answering health checks
    DRAINING = "draining"  # asked to finish in-flight work and stop (recycle or scale-down)
    STOPPING = "stopping"  # kill issued
    FAILED = "failed"  # start failed or died; replaced once its heal backoff has passed
    # its actor doesn't answer (a call failed "temporarily unavailable", or a health check timed out
    # while its host didn't answer a probe either) and Ray has not said it is dead: nothing replaces
    # it (that could leave two live actors for one position); it is re-checked until it answers
    # (back to the state it came from) or Ray says the actor or its node is dead
    UNREACHABLE = "unreachable"


#: states in which a slot position has an actor that may be alive
LIVE = (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING, SlotState.UNREACHABLE, SlotState.STOPPING)


SlotKey = tuple[str, int]


def slot_id(key: SlotKey) -> str:
    return f"{key[0]}:{key[1]}"


def parse_slot_id(text: str) -> SlotKey:
    pool, _, index = text.rpartition(":")
    if not pool or not index.isdigit():
        raise ValueError(text)
    return pool, int(index)


# fields that survive a supervisor restart (the rest is re-observed from the live actor)
PERSISTED = (
    "pool",
    "index",
    "generation",
    "state",
    "created_at",
    "ready_at",
    "node_id",
    "pid",
    "recycles",
    "failures",
    "backoff_until",
    "escalated",
    "retire",
    "shape_hash",
    "config_hash",
    "reason",
    "tasks",
    "kill_sent_at",  # a kill sent while unreachable waits for Ray's confirmation across a restart too
)


@dataclass
class SlotRecord:
    pool: str
    index: int
    generation: int = 0
    state: SlotState = SlotState.PENDING
    node_id: str = ""
    pid: int | None = None
    version: str | None = None
    created_at: float | None = None
    alive_at: float | None = None  # its actor process exists (Ray scheduled and started it)
    ready_at: float | None = None
    tasks: int = 0
    rss_mb: float = 0.0
    phase: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    browser: dict[str, Any] | None = None  # browser slots: last Chromium/proxy/session snapshot
    concurrency: dict[str, Any] | None = None  # concurrency_bounds: the slot's concurrency now and why
    reason: str = ""
    # health
    health_failures: int = 0
    checks_ok: int = 0  # health checks passed by this generation (the rollout's health gate)
    health_inflight: bool = False
    next_check_at: float = 0.0
    recycle_requested: str | None = None
    # draining / config
    drain_deadline: float | None = None
    retire: bool = False  # draining for removal: don't replace
    failure_pending: bool = False  # the stop in progress counts as a failure
    config_inflight: bool = False
    shape_hash: str = ""
    config_hash: str = ""
    # healing (persisted)
    recycles: int = 0
    failures: list[float] = field(default_factory=list)
    backoff_until: float = 0.0
    escalated: bool = False
    # unreachable: since when, the state (and reason) it returns to once it answers, re-checks so far
    unreachable_since: float | None = None
    resume_state: SlotState | None = None
    resume_reason: str = ""
    rechecks: int = 0
    # killed while it couldn't be reached: when the kill went out, and whether Ray has confirmed since
    # that its process is gone (see :class:`Gone`); until then the position stays STOPPING, not free
    kill_sent_at: float | None = None
    death_confirmed: bool = False

    @property
    def key(self) -> SlotKey:
        return (self.pool, self.index)

    @property
    def slot_id(self) -> str:
        return slot_id(self.key)

    def persisted(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict deep-copies every field (progress, browser snapshots...)
        # and this runs for every slot at every checkpoint
        out = {k: getattr(self, k) for k in PERSISTED}
        # "unreachable" is observed, not decided: a restarted supervisor re-observes it, so the
        # checkpoint holds the state it returns to (and a version without the state can read it)
        state = self.resume_state if self.state is SlotState.UNREACHABLE and self.resume_state else self.state
        out["state"] = state.value
        out["failures"] = list(self.failures)
        return out

    @classmethod
    def restore(cls, data: dict[str, Any]) -> SlotRecord:
        kw = {k: data[k] for k in PERSISTED if k in data}
        kw["state"] = SlotState(kw.get("state", "pending"))
        return cls(**kw)


class SlotTable:
    """Slot records keyed by state; a transition pops the record from one state and adds it to another."""

    def __init__(self, records: Iterable[SlotRecord] = ()):
        self._by_state: dict[SlotState, dict[SlotKey, SlotRecord]] = {s: {} for s in SlotState}
        self._all: dict[SlotKey, SlotRecord] = {}
        # generation high-water marks of positions whose record was removed (scaled away, pool
        # deleted): a position that comes back continues from there, so generations never regress
        self._retired: dict[SlotKey, int] = {}
        for r in records:
            self.add(r)

    def add(self, rec: SlotRecord) -> None:
        if rec.key in self._all:
            raise KeyError(f"slot {rec.slot_id} already in table")
        self._all[rec.key] = rec
        self._by_state[rec.state][rec.key] = rec

    def get(self, key: SlotKey) -> SlotRecord | None:
        return self._all.get(key)

    def remove(self, key: SlotKey) -> SlotRecord:
        rec = self._all.pop(key)
        del self._by_state[rec.state][key]
        self.raise_floor(key, rec.generation)
        return rec

    def raise_floor(self, key: SlotKey, generation: int) -> None:
        """Remember that ``key`` already reached ``generation`` (from a removed record or the store)."""
        if generation > self._retired.get(key, 0):
            self._retired[key] = generation

    def last_generation(self, key: SlotKey) -> int:
        """The highest generation this position ever had; the next start uses one more."""
        rec = self._all.get(key)
        return max(rec.generation if rec else 0, self._retired.get(key, 0))

    def floors(self) -> dict[SlotKey, int]:
        return dict(self._retired)

    def transition(self, key: SlotKey, state: SlotState, reason: str | None = None) -> SlotRecord:
        rec = self._all[key]
        del self._by_state[rec.state][key]
        rec.state = state
        if reason is not None:
            rec.reason = reason
        self._by_state[state][key] = rec
        return rec

    def in_state(self, *states: SlotState) -> list[SlotRecord]:
        return [r for s in states for r in self._by_state[s].values()]

    def count(self, state: SlotState) -> int:
        return len(self._by_state[state])

    def of_pool(self, pool: str) -> list[SlotRecord]:
        return sorted((r for r in self._all.values() if r.pool == pool), key=lambda r: r.index)

    def __iter__(self) -> Iterator[SlotRecord]:
        return iter(list(self._all.values()))

    def __len__(self) -> int:
        return len(self._all)


# -- observations: what the Ray wrapper saw ---------------------------------------------------


@dataclass(frozen=True)
class Observation:
    key: SlotKey
    generation: int


@dataclass(frozen=True)
class Alive(Observation):
    """The actor's process is up (its first call answered); start-up of the automation begins."""

    node_id: str = ""  # where Ray placed it (a starting slot on a node that dies is lost with it)


@dataclass(frozen=True)
class Ready(Observation):
    pid: int
    node_id: str
    version: str | None = None


@dataclass(frozen=True)
class StartFailed(Observation):
    cause: str


@dataclass(frozen=True)
class HealthReport(Observation):
    ok: bool
    tasks: int = 0
    rss_mb: float = 0.0
    phase: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    recycle_requested: str | None = None
    error: str | None = None
    browser: dict[str, Any] | None = None  # a browser slot's Chromium/proxy/session snapshot
    concurrency: dict[str, Any] | None = None  # concurrency_bounds: ConcurrencyGovernor.report()


@dataclass(frozen=True)
class HealthTimeout(Observation):
    """The health check got no answer in time although the slot's host answers (the slot is hung)."""


@dataclass(frozen=True)
class Unreachable(Observation):
    """A call got no answer and Ray has not said the actor is dead: it failed "temporarily unavailable"
    (``ray.exceptions.ActorUnavailableError``: connections reset, the host unreachable), or a health
    check timed out while the slot's host didn't answer a probe either. ``call`` is the call's kind
    (watch, health, drain, start, alive, config)."""

    cause: str
    call: str = ""


@dataclass(frozen=True)
class Died(Observation):
    """The actor is dead, as Ray says (its actor state, its node's state, or an ``ActorDiedError``).
    ``host_lost``: it died with its node (not the slot's own failure: no heal backoff, no rollout failure)."""

    cause: str
    host_lost: bool = False


@dataclass(frozen=True)
class Gone(Observation):
    """The process of an actor killed while it couldn't be reached is gone, on evidence that a kill
    which never arrived can't produce: Ray marked its node dead, or its node's raylet reported the
    worker process exited, or a task on its host found the process gone (or killed it). Not the GCS's
    ``DEAD`` nor an ``ActorDiedError``: ``ray.kill`` sets the first at once and callers get the second
    from it, whether or not the kill reached the process."""

    cause: str


@dataclass(frozen=True)
class Drained(Observation):
    pass


@dataclass(frozen=True)
class ConfigResult(Observation):
    applied: bool
    config_hash: str
    error: str | None = None


@dataclass(frozen=True)
class LifecycleEvent:
    """Something worth an event; the supervisor stamps and logs it."""

    kind: str
    pool: str
    index: int
    generation: int
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


#: an error shown in status (a slot's reason) or in an event message: its first line, redacted, this
#: long at most — the full text is the crash record's (fleet_ray.observe.crashes)
ERROR_LINE = 300


def error_line(text: str | None) -> str:
    """What status and events show of an error: its first line, secrets redacted, at most ERROR_LINE."""
    return short_message(text or "", ERROR_LINE)


def record_failure(rec: SlotRecord, now: float, heal: Any) -> LifecycleEvent | None:
    """Count a failure of a position; past ``heal.max_failures`` in the window, back off exponentially."""
    rec.failures = [t for t in rec.failures if now - t < heal.window_s] + [now]
    over = len(rec.failures) - heal.max_failures
    if over < 0:
        rec.backoff_until = 0.0
        return None
    delay = min(heal.backoff_max_s, heal.backoff_base_s * (2**over))
    rec.backoff_until = now + delay
    rec.escalated = True
    return LifecycleEvent(
        "slot.heal_escalated",
        rec.pool,
        rec.index,
        rec.generation,
        f"{len(rec.failures)} failures in {heal.window_s:g}s; next start in {delay:g}s",
        {"failures": len(rec.failures), "backoff_s": delay},
    )


def observe(
    table: SlotTable, obs: Observation, now: float, pool: Any | None, jitter: float = 0.0
) -> list[LifecycleEvent]:
    """Fold one observation into the table. ``pool`` is the pool's spec (None if the pool is gone).

    Observations about an older generation than the record's are stale and ignored.
    """
    rec = table.get(obs.key)
    if rec is None or obs.generation != rec.generation:
        return []
    ev: list[LifecycleEvent] = []
    E = lambda kind, msg="", **data: LifecycleEvent(kind, rec.pool, rec.index, rec.generation, msg, data)  # noqa: E731

    if isinstance(obs, Gone):
        return _gone(rec, obs, now)
    if isinstance(obs, Unreachable):
        return _unreachable(table, rec, obs, now, pool)
    if rec.state is SlotState.UNREACHABLE and isinstance(obs, ANSWERS):
        ev.extend(_reachable(table, rec, now))  # it answered: back where it was, then the answer counts

    if isinstance(obs, Alive):
        if obs.node_id and not rec.node_id:
            rec.node_id = obs.node_id
        if rec.state is SlotState.STARTING and rec.alive_at is None:
            rec.alive_at = now
    elif isinstance(obs, Ready):
        if rec.state is SlotState.STARTING:
            rec.pid, rec.node_id, rec.version = obs.pid, obs.node_id, obs.version
            rec.ready_at = now
            rec.health_failures = 0
            period = pool.health.period_s if pool else 5.0
            rec.next_check_at = now + period * (1 + jitter)
            table.transition(rec.key, SlotState.RUNNING, "")
            ev.append(E("slot.ready", f"pid {obs.pid} on node {obs.node_id[:12]}", pid=obs.pid))
    elif isinstance(obs, StartFailed):
        if rec.state is SlotState.STARTING:
            rec.failure_pending = True
            cause = error_line(obs.cause)
            table.transition(rec.key, SlotState.STOPPING, f"start failed: {cause}")
            ev.append(E("slot.start_failed", cause))
    elif isinstance(obs, Died):
        if rec.state in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING, SlotState.UNREACHABLE):
            was = rec.resume_state if rec.state is SlotState.UNREACHABLE and rec.resume_state else rec.state
            was_draining = was is SlotState.DRAINING
            # a slot lost with its host is not the position's failure (no heal backoff, no rollout
            # failure): it is replaced at once elsewhere
            rec.failure_pending = not was_draining and not obs.host_lost
            cause = error_line(obs.cause)
            data: dict[str, Any] = {"draining": was_draining}
            if obs.host_lost:
                data["host_lost"] = True
            if rec.state is SlotState.UNREACHABLE and rec.unreachable_since is not None:
                data["unreachable_s"] = round(now - rec.unreachable_since, 3)
            table.transition(rec.key, SlotState.STOPPING, f"died: {cause}")
            ev.append(E("slot.died", cause, **data))
    elif isinstance(obs, HealthReport | HealthTimeout):
        rec.health_inflight = False
        period = pool.health.period_s if pool else 5.0
        if rec.state is SlotState.DRAINING:  # checked only to learn whether its host still answers
            rec.next_check_at = now + period * (1 + jitter)
        if rec.state is not SlotState.RUNNING:
            return ev
        rec.next_check_at = now + period * (1 + jitter)
        if isinstance(obs, HealthReport) and obs.ok:
            rec.health_failures = 0
            rec.checks_ok += 1
            rec.tasks, rec.rss_mb, rec.phase = obs.tasks, obs.rss_mb, obs.phase
            rec.progress = dict(obs.progress)
            rec.browser = obs.browser
            rec.concurrency = obs.concurrency
            if obs.recycle_requested:
                rec.recycle_requested = obs.recycle_requested
        else:
            rec.health_failures += 1
            cause = error_line(obs.error) if isinstance(obs, HealthReport) and obs.error else "health check timed out"
            if isinstance(obs, HealthReport):
                rec.tasks, rec.rss_mb, rec.phase = obs.tasks, obs.rss_mb, obs.phase
            threshold = pool.health.failure_threshold if pool else 1
            if rec.health_failures >= threshold:
                ev.append(E("slot.unhealthy", cause, failures=rec.health_failures))
                rec.reason = f"unhealthy: {cause}"
    elif isinstance(obs, Drained):
        if rec.state is SlotState.DRAINING:
            table.transition(rec.key, SlotState.STOPPING)
    elif isinstance(obs, ConfigResult):
        rec.config_inflight = False
        if obs.applied:
            rec.config_hash = obs.config_hash
            ev.append(E("config.applied", "", config_hash=obs.config_hash))
        else:
            error = error_line(obs.error)
            rec.recycle_requested = f"config change needs a fresh slot{': ' + error if error else ''}"
            ev.append(E("config.rejected" if error else "config.needs_restart", error))
    return ev


#: observations that are an answer from the slot's actor: an unreachable slot that gives one is back.
#: HealthTimeout is one because the wrapper reports it only when the slot's host answered meanwhile (the
#: slot is hung there); a check whose host didn't answer, or can't be asked (its node isn't known), is
#: Unreachable -- otherwise an unreachable slot would flap back to running on every timed-out re-check
ANSWERS = (Alive, Ready, StartFailed, HealthReport, HealthTimeout, Drained, ConfigResult)
#: an unreachable slot is re-checked (a health check) this soon, then at doubling intervals up to its
#: pool's health period
RECHECK_BASE_S = 0.5


def recheck_delay(rechecks: int, period_s: float) -> float:
    """Seconds until the next re-check of an unreachable slot that was re-checked ``rechecks`` times."""
    return min(period_s, RECHECK_BASE_S * (2 ** min(rechecks, 16)))


def _unreachable(table: SlotTable, rec: SlotRecord, obs: Unreachable, now: float, pool: Any | None) -> list[LifecycleEvent]:
    if obs.call == "health":
        rec.health_inflight = False
    elif obs.call == "config":
        rec.config_inflight = False  # pushed again once it answers
    if rec.state not in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING, SlotState.UNREACHABLE):
        return []
    period = pool.health.period_s if pool else 5.0
    if rec.state is SlotState.UNREACHABLE:
        if obs.call == "health":  # a re-check failed: back off
            rec.rechecks += 1
            rec.next_check_at = now + recheck_delay(rec.rechecks, period)
        return []
    rec.resume_state, rec.resume_reason, rec.unreachable_since, rec.rechecks = rec.state, rec.reason, now, 0
    rec.next_check_at = now + recheck_delay(0, period)
    cause = error_line(obs.cause)
    table.transition(rec.key, SlotState.UNREACHABLE, f"unreachable: {cause}")
    return [LifecycleEvent("slot.unreachable", rec.pool, rec.index, rec.generation, cause,
                           {"call": obs.call, "node_id": rec.node_id, "was": rec.resume_state.value})]


def begin_drain(table: SlotTable, key: SlotKey, now: float, reason: str, timeout_s: float,
                retire: bool = False, failure: bool = False) -> list[LifecycleEvent]:
    """Ask a slot to finish its in-flight work and stop within ``timeout_s``. One that can't be
    reached stays UNREACHABLE, now to go back to DRAINING once it answers: the drain call goes out
    (again, while it fails "unavailable") and the deadline runs; past it, it is killed, and its
    position kept until Ray confirms the process is gone (reconcile.decide)."""
    rec = table.get(key)
    if rec is None:
        return []
    rec.drain_deadline = now + timeout_s
    rec.failure_pending, rec.retire = failure, retire
    if rec.state is SlotState.UNREACHABLE:
        rec.resume_state, rec.resume_reason = SlotState.DRAINING, reason
    else:
        table.transition(key, SlotState.DRAINING, reason)
    return [LifecycleEvent("slot.draining", rec.pool, rec.index, rec.generation, reason)]


def kill_sent(table: SlotTable, key: SlotKey, now: float, reason: str) -> list[LifecycleEvent]:
    """A kill went out to a slot that can't be reached. ``ray.kill`` can't reach a partitioned
    worker either (the GCS sends it once; Ray marks the actor DEAD regardless), so the old process may
    live on: the position stays STOPPING -- nothing replaces it -- until a :class:`Gone` confirms the
    process is gone. Repeatable: a second call changes nothing."""
    rec = table.get(key)
    if rec is None or rec.kill_sent_at is not None:
        return []
    lasted = now - rec.unreachable_since if rec.unreachable_since is not None else 0.0
    rec.kill_sent_at, rec.death_confirmed = now, False
    rec.health_inflight = rec.config_inflight = False
    table.transition(key, SlotState.STOPPING, reason)
    return [LifecycleEvent("slot.kill_sent", rec.pool, rec.index, rec.generation,
                           f"{reason}; its position waits until Ray confirms its process is gone",
                           {"unreachable_s": round(lasted, 3), "node_id": rec.node_id})]


def awaiting_death(rec: SlotRecord) -> bool:
    """Killed while unreachable, and Ray hasn't confirmed yet that its process is gone."""
    return rec.state is SlotState.STOPPING and rec.kill_sent_at is not None and not rec.death_confirmed


def _gone(rec: SlotRecord, obs: Gone, now: float) -> list[LifecycleEvent]:
    if not awaiting_death(rec):
        return []
    rec.death_confirmed = True
    waited = now - rec.kill_sent_at if rec.kill_sent_at is not None else 0.0
    return [LifecycleEvent("slot.death_confirmed", rec.pool, rec.index, rec.generation, error_line(obs.cause),
                           {"after_kill_s": round(waited, 3)})]


def _reachable(table: SlotTable, rec: SlotRecord, now: float) -> list[LifecycleEvent]:
    back = rec.resume_state or SlotState.RUNNING
    lasted = now - rec.unreachable_since if rec.unreachable_since is not None else 0.0
    table.transition(rec.key, back, rec.resume_reason)
    rec.resume_state, rec.resume_reason, rec.unreachable_since, rec.rechecks = None, "", None, 0
    return [LifecycleEvent("slot.reachable", rec.pool, rec.index, rec.generation,
                           f"answering again after {lasted:.1f}s", {"unreachable_s": round(lasted, 3)})]


def finish_stop(table: SlotTable, key: SlotKey, now: float, pool: Any | None, failure: bool) -> list[LifecycleEvent]:
    """A slot's actor is gone (killed, died, drained). Free the position, or ready it for the next
    generation; a failure counts towards the heal policy."""
    rec = table.get(key)
    if rec is None:
        return []
    reason = rec.reason
    ev: list[LifecycleEvent] = []
    if pool is None or rec.index >= pool.slots:
        table.remove(key)
        ev.append(LifecycleEvent("slot.removed", rec.pool, rec.index, rec.generation, reason))
        return ev
    rec.recycles += 1
    rec.pid, rec.node_id, rec.ready_at, rec.created_at, rec.alive_at = None, "", None, None, None
    rec.health_failures, rec.health_inflight, rec.config_inflight, rec.checks_ok = 0, False, False, 0
    rec.recycle_requested, rec.drain_deadline, rec.failure_pending, rec.retire = None, None, False, False
    rec.unreachable_since, rec.resume_state, rec.resume_reason, rec.rechecks = None, None, "", 0
    rec.kill_sent_at, rec.death_confirmed = None, False
    rec.tasks, rec.rss_mb, rec.phase, rec.progress, rec.browser = 0, 0.0, None, {}, None
    rec.concurrency = None
    ev.append(LifecycleEvent("slot.recycled", rec.pool, rec.index, rec.generation, reason, {"failure": failure}))
    if failure:
        escalation = record_failure(rec, now, pool.heal)
        if escalation:
            ev.append(escalation)
        table.transition(key, SlotState.FAILED)
    else:
        table.transition(key, SlotState.PENDING)
    return ev
