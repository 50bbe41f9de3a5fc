"""The fleet-ray error tree.

Every error a user can see derives from :class:`FleetError`. Errors carry the data their handler
needs (the pool, the field, the URL) as attributes, and their messages never contain secrets:
URLs are redacted before they are put into a message.

    FleetError
    ├── SpecError                  a spec or a pool config failed validation (nothing changed)
    ├── AutomationError            finding, loading or running an automation
    │   ├── AutomationNotFound     no entry point of that name
    │   └── AutomationVersionMismatch   installed version does not satisfy the pool's pin
    ├── StoreError                 the durable store
    │   └── StoreUnavailable       the store's server can't be reached
    ├── FleetNotRunning            no supervisor answers under that name
    ├── UnknownPool / UnknownSlot  a command names something the fleet doesn't have
    ├── ItemFailed                 a batch item failed for good (after retries)
    └── JobError                   a batch job can't be submitted or followed
"""

from __future__ import annotations

import re
from typing import Any

_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^@/\s]+)@")


def redact_url(url: str) -> str:
    """Replace the user-info part of a URL (``user:password@``) with ``***@``."""
    return _CRED_RE.sub(lambda m: f"{m.group('scheme')}***@", url)


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
