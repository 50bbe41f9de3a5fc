"""What the control-plane HTTP API (``fleet_ray.serve``) takes and returns.

Fleet, pool and slot status reuse :mod:`fleet_ray.api.status`; this module holds everything else the API
speaks: events, grouped errors, streams, nodes, metric history, control requests/results and the one
error shape every failure uses. An event is the envelope of :mod:`fleet_ray.observe.envelope` (redacted,
plus ``at`` and ``cursor``); a group of errors is :class:`fleet_ray.observe.grouping.ErrorGroup`::

    {"error": {"code": "invalid_spec", "message": "...", "details": [{"loc": "pools.web.slots", "msg": "..."}]}}

Every model forbids unknown fields, so a typo in a request is an error, and the OpenAPI document the
app serves is generated from these classes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.observe.envelope import Event
from fleet_ray.observe.grouping import API_EXCLUDE, ErrorGroup
from fleet_ray.redact import redact_tree, redact_url

ErrorCode = Literal[
    "unauthorized",  # no / wrong bearer token
    "not_found",  # unknown pool, slot or route
    "invalid_spec",  # the spec or a pool's config failed validation; nothing changed
    "invalid_request",  # the request itself is malformed (query, path or body)
    "conflict",  # the request is valid but can't be done in the fleet's state
    "unavailable",  # the supervisor can't be reached (not running, restarting, timed out)
    "internal",  # a bug; the message says no more than that
]


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ----------------------------------------------------------------------------------------
class ErrorDetail(ApiModel):
    loc: str = Field(description="Where: a spec field ('pools.web.slots') or a request part ('query.limit').")
    msg: str = Field(description="What is wrong there.")


class ErrorBody(ApiModel):
    code: ErrorCode = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="Human-readable explanation; never contains secrets.")
    details: list[ErrorDetail] = Field(default_factory=list, description="One entry per problem, when known.")


class ErrorResponse(ApiModel):
    error: ErrorBody = Field(description="What went wrong.")


# -- health ----------------------------------------------------------------------------------------
class Health(ApiModel):
    status: Literal["ok"] = Field("ok", description="The API process answers.")
    version: str = Field(description="fleet-ray version of the API.")
    namespace: str = Field(description="Ray namespace of the fleet this API serves.")


class Readiness(ApiModel):
    ready: bool = Field(description="True when the supervisor answers and has recovered its state.")
    supervisor_pid: int | None = Field(None, description="PID of the supervisor process, when it answers.")
    reason: str = Field("", description="Why the fleet is not ready.")


# -- events ----------------------------------------------------------------------------------------
class EventOut(Event):
    """An event as the API returns it: the fleet's event envelope with credentials in its message and
    data masked, plus its wall time and its cursor (built by from_event)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    at: float = Field(description="Wall time of the event, seconds since the epoch (HLC physical part).")
    cursor: str = Field(description="Pass as `after` (or SSE Last-Event-ID) to get only newer events.")

    @classmethod
    def from_event(cls, ev: Event, cursor: str) -> EventOut:
        """The API's view of ``ev``: credentials in ``message`` and secret-looking ``data`` masked."""
        return cls(**ev.model_dump(exclude={"message", "data"}), message=redact_url(ev.message),
                   data=redact_tree(ev.data), at=ev.epoch_s, cursor=cursor)


class EventsPage(ApiModel):
    events: list[EventOut] = Field(description="Matching events, oldest first.")
    cursor: str | None = Field(None, description="Cursor of the last event returned (for the next page).")
    source: Literal["memory", "log"] = Field(
        description="memory: the supervisor's recent events; log: the durable event log was read."
    )


# -- grouped errors --------------------------------------------------------------------------------
# ErrorGroup is fleet_ray.observe.grouping's (one model for the supervisor, notifications and the API)
class ErrorGroups(ApiModel):
    # GET /errors; each group is shown less fleet_ray.observe.grouping.API_EXCLUDE (ERRORS_EXCLUDE below)
    groups: list[ErrorGroup] = Field(description="Most recent group first.")
    failing_slots: list[dict[str, str]] = Field(
        default_factory=list, description="Slots failing right now: {'slot', 'state', 'reason'}."
    )
    source: str = Field(description="Where the failures come from (which event kinds were grouped).")


#: ``response_model_exclude`` of ``GET /errors``: the API's view of each group
ERRORS_EXCLUDE = {"groups": {"__all__": set(API_EXCLUDE)}}


# -- streams ---------------------------------------------------------------------------------------
class StreamOut(ApiModel):
    name: str = Field(description="Stream name.")
    depth: int = Field(description="Items queued now.")
    capacity: int | None = Field(None, description="Bound of the queue (back-pressure above it).")
    in_rate: float = Field(0.0, description="Items put per second (recent).")
    out_rate: float = Field(0.0, description="Items taken per second (recent).")
    items_emitted: int = Field(0, description="Items emitted since the stream was created.")
    producers: list[str] = Field(default_factory=list, description="Pools emitting into it.")
    consumers: list[str] = Field(default_factory=list, description="Pools or groups reading it.")


class StreamsPage(ApiModel):
    streams: list[StreamOut] = Field(description="Every typed output stream of the fleet (empty if none).")


# -- nodes -----------------------------------------------------------------------------------------
class NodeOut(ApiModel):
    node_id: str = Field(description="Ray node id.")
    alive: bool = Field(description="False for nodes Ray lost.")
    is_head: bool = Field(description="True for the head node (where the supervisor runs).")
    resources: dict[str, float] = Field(description="Total resources, incl. custom tags like 'browser'.")
    labels: dict[str, str] = Field(description="Node labels such as region (Ray's own ray.io/* omitted).")
    slots: list[str] = Field(description="Slot positions placed on the node.")


class NodesPage(ApiModel):
    nodes: list[NodeOut] = Field(description="Every node Ray knows, alive or lost.")


# -- metric history --------------------------------------------------------------------------------
class SeriesPoint(ApiModel):
    t: float = Field(description="Sample time, seconds since the epoch.")
    tasks_per_s: float = Field(description="Tasks (items or runs) finished per second by the pool's slots.")
    failures_per_s: float = Field(description="Slot failures (died, start failed, unhealthy) per second.")
    running: int = Field(description="Running slots at sample time.")


class PoolSeries(ApiModel):
    pool: str = Field(description="Pool name.")
    points: list[SeriesPoint] = Field(description="Oldest first.")


class MetricsSeries(ApiModel):
    period_s: float = Field(description="Seconds between samples.")
    pools: list[PoolSeries] = Field(description="One series per pool.")


# -- control ---------------------------------------------------------------------------------------
class ScaleRequest(ApiModel):
    slots: int = Field(ge=0, le=10_000, description="Desired number of slots.")


class ResumeRequest(ApiModel):
    slots: int | None = Field(
        None, ge=0, le=10_000, description="Slots after resuming (default: the count before the drain)."
    )


class ApplyResult(ApiModel):
    added: list[str] = Field(description="Pools that are new.")
    removed: list[str] = Field(description="Pools that are gone (their slots drain).")
    changed: list[str] = Field(description="Pools whose spec changed.")


class PoolChange(ApiModel):
    pool: str = Field(description="Pool name.")
    desired: int = Field(description="Desired slots after the change.")
    paused: bool = Field(description="Whether the pool is paused after the change.")
    message: str = Field("", description="What happens next.")


class RecycleResult(ApiModel):
    slot: str = Field(description="Slot position 'pool:index'.")
    generation: int = Field(description="Generation that will be replaced (the next one is +1).")
    state: str = Field(description="State of the slot when the recycle was requested.")


class SpecOut(ApiModel):
    spec: dict[str, Any] = Field(description="The desired state (FleetSpec), with secret-looking values masked.")
    redacted: list[str] = Field(default_factory=list, description="Paths of the values that were masked.")


# -- campaign breakers -----------------------------------------------------------------------------
class BreakerOut(ApiModel):
    target: str = Field(description="Target host the breaker guards.")
    tripped: bool = Field(description="A tripped breaker refuses new work for the target until reset.")
    samples: int = Field(description="Outcomes in the current window.")
    failures: int = Field(description="Failures in the current window.")
    tripped_at_ms: int | None = Field(None, description="When it tripped (ms since the epoch).")
    trip_samples: int | None = Field(None, description="Window samples when it tripped.")
    trip_failures: int | None = Field(None, description="Window failures when it tripped.")
    reason: str = Field("", description="Why it tripped, e.g. '18/20 failures (90%) in the window'.")


class BreakersPage(ApiModel):
    breakers: list[BreakerOut] = Field(description="Every campaign breaker of the fleet's namespace.")
