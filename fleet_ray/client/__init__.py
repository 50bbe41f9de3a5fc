"""Driver-side clients: everything a script or the CLI uses to talk to a running fleet.

- :mod:`~fleet_ray.client.fleet` — :func:`connect`, :class:`FleetClient`, batch :class:`Job`\\ s (Ray);
- :mod:`~fleet_ray.client.http` — :class:`ApiClient`, the control-plane HTTP API's client (no Ray);
- :mod:`~fleet_ray.client.items` — :class:`ItemResult`, one batch item's result (no Ray);
- :mod:`~fleet_ray.client.runs` — resumable runs and their durable ledger;
- :mod:`~fleet_ray.client.subscription` — reading a stream, typed, sync or async.

``import fleet_ray.client`` stays light: the Ray-backed names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FleetClient": "fleet_ray.client.fleet",
    "Job": "fleet_ray.client.fleet",
    "ItemResult": "fleet_ray.client.items",
    "connect": "fleet_ray.client.fleet",
    "init_ray": "fleet_ray.client.fleet",
    "ApiClient": "fleet_ray.client.http",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet_ray.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
