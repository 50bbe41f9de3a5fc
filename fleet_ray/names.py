"""The names every layer shares, in one place: Ray actor names, the head-node resource, defaults.

Actors find each other by name in the fleet's Ray namespace, so the driver, the supervisor, the API and
the slots must agree on every one of them. Only plain strings and pure functions live here.
"""

from __future__ import annotations

FLEET_PREFIX = "fleet:"
SUPERVISOR_NAME = "fleet:supervisor"
HUB_PREFIX = "fleet:stream:"
SINK_PREFIX = "fleet:sink:"
# the head-side actor through which actors on other hosts reach the fleet's store (actors/store_relay.py)
STORE_RELAY_NAME = "fleet:store-relay"

# Ray's own marker resource of the head node: a tiny amount pins an actor there.
HEAD_RESOURCE = "node:__internal_head__"

# Debian's Chromium: Playwright never downloads a browser.
DEFAULT_CHROMIUM = "/usr/bin/chromium"


def slot_actor_name(pool: str, index: int, generation: int) -> str:
    """The readable Ray actor name of a slot: ``fleet:<pool>:<index>:g<generation>``."""
    return f"{FLEET_PREFIX}{pool}:{index}:g{generation}"


def parse_slot_actor_name(name: str) -> tuple[str, int, int] | None:
    """``fleet:<pool>:<index>:g<generation>`` → (pool, index, generation); None for any other name."""
    parts = name.split(":")
    if len(parts) != 4 or parts[0] != "fleet" or not parts[2].isdigit() or not parts[3].startswith("g"):
        return None
    try:
        return parts[1], int(parts[2]), int(parts[3][1:])
    except ValueError:
        return None


def workqueue_name(pool: str) -> str:
    """The batch work queue actor of a pool: ``fleet:<pool>:work``."""
    return f"{FLEET_PREFIX}{pool}:work"


def hub_name(stream: str) -> str:
    """The hub actor of a stream: ``fleet:stream:<pool>.<output>``."""
    return f"{HUB_PREFIX}{stream}"


def sink_name(stream: str, group: str) -> str:
    """The sink actor draining one consumer group of a stream."""
    return f"{SINK_PREFIX}{stream}:{group}"
