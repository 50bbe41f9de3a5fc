"""fleet-ray: supervised, observable, self-healing fleets of browser and HTTP automations on Ray.

The public surface (pinned by ``tests/unit/test_public_api.py``)::

    from fleet_ray import (BatchAutomation, ContinuousAutomation, Context, FleetSpec, PoolSpec,
                           connect, validate_spec, ...)
"""

from fleet_ray.api.status import FleetStatus, PoolStatus, SlotStatus
from fleet_ray.automation import (
    Automation,
    BatchAutomation,
    Context,
    ContinuousAutomation,
    NoConfig,
    PhaseTimeout,
    SlotIdentity,
)
from fleet_ray.client.runs import RunReport
from fleet_ray.errors import (
    AutomationError,
    AutomationNotFound,
    AutomationVersionMismatch,
    FleetError,
    FleetNotRunning,
    ItemFailed,
    JobError,
    NotifyError,
    SpecError,
    StoreError,
    StoreUnavailable,
    StreamError,
    StreamItemInvalid,
    UnknownPool,
    UnknownSlot,
)
from fleet_ray.observe.crashes import CrashRecord
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.grouping import ErrorGroup
from fleet_ray.observe.kinds import TypedEvent
from fleet_ray.observe.notify import Notifier, NotifyConfig, TelegramNotifier, WebhookNotifier
from fleet_ray.spec.models import (
    FleetSpec,
    HealPolicy,
    HealthCheck,
    Placement,
    PoolSpec,
    RecyclePolicy,
    validate_spec,
)
from fleet_ray.streams.declare import InProcessStreams, StreamOptions
from fleet_ray.streams.sinks import JsonlSinkSpec, RedisSinkSpec, replay_redis

__version__ = "0.1.0"


def connect(address: str | None = None, namespace: str = "fleet"):
    """Attach to a running fleet (see :func:`fleet_ray.client.fleet.connect`). Imports Ray lazily."""
    from fleet_ray.client.fleet import connect as _connect

    return _connect(address, namespace)


__all__ = [
    "Automation",
    "AutomationError",
    "AutomationNotFound",
    "AutomationVersionMismatch",
    "BatchAutomation",
    "Context",
    "ContinuousAutomation",
    "CrashRecord",
    "ErrorGroup",
    "Event",
    "EventLog",
    "FleetError",
    "FleetNotRunning",
    "FleetSpec",
    "FleetStatus",
    "HealPolicy",
    "HealthCheck",
    "InProcessStreams",
    "ItemFailed",
    "JobError",
    "JsonlSinkSpec",
    "NoConfig",
    "NotifyConfig",
    "NotifyError",
    "Notifier",
    "PhaseTimeout",
    "Placement",
    "PoolSpec",
    "PoolStatus",
    "RecyclePolicy",
    "RedisSinkSpec",
    "RunReport",
    "SlotIdentity",
    "SlotStatus",
    "SpecError",
    "StoreError",
    "StoreUnavailable",
    "StreamError",
    "StreamItemInvalid",
    "StreamOptions",
    "TelegramNotifier",
    "TypedEvent",
    "UnknownPool",
    "UnknownSlot",
    "WebhookNotifier",
    "__version__",
    "connect",
    "replay_redis",
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
