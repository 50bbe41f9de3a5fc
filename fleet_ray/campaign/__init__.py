"""Fleet campaigns: N members × targets, guardrails on by default, a signed audit chain.

::

    from fleet_ray.campaign import Campaign

    with Campaign(members=10, campaign_id="c1", store_url="redis://127.0.0.1:6379/0") as c:
        results = c.broadcast(lambda ctx, _: ctx.fetch("https://example.com/").status_code)

What is where:

- here, in ``fleet_ray/campaign/`` — the driver (:mod:`~.campaign`, :mod:`~.coordinators`, the
  dispatch loop :mod:`~.engine`), the member side (:mod:`~.member`: ``MemberContext``, ``MemberRuntime``),
  configuration (:mod:`~.config`), policy, the member proxy pool (:mod:`~.proxies`), the rate limit
  and breaker as members apply them (:mod:`~.ratelimit`, :mod:`~.breaker`), results, the audit chain
  (:mod:`~.audit`, :mod:`~.signing`, :mod:`~.verify`) and operator actions (:mod:`~.operator`).
  None of it imports Ray or the browser code at module level;
- guardrail state (token buckets, breaker windows, leases, shared discoveries) — in the store, as
  :class:`fleet_ray.store.GuardrailState` with a backend beside each store backend, opened by
  :func:`fleet_ray.store.open_guardrails` from the store URL;
- members on Ray — :mod:`fleet_ray.actors.campaign_workers` (every Ray call of a campaign);
- members' Chromium pages (``ctx.page``) — :mod:`fleet_ray.browser.campaign`, handed to the member
  runtime as its page opener.

Names: a member's identity is a :class:`MemberIdentity`, worker placement a :class:`CampaignPlacement`,
a pooled proxy's health a :class:`MemberProxyHealth`; ``Identity``, ``Placement`` and ``ProxyHealth``
stay importable here as aliases of them.
"""

from fleet_ray.campaign.breaker import BreakerTrip
from fleet_ray.campaign.campaign import Campaign
from fleet_ray.campaign.config import (
    AuditConfig,
    BreakerConfig,
    CampaignConfig,
    CampaignPlacement,
    MemberIdentity,
    RateLimitConfig,
    target_host,
    validate_config,
)
from fleet_ray.campaign.member import MemberContext
from fleet_ray.campaign.operator import breaker_status, reset_breaker, verify_audit
from fleet_ray.campaign.policy import PolicyDecision, PolicyRequest, deny_targets
from fleet_ray.campaign.proxies import MemberProxyHealth
from fleet_ray.campaign.results import CampaignStatus, MemberResult
from fleet_ray.campaign.signing import SigningKey, VerifyKey, load_signing_key, load_verify_key
from fleet_ray.campaign.verify import AuditReport, BrokenLink, verify_audit_file, verify_audit_log
from fleet_ray.store.guardrails import BreakerState

# the names these had before they were told apart from the browser's and the fleet's own
Identity = MemberIdentity
Placement = CampaignPlacement
ProxyHealth = MemberProxyHealth

__all__ = [
    "AuditConfig",
    "AuditReport",
    "BreakerConfig",
    "BreakerState",
    "BreakerTrip",
    "BrokenLink",
    "Campaign",
    "CampaignConfig",
    "CampaignPlacement",
    "CampaignStatus",
    "Identity",
    "MemberContext",
    "MemberIdentity",
    "MemberProxyHealth",
    "MemberResult",
    "Placement",
    "PolicyDecision",
    "PolicyRequest",
    "ProxyHealth",
    "RateLimitConfig",
    "SigningKey",
    "VerifyKey",
    "breaker_status",
    "deny_targets",
    "load_signing_key",
    "load_verify_key",
    "reset_breaker",
    "target_host",
    "validate_config",
    "verify_audit",
    "verify_audit_file",
    "verify_audit_log",
]
