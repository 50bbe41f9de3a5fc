"""Fleet campaigns: N members × targets, guardrails on by default, a signed audit chain.

::

    from fleet_ray.campaign import Campaign

    with Campaign(members=10, campaign_id="c1", store_url="redis://127.0.0.1:6379/0") as c:
        results = c.broadcast(lambda ctx, _: ctx.fetch("https://example.com/").status_code)

Pure logic (rate-limit math, breaker window, policy, proxies, audit signing and verification,
coordinator semantics) never imports Ray; :mod:`fleet_ray.actors.campaign_workers` holds every Ray call.
"""

from fleet_ray.campaign.breaker import BreakerState, BreakerTrip
from fleet_ray.campaign.campaign import Campaign
from fleet_ray.campaign.config import (
    AuditConfig,
    BreakerConfig,
    CampaignConfig,
    Identity,
    Placement,
    RateLimitConfig,
    target_host,
    validate_config,
)
from fleet_ray.campaign.member import MemberContext
from fleet_ray.campaign.operator import breaker_status, reset_breaker, verify_audit
from fleet_ray.campaign.policy import PolicyDecision, PolicyRequest, deny_targets
from fleet_ray.campaign.proxies import ProxyHealth
from fleet_ray.campaign.results import CampaignStatus, MemberResult
from fleet_ray.campaign.signing import SigningKey, VerifyKey, load_signing_key, load_verify_key
from fleet_ray.campaign.verify import AuditReport, BrokenLink, verify_audit_file, verify_audit_log

__all__ = [
    "AuditConfig",
    "AuditReport",
    "BreakerConfig",
    "BreakerState",
    "BreakerTrip",
    "BrokenLink",
    "Campaign",
    "CampaignConfig",
    "CampaignStatus",
    "Identity",
    "MemberContext",
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
