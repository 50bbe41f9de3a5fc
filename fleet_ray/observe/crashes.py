"""The crash bridge's records: no slot crash goes unreported, and none is reported twice.

Two paths write about a crash:

1. **the slot**, as it goes: its current task(s) and phase in a :class:`SlotContext` under
   ``slotctx:<pool>:<index>:g<generation>`` in the store (coalesced, a few writes a second), and,
   when the automation or a thread raises, the error (:class:`CrashError`, from its handler or a
   ``sys.excepthook``/``threading.excepthook`` as the last line of defence);
2. **the supervisor**, when it sees the slot die (or kills a slot whose context holds an error):
   it reads what the slot managed to write and fills in the rest from its own view (pid, node,
   last phase from health checks, the death's cause) — so a slot SIGKILLed before any handler ran
   still gets a full record.

:func:`merge_crash` builds the one :class:`CrashRecord`; it is appended to the store log
``crashes`` with the generation's id ``<pool>:<index>:g<generation>@<run>`` (``run``: the fleet run,
see :func:`crash_id`), and log appends are
idempotent by id, so a crash both paths saw (or a supervisor that restarted in between) is
recorded and notified once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.grouping import FailureRecord, cause_signature, short_message
from fleet_ray.store import keys
from fleet_ray.store.base import LogEntry, Store


class CrashError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_type: str
    frame: str
    message: str = ""
    traceback: str = Field("", description="Last lines of the traceback (credentials in URLs redacted).")
    source: str = Field("automation", description="automation | excepthook | thread")
    phase: str | None = None
    step: str | None = None
    at: float = Field(default_factory=time.time)


class SlotContext(BaseModel):
    """What a slot generation writes about itself as it goes (the slot's half of the bridge)."""

    model_config = ConfigDict(extra="forbid")

    pool: str
    index: int
    generation: int
    pid: int | None = None
    node_id: str = ""
    tasks: list[str] = Field(default_factory=list, description="Tasks (job:item, or 'run') in flight.")
    phase: str | None = None
    step: str | None = None
    updated_at: float = Field(default_factory=time.time)
    error: CrashError | None = None

    def key(self) -> str:
        return keys.slot_context(self.pool, self.index, self.generation)


class CrashRecord(BaseModel):
    """The one record of a crashed slot generation."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="'<pool>:<index>:g<generation>@<run>': one record per generation of a fleet run.")
    pool: str
    slot: str
    generation: int
    task: str | None = Field(None, description="The task in flight (job:item, or 'run'), if any.")
    tasks: list[str] = Field(default_factory=list)
    phase: str | None = None
    step: str | None = None
    cause: str = Field(description="Why it died: the error, or the death the supervisor saw.")
    error_type: str | None = None
    frame: str | None = None
    message: str = ""
    traceback: str = ""
    pid: int | None = None
    node_id: str = ""
    died: bool = Field(description="The process died (vs. crashed and was then stopped).")
    sources: list[str] = Field(description="Who contributed: slot, excepthook, supervisor.")
    at: float

    def failure(self) -> FailureRecord:
        """This crash as a failure to group (error type + frame, or the masked death cause)."""
        return FailureRecord(
            kind="crash",
            error_type=self.error_type or "SlotDied",
            frame=self.frame or cause_signature(self.cause),
            message=self.message or short_message(self.cause),
            pool=self.pool,
            slot=self.slot,
            phase=self.phase,
            task=self.task,
            at=self.at,
        )

    def to_entry(self) -> LogEntry:
        return LogEntry(self.id, f"{int(self.at * 1e6):020d}", self.model_dump_json().encode())


def crash_id(pool: str, index: int, generation: int, run: str = "") -> str:
    """``<pool>:<index>:g<generation>@<run>``: one id per slot generation of one fleet run (``run`` is the
    supervisor's per-run id, kept across its restarts; after ``down`` and ``up`` generations start
    again at 1, and the new fleet's crashes must not look like the old one's, already recorded)."""
    return f"{pool}:{index}:g{generation}" + (f"@{run}" if run else "")


def merge_crash(
    pool: str,
    index: int,
    generation: int,
    slot_ctx: SlotContext | None,
    died: bool,
    death_cause: str,
    seen: dict[str, Any] | None = None,
    now: float | None = None,
    run: str = "",
) -> CrashRecord | None:
    """The crash record from both halves, or None if this was no crash (a clean stop).

    ``seen`` is the supervisor's view of the slot (pid, node_id, phase from its last health check);
    ``run`` the fleet run's id (see :func:`crash_id`).
    """
    err = slot_ctx.error if slot_ctx is not None else None
    if not died and err is None:
        return None
    seen = seen or {}
    tasks = list(slot_ctx.tasks) if slot_ctx else []
    sources = ["slot"] if slot_ctx is not None else []
    if err is not None and err.source != "automation":
        sources.append(err.source)
    if died:
        sources.append("supervisor")
    if err is not None:
        cause = f"{err.error_type}: {err.message}" if err.message else err.error_type
        if died and death_cause:
            cause += f" (then the process died: {short_message(death_cause, 300)})"
    else:
        cause = short_message(death_cause or "the slot's process died", 1000)
    phase = (err.phase if err and err.phase else None) or (slot_ctx.phase if slot_ctx else None) or seen.get("phase")
    step = (err.step if err and err.step else None) or (slot_ctx.step if slot_ctx else None)
    return CrashRecord(
        id=crash_id(pool, index, generation, run),
        pool=pool,
        slot=f"{pool}:{index}",
        generation=generation,
        task=tasks[-1] if tasks else None,
        tasks=tasks,
        phase=phase,
        step=step,
        cause=cause,
        error_type=err.error_type if err else None,
        frame=err.frame if err else None,
        message=err.message if err else "",
        traceback=err.traceback if err else "",
        pid=(slot_ctx.pid if slot_ctx and slot_ctx.pid else None) or seen.get("pid"),
        node_id=(slot_ctx.node_id if slot_ctx and slot_ctx.node_id else "") or seen.get("node_id") or "",
        died=died,
        sources=sources,
        at=now if now is not None else time.time(),
    )


def read_slot_context(store: Store, pool: str, index: int, generation: int) -> SlotContext | None:
    raw = store.get(keys.slot_context(pool, index, generation))
    if not raw:
        return None
    try:
        return SlotContext.model_validate(json.loads(raw))
    except ValueError:
        return None


def record_crash(store: Store, record: CrashRecord) -> bool:
    """Append the record (idempotent by generation) and drop the slot's context; True if it was new."""
    new = store.log_append(keys.CRASH_LOG, [record.to_entry()]) == 1
    store.delete(keys.slot_context(record.pool, int(record.slot.rsplit(":", 1)[1]), record.generation))
    return new


def list_crashes(store: Store, pool: str | None = None, limit: int | None = None) -> list[CrashRecord]:
    """Crash records, oldest first (newest ``limit`` of them)."""
    out = [CrashRecord.model_validate_json(e.data) for e in store.log_range(keys.CRASH_LOG)]
    if pool is not None:
        out = [r for r in out if r.pool == pool]
    return out[-limit:] if limit else out
