"""fleet-ray: supervised, observable, self-healing fleets of browser and HTTP automations on Ray.

The public surface (pinned by ``tests/unit/test_public_api.py``)::

    from fleet_ray import (BatchAutomation, ContinuousAutomation, Context, FleetSpec, PoolSpec,
                           connect, validate_spec, ...)
"""

from fleet_ray.automation import (
    Automation,
    BatchAutomation,
    Context,
    ContinuousAutomation,
    NoConfig,
    PhaseTimeout,
    SlotIdentity,
)
from fleet_ray.errors import (
    AutomationError,
    AutomationNotFound,
    AutomationVersionMismatch,
    FleetError,
    FleetNotRunning,
    ItemFailed,
    JobError,
    SpecError,
    StoreError,
    StoreUnavailable,
    UnknownPool,
    UnknownSlot,
)
from fleet_ray.spec import (
    FleetSpec,
    HealPolicy,
    HealthCheck,
    Placement,
    PoolSpec,
    RecyclePolicy,
    validate_spec,
)
from fleet_ray.status import FleetStatus, PoolStatus, SlotStatus

__version__ = "0.1.0"


def connect(address: str | None = None, namespace: str = "fleet"):
    """Attach to a running fleet (see :func:`fleet_ray.client.connect`). Imports Ray lazily."""
    from fleet_ray.client import connect as _connect

    return _connect(address, namespace)


__all__ = [
    "Automation",
    "AutomationError",
    "AutomationNotFound",
    "AutomationVersionMismatch",
    "BatchAutomation",
    "Context",
    "ContinuousAutomation",
    "FleetError",
    "FleetNotRunning",
    "FleetSpec",
    "FleetStatus",
    "HealPolicy",
    "HealthCheck",
    "ItemFailed",
    "JobError",
    "NoConfig",
    "PhaseTimeout",
    "Placement",
    "PoolSpec",
    "PoolStatus",
    "RecyclePolicy",
    "SlotIdentity",
    "SlotStatus",
    "SpecError",
    "StoreError",
    "StoreUnavailable",
    "UnknownPool",
    "UnknownSlot",
    "__version__",
    "connect",
    "validate_spec",
]

# Fleet campaigns (fleet_ray.campaign): exported on first use, so ``import fleet_ray`` stays light.
_CAMPAIGN_EXPORTS = {
    **dict.fromkeys(
        ["Campaign", "CampaignConfig", "CampaignStatus", "Identity", "MemberContext", "MemberResult",
         "BreakerTrip", "PolicyDecision", "PolicyRequest", "verify_audit", "reset_breaker", "breaker_status"],
        "fleet_ray.campaign",
    ),
    **dict.fromkeys(
        ["CampaignError", "CampaignClosed", "CircuitOpen", "PolicyDenied", "RateLimited", "MemberCancelled",
         "AuditChainBroken", "AuditKeyError"],
        "fleet_ray.errors",
    ),
}


def __getattr__(name: str):
    module = _CAMPAIGN_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet_ray' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
