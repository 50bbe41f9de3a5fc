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
from fleet_ray.crashes import CrashRecord
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
from fleet_ray.errors_grouping import ErrorGroup
from fleet_ray.events import Event, EventLog
from fleet_ray.eventtypes import TypedEvent
from fleet_ray.notify import Notifier, NotifyConfig, TelegramNotifier, WebhookNotifier
from fleet_ray.resume import RunReport
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
from fleet_ray.stream_sinks import JsonlSinkSpec, RedisSinkSpec, replay_redis
from fleet_ray.streams import InProcessStreams, StreamOptions

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
