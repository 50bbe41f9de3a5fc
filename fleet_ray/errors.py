"""The fleet-ray error tree.

Every error a user can see derives from :class:`FleetError`. Errors carry the data their handler
needs (the pool, the field, the URL) as attributes, and their messages never contain secrets:
URLs are redacted (:func:`fleet_ray.redact.redact_url`) before they are put into a message.

    FleetError
    ├── SpecError                  a spec or a pool config failed validation (nothing changed)
    ├── AutomationError            finding, loading or running an automation
    │   ├── AutomationNotFound     no entry point of that name
    │   └── AutomationVersionMismatch   installed version does not satisfy the pool's pin
    ├── StoreError                 the durable store
    │   └── StoreUnavailable       the store's server can't be reached
    ├── FleetNotRunning            no supervisor answers under that name
    ├── SupervisorRecovering       the supervisor has not recovered its checkpoint yet (retry after ``retry_after_s``)
    ├── UnknownPool / UnknownSlot  a command names something the fleet doesn't have
    ├── ItemFailed                 a batch item failed for good (after retries)
    ├── JobError                   a batch job can't be submitted or followed
    ├── StreamError                a typed output stream: not declared, not wired, unknown
    │   └── StreamItemInvalid      an emitted item failed its output model (raised at the producer)
    ├── NotifyError                a notifier could not deliver (never escapes the reporter)
    ├── BrowserError               a browser task failed; carries its ``recovery`` (tree below)
    └── CampaignError              a fleet campaign (fleet_ray.campaign)
        ├── CampaignConfigError    invalid campaign config (also a SpecError: ``errors`` name the fields)
        ├── CampaignClosed         work offered after destroy() began
        ├── CampaignLeaseHeld      another driver runs this campaign id right now
        ├── GuardrailRefused       a guardrail refused an operation before it touched the target
        │   ├── CircuitOpen        the target's reputation breaker is tripped (operator reset needed)
        │   ├── PolicyDenied       the policy hook denied a capability, with its reason
        │   └── RateLimited        the rate-limit wait would exceed the configured maximum
        ├── MemberCancelled        a race sibling was cancelled (its late result suppressed)
        ├── MemberTaskFailed       a member's task raised (type and message kept, traceback not)
        ├── DiscoveryFailed        a shared-discovery lookup failed in the member that ran it
        ├── AuditKeyError          the signing/verification key is missing or malformed (value never shown)
        └── AuditChainBroken       audit verification found a broken link (line, seq, reason)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from fleet_ray.redact import redact_url


class FleetError(Exception):
    """Base of every error fleet-ray raises on purpose."""


class SpecError(FleetError, ValueError):
    """A fleet spec, or one pool's config, is invalid. Raised before anything changes.

    ``errors`` lists every problem as ``{"loc": "pools.web.config.max_pages", "msg": ...}``.
    """

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        lines = [f"{e['loc']}: {e['msg']}" for e in errors]
        super().__init__("invalid fleet spec:\n  " + "\n  ".join(lines))

    @property
    def fields(self) -> list[str]:
        return [e["loc"] for e in self.errors]

    def __reduce__(self):  # keep the structured errors across Ray's pickling
        return (type(self), (self.errors,))


class AutomationError(FleetError):
    """Finding, loading, configuring or running an automation failed."""


class AutomationNotFound(AutomationError, LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name = name
        self.available = available
        super().__init__(
            f"no automation named {name!r} in entry-point group 'fleet_ray.automations' "
            f"(installed: {', '.join(sorted(available)) or 'none'})"
        )

    def __reduce__(self):
        return (type(self), (self.name, self.available))


class AutomationVersionMismatch(AutomationError):
    def __init__(self, name: str, distribution: str, installed: str, pinned: str):
        self.name = name
        self.distribution = distribution
        self.installed = installed
        self.pinned = pinned
        super().__init__(
            f"automation {name!r} is pinned to {distribution}{pinned} but {distribution} "
            f"{installed} is installed on this node"
        )

    def __reduce__(self):
        return (type(self), (self.name, self.distribution, self.installed, self.pinned))


class StoreError(FleetError):
    """The durable store failed."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store's server can't be reached. The URL in the message is redacted."""

    def __init__(self, url: str, cause: str = ""):
        self.url = redact_url(url)
        self.cause = cause
        super().__init__(f"store at {self.url} is unreachable" + (f": {cause}" if cause else ""))

    def __reduce__(self):
        return (type(self), (self.url, self.cause))


class FleetNotRunning(FleetError, ConnectionError):
    """No supervisor could be found; run ``fleet-ray up`` first."""


class SupervisorRecovering(FleetError):
    """The supervisor refused a change because it has not recovered its checkpoint yet (it just
    (re)started, or the store is unreachable, or the checkpoint was rejected: ``reason``). Nothing
    changed; the same request may be sent again after ``retry_after_s`` seconds."""

    def __init__(self, reason: str = "", retry_after_s: float = 1.0):
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__("the supervisor is recovering, try again" + (f" ({reason})" if reason else "")
                         + f" in {retry_after_s:g}s")

    def __reduce__(self):
        return (type(self), (self.reason, self.retry_after_s))


class UnknownPool(FleetError, KeyError):
    def __init__(self, pool: str):
        self.pool = pool
        super().__init__(f"no pool named {pool!r}")

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.pool,))


class UnknownSlot(FleetError, KeyError):
    def __init__(self, slot_id: str):
        self.slot_id = slot_id
        super().__init__(f"no slot {slot_id!r} (slot ids look like 'pool:index')")

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.slot_id,))


class JobError(FleetError):
    """A batch job can't be submitted or followed (e.g. the pool is not a batch pool)."""


class ItemFailed(FleetError):
    """A batch item failed for good; ``cause`` says why (automation error or slot deaths)."""

    def __init__(self, item_id: str, cause: str, attempts: int):
        self.item_id = item_id
        self.cause = cause
        self.attempts = attempts
        super().__init__(f"item {item_id} failed after {attempts} attempt(s): {cause}")

    def __reduce__(self):
        return (type(self), (self.item_id, self.cause, self.attempts))


# --- campaigns (fleet_ray.campaign) -------------------------------------------------------------


class CampaignError(FleetError):
    """A fleet campaign failed as a whole (one member's failure is a result, never this)."""


class CampaignConfigError(SpecError):
    """A campaign config is invalid; ``errors`` names every bad field. Nothing was started."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(errors)
        lines = [f"{e['loc']}: {e['msg']}" for e in errors]
        self.args = ("invalid campaign config:\n  " + "\n  ".join(lines),)


class CampaignClosed(CampaignError, RuntimeError):
    """The campaign is being destroyed (or was): it takes no new work."""

    def __init__(self, campaign_id: str):
        self.campaign_id = campaign_id
        super().__init__(f"campaign {campaign_id!r} is closed: cannot dispatch after destroy()")

    def __reduce__(self):
        return (type(self), (self.campaign_id,))


class CampaignLeaseHeld(CampaignError):
    """Another live driver holds this campaign id (two writers would fork the audit chain)."""

    def __init__(self, campaign_id: str, retry_in_s: float):
        self.campaign_id = campaign_id
        self.retry_in_s = retry_in_s
        super().__init__(
            f"campaign {campaign_id!r} is running in another driver; its lease expires in {retry_in_s:.1f}s"
        )

    def __reduce__(self):
        return (type(self), (self.campaign_id, self.retry_in_s))


class GuardrailRefused(CampaignError):
    """A guardrail refused an operation before anything was sent to the target."""


class CircuitOpen(GuardrailRefused):
    """The target's reputation breaker is tripped; only an operator reset reopens it."""

    def __init__(self, target: str, reason: str = ""):
        self.target = target
        self.reason = reason
        super().__init__(
            f"circuit breaker for target {target!r} is tripped{': ' + reason if reason else ''} "
            f"(reset with `fleet-ray breaker reset {target}`)"
        )

    def __reduce__(self):
        return (type(self), (self.target, self.reason))


class PolicyDenied(GuardrailRefused):
    """The campaign's policy hook denied an operation."""

    def __init__(self, reason: str, capabilities: list[str] | None = None):
        self.reason = reason
        self.capabilities = list(capabilities or [])
        super().__init__(f"policy denied ({', '.join(self.capabilities) or 'no capabilities'}): {reason}")

    def __reduce__(self):
        return (type(self), (self.reason, self.capabilities))


class RateLimited(GuardrailRefused):
    """Waiting for the target's rate limit would take longer than the configured maximum."""

    def __init__(self, target: str, wait_s: float, max_wait_s: float):
        self.target = target
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s
        super().__init__(
            f"rate limit for target {target!r}: next slot in {wait_s:.1f}s exceeds max_wait_s={max_wait_s:g}"
        )

    def __reduce__(self):
        return (type(self), (self.target, self.wait_s, self.max_wait_s))


class MemberCancelled(CampaignError):
    """A member was cancelled (a race was won by a sibling, or the campaign closed)."""

    def __init__(self, member: int, why: str = "cancelled"):
        self.member = member
        self.why = why
        super().__init__(f"member {member}: {why}")

    def __reduce__(self):
        return (type(self), (self.member, self.why))


class MemberTaskFailed(CampaignError):
    """A member's task raised; ``error_type`` and the message survive, the traceback does not."""

    def __init__(self, member: int, error_type: str, message: str, stage: int | None = None):
        self.member = member
        self.error_type = error_type
        self.message = message
        self.stage = stage
        where = f" at stage {stage}" if stage is not None else ""
        super().__init__(f"member {member} failed{where}: {error_type}: {message}")

    def __reduce__(self):
        return (type(self), (self.member, self.error_type, self.message, self.stage))


class DiscoveryFailed(CampaignError):
    """The shared-discovery lookup under ``key`` failed in the member that ran it."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"shared discovery {key!r} failed: {message}")

    def __reduce__(self):
        return (type(self), (self.key, self.message))


class AuditKeyError(CampaignError, ValueError):
    """The audit key is missing or malformed. The message names the source, never the key."""


class AuditChainBroken(CampaignError):
    """Audit verification found the first broken link: ``line`` (1-based), ``seq`` and ``reason``."""

    def __init__(self, source: str, line: int, reason: str, seq: int | None = None):
        self.source = source
        self.line = line
        self.reason = reason
        self.seq = seq
        super().__init__(f"{source}: audit chain broken at line {line}: {reason}")

    def __reduce__(self):
        return (type(self), (self.source, self.line, self.reason, self.seq))


# --- browser slots (fleet_ray.browser) ----------------------------------------------------------


class Recovery(StrEnum):
    """What a browser slot does after a task failed with a given error (see ``BrowserError.recovery``)."""

    RETRY_SAME = "retry_same_identity"
    ROTATE_PROXY = "rotate_proxy"
    ROTATE_IDENTITY = "rotate_identity"
    RECYCLE_BROWSER = "recycle_browser"
    FAIL = "fail_item"


class BrowserError(FleetError):
    """A browser task failed. ``recovery`` says what the slot does next; ``phase`` names the phase
    (``ctx.phase``) the task was in, when known. Messages never carry proxy credentials.

        BrowserError
        ├── BrowserLaunchError     Chromium could not be started (fail the item, slot unhealthy)
        ├── NavigationError        a page did not load (retry with the same identity)
        ├── ProxyError             the proxy refused or dropped the connection (rotate proxy)
        │   └── ProxyAuthError     the proxy rejected the credentials (quarantine it, rotate proxy)
        ├── BlockedError           HTTP 403/429 or a captcha/challenge page (rotate identity and proxy)
        ├── SessionExpired         the site logged the session out (rotate identity)
        ├── BrowserCrashed         the renderer or browser crashed (recycle the browser)
        └── BrowserHung            a page or the browser stopped answering (recycle the browser)
    """

    recovery: Recovery = Recovery.FAIL

    def __init__(self, message: str, phase: str | None = None):
        self.phase = phase
        super().__init__(redact_url(message))

    def __reduce__(self):
        return (type(self), (self.args[0], self.phase))


class BrowserLaunchError(BrowserError):
    recovery = Recovery.FAIL


class NavigationError(BrowserError):
    recovery = Recovery.RETRY_SAME


class ProxyError(BrowserError):
    """``proxy`` is the proxy's display name (credentials redacted)."""

    recovery = Recovery.ROTATE_PROXY

    def __init__(self, message: str, phase: str | None = None, proxy: str | None = None):
        self.proxy = proxy
        super().__init__(message, phase)

    def __reduce__(self):
        return (type(self), (self.args[0], self.phase, self.proxy))


class ProxyAuthError(ProxyError):
    recovery = Recovery.ROTATE_PROXY


class BlockedError(BrowserError):
    recovery = Recovery.ROTATE_IDENTITY


class SessionExpired(BrowserError):
    recovery = Recovery.ROTATE_IDENTITY


class BrowserCrashed(BrowserError):
    recovery = Recovery.RECYCLE_BROWSER


class BrowserHung(BrowserError):
    recovery = Recovery.RECYCLE_BROWSER


# --- typed output streams and notifications (fleet_ray.streams.declare, fleet_ray.observe.notify) ---------------


class StreamError(FleetError):
    """A typed output stream can't be used as asked (not declared, not wired, no such stream)."""


class StreamItemInvalid(StreamError, ValueError):
    """An item passed to ``ctx.emit`` does not validate against the stream's model.

    Raised at the producer, so a bad item never reaches (or crashes) a consumer. ``errors`` lists
    every problem as ``{"loc": "price", "msg": ...}`` (input values are not included).
    """

    def __init__(self, stream: str, model: str, errors: list[dict[str, Any]]):
        self.stream = stream
        self.model = model
        self.errors = errors
        lines = [f"{e['loc']}: {e['msg']}" for e in errors]
        super().__init__(f"item emitted to stream {stream!r} is not a valid {model}:\n  " + "\n  ".join(lines))

    def __reduce__(self):
        return (type(self), (self.stream, self.model, self.errors))


class NotifyError(FleetError):
    """A notifier could not deliver a message. Its text never contains the notifier's token."""
