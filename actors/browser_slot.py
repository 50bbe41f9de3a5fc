"""The browser slot actor lives here once the browser add-on lands (``pip install 'fleet-ray[browser]'``)."""

from __future__ import annotations

from fleet_ray.errors import AutomationError


def browser_slot_class():
    raise AutomationError(
        "slot kind 'browser' is not available in this build of fleet-ray; use kind: process"
    )
