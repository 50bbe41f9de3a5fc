"""What travels between the driver and members, and what coordinators return.

:class:`OpSpec` goes out (one member operation), :class:`OpOutcome` comes back (plain dataclasses:
they cross Ray many times a second). Coordinators turn outcomes into :class:`MemberResult` — a value
or a typed failure per member; one member's failure never raises out of a coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from fleet_ray import errors as E
from fleet_ray.campaign.proxies import MemberProxyHealth
from fleet_ray.redact import redact_url
from fleet_ray.store.guardrails import BreakerState


@dataclass
class OpSpec:
    op_id: str
    member: int
    input: Any = None
    stage: int | None = None
    target: str | None = None  # host, when the operation is on a known target
    target_ref: str | None = None  # the target as given (URL or host), for receipts and resume
    proxy: str | None = None  # proxy URL for this operation (may hold credentials)


@dataclass
class RequestRecord:
    """One guarded request (or ``ctx.guard`` block) inside a member operation."""

    target: str
    ok: bool
    url: str | None = None
    method: str | None = None
    status: int | None = None
    error: str | None = None
    sent_at: float = 0.0  # epoch seconds when it went out (right after its rate-limit slot)
    elapsed_ms: float = 0.0
    proxy_id: str | None = None
    reputation_hit: bool = False


@dataclass
class OpOutcome:
    op_id: str
    member: int
    ok: bool
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    exc: BaseException | None = None  # our typed errors survive as themselves
    cancelled: bool = False
    requests: list[RequestRecord] = field(default_factory=list)
    trips: list[dict[str, Any]] = field(default_factory=list)  # BreakerTrip dumps seen by this op
    node: str | None = None
    proxy: str | None = None


_TYPED = (E.CircuitOpen, E.PolicyDenied, E.RateLimited, E.MemberCancelled, E.CampaignClosed, E.DiscoveryFailed)


def failure(op: OpSpec, exc: BaseException, **kw: Any) -> OpOutcome:
    """An outcome for ``exc``: our typed errors travel as themselves, others as type + message."""
    keep = exc if isinstance(exc, _TYPED) else None
    return OpOutcome(
        op_id=op.op_id, member=op.member, ok=False, error_type=type(exc).__name__,
        error=redact_url(str(exc)), exc=keep, cancelled=isinstance(exc, E.MemberCancelled), **kw,
    )


class MemberResult(BaseModel):
    """One member's result: ``ok`` and ``value``, or the failure (``error_type``, ``error``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    member: int
    identity: str
    ok: bool
    value: Any = None
    error_type: str | None = Field(None, description="e.g. CircuitOpen, PolicyDenied, MemberCancelled, ValueError")
    error: str | None = None
    stage: int | None = Field(None, description="Pipeline stage that produced this result (or failed)")
    target: str | None = None
    cancelled: bool = False
    suppressed: bool = Field(False, description="A late success of a cancelled race sibling, not reported")
    resumed: bool = Field(False, description="Completed by an earlier run; taken from the durable log")
    winner: bool = Field(False, description="race(): this member reached the goal first")
    node: str | None = None
    op_id: str | None = None
    _exc: BaseException | None = PrivateAttr(None)

    @property
    def exception(self) -> E.FleetError | None:
        if self.ok:
            return None
        if isinstance(self._exc, E.FleetError):
            return self._exc
        return E.MemberTaskFailed(self.member, self.error_type or "Error", self.error or "", self.stage)

    def unwrap(self) -> Any:
        """The value, or raise the typed failure."""
        if self.ok:
            return self.value
        raise self.exception  # type: ignore[misc]


def to_result(outcome: OpOutcome, identity: str, op: OpSpec, **kw: Any) -> MemberResult:
    res = MemberResult(
        member=outcome.member, identity=identity, ok=outcome.ok, value=outcome.value if outcome.ok else None,
        error_type=outcome.error_type, error=outcome.error, stage=op.stage, target=op.target_ref,
        cancelled=outcome.cancelled, node=outcome.node, op_id=op.op_id, **kw,
    )
    res._exc = outcome.exc
    return res


class AuditStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing: bool
    key_id: str | None
    receipts: int = Field(description="Receipts in the chain so far (across resumes)")
    sink: str | None = None


class CampaignStatus(BaseModel):
    """``Campaign.status()``: live counts, breaker state per target seen, proxy health."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    members: int
    active: int = Field(description="Member operations in flight now")
    completed: int
    failed: int
    cancelled: int
    closed: bool
    circuit_tripped: bool = Field(description="Any target's breaker is tripped")
    breakers: list[BreakerState] = Field(default_factory=list, description="Per target this campaign saw")
    proxies: list[MemberProxyHealth] = Field(default_factory=list, description="Per pooled proxy")
    nodes: list[str] = Field(default_factory=list, description="Ray node ids running members")
    audit: AuditStatus
