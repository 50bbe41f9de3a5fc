"""The policy hook: a user function consulted before every operation, able to deny with a reason.

Capabilities are structured tags: ``fleet:op`` (every operation), ``fleet:dispatch`` (a member op
being handed to a worker), ``fleet:request`` (one guarded request inside a task), ``fleet:discover``,
``member:<index>`` and ``target:<host>`` when the destination is known. A policy returns a
:class:`PolicyDecision`, a bool, or ``None`` (allow). A policy that raises denies (fail closed).

The hook runs in the driver before dispatch and inside members before each guarded request, so it
must be picklable (plain functions and lambdas are; Ray pickles them with cloudpickle).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.errors import PolicyDenied

log = logging.getLogger(__name__)


class PolicyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    capabilities: list[str] = Field(description="e.g. ['fleet:op', 'fleet:request', 'target:example.com']")
    member: int | None = None
    target: str | None = Field(None, description="Target host when known")
    url: str | None = None

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


class PolicyDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: bool
    reason: str = ""


Policy = Callable[[PolicyRequest], "PolicyDecision | bool | None"]


def capabilities(kind: str, member: int | None = None, host: str | None = None) -> list[str]:
    caps = ["fleet:op"] if kind == "op" else ["fleet:op", f"fleet:{kind}"]
    if member is not None:
        caps.append(f"member:{member}")
    if host:
        caps.append(f"target:{host}")
    return caps


def evaluate(policy: Policy | None, request: PolicyRequest) -> PolicyDecision:
    """Ask the policy; anything but an explicit allow is a denial with a reason."""
    if policy is None:
        return PolicyDecision(allow=True)
    try:
        answer: Any = policy(request)
    except Exception as exc:  # fail closed: a broken policy must not wave work through
        log.warning("policy hook raised %s; denying", type(exc).__name__)
        return PolicyDecision(allow=False, reason=f"policy error: {type(exc).__name__}: {exc}")
    if answer is None or answer is True:
        return PolicyDecision(allow=True)
    if answer is False:
        return PolicyDecision(allow=False, reason="denied by policy")
    if isinstance(answer, PolicyDecision):
        return answer
    if isinstance(answer, dict) and "allow" in answer:
        return PolicyDecision(allow=bool(answer["allow"]), reason=str(answer.get("reason", "")))
    return PolicyDecision(allow=False, reason=f"policy returned {type(answer).__name__}, not a decision")


def enforce(policy: Policy | None, request: PolicyRequest) -> None:
    """Raise :class:`PolicyDenied` unless the policy allows ``request``."""
    decision = evaluate(policy, request)
    if not decision.allow:
        raise PolicyDenied(decision.reason or "denied by policy", request.capabilities)


def deny_targets(*hosts: str, reason: str = "DENY_TARGET") -> Policy:
    """A ready-made policy denying every operation on the given hosts."""
    blocked = {f"target:{h.lower()}" for h in hosts}

    def policy(req: PolicyRequest) -> PolicyDecision:
        hit = blocked.intersection(req.capabilities)
        return PolicyDecision(allow=not hit, reason=reason if hit else "")

    return policy
